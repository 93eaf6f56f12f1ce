package agent_test

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/bindtest"
	"github.com/addrreg/addrreg/test/topo"
)

// TestE2EDNS: the real addrregd with --fqdn registers its stable,
// temporary and ULA addresses with the reference server, which puts them
// in BIND 9 (in the server's namespace) as AAAA records under the name
// and as PTRs, within seconds; dig from the host's namespace sees them. A
// renamed host's records follow (addrregd restarted with another
// --fqdn); a removed address's records go (deregistration); an expired
// binding's records go (addrregd killed, the binding runs out).
func TestE2EDNS(t *testing.T) {
	topo.RequireRoot(t)
	bindtest.Require(t)
	l := newLab(t, labOpts{tempaddr: true, noServer: true, ra: topo.RA{Other: true, Prefixes: []topo.PIO{
		{Prefix: prefix1, Valid: 600 * time.Second, Preferred: 300 * time.Second},
		{Prefix: ula1, Valid: 900 * time.Second, Preferred: 450 * time.Second},
	}}})
	const (
		zone    = "example.net."
		rev1    = "8.b.d.0.1.0.0.2.ip6.arpa." // 2001:db8::/32
		revULA  = "d.f.ip6.arpa."             // fd00::/8
		name1   = "h1.example.net."
		name2   = "h2.example.net."
		metrics = "[::1]:9647"
	)
	dns := bindtest.Start(t, l.server, bindtest.Zones{Forward: []string{zone}, Reverse: []string{rev1, revULA}})
	l.startRefserver(t, "--ddns-server", "[::1]:53", "--ddns-forward-zone", zone,
		"--ddns-reverse-zone", rev1, "--ddns-reverse-zone", revULA, "--ddns-tsig-key-file", dns.KeyFile,
		"--metrics-listen", metrics)

	var want []string // the host's stable and temporary addresses in both prefixes
	for _, a := range l.globals(t, 4) {
		want = append(want, addrOf(a).String())
	}
	slices.Sort(want)
	// dig from the host's namespace, at the server's address.
	dig := func(args ...string) []string {
		t.Helper()
		got := bindtest.Dig(t, l.host, serverIP, args...)
		slices.Sort(got)
		return got
	}
	waitDig := func(what string, timeout time.Duration, cond func([]string) bool, args ...string) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			got := dig(args...)
			if cond(got) {
				return time.Since(start)
			}
			if time.Since(start) > timeout {
				t.Fatalf("%s: dig %s = %q after %v", what, strings.Join(args, " "), got, timeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	is := func(w ...string) func([]string) bool {
		return func(got []string) bool { return slices.Equal(got, w) }
	}
	has := func(a string) func([]string) bool { return func(got []string) bool { return slices.Contains(got, a) } }
	lacks := func(a string) func([]string) bool { return func(got []string) bool { return !slices.Contains(got, a) } }

	agent := l.startAgent(t, "--fqdn", strings.TrimSuffix(name1, "."))
	took := waitDig("every address under the name", 20*time.Second, is(want...), "AAAA", name1)
	for _, a := range want {
		waitDig("PTR of "+a, 5*time.Second, is(name1), "-x", a)
	}
	t.Logf("AAAA and PTR of %d addresses in DNS %v after addrregd started", len(want), took.Round(time.Millisecond))
	out, _ := l.host.Exec("dig", "@"+serverIP, "AAAA", name1)
	t.Logf("dig @%s AAAA %s:\n%s", serverIP, name1, out)
	out, _ = l.host.Exec("dig", "@"+serverIP, "-x", want[0])
	t.Logf("dig @%s -x %s:\n%s", serverIP, want[0], out)

	// A static address is added, registered, then removed: deregistered.
	static := "2001:db8:1::99"
	l.host.MustExec(t, "ip", "-6", "addr", "add", static+"/64", "dev", "eth0", "nodad")
	took = waitDig("the static address added", 10*time.Second, has(static), "AAAA", name1)
	waitDig("the static address's PTR", 5*time.Second, is(name1), "-x", static)
	t.Logf("a new address in DNS %v after it was added", took.Round(time.Millisecond))
	l.host.MustExec(t, "ip", "-6", "addr", "del", static+"/64", "dev", "eth0")
	took = waitDig("the removed address gone", 10*time.Second, lacks(static), "AAAA", name1)
	waitDig("the removed address's PTR gone", 5*time.Second, is(), "-x", static)
	t.Logf("a removed address out of DNS %v after it was removed", took.Round(time.Millisecond))
	if got := dig("AAAA", name1); !slices.Equal(got, want) {
		t.Errorf("after the removal: AAAA %q, want %q", got, want)
	}

	// Renamed: addrregd restarted with another name registers every
	// address again (a refresh with a new FQDN): the records move.
	if err := agent.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = agent.Wait(t, 5*time.Second)
	agent = l.startAgent(t, "--fqdn", strings.TrimSuffix(name2, "."))
	took = waitDig("every address under the new name", 20*time.Second, is(want...), "AAAA", name2)
	waitDig("nothing left under the old name", 5*time.Second, is(), "AAAA", name1)
	waitDig("the old name's DHCID gone", 5*time.Second, is(), "DHCID", name1)
	for _, a := range want {
		waitDig("PTR of "+a+" to the new name", 5*time.Second, is(name2), "-x", a)
	}
	t.Logf("renamed: records under the new name %v after addrregd restarted", took.Round(time.Millisecond))

	// Expiry: a short-lived address is registered, then addrregd is killed
	// (no deregistration): the binding runs out and its records go.
	short := "2001:db8:1::88"
	l.host.MustExec(t, "ip", "-6", "addr", "add", short+"/64", "dev", "eth0", "nodad", "valid_lft", "8", "preferred_lft", "8")
	waitDig("the short-lived address added", 10*time.Second, has(short), "AAAA", name2)
	if err := agent.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = agent.Wait(t, 5*time.Second)
	took = waitDig("the expired binding's AAAA gone", 20*time.Second, lacks(short), "AAAA", name2)
	waitDig("the expired binding's PTR gone", 5*time.Second, is(), "-x", short)
	t.Logf("an expired binding out of DNS %v after addrregd was killed", took.Round(time.Millisecond))
	if got := dig("AAAA", name2); !slices.Equal(got, want) {
		t.Errorf("after the expiry: AAAA %q, want %q (the other bindings live on)", got, want)
	}

	m := l.server.Scrape(t, metrics)
	topo.CheckMetrics(t, m)
	for _, s := range []string{
		`addrreg_refserver_ddns_updates_total{op="add",record="AAAA",result="NOERROR"}`,
		`addrreg_refserver_ddns_updates_total{op="add",record="PTR",result="NOERROR"}`,
		`addrreg_refserver_ddns_updates_total{op="remove",record="AAAA",result="NOERROR"}`,
		`addrreg_refserver_ddns_updates_total{op="remove",record="PTR",result="NOERROR"}`,
	} {
		if v, ok := topo.MetricValue(m, s); !ok || v == 0 {
			t.Errorf("metric %s = %v, %v; want > 0", s, v, ok)
		}
	}
	if v, ok := topo.MetricValue(m, "addrreg_refserver_ddns_pending"); !ok || v != 0 {
		t.Errorf("addrreg_refserver_ddns_pending = %v, %v; want 0", v, ok)
	}
	if v, _ := topo.MetricValue(m, `addrreg_refserver_ddns_updates_total{op="add",record="AAAA",result="no_answer"}`); v != 0 {
		t.Errorf("%v AAAA adds without an answer, want 0", v)
	}
}
