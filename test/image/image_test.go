package image_test

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/addrreg/addrreg/agent"
	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

const prefix = "2001:db8:1::/64"

// The IA_NA pool Kea hands out: an address of it on a guest came from
// DHCPv6, and RFC 9686 §4.1 forbids registering it.
const (
	naPoolFirst = "2001:db8:1::d000"
	naPoolLast  = "2001:db8:1::dfff"
)

// network is the link the guests boot on: radvd (M and O flags, so addrregd
// may register and the network managers ask for an IA_NA), Debian's Kea 2.2
// serving IA_NA, and addrreg-refserver, each in its own namespace on the
// bridge (Kea and the reference server both listen on UDP 547: two hosts,
// as two servers on one link would be), and a tcpdump in the server's
// namespace that prints every ADDR-REG-INFORM reaching it.
type network struct {
	n       *topo.Net
	server  *topo.Node
	srvBin  string
	srv     *topo.Proc // addrreg-refserver: its log has a line per registration, with the name
	informs *topo.Proc
	kea     *topo.Proc
	keaDir  string // its lease file, leases6.csv
}

func newNetwork(t *testing.T) *network {
	t.Helper()
	srvBin := topo.BuildBinary(t, "./cmd/addrreg-refserver")
	n := topo.New(t)
	router, server, dhcp := n.Node("router"), n.Node("server"), n.Node("dhcp")
	// The server answers unicast to the registered address: on-link prefix.
	server.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	// A default router (non-zero Router Lifetime), as routers are: addrregd
	// counts the M and O flags it reads from the wire (when networkd or
	// NetworkManager handles RAs) only within the Router Lifetime.
	router.StartRadvd(t, topo.RA{Managed: true, Other: true, Interval: 3 * time.Second, RouterLifetime: 30 * time.Minute,
		Prefixes: []topo.PIO{{Prefix: prefix, Valid: time.Hour, Preferred: 30 * time.Minute}}})
	kea, keaDir := startKea(t, dhcp)
	// DHCPv6 over UDP after a bare IPv6 header: byte 48 is the message type;
	// 36 is ADDR-REG-INFORM (RFC 9686 §6). -e prints the sender's MAC.
	informs := server.Start(t, "tcpdump", "tcpdump", "-i", "eth0", "-n", "-l", "-e", "-p",
		"ip6 and udp dst port 547 and ip6[48] == 36")
	informs.WaitOutput(t, "listening on", 15*time.Second)
	srv := server.Start(t, "refserver", srvBin, "-i", "eth0", "--db", filepath.Join(t.TempDir(), "bindings.db"))
	srv.WaitOutput(t, "msg=listening", 15*time.Second)
	return &network{n: n, server: server, srvBin: srvBin, srv: srv, informs: informs, kea: kea, keaDir: keaDir}
}

// startKea runs Debian's kea-dhcp6 (2.2) in nd's namespace, serving IA_NA
// from the pool on eth0 (it does not know RFC 9686: it sends no option 148
// and drops ADDR-REG-INFORM), with its lease file, pid and lock files in a
// temporary directory, and waits until it serves.
func startKea(t *testing.T, nd *topo.Node) (*topo.Proc, string) {
	t.Helper()
	dir := t.TempDir()
	type obj = map[string]any
	p := dhcp6test.StartKea(t, nd, dir, obj{
		"interfaces-config":  obj{"interfaces": []string{"eth0"}},
		"lease-database":     obj{"type": "memfile", "persist": true, "name": filepath.Join(dir, "leases6.csv"), "lfc-interval": 0},
		"server-id":          obj{"type": "LL", "persist": false},
		"data-directory":     dir,
		"preferred-lifetime": 1800, "valid-lifetime": 3600,
		"subnet6": []obj{{
			"id": 1, "subnet": prefix, "interface": "eth0",
			"pools": []obj{{"pool": naPoolFirst + "-" + naPoolLast}},
		}},
		"loggers": []obj{{
			"name": "kea-dhcp6", "severity": "INFO",
			"output_options": []obj{{"output": "stdout"}},
		}},
	})
	return p, dir
}

// inNAPool reports whether addr is in Kea's IA_NA pool.
func inNAPool(addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	return a.Compare(netip.MustParseAddr(naPoolFirst)) >= 0 && a.Compare(netip.MustParseAddr(naPoolLast)) <= 0
}

