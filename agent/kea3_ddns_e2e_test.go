package agent_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/addrreg/addrreg/test/bindtest"
	"github.com/addrreg/addrreg/test/topo"
)

// ISC Kea 3.x with kea-dhcp-ddns as the registration server that puts
// hosts in DNS: the deployment guide's two files
// (doc/examples/kea-dhcp6-addrreg-ddns.json, kea-dhcp-ddns-addrreg.json)
// run against the real addrregd (--fqdn) and BIND 9. The tests record what
// Kea does with the name in a registration: which AAAA and PTR records it
// adds, and whether a deregistration (an ADDR-REG-INFORM with lifetimes 0)
// or the registration's expiry removes them. doc/deployment.md reports the
// run. Not in CI: they need Kea 3.x built from source (KEA3_BIN,
// KEA3_D2_BIN).

const (
	kea3DDNSConf = "../doc/examples/kea-dhcp6-addrreg-ddns.json"
	kea3D2Conf   = "../doc/examples/kea-dhcp-ddns-addrreg.json"
	// The DNS server kea3D2Conf sends its updates to, and its zones.
	kea3DNSAddr = "2001:db8:1::53"
	kea3Zone    = "example.net."
	kea3RevZone = "8.b.d.0.1.0.0.2.ip6.arpa."
)

// kea3D2Bin returns KEA3_D2_BIN or skips the test, saying why.
func kea3D2Bin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("KEA3_D2_BIN")
	if bin == "" {
		t.Skip("KEA3_D2_BIN not set: this test needs kea-dhcp-ddns of ISC Kea 3.x, built from source " +
			"with the kea-dhcp6 of KEA3_BIN; see doc/deployment.md")
	}
	return bin
}

