package image_test

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/addrreg/addrreg/agent"
	"github.com/addrreg/addrreg/test/topo"
)

const prefix = "2001:db8:1::/64"

// network is the link the guests boot on: radvd (O flag, so addrregd may
// register) and addrreg-refserver, each in its namespace, and a tcpdump in
// the server's namespace that prints every ADDR-REG-INFORM reaching it.
type network struct {
	n       *topo.Net
	server  *topo.Node
	srvBin  string
	informs *topo.Proc
}

func newNetwork(t *testing.T) *network {
	t.Helper()
	srvBin := topo.BuildBinary(t, "./cmd/addrreg-refserver")
	n := topo.New(t)
	router, server := n.Node("router"), n.Node("server")
	// The server answers unicast to the registered address: on-link prefix.
	server.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	router.StartRadvd(t, topo.RA{Other: true, Interval: 3 * time.Second,
		Prefixes: []topo.PIO{{Prefix: prefix, Valid: time.Hour, Preferred: 30 * time.Minute}}})
	// DHCPv6 over UDP after a bare IPv6 header: byte 48 is the message type;
	// 36 is ADDR-REG-INFORM (RFC 9686 §6). -e prints the sender's MAC.
	informs := server.Start(t, "tcpdump", "tcpdump", "-i", "eth0", "-n", "-l", "-e", "-p",
		"ip6 and udp dst port 547 and ip6[48] == 36")
	informs.WaitOutput(t, "listening on", 15*time.Second)
	srv := server.Start(t, "refserver", srvBin, "-i", "eth0", "--db", filepath.Join(t.TempDir(), "bindings.db"))
	srv.WaitOutput(t, "msg=listening", 15*time.Second)
	return &network{n: n, server: server, srvBin: srvBin, informs: informs}
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

// waitSLAAC waits until eth0 has a stable and a temporary address in the
// prefix, DAD done, and returns them.
func waitSLAAC(t *testing.T, g *guest) []guestAddr {
	t.Helper()
	var as []guestAddr
	until(t, serviceTimeout, g.name+": stable and temporary SLAAC addresses", func() (bool, string) {
		as = g.addrs("eth0")
		stable, temp := 0, 0
		for _, a := range as {
			if a.Tentative || a.DADFailed || !strings.HasPrefix(a.Local, "2001:db8:1:") {
				return false, fmt.Sprint(as)
			}
			if a.Temporary {
				temp++
			} else {
				stable++
			}
		}
		return stable > 0 && temp > 0, fmt.Sprint(as)
	})
	return as
}

// TestBootedImage boots the image `make image` builds, under QEMU, on a
// link with radvd and the reference server: twice as built (two guests at
// once, each with its own MAC) and once with ADDRREGD_OPTS="--enable=false"
// written into its /etc/default/addrregd. The built guests register their
// stable and temporary addresses under two different DUIDs; the disabled one
// sends no ADDR-REG-INFORM at all.
func TestBootedImage(t *testing.T) {
	topo.RequireRoot(t)
	start := time.Now()
	img := builtImage(t)
	if got := debugfs(t, img.rootfs, "-R", "stat /etc/machine-id"); !regexp.MustCompile(`Size: 0\b`).MatchString(got) {
		t.Errorf("the image's /etc/machine-id is not empty: every guest would share one machine ID and DUID:\n%s", got)
	}
	disabled := withDefault(t, img, "--enable=false")
	t.Logf("image ready (built or found, plus the disabled variant): %v", time.Since(start).Round(100*time.Millisecond))

	nw := newNetwork(t)
	type run struct {
		name, mac, rootfs string
		enabled           bool
		report            bootReport
	}
	runs := []*run{
		{name: "a1", mac: "52:54:00:ad:d0:01", rootfs: img.rootfs, enabled: true},
		{name: "a2", mac: "52:54:00:ad:d0:02", rootfs: img.rootfs, enabled: true},
		{name: "off", mac: "52:54:00:ad:d0:03", rootfs: disabled},
	}
	// The enabled guests tell the disabled one how long registration takes
	// here, so its quiet period is measured against a positive control.
	var registeredMu sync.Mutex
	var slowest time.Duration
	enabledDone := make(chan struct{})
	var enabledWG sync.WaitGroup
	enabledWG.Add(2)
	go func() { enabledWG.Wait(); close(enabledDone) }()

	// All three boot at once, whatever -parallel says: TCG is slow, and
	// on a busy machine three guests get more CPU than one.
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(r.name, func(t *testing.T) {
				if r.enabled {
					defer enabledWG.Done()
				}
				g := boot(t, nw.n, img, r.rootfs, r.name, r.mac, "")
				rep := &r.report
				checkService(t, g, rep)
				rep.addrs = waitSLAAC(t, g)
				if !r.enabled {
					journal := g.must("journalctl -b -o cat -u addrregd")
					if !strings.Contains(journal, "enable=false") {
						t.Errorf("off: addrregd did not start with --enable=false:\n%s", journal)
					}
					// Sending would begin once an RA with M or O is seen
					// (RFC 9686 §4.1): wait for that, and then for as long
					// as the enabled guests took to register, and more.
					until(t, serviceTimeout, "off: RA with O flag seen", func() (bool, string) {
						out, _ := g.run("journalctl -b -o cat -u addrregd")
						return strings.Contains(out, "RA with M or O flag seen"), out
					})
					<-enabledDone
					registeredMu.Lock()
					quiet := min(2*slowest+10*time.Second, 3*time.Minute)
					registeredMu.Unlock()
					time.Sleep(quiet)
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
				if nw.informsFrom(r.mac) == 0 {
					t.Errorf("%s: registered, but tcpdump saw no ADDR-REG-INFORM from %s: the capture cannot see the disabled guest's either", r.name, r.mac)
				}
				t.Logf("%s: control channel %v, addrregd active %v, %d addresses registered %v after QEMU start (QEMU used %v of CPU)",
					r.name, rep.ready.Round(100*time.Millisecond), rep.active.Round(100*time.Millisecond), len(rep.addrs),
					rep.registered.Round(100*time.Millisecond), g.cpuTime().Round(100*time.Millisecond))
			})
		}()
	}
	wg.Wait()

	a1, a2 := runs[0].report, runs[1].report
	if a1.duid == "" || a2.duid == "" {
		return // a boot failed; it said why
	}
	if a1.machineID == a2.machineID || a1.duid == a2.duid {
		t.Errorf("two boots of one image share machine ID or DUID: %s/%s and %s/%s", a1.machineID, a1.duid, a2.machineID, a2.duid)
	}
	t.Logf("two boots, two DUIDs: %s, %s; total %v", a1.duid, a2.duid, time.Since(start).Round(100*time.Millisecond))
}