// informsFromAddr counts the ADDR-REG-INFORMs the server's link saw sent
// from addr (RFC 9686 §4.2: a registration is sent from the address it
// registers).
func (nw *network) informsFromAddr(addr string) int {
	return strings.Count(nw.informs.Output(), " "+addr+".546 > ")
}

// informsFrom counts the ADDR-REG-INFORMs the server's link saw from mac.
func (nw *network) informsFrom(mac string) int {
	return strings.Count(nw.informs.Output(), " "+strings.ToLower(mac)+" > ")
}

// binding returns the DUID (hex) the server holds addr for, "" if none.
func (nw *network) binding(t *testing.T, addr string) string {
	t.Helper()
	out, err := nw.server.Exec(nw.srvBin, "query", "--json", "--address", addr)
	if err != nil && !strings.Contains(out, `"status"`) {
		t.Fatalf("query %s: %v", addr, err)
	}
	var r struct {
		Clients []struct {
			DUID  string `json:"duid"`
			Addrs []struct {
				Addr string `json:"addr"`
			} `json:"addrs"`
		} `json:"clients"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("query %s: %v: %s", addr, err, out)
	}
	for _, c := range r.Clients {
		for _, a := range c.Addrs {
			if a.Addr == addr {
				return c.DUID
			}
		}
	}
	return ""
}

// bootReport is what one boot showed.
type bootReport struct {
	machineID, duid string
	addrs           []guestAddr
	ready, active   time.Duration // QEMU start → control channel; → addrregd active
	registered      time.Duration // → every address in the server's bindings
}

// checkService asserts what a user of the image sees first: addrregd
// enabled by its package and running, and it returns the boot's machine ID
// and the DUID addrregd derived from it.
func checkService(t *testing.T, g *guest, r *bootReport) {
	t.Helper()
	r.ready = g.waitReady()
	t.Logf("%s: control channel up %v after QEMU start", g.name, r.ready.Round(100*time.Millisecond))
	// A unit left disabled never starts: say so at once.
	if out, _ := g.run("systemctl is-enabled addrregd"); out != "enabled" {
		t.Fatalf("%s: systemctl is-enabled addrregd: %q, want enabled (the package must enable its service also when installed in a chroot)", g.name, out)
	}
	until(t, serviceTimeout, g.name+": addrregd active", func() (bool, string) {
		out, _ := g.run("systemctl is-active addrregd")
		return out == "active", out
	})
	r.active = time.Since(g.booted)
	t.Logf("%s: addrregd active %v after QEMU start", g.name, r.active.Round(100*time.Millisecond))
	// Type=notify: "active" means systemd got READY=1 from the daemon.
	show := g.must("systemctl show -p Type,ActiveState,SubState,NRestarts,StatusText,UnitFileState addrregd")
	t.Logf("%s: %s", g.name, strings.ReplaceAll(show, "\n", " "))
	if !strings.Contains(show, "SubState=running") || !strings.Contains(show, "NRestarts=0") {
		t.Errorf("%s: addrregd not running steadily: %s", g.name, show)
	}
	if strings.Contains(show, "Type=notify") {
		t.Logf("%s: Type=notify and active: READY=1 received", g.name)
	}
	r.machineID = g.must("cat /etc/machine-id")
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(r.machineID) {
		t.Fatalf("%s: /etc/machine-id %q is not a generated machine ID", g.name, r.machineID)
	}
	journal := g.must("journalctl -b -o cat -u addrregd")
	m := regexp.MustCompile(`msg="addrregd starting".* duid=([0-9a-f]+)`).FindStringSubmatch(journal)
	if m == nil {
		t.Fatalf("%s: addrregd logged no DUID:\n%s", g.name, journal)
	}
	r.duid = m[1]
	// The DUID is the one derived from this boot's machine ID.
	f := filepath.Join(t.TempDir(), "machine-id")
	if err := os.WriteFile(f, []byte(r.machineID+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := agent.DUIDFromMachineID(f)
	if err != nil {
		t.Fatal(err)
	}
	if w := hex.EncodeToString(want.ToBytes()); w != r.duid {
		t.Errorf("%s: addrregd's DUID %s, want %s (from machine ID %s)", g.name, r.duid, w, r.machineID)
	}
}

// manager is how a boot's eth0 is configured: the kernel's own SLAAC (the
// image as built), systemd-networkd or NetworkManager. One image holds all
// three; the kernel command line picks one per boot.
type manager struct {
	name    string
	short   string // in guest names: kernel, networkd, nm
	cmdline string // appended to the kernel command line
	// dhcpv6 is set for a manager that runs a DHCPv6 client when the RA's
	// M flag is set: its IA_NA address must never be registered.
	dhcpv6 bool
	// down takes eth0's connection down the manager's way and returns
	// the command it ran.
	down func(t *testing.T, g *guest) string
	// linkDown: down sets the link administratively down, and the kernel
	// removes its addresses only after the link can no longer send, so no
	// deregistration can go out then: addrregd owes them until up brings
	// the link back (nmcli keeps the link up and removes the addresses:
	// those are deregistered at once).
	linkDown bool
	// up brings back the link down took down (linkDown) and returns the
	// command it ran.
	up func(t *testing.T, g *guest) string
}

var (
	// With the kernel's SLAAC there is no connection: taking the
	// interface down is what ifdown and `networkctl down` do.
	kernelSLAAC = manager{name: "kernel", short: "kernel", linkDown: true, down: func(t *testing.T, g *guest) string {
		return g.must("ip link set dev eth0 down && echo 'ip link set dev eth0 down'")
	}, up: func(t *testing.T, g *guest) string {
		return g.must("ip link set dev eth0 up && echo 'ip link set dev eth0 up'")
	}}
	networkd = manager{name: "networkd", short: "networkd", dhcpv6: true, linkDown: true,
		cmdline: "systemd.mask=addrreg-image-link.service systemd.wants=systemd-networkd.service",
		down: func(t *testing.T, g *guest) string {
			return g.must("networkctl down eth0 && echo 'networkctl down eth0'")
		},
		up: func(t *testing.T, g *guest) string {
			return g.must("networkctl up eth0 && echo 'networkctl up eth0'")
		}}
	networkManager = manager{name: "NetworkManager", short: "nm", dhcpv6: true,
		cmdline: "systemd.mask=addrreg-image-link.service systemd.wants=NetworkManager.service",
		down: func(t *testing.T, g *guest) string {
			// The default wired connection NetworkManager made for eth0
			// ("Wired connection 1"): whatever its name, the one active there.
			var conn string
			for _, l := range strings.Split(g.must("nmcli -t -f NAME,DEVICE connection show --active"), "\n") {
				if name, ok := strings.CutSuffix(l, ":eth0"); ok {
					conn = strings.ReplaceAll(name, `\:`, ":")
				}
			}
			if conn == "" {
				t.Fatalf("%s: no active NetworkManager connection on eth0", g.name)
			}
			cmd := "nmcli connection down id " + strconv.Quote(conn)
			g.must(cmd)
			return cmd
		}}
)

// bootAddrs are a guest's global addresses once its manager has set eth0 up.
type bootAddrs struct {
	slaac []guestAddr // stable and temporary, from the RA's prefix
	na    []guestAddr // from DHCPv6 IA_NA (Kea's pool)
}

// waitAddrs waits until eth0 has a stable and a temporary address in the
// prefix, and with wantNA an IA_NA address from Kea's pool, DAD done on all.
func waitAddrs(t *testing.T, g *guest, wantNA bool) bootAddrs {
	t.Helper()
	what := g.name + ": stable and temporary SLAAC addresses"
	if wantNA {
		what += " and a DHCPv6 IA_NA address"
	}
	var b bootAddrs
	until(t, serviceTimeout, what, func() (bool, string) {
		as := g.addrs("eth0")
		b = bootAddrs{}
		stable, temp := 0, 0
		for _, a := range as {
			if a.Tentative || a.DADFailed || !strings.HasPrefix(a.Local, "2001:db8:1:") {
				return false, fmt.Sprint(as)
			}
			switch {
			case inNAPool(a.Local):
				b.na = append(b.na, a)
			case a.Temporary:
				temp++
				b.slaac = append(b.slaac, a)
			default:
				stable++
				b.slaac = append(b.slaac, a)
			}
		}
		return stable > 0 && temp > 0 && (!wantNA || len(b.na) > 0), fmt.Sprint(as)
	})
	return b
}

// eui64 is the modified EUI-64 interface identifier (RFC 4291 §2.5.1) of
// mac, as the low 64 bits of an address in the prefix would show it.
func eui64(t *testing.T, mac string) netip.Addr {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("2001:db8:1::").As16()
	copy(a[8:], []byte{hw[0] ^ 2, hw[1], hw[2], 0xff, 0xfe, hw[3], hw[4], hw[5]})
	return netip.AddrFrom16(a)
}

// TestBootedImage boots the images `make image` builds, Debian 12
// (bookworm) and Debian 13 (trixie), under QEMU, on a link with radvd (M
// and O flags), Kea serving IA_NA and the reference server, seven guests at
// once (ADDRREG_IMAGE_SUITES=bookworm: four), each with its own MAC: per
// release, one per way of configuring the NIC
// (the kernel's own SLAAC as built, systemd-networkd, NetworkManager,
// chosen on the kernel command line), and on bookworm one with
// ADDRREGD_OPTS="--enable=false" written into its /etc/default/addrregd.
// Each enabled guest registers the stable and temporary addresses its
// manager configured, under its own DUID and with its host name, never the
// address its manager obtained by DHCPv6; renamed with hostnamectl, it
// registers them again with the new name (the packaged unit lets the
// rename reach the daemon); its registrations are released on the server
// when its connection is taken down. The disabled one sends no
// ADDR-REG-INFORM.
func TestBootedImage(t *testing.T) {
	topo.RequireRoot(t)
	start := time.Now()
	imgs := builtImages(t)
	for _, img := range imgs {
		if got := debugfs(t, img.rootfs, "-R", "stat /etc/machine-id"); !regexp.MustCompile(`Size: 0\b`).MatchString(got) {
			t.Errorf("the %s image's /etc/machine-id is not empty: every guest would share one machine ID and DUID:\n%s", img.suite, got)
		}
	}
	nw := newNetwork(t)
	type run struct {
		name, mac string
		img       imageFiles
		rootfs    string
		mgr       manager
		enabled   bool
		report    bootReport
	}
	// Per release, a guest per manager; on the first (bookworm), one with
	// --enable=false too. Names short enough for the tap ("tap-" + name,
	// 15 octets at most): bw-kernel, tx-networkd …
	var runs []*run
	for i, suite := range imageSuites() {
		img := imgs[suite]
		short := map[string]string{"bookworm": "bw", "trixie": "tx"}[suite]
		if short == "" {
			short = suite[:min(2, len(suite))]
		}
		for j, mgr := range []manager{kernelSLAAC, networkd, networkManager} {
			runs = append(runs, &run{name: short + "-" + mgr.short, mac: fmt.Sprintf("52:54:00:ad:d%d:0%d", i, j+1),
				img: img, rootfs: img.rootfs, mgr: mgr, enabled: true})
		}
		if i == 0 {
			disabled := withDefault(t, img, "--enable=false")
			runs = append(runs, &run{name: short + "-off", mac: fmt.Sprintf("52:54:00:ad:d%d:09", i), img: img, rootfs: disabled, mgr: kernelSLAAC})
		}
	}
	t.Logf("images ready (built or found, plus the disabled variant): %v; %d guests", time.Since(start).Round(100*time.Millisecond), len(runs))
	// The enabled guests tell the disabled one how long registration takes
	// here, so its quiet period is measured against a positive control.
	var registeredMu sync.Mutex
	var slowest time.Duration
	enabledDone := make(chan struct{})
	var enabledWG sync.WaitGroup
	for _, r := range runs {
		if r.enabled {
			enabledWG.Add(1)
		}
	}
	go func() { enabledWG.Wait(); close(enabledDone) }()

	// All boot at once, whatever -parallel says: TCG is slow, and on a
	// busy machine several guests get more CPU than one.
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(r.name, func(t *testing.T) {
				// The disabled guest waits for the enabled ones to have
				// registered (or failed), not for their later steps.
				var registered sync.Once
				if r.enabled {
					defer registered.Do(enabledWG.Done)
				}
				g := boot(t, nw.n, r.img, r.rootfs, r.name, r.mac, r.mgr.cmdline)
				rep := &r.report
				checkService(t, g, rep)
				checkManager(t, g, r.mgr)
				ba := waitAddrs(t, g, r.mgr.dhcpv6)
				rep.addrs = ba.slaac
				if !r.enabled {
					journal := g.must("journalctl -b -o cat -u addrregd")
					if !strings.Contains(journal, "enable=false") {
						t.Errorf("off: addrregd did not start with --enable=false:\n%s", journal)
					}
					// Sending would begin once an RA with M or O is seen
					// (RFC 9686 §4.1): wait for that, and then for as long
					// as the enabled guests took to register, and more.
					until(t, serviceTimeout, "off: RA with M or O flag seen", func() (bool, string) {
						out, _ := g.run("journalctl -b -o cat -u addrregd")
						return strings.Contains(out, "RA with M or O flag seen"), out
					})
					seen := time.Now()
					<-enabledDone
					registeredMu.Lock()
					quiet := min(2*slowest+10*time.Second, 3*time.Minute)
					registeredMu.Unlock()
					// Quiet for that long since the RA: the wait for
					// the enabled guests counts.
					time.Sleep(time.Until(seen.Add(quiet)))
					t.Logf("off: no ADDR-REG-INFORM for %v after the RA with M or O was seen", time.Since(seen).Round(100*time.Millisecond))
					if n := nw.informsFrom(r.mac); n != 0 {
						t.Errorf("off: %d ADDR-REG-INFORMs from the guest with --enable=false; want none", n)
					}
					for _, a := range rep.addrs {
						if d := nw.binding(t, a.Local); d != "" {
							t.Errorf("off: server holds %s (DUID %s) of the disabled guest", a.Local, d)
						}
					}
					return
				}
				until(t, serviceTimeout, r.name+": addresses in the server's bindings", func() (bool, string) {
					var missing []string
					for _, a := range rep.addrs {
						if d := nw.binding(t, a.Local); d != rep.duid {
							missing = append(missing, fmt.Sprintf("%s→%q", a.Local, d))
						}
					}
					return len(missing) == 0, strings.Join(missing, " ")
				})
				rep.registered = time.Since(g.booted)
				registeredMu.Lock()
				slowest = max(slowest, rep.registered-rep.active)
				registeredMu.Unlock()
				registered.Do(enabledWG.Done)
				if nw.informsFrom(r.mac) == 0 {
					t.Errorf("%s: registered, but tcpdump saw no ADDR-REG-INFORM from %s: the capture cannot see the disabled guest's either", r.name, r.mac)
				}
				t.Logf("%s: control channel %v, addrregd active %v, %d addresses registered %v after QEMU start (QEMU used %v of CPU): %v",
					r.name, rep.ready.Round(100*time.Millisecond), rep.active.Round(100*time.Millisecond), len(rep.addrs),
					rep.registered.Round(100*time.Millisecond), g.cpuTime().Round(100*time.Millisecond), rep.addrs)
				checkHostName(t, nw, g, "addrreg-"+r.name, ba.slaac)
				checkStableIID(t, g, r.mgr, r.mac, ba.slaac)
				if r.mgr.dhcpv6 {
					checkNANotRegistered(t, nw, g, ba.na)
				}
				checkDown(t, nw, g, r.mgr, rep.duid, ba.slaac)
				// Where the boot's time went (under TCG, on this
				// machine's load): for whoever makes the suite faster.
				if out, _ := g.run("systemd-analyze time; systemd-analyze blame | head -n 6"); out != "" {
					t.Logf("%s: %s", r.name, out)
				}
			})
		}()
	}
	wg.Wait()

	var duids = map[string]string{}
	for _, r := range runs {
		if !r.enabled {
			continue
		}
		if r.report.duid == "" {
			return // a boot failed; it said why
		}
		if o, ok := duids[r.report.duid]; ok {
			t.Errorf("two boots of one image share a DUID: %s and %s: %s", o, r.name, r.report.duid)
		}
		duids[r.report.duid] = r.name
	}
	t.Logf("%d boots, %d DUIDs: %v; total %v", len(duids), len(duids), duids, time.Since(start).Round(100*time.Millisecond))
}

// imageHostName is the host name build-image.sh writes to the image's
// /etc/hostname: every guest boots with it.
const imageHostName = "addrreg-guest"

// checkHostName asserts that every registration carries the guest's host
// name (addrregd's default, the Client FQDN option) as the server recorded
// it, then renames the guest the way an administrator does (hostnamectl
// set-hostname: its static and kernel name) and waits until the server has
// every address again under the new name: the packaged unit must let a
// rename reach the daemon (no ProtectHostname=, which would freeze its copy
// of the name).
func checkHostName(t *testing.T, nw *network, g *guest, renamed string, slaac []guestAddr) {
	t.Helper()
	if got := g.must("hostname"); got != imageHostName {
		t.Fatalf("%s: host name %q, want the image's %s", g.name, got, imageHostName)
	}
	// registeredAt is when the server logged ip registered as name (its
	// log's time= of the last such line); zero if it did not.
	registeredAt := func(log, ip, name string) time.Time {
		re := regexp.MustCompile(`(?m)^\s*time=(\S+) .*\baddr=` + regexp.QuoteMeta(ip) + ` .*\bfqdn=` + regexp.QuoteMeta(name) + `( |$)`)
		var at time.Time
		for _, m := range re.FindAllStringSubmatch(log, -1) {
			if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil && t.After(at) {
				at = t
			}
		}
		return at
	}
	wait := func(name string, from int) time.Time {
		t.Helper()
		var last time.Time
		until(t, serviceTimeout, g.name+": the server has every address registered as "+name, func() (bool, string) {
			log := nw.srv.Output()[from:]
			var missing []string
			last = time.Time{}
			for _, a := range slaac {
				at := registeredAt(log, a.Local, name)
				if at.IsZero() {
					missing = append(missing, a.Local)
				} else if at.After(last) {
					last = at
				}
			}
			return len(missing) == 0, "not yet: " + strings.Join(missing, " ")
		})
		return last
	}
	wait(imageHostName, 0)
	from := len(nw.srv.Output())
	start := time.Now()
	g.must("hostnamectl set-hostname " + renamed)
	done := time.Now()
	last := wait(renamed, from)
	t.Logf("%s: registered as %s; hostnamectl set-hostname %s took %v, and the server had every address (%d) under the new name %v after it returned",
		g.name, imageHostName, renamed, done.Sub(start).Round(100*time.Millisecond), len(slaac), last.Sub(done).Round(100*time.Millisecond))
}

// checkManager asserts that the boot runs the manager it asked for, and
// logs that manager's version.
func checkManager(t *testing.T, g *guest, m manager) {
	t.Helper()
	var unit string
	switch m.name {
	case networkd.name:
		unit = "systemd-networkd"
	case networkManager.name:
		unit = "NetworkManager"
	}
	for _, u := range []string{"systemd-networkd", "NetworkManager"} {
		if u == unit {
			// A guest starved of CPU may still be starting it
			// ("activating": NetworkManager is Type=dbus).
			until(t, serviceTimeout, g.name+": "+u+" active", func() (bool, string) {
				out, _ := g.run("systemctl is-active " + u)
				return out == "active", fmt.Sprintf("%q (kernel command line: %q)", out, m.cmdline)
			})
			continue
		}
		if out, _ := g.run("systemctl is-active " + u); out != "inactive" {
			t.Fatalf("%s: %s is %q, want inactive (kernel command line: %q)", g.name, u, out, m.cmdline)
		}
	}
	// networkd handles RAs in user space and turns the kernel's off;
	// NetworkManager 1.42 leaves accept_ra at 1 but sets addr_gen_mode
	// to none (1) and adds the SLAAC addresses itself (checkStableIID).
	ra := g.must("cat /proc/sys/net/ipv6/conf/eth0/accept_ra /proc/sys/net/ipv6/conf/eth0/addr_gen_mode")
	t.Logf("%s: eth0's accept_ra, addr_gen_mode: %q", g.name, ra)
	if unit == "systemd-networkd" && !strings.HasPrefix(ra, "0\n") {
		t.Errorf("%s: eth0's accept_ra is %q, want 0: networkd handles the RAs", g.name, ra)
	}
	switch unit {
	case "systemd-networkd":
		t.Logf("%s: %s; %s", g.name, g.must("networkctl --version | head -n1"), g.must("dpkg-query -W -f='${Package} ${Version}' systemd"))
	case "NetworkManager":
		t.Logf("%s: NetworkManager %s; %s", g.name, g.must("NetworkManager --version"), g.must("dpkg-query -W -f='${Package} ${Version}' network-manager"))
	}
}

// checkStableIID asserts what kind of stable address the manager made:
// the kernel's SLAAC uses the MAC's EUI-64 (addr_gen_mode 0, Debian's
// default); networkd (Token=prefixstable) and NetworkManager (its default
// ipv6.addr-gen-mode) an RFC 7217 stable-privacy identifier, not the MAC's.
func checkStableIID(t *testing.T, g *guest, m manager, mac string, slaac []guestAddr) {
	t.Helper()
	e := eui64(t, mac)
	for _, a := range slaac {
		if a.Temporary {
			continue
		}
		isEUI := netip.MustParseAddr(a.Local) == e
		if isEUI != (m.name == kernelSLAAC.name) {
			t.Errorf("%s: stable address %s is EUI-64 of %s: %v; want %v under %s", g.name, a.Local, mac, isEUI, !isEUI, m.name)
		}
	}
}

// checkNANotRegistered asserts that an address the manager obtained by
// DHCPv6 (IA_NA) is never registered (RFC 9686 §4.1): addrregd has seen it
// and classed it DHCPv6 (`addrregd status`: kind dhcpv6, phase pending), and
// some seconds later there is no ADDR-REG-INFORM from it on the wire and no
// binding on the server, while the guest's SLAAC addresses are bound.
func checkNANotRegistered(t *testing.T, nw *network, g *guest, na []guestAddr) {
	t.Helper()
	until(t, serviceTimeout, g.name+": addrregd classes the IA_NA address(es) dhcpv6", func() (bool, string) {
		out, _ := g.run("addrregd status --json -i eth0")
		var st struct {
			Interfaces []struct {
				Addresses []struct {
					Address, Kind, Phase string
				} `json:"addresses"`
			} `json:"interfaces"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return false, out
		}
		seen := 0
		for _, ifc := range st.Interfaces {
			for _, sa := range ifc.Addresses {
				for _, a := range na {
					if sa.Address != a.Local {
						continue
					}
					if sa.Kind != "dhcpv6" || sa.Phase != "pending" {
						t.Fatalf("%s: addrregd status shows the DHCPv6 address %s as kind %q, phase %q; want dhcpv6, pending", g.name, a.Local, sa.Kind, sa.Phase)
					}
					seen++
				}
			}
		}
		return seen == len(na), out
	})
	// Had it been taken for registrable, its ADDR-REG-INFORM would be on
	// the wire within the seconds the SLAAC addresses' took.
	time.Sleep(15 * time.Second)
	for _, a := range na {
		if a.Prefixlen != 128 {
			t.Errorf("%s: DHCPv6 address %s/%d: want /128 (as every DHCPv6 client adds IA_NA)", g.name, a.Local, a.Prefixlen)
		}
		if n := nw.informsFromAddr(a.Local); n != 0 {
			t.Errorf("%s: %d ADDR-REG-INFORMs sent from the DHCPv6 address %s; want none", g.name, n, a.Local)
		}
		if d := nw.binding(t, a.Local); d != "" {
			t.Errorf("%s: server holds the DHCPv6 address %s (DUID %s)", g.name, a.Local, d)
		}
	}
	leases, _ := os.ReadFile(filepath.Join(nw.keaDir, "leases6.csv"))
	t.Logf("%s: DHCPv6 address(es) %v not registered; Kea's leases:\n%s", g.name, na, leases)
}