// jget walks a decoded JSON value by map keys (string) and list indexes
// (int); nil when a step is missing.
func jget(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// The two example files are valid JSON (once their comment lines are
// dropped, as Kea does) and hold what the guide says they hold; they agree
// with each other (kea-dhcp6 sends where kea-dhcp-ddns listens, the
// qualifying suffix is a forward zone, the zones name a declared key).
// Needs no Kea; with KEA3_BIN and KEA3_D2_BIN set, Kea checks them too
// (`kea-dhcp6 -t`, `kea-dhcp-ddns -t`).
func TestKea3DDNSExamples(t *testing.T) {
	d6, err := readKeaJSON(kea3DDNSConf)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := readKeaJSON(kea3D2Conf)
	if err != nil {
		t.Fatal(err)
	}
	dhcp6, dd := jget(d6, "Dhcp6"), jget(d2, "DhcpDdns")
	for _, c := range []struct {
		what string
		got  any
		want any
	}{
		{"Dhcp6 allow-address-registration", jget(dhcp6, "allow-address-registration"), true},
		{"Dhcp6 option-data[0].name", jget(dhcp6, "option-data", 0, "name"), "addr-reg-enable"},
		{"Dhcp6 dhcp-ddns.enable-updates", jget(dhcp6, "dhcp-ddns", "enable-updates"), true},
		{"Dhcp6 ddns-send-updates", jget(dhcp6, "ddns-send-updates"), true},
		{"Dhcp6 ddns-override-client-update", jget(dhcp6, "ddns-override-client-update"), true},
		{"Dhcp6 ddns-qualifying-suffix", jget(dhcp6, "ddns-qualifying-suffix"), kea3Zone},
		{"Dhcp6 dhcp-ddns.server-ip = DhcpDdns ip-address", jget(dhcp6, "dhcp-ddns", "server-ip"), jget(dd, "ip-address")},
		{"Dhcp6 dhcp-ddns.server-port = DhcpDdns port", jget(dhcp6, "dhcp-ddns", "server-port"), jget(dd, "port")},
		{"DhcpDdns forward zone", jget(dd, "forward-ddns", "ddns-domains", 0, "name"), kea3Zone},
		{"DhcpDdns reverse zone", jget(dd, "reverse-ddns", "ddns-domains", 0, "name"), kea3RevZone},
		{"DhcpDdns forward DNS server", jget(dd, "forward-ddns", "ddns-domains", 0, "dns-servers", 0, "ip-address"), kea3DNSAddr},
		{"DhcpDdns reverse DNS server", jget(dd, "reverse-ddns", "ddns-domains", 0, "dns-servers", 0, "ip-address"), kea3DNSAddr},
		{"DhcpDdns forward key", jget(dd, "forward-ddns", "ddns-domains", 0, "key-name"), jget(dd, "tsig-keys", 0, "name")},
		{"DhcpDdns reverse key", jget(dd, "reverse-ddns", "ddns-domains", 0, "key-name"), jget(dd, "tsig-keys", 0, "name")},
	} {
		if c.got == nil || c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if jget(dd, "tsig-keys", 0, "secret-file") == nil {
		t.Errorf("DhcpDdns tsig-keys[0] has no secret-file")
	}

	dir := t.TempDir()
	env := []string{"KEA_DHCP_DATA_DIR=" + dir, "KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir}
	if bin := os.Getenv("KEA3_BIN"); bin != "" {
		// kea-dhcp6 -t opens no socket but checks that eth0 holds the
		// address the file names: in a namespace that has both.
		t.Run("kea-dhcp6 -t", func(t *testing.T) {
			topo.RequireRoot(t)
			nd := topo.New(t).Node("server")
			nd.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
			out := nd.MustExec(t, append(append([]string{"env"}, env...), bin, "-t", absPath(t, kea3DDNSConf))...)
			t.Logf("kea-dhcp6 -t %s: ok\n%s", kea3DDNSConf, out)
		})
	}
	if bin := os.Getenv("KEA3_D2_BIN"); bin != "" {
		// The file as it is, but for where the key's secret is.
		secret := filepath.Join(dir, "ddns-key.secret")
		if err := os.WriteFile(secret, []byte("ZGRucy1rZXktc2VjcmV0LWZvci10aGUtdGVzdC0xMjM0NTY3OA=="), 0o600); err != nil {
			t.Fatal(err)
		}
		conf := keaConfWith(t, kea3D2Conf, "DhcpDdns", func(m map[string]any) {
			jget(m, "tsig-keys", 0).(map[string]any)["secret-file"] = secret
		})
		keaCheck(t, env, bin, conf)
	}
}

// keaCheck runs `bin -t conf` (a Kea daemon's configuration check).
func keaCheck(t *testing.T, env []string, bin, conf string) {
	t.Helper()
	cmd := exec.Command(bin, "-t", conf)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("%s -t %s: %v\n%s", filepath.Base(bin), conf, err, out)
		return
	}
	t.Logf("%s -t %s: ok", filepath.Base(bin), filepath.Base(conf))
}

var tsigSecretRE = regexp.MustCompile(`secret "([^"]+)"`)

// startKeaDNS gives the server node the guide's addresses (Kea's and the
// DNS server's) and starts BIND 9 with the guide's zones and kea-dhcp-ddns
// sending to it.
func startKeaDNS(t *testing.T, nd *topo.Node) (*bindtest.Server, *topo.Proc) {
	t.Helper()
	nd.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	nd.MustExec(t, "ip", "-6", "addr", "add", kea3DNSAddr+"/64", "dev", "eth0", "nodad")
	dns := bindtest.Start(t, nd, bindtest.Zones{Forward: []string{kea3Zone}, Reverse: []string{kea3RevZone}})
	return dns, startKeaD2(t, nd, dns)
}

// startKeaD2 runs kea-dhcp-ddns in nd with the guide's file, its key
// replaced by the test DNS server's (name and secret).
func startKeaD2(t *testing.T, nd *topo.Node, dns *bindtest.Server) *topo.Proc {
	t.Helper()
	bin, dir := kea3D2Bin(t), t.TempDir()
	key, err := os.ReadFile(dns.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	m := tsigSecretRE.FindSubmatch(key)
	if m == nil {
		t.Fatalf("no secret in %s:\n%s", dns.KeyFile, key)
	}
	secret := filepath.Join(dir, "tsig.secret")
	if err := os.WriteFile(secret, m[1], 0o600); err != nil {
		t.Fatal(err)
	}
	conf := keaConfWith(t, kea3D2Conf, "DhcpDdns", func(c map[string]any) {
		k := jget(c, "tsig-keys", 0).(map[string]any)
		k["name"], k["secret-file"] = bindtest.KeyName, secret
		for _, dir := range []string{"forward-ddns", "reverse-ddns"} {
			jget(c, dir, "ddns-domains", 0).(map[string]any)["key-name"] = bindtest.KeyName
		}
	})
	env := []string{"env", "KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir}
	nd.MustExec(t, append(env, bin, "-t", conf)...)
	p := nd.Start(t, "kea-dhcp-ddns", append(env, bin, "-c", conf)...)
	p.WaitOutput(t, "DHCP_DDNS_STARTED", 20*time.Second)
	return p
}

// leaseLines returns every line of Kea's memfile lease file for addr (it
// appends one for every change).
func leaseLines(t *testing.T, path string, addr netip.Addr) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, addr.String()+",") {
			out = append(out, l)
		}
	}
	return out
}

// TestE2EKea3DDNS: addrregd --fqdn h1.example.net registers its stable and
// temporary addresses with Kea 3.x, whose kea-dhcp-ddns updates BIND 9.
// Then a static address is added and removed (a deregistration), and a
// short-lived one added and left to expire with addrregd killed. dig from
// the host's namespace, at every step.
func TestE2EKea3DDNS(t *testing.T) {
	kea3Bin(t)
	kea3D2Bin(t)
	bindtest.Require(t)
	l := newLab(t, labOpts{tempaddr: true, noServer: true})
	const name = "h1." + kea3Zone
	_, d2 := startKeaDNS(t, l.server)
	// The guide's file, with Kea's DNS-related debug messages logged.
	var env []string
	conf := keaConfWith(t, kea3DDNSConf, "Dhcp6", func(c map[string]any) {
		env = noLFC(t, c)
		lg := jget(c, "loggers").([]any)
		for _, n := range []string{"kea-dhcp6.ddns", "kea-dhcp6.dhcpsrv", "kea-dhcp6.alloc-engine"} {
			lg = append(lg, map[string]any{"name": n, "severity": "DEBUG", "debuglevel": 55,
				"output-options": []any{map[string]any{"output": "stdout"}}})
		}
		c["loggers"] = lg
	})
	kea, leases := startKea3Conf(t, l.server, conf, env...)

	dig := func(args ...string) []string {
		t.Helper()
		got := bindtest.Dig(t, l.host, kea3DNSAddr, args...)
		slices.Sort(got)
		return got
	}
	// waitDig polls dig until cond holds; it reports whether it did within
	// timeout and how long it took, and logs the last answer.
	waitDig := func(what string, timeout time.Duration, cond func([]string) bool, args ...string) (bool, time.Duration) {
		t.Helper()
		start := time.Now()
		for {
			got := dig(args...)
			if cond(got) {
				t.Logf("%s: dig %s = %q after %v", what, strings.Join(args, " "), got, time.Since(start).Round(time.Millisecond))
				return true, time.Since(start)
			}
			if time.Since(start) > timeout {
				t.Logf("%s: NOT within %v: dig %s = %q", what, timeout, strings.Join(args, " "), got)
				return false, time.Since(start)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	fullDig := func(args ...string) {
		t.Helper()
		out, _ := l.host.Exec(append([]string{"dig", "@" + kea3DNSAddr, "+noall", "+answer"}, args...)...)
		t.Logf("dig @%s +noall +answer %s:\n%s", kea3DNSAddr, strings.Join(args, " "), out)
	}
	is := func(w ...string) func([]string) bool {
		return func(got []string) bool { return slices.Equal(got, w) }
	}
	has := func(a string) func([]string) bool { return func(got []string) bool { return slices.Contains(got, a) } }
	lacks := func(a string) func([]string) bool { return func(got []string) bool { return !slices.Contains(got, a) } }
	nonEmpty := func(got []string) bool { return len(got) > 0 }

	// 1. Registration: the host's stable and temporary addresses.
	var want []netip.Addr
	for _, a := range l.globals(t, 2) {
		want = append(want, addrOf(a))
	}
	agent := l.startAgent(t, "--fqdn", strings.TrimSuffix(name, "."))
	for _, a := range want {
		line, f := waitRegisteredLease(t, leases, a, 30*time.Second)
		t.Logf("Kea lease: %s", line)
		if f["hostname"] != name || f["fqdn_fwd"] != "1" || f["fqdn_rev"] != "1" {
			t.Errorf("lease of %s: hostname %q fqdn_fwd %s fqdn_rev %s; want %s, 1, 1", a, f["hostname"], f["fqdn_fwd"], f["fqdn_rev"], name)
		}
	}
	for _, a := range want {
		if ok, _ := waitDig("PTR of "+a.String(), 20*time.Second, is(name), "-x", a.String()); !ok {
			t.Errorf("no PTR %s for registered %s", name, a)
		}
	}
	waitDig("AAAA of "+name, 10*time.Second, nonEmpty, "AAAA", name)
	aaaa := dig("AAAA", name)
	fullDig("AAAA", name)
	fullDig("DHCID", name)
	for _, a := range want {
		fullDig("-x", a.String())
	}
	var wantS []string
	for _, a := range want {
		wantS = append(wantS, a.String())
	}
	slices.Sort(wantS)
	t.Logf("registered %q; AAAA %s: %q", wantS, name, aaaa)
	for _, a := range aaaa {
		if !slices.Contains(wantS, a) {
			t.Errorf("AAAA %s %s: not a registered address", name, a)
		}
	}
	// Kea sends one name change request per lease; each replaces the
	// name's AAAA set (RFC 4703 §5.3.2 as kea-dhcp-ddns does it): one left.
	if len(aaaa) != 1 {
		t.Errorf("AAAA %s = %q: want exactly one of %q (Kea replaces the set with each address; update doc/deployment.md)", name, aaaa, wantS)
	}

	// 2. Deregistration: a static address added, registered, removed.
	static := netip.MustParseAddr("2001:db8:1::99")
	l.host.MustExec(t, "ip", "-6", "addr", "add", static.String()+"/64", "dev", "eth0", "nodad")
	waitRegisteredLease(t, leases, static, 20*time.Second)
	waitDig("PTR of the static address", 20*time.Second, is(name), "-x", static.String())
	waitDig("AAAA of the static address", 10*time.Second, has(static.String()), "AAAA", name)
	fullDig("AAAA", name)
	l.host.MustExec(t, "ip", "-6", "addr", "del", static.String()+"/64", "dev", "eth0")
	agent.WaitOutput(t, "deregistration sent", 10*time.Second) // the reply goes to the removed address
	gone := time.Now()
	okA, tookA := waitDig("AAAA of the deregistered address gone", 40*time.Second, lacks(static.String()), "AAAA", name)
	okP, tookP := waitDig("PTR of the deregistered address gone", 40*time.Second, is(), "-x", static.String())
	t.Logf("deregistered %s: AAAA gone %v (%v), PTR gone %v (%v) after the zero-lifetime INFORM was answered", static, okA, tookA.Round(time.Millisecond), okP, tookP.Round(time.Millisecond))
	t.Logf("Kea lease lines for %s:\n%s", static, strings.Join(leaseLines(t, leases, static), "\n"))
	if !okA || !okP {
		t.Errorf("deregistration of %s did not remove its records within %v", static, time.Since(gone).Round(time.Second))
	}
	fullDig("AAAA", name)
	// Removing the name's one AAAA leaves it none (and no DHCID), though
	// the host's other addresses are still registered: nothing re-adds
	// them until their name changes.
	after := dig("AAAA", name)
	t.Logf("after the deregistration: AAAA %s = %q (the host's other addresses are still registered: %q)", name, after, wantS)
	if len(after) != 0 || len(dig("DHCID", name)) != 0 {
		t.Errorf("after the deregistration: AAAA %s = %q, DHCID %q; Kea 3.2.0 left none (update doc/deployment.md)", name, after, dig("DHCID", name))
	}
	for _, a := range wantS {
		if got := dig("-x", a); !slices.Equal(got, []string{name}) {
			t.Errorf("PTR of still registered %s = %q, want %s", a, got, name)
		}
	}

	// 3. Expiry: a short-lived address registered, then addrregd killed
	// (no deregistration): the lease runs out.
	short := netip.MustParseAddr("2001:db8:1::88")
	l.host.MustExec(t, "ip", "-6", "addr", "add", short.String()+"/64", "dev", "eth0", "nodad", "valid_lft", "10", "preferred_lft", "10")
	waitRegisteredLease(t, leases, short, 8*time.Second)
	waitDig("PTR of the short-lived address", 8*time.Second, is(name), "-x", short.String())
	waitDig("AAAA of the short-lived address", 5*time.Second, has(short.String()), "AAAA", name)
	if err := agent.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = agent.Wait(t, 5*time.Second)
	killed := time.Now()
	okA, tookA = waitDig("AAAA of the expired registration gone", 45*time.Second, lacks(short.String()), "AAAA", name)
	okP, tookP = waitDig("PTR of the expired registration gone", 45*time.Second, is(), "-x", short.String())
	t.Logf("expired %s: AAAA gone %v (%v), PTR gone %v (%v) after addrregd was killed", short, okA, tookA.Round(time.Millisecond), okP, tookP.Round(time.Millisecond))
	t.Logf("Kea lease lines for %s:\n%s", short, strings.Join(leaseLines(t, leases, short), "\n"))
	if !okA || !okP {
		t.Errorf("expiry of %s did not remove its records within %v", short, time.Since(killed).Round(time.Second))
	}
	fullDig("AAAA", name)
	fullDig("DHCID", name)
	for _, a := range want {
		fullDig("-x", a.String())
	}

	t.Logf("kea-dhcp-ddns log:\n%s", d2.Output())
	t.Logf("kea-dhcp6 DNS log lines:\n%s", grepLines(kea.Output(), "DDNS", "NCR", "RECLAIM"))
	checkKea3Log(t, kea)
	if n := logLines(d2.Output(), "REJECTED"); n > 0 {
		t.Logf("kea-dhcp-ddns: %d updates rejected", n)
	}
}

// grepLines returns the lines of out that contain any of subs.
func grepLines(out string, subs ...string) string {
	var b strings.Builder
	for _, line := range strings.Split(out, "\n") {
		for _, s := range subs {
			if strings.Contains(line, s) {
				fmt.Fprintln(&b, line)
				break
			}
		}
	}
	return b.String()
}

// noLFC turns the lease file cleanup off (lfc-interval 0) unless
// KEA_LFC_EXECUTABLE names kea-lfc, and returns the environment for Kea:
// Kea 3.2 refuses a memfile database when it cannot find kea-lfc, even with
// lfc-interval 0, so it is then pointed at /bin/true, which it never runs.
func noLFC(t *testing.T, dhcp6 map[string]any) []string {
	t.Helper()
	if os.Getenv("KEA_LFC_EXECUTABLE") != "" {
		return nil
	}
	t.Log("KEA_LFC_EXECUTABLE not set: lfc-interval 0, KEA_LFC_EXECUTABLE=/bin/true")
	jget(dhcp6, "lease-database").(map[string]any)["lfc-interval"] = 0
	return []string{"KEA_LFC_EXECUTABLE=/bin/true"}
}

// fqdnFlags returns the flags octet of the Client FQDN option in the first
// ADDR-REG-INFORM the sniffer saw for addr.
func fqdnFlags(t *testing.T, l *lab, addr netip.Addr) uint8 {
	t.Helper()
	ps := l.sniff.WaitInforms(t, addr, 1, 10*time.Second)
	o, ok := ps[0].Msg.Options.GetOne(dhcpv6.OptionFQDN).(*dhcpv6.OptFQDN)
	if !ok {
		t.Fatalf("ADDR-REG-INFORM for %s has no Client FQDN option: %v", addr, ps[0].Msg)
	}
	return o.Flags
}

// TestE2EKea3DDNSClientFlags: the guide's file without
// ddns-override-client-update, i.e. Kea's default, which follows the
// Client FQDN's S flag (RFC 4704): S=0 gets the PTR only, S=1 the AAAA
// too. addrregd sends a single label, which Kea completes with
// ddns-qualifying-suffix.
func TestE2EKea3DDNSClientFlags(t *testing.T) {
	kea3Bin(t)
	kea3D2Bin(t)
	bindtest.Require(t)
	l := newLab(t, labOpts{noServer: true})
	const name = "h2." + kea3Zone
	dns, d2 := startKeaDNS(t, l.server)
	var env []string
	conf := keaConfWith(t, kea3DDNSConf, "Dhcp6", func(c map[string]any) {
		env = noLFC(t, c)
		delete(c, "ddns-override-client-update")
	})
	kea, leases := startKea3Conf(t, l.server, conf, env...)
	ip := addrOf(l.globals(t, 1)[0])
	l.startAgent(t, "--fqdn", "h2")
	line, f := waitRegisteredLease(t, leases, ip, 30*time.Second)
	t.Logf("Kea lease: %s", line)
	flags := fqdnFlags(t, l, ip)
	s := flags&0x01 != 0
	t.Logf("addrregd's Client FQDN flags: %#02x (S=%v)", flags, s)
	if f["hostname"] != name {
		t.Errorf("lease hostname %q, want %q (the label completed with ddns-qualifying-suffix)", f["hostname"], name)
	}
	if want := map[bool]string{false: "0", true: "1"}[s]; f["fqdn_fwd"] != want || f["fqdn_rev"] != "1" {
		t.Errorf("lease fqdn_fwd %s fqdn_rev %s, want %s and 1 (S=%v)", f["fqdn_fwd"], f["fqdn_rev"], want, s)
	}
	ptr := dns.WaitFor(t, 20*time.Second, func(got []string) bool { return len(got) > 0 }, "-x", ip.String())
	t.Logf("PTR of %s: %q", ip, ptr)
	if !slices.Equal(ptr, []string{name}) {
		t.Errorf("PTR of %s = %q, want %s", ip, ptr, name)
	}
	// The forward update, when there is one, goes first (kea-dhcp-ddns does
	// forward then reverse): with the PTR in place it is done.
	aaaa := dns.Lookup(t, "AAAA", name)
	t.Logf("AAAA %s: %q", name, aaaa)
	if s != slices.Equal(aaaa, []string{ip.String()}) || (!s && len(aaaa) != 0) {
		t.Errorf("AAAA %s = %q with S=%v; want %s", name, aaaa, s, map[bool]string{false: "none", true: ip.String()}[s])
	}
	t.Logf("kea-dhcp-ddns log:\n%s", d2.Output())
	checkKea3Log(t, kea)
}
