package agent_test

import (
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/topo"
)

// ISC Kea 3.x as the registration server, running the deployment guide's
// configuration file as it is (doc/examples/kea-dhcp6-addrreg.json), with
// the real addrregd as the host: on the server's own link and through the
// guide's dnsmasq relay. Debian ships Kea 2.2, which cannot accept
// registrations (kea_e2e_test.go), so these tests run only against a Kea
// 3.1.4 or later that KEA3_BIN names (built from ISC's source; not in CI).

const (
	kea3Conf         = "../doc/examples/kea-dhcp6-addrreg.json"
	dnsmasqRelayConf = "../doc/examples/dnsmasq-relay.conf"
)

// kea3Bin returns KEA3_BIN or skips the test, saying why.
func kea3Bin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("KEA3_BIN")
	if bin == "" {
		t.Skip("KEA3_BIN not set: this test needs a kea-dhcp6 of ISC Kea 3.1.4 or later, built from source " +
			"(Debian has 2.2, without RFC 9686); see doc/deployment.md")
	}
	return bin
}

func absPath(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(rel)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startKea3 checks the guide's configuration with `kea-dhcp6 -t` and runs
// it in nd. Kea 3.x keeps its lease file, pid and lock files only in the
// directories it was built for unless the environment names others: here
// a temporary directory. It returns the memfile lease file's path.
func startKea3(t *testing.T, nd *topo.Node) (*topo.Proc, string) {
	t.Helper()
	return startKea3Conf(t, nd, absPath(t, kea3Conf))
}

// startKea3Conf is startKea3 with another configuration file and more
// environment (NAME=value).
func startKea3Conf(t *testing.T, nd *topo.Node, conf string, extraEnv ...string) (*topo.Proc, string) {
	t.Helper()
	bin, dir := kea3Bin(t), t.TempDir()
	env := append([]string{"env", "KEA_DHCP_DATA_DIR=" + dir, "KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir}, extraEnv...)
	out := nd.MustExec(t, append(env, bin, "-t", conf)...)
	t.Logf("kea-dhcp6 %s -t %s:\n%s", strings.TrimSpace(nd.MustExec(t, bin, "-v")), conf, out)
	nd.WaitAddrs(t, "eth0", topo.LinkLocal, 10*time.Second)
	p := nd.Start(t, "kea-dhcp6", append(env, bin, "-c", conf)...)
	p.WaitOutput(t, "DHCP6_STARTED", 20*time.Second)
	return p, filepath.Join(dir, "kea-leases6.csv")
}

// waitRegisteredLease polls Kea's memfile lease file until it holds a lease
// for addr in state 4 (registered) and returns that line and its fields by
// column name.
func waitRegisteredLease(t *testing.T, path string, addr netip.Addr, timeout time.Duration) (string, map[string]string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			last = string(b)
			if line, f := registeredLease(last, addr); f != nil {
				return line, f
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lease for %s in state 4 in %s within %v; file (%v):\n%s", addr, path, timeout, err, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// registeredLease finds the last line for addr in a lease6 CSV (memfile
// appends every change) and returns it if its state is 4.
func registeredLease(file string, addr netip.Addr) (string, map[string]string) {
	lines := strings.Split(strings.TrimSpace(file), "\n")
	if len(lines) < 2 {
		return "", nil
	}
	header, err := csv.NewReader(strings.NewReader(lines[0])).Read()
	if err != nil {
		return "", nil
	}
	for _, line := range slices.Backward(lines[1:]) {
		rec, err := csv.NewReader(strings.NewReader(line)).Read()
		if err != nil || len(rec) != len(header) {
			continue
		}
		f := map[string]string{}
		for i, h := range header {
			f[h] = rec[i]
		}
		if a, err := netip.ParseAddr(f["address"]); err != nil || a != addr {
			continue
		}
		if f["state"] != "4" {
			return "", nil
		}
		return line, f
	}
	return "", nil
}

// keaDUID is testDUID as Kea writes DUIDs: hex bytes joined by colons.
func keaDUID(t *testing.T) string {
	b, err := hex.DecodeString(testDUID)
	if err != nil {
		t.Fatal(err)
	}
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, ":")
}

// checkKea3Lease asserts what an operator reads in Kea's lease file for a
// registration: the host's DUID, the lease type and the subnet.
func checkKea3Lease(t *testing.T, line string, f map[string]string, subnetID string) {
	t.Helper()
	t.Logf("Kea registered lease (state 4): %s", line)
	if f["duid"] != keaDUID(t) {
		t.Errorf("lease DUID %s, want the agent's %s", f["duid"], keaDUID(t))
	}
	if f["lease_type"] != "0" {
		t.Errorf("lease_type %s, want 0 (IA_NA: Kea records registrations as addresses)", f["lease_type"])
	}
	if f["subnet_id"] != subnetID {
		t.Errorf("subnet_id %s, want %s", f["subnet_id"], subnetID)
	}
	if v := f["valid_lifetime"]; v == "" || v == "0" {
		t.Errorf("valid_lifetime %q: a live registration has one", v)
	}
}

// checkKea3Log: Kea logs a registration it refuses, at INFO, as
// DHCP6_ADDR_REG_INFORM_FAIL (an accepted one only at DEBUG).
func checkKea3Log(t *testing.T, kea *topo.Proc) {
	t.Helper()
	if n := logLines(kea.Output(), "DHCP6_ADDR_REG_INFORM_FAIL"); n > 0 {
		t.Errorf("Kea refused %d registrations:\n%s", n, kea.Output())
	}
}

// The host shares the server's link (subnet 1 of the guide's file).
func TestE2EKea3Direct(t *testing.T) {
	kea3Bin(t)
	l := newLab(t, labOpts{noServer: true})
	// The address the guide's Kea listens on for relays (it must exist).
	l.server.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	kea, leases := startKea3(t, l.server)
	ip := addrOf(l.globals(t, 1)[0])
	p := l.startAgent(t)
	p.WaitOutput(t, "registration supported on link", 30*time.Second)
	line, f := waitRegisteredLease(t, leases, ip, 30*time.Second)
	checkKea3Lease(t, line, f, "1")
	p.WaitOutput(t, "msg=registered", 10*time.Second)
	if n := logLines(p.Output(), "msg=registered", "addr="+ip.String()+" "); n == 0 {
		t.Errorf("agent did not log the registration of %s", ip)
	}
	checkKea3Log(t, kea)
}

// The host is behind the guide's dnsmasq relay (subnet 2, selected by the
// relay's link-address): the relayed registration is accepted (Kea 3.1.4+
// compares the registered address with the relay's peer-address).
func TestE2EKea3Relayed(t *testing.T) {
	kea3Bin(t)
	topo.RequireRoot(t)
	n := topo.New(t)
	srv, relay, host := n.Node("server"), n.Node("relay"), n.Node("host")
	lan2 := n.Segment("lan2")
	lan2.Attach(relay, "eth1")
	lan2.Attach(host, "eth1")
	host.MustExec(t, "ip", "link", "set", "eth0", "down") // the host is only on lan2
	srv.Sysctl(t, "net.ipv6.conf.eth0.accept_ra", "0")
	srv.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	srv.MustExec(t, "ip", "-6", "route", "add", "2001:db8:2::/64", "via", "2001:db8:1::2")
	relay.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad")
	relay.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:2::1/64", "dev", "eth1", "nodad")
	relay.StartRadvd(t, topo.RA{Interface: "eth1", Other: true,
		Prefixes: []topo.PIO{{Prefix: "2001:db8:2::/64", Valid: 600 * time.Second, Preferred: 300 * time.Second}}})
	relay.WaitAddrs(t, "eth1", topo.LinkLocal, 10*time.Second)
	rp := relay.Start(t, "dnsmasq", "dnsmasq", "-d", "-C", absPath(t, dnsmasqRelayConf), "--log-debug", "--log-dhcp",
		"--pid-file="+filepath.Join(t.TempDir(), "dnsmasq.pid"))
	rp.WaitOutput(t, "DHCP relay", 10*time.Second)
	kea, leases := startKea3(t, srv)

	addrs := host.WaitAddrs(t, "eth1", topo.Global, 20*time.Second)
	ip := addrOf(addrs[0])
	p := host.Start(t, "addrregd", topo.BuildBinary(t, "./cmd/addrregd"), "-i", "eth1", "--duid", testDUID, "--log-level", "debug")
	p.WaitOutput(t, "registration supported on link", 30*time.Second)
	line, f := waitRegisteredLease(t, leases, ip, 30*time.Second)
	checkKea3Lease(t, line, f, "2")
	p.WaitOutput(t, "msg=registered", 10*time.Second)
	checkKea3Log(t, kea)
	if !strings.Contains(rp.Output(), "2001:db8:2::1") {
		t.Errorf("dnsmasq log does not show the relay:\n%s", rp.Output())
	}
}

// Kea's lease-query hook does not return registered (state 4) leases: a
// leasequery by address for an address Kea holds in state 4 is answered
// without the client. The hook library is a separate build target
// (libdhcp_lease_query.so); KEA3_LEASEQUERY_LIB names it. The guide's
// configuration is run with the hook added.
func TestE2EKea3LeasequeryMissesRegistrations(t *testing.T) {
	kea3Bin(t)
	lib := os.Getenv("KEA3_LEASEQUERY_LIB")
	if lib == "" {
		t.Skip("KEA3_LEASEQUERY_LIB not set: needs Kea 3.x's libdhcp_lease_query.so")
	}
	conf := kea3ConfWith(t, func(d map[string]any) {
		d["hooks-libraries"] = []any{map[string]any{
			"library":    filepath.Base(lib),
			"parameters": map[string]any{"requesters": []string{prefix1}},
		}}
	})
	l := newLab(t, labOpts{noServer: true})
	l.server.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	kea, leases := startKea3Conf(t, l.server, conf, "KEA_HOOKS_PATH="+filepath.Dir(lib))
	ip := addrOf(l.globals(t, 1)[0])
	p := l.startAgent(t)
	p.WaitOutput(t, "registration supported on link", 30*time.Second)
	line, _ := waitRegisteredLease(t, leases, ip, 30*time.Second)
	t.Logf("registered lease: %s", line)
	// The host asks, as a requestor inside "requesters".
	out, err := l.host.Exec(topo.BuildBinary(t, "./cmd/addrreg-refserver"), "query", "--address", ip.String(), "--server", "2001:db8:1::1", "--json")
	t.Logf("leasequery by address %s to Kea: %s", ip, strings.TrimSpace(out))
	var r struct {
		Status  *int              `json:"status"`
		Clients []json.RawMessage `json:"clients"`
	}
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil || r.Status == nil {
		t.Fatalf("Kea did not answer the leasequery (%v, %v)\nKea log:\n%s", err, jerr, kea.Output())
	}
	if *r.Status != 0 || len(r.Clients) != 0 {
		t.Errorf("Kea's leasequery for registered %s: status %d, %d clients; want success and no client (update doc/deployment.md)", ip, *r.Status, len(r.Clients))
	}
}

// kea3ConfWith writes the guide's configuration with edit applied to its
// Dhcp6 map (comment lines dropped) into a temporary file.
func kea3ConfWith(t *testing.T, edit func(map[string]any)) string {
	t.Helper()
	return keaConfWith(t, kea3Conf, "Dhcp6", edit)
}

// keaConfWith writes the Kea configuration file conf with edit applied to
// its top-level map named top (comment lines dropped) into a temporary file.
func keaConfWith(t *testing.T, conf, top string, edit func(map[string]any)) string {
	t.Helper()
	c, err := readKeaJSON(conf)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := c[top].(map[string]any)
	if !ok {
		t.Fatalf("%s: no %q map", conf, top)
	}
	edit(m)
	out, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), filepath.Base(conf))
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// readKeaJSON reads a Kea configuration file as the examples write them:
// JSON with whole-line "//" comments, which Kea accepts and encoding/json
// does not.
func readKeaJSON(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read Kea configuration: %w", err)
	}
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "//") {
			keep = append(keep, line)
		}
	}
	var c map[string]any
	if err := json.Unmarshal([]byte(strings.Join(keep, "\n")), &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