// checkDown takes the guest's connection down its manager's way. When the
// manager removes the addresses with the link up (NetworkManager), it waits
// until the server has released every SLAAC address it held for the guest
// (addrregd's --deregister, on by default: zero lifetimes sent from the
// removed address, RFC 9686 §4.7). When it sets the link down (ip link,
// networkctl), the addresses go with a link that can no longer send: the
// server keeps the bindings while it is down; once the manager brings it
// up again, the addresses that came back (the stable ones: EUI-64 or
// stable-privacy) stay registered, and those that did not (the old
// temporary address: a new one is made) are deregistered after addrregd's
// grace for them to come back.
func checkDown(t *testing.T, nw *network, g *guest, m manager, duid string, slaac []guestAddr) {
	t.Helper()
	cmd := m.down(t, g)
	t.Logf("%s: %s; eth0 now: %s", g.name, cmd, g.must("ip -br -6 addr show dev eth0; ip -br link show dev eth0"))
	if m.linkDown {
		checkLinkDownUp(t, nw, g, m, cmd, duid, slaac)
		return
	}
	until(t, serviceTimeout, g.name+": bindings released after "+cmd, func() (bool, string) {
		var held []string
		for _, a := range slaac {
			if d := nw.binding(t, a.Local); d != "" {
				held = append(held, a.Local)
			}
		}
		return len(held) == 0, "still bound: " + strings.Join(held, " ")
	})
	t.Logf("%s: every registration released after %s:\n%s", g.name, cmd, g.must("journalctl -b -o cat -u addrregd | grep -E 'removed|deregist' | tail -n 20"))
}

// checkLinkDownUp follows checkDown for a manager that sets the link down.
func checkLinkDownUp(t *testing.T, nw *network, g *guest, m manager, cmd, duid string, slaac []guestAddr) {
	t.Helper()
	until(t, serviceTimeout, g.name+": addrregd saw eth0 go down and its addresses go", func() (bool, string) {
		j, _ := g.run("journalctl -b -o cat -u addrregd | grep -E 'interface down|address removed' | tail -n 20")
		gone := len(g.addrs("eth0")) == 0
		return gone && strings.Contains(j, `msg="interface down" part=agent iface=eth0`), j
	})
	// Nothing can be sent on a link that is down: the server keeps the
	// bindings meanwhile (a deregistration would have reached it within
	// the seconds registration took here).
	time.Sleep(10 * time.Second)
	for _, a := range slaac {
		if d := nw.binding(t, a.Local); d != duid {
			t.Errorf("%s: while eth0 is down after %s the server's binding of %s is %q, want %s", g.name, cmd, a.Local, d, duid)
		}
	}
	upCmd := m.up(t, g)
	back := waitAddrs(t, g, m.dhcpv6)
	now := map[string]bool{}
	for _, a := range back.slaac {
		now[a.Local] = true
	}
	var returned, gone []string
	for _, a := range slaac {
		if now[a.Local] {
			returned = append(returned, a.Local)
		} else {
			gone = append(gone, a.Local)
		}
	}
	t.Logf("%s: after %s: came back %v, did not %v; eth0 now %v", g.name, upCmd, returned, gone, back.slaac)
	if len(gone) == 0 {
		t.Errorf("%s: every address came back after %s: the old temporary address was expected to be replaced", g.name, upCmd)
	}
	until(t, serviceTimeout, g.name+": after "+upCmd+" the addresses that did not come back are deregistered, the others registered", func() (bool, string) {
		var wrong []string
		for _, ip := range gone {
			if d := nw.binding(t, ip); d != "" {
				wrong = append(wrong, ip+" still bound")
			}
		}
		for _, a := range back.slaac {
			if d := nw.binding(t, a.Local); d != duid {
				wrong = append(wrong, fmt.Sprintf("%s bound to %q", a.Local, d))
			}
		}
		return len(wrong) == 0, strings.Join(wrong, "; ")
	})
	// Those that came back were never deregistered: no ADDR-REG-INFORM
	// with zero lifetimes was sent for them, as the journal shows.
	j := g.must("journalctl -b -o cat -u addrregd | grep -E 'interface down|removed|deregist|gone|waits' | tail -n 30")
	for _, ip := range returned {
		if strings.Contains(j, `msg=deregistered part=agent iface=eth0 addr=`+ip+` `) || strings.Contains(j, `msg="deregistration sent" part=agent iface=eth0 addr=`+ip+` `) {
			t.Errorf("%s: %s came back after %s, and addrregd deregistered it:\n%s", g.name, ip, upCmd, j)
		}
	}
	t.Logf("%s: after %s and %s the server released %v and kept %v:\n%s", g.name, cmd, upCmd, gone, returned, j)
}
