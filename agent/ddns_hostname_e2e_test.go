package agent_test

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/bindtest"
	"github.com/addrreg/addrreg/test/topo"
)

// TestE2EDNSHostName: addrregd sends the host's name by default; the
// reference server qualifies the single label in its forward zone and
// puts the host's addresses in BIND 9 under it. Renamed at run time
// (sethostname(2) in addrregd's own UTS namespace), the records move to
// the new name within seconds; renamed to localhost (no name sent), they
// go.
func TestE2EDNSHostName(t *testing.T) {
	topo.RequireRoot(t)
	bindtest.Require(t)
	bin := topo.BuildBinary(t, "./cmd/addrregd")
	if out, _ := exec.Command(bin, "--help").CombinedOutput(); !strings.Contains(string(out), "--send-hostname") {
		t.Skip("this addrregd does not send the host name (branch fqdn, issue 21 item 1, not merged)")
	}
	l := newLab(t, labOpts{tempaddr: true, noServer: true})
	dns := bindtest.Start(t, l.server, bindtest.Zones{Forward: []string{"example.net."}, Reverse: []string{"8.b.d.0.1.0.0.2.ip6.arpa."}})
	l.startRefserver(t, "--ddns-server", "[::1]:53", "--ddns-forward-zone", "example.net.",
		"--ddns-reverse-zone", "8.b.d.0.1.0.0.2.ip6.arpa.", "--ddns-tsig-key-file", dns.KeyFile)
	var want []string // stable and temporary
	for _, a := range l.globals(t, 2) {
		want = append(want, addrOf(a).String())
	}
	slices.Sort(want)
	waitDig := func(what string, timeout time.Duration, w []string, args ...string) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			got := bindtest.Dig(t, l.host, serverIP, args...)
			slices.Sort(got)
			if slices.Equal(got, w) {
				return time.Since(start)
			}
			if time.Since(start) > timeout {
				t.Fatalf("%s: dig %s = %q after %v, want %q", what, strings.Join(args, " "), got, timeout, w)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	p := l.host.Start(t, "addrregd", "unshare", "--uts", "sh", "-c", `hostname e2e-first && exec "$0" "$@"`,
		bin, "-i", "eth0", "--duid", testDUID, "--log-level", "debug", "--state-file", l.statePath(t))
	took := waitDig("registered under the host name", 20*time.Second, want, "AAAA", "e2e-first.example.net.")
	for _, a := range want {
		waitDig("PTR of "+a, 5*time.Second, []string{"e2e-first.example.net."}, "-x", a)
	}
	t.Logf("host name: AAAA and PTR in DNS %v after addrregd started", took.Round(time.Millisecond))

	pid := fmt.Sprint(p.Pid())
	l.host.MustExec(t, "nsenter", "--target", pid, "--uts", "hostname", "e2e-second")
	took = waitDig("records under the new name", 10*time.Second, want, "AAAA", "e2e-second.example.net.")
	waitDig("nothing under the old name", 5*time.Second, nil, "AAAA", "e2e-first.example.net.")
	for _, a := range want {
		waitDig("PTR of "+a+" to the new name", 5*time.Second, []string{"e2e-second.example.net."}, "-x", a)
	}
	t.Logf("renamed: records under the new name %v after the rename", took.Round(time.Millisecond))

	l.host.MustExec(t, "nsenter", "--target", pid, "--uts", "hostname", "localhost")
	took = waitDig("no name: records gone", 10*time.Second, nil, "AAAA", "e2e-second.example.net.")
	for _, a := range want {
		waitDig("PTR of "+a+" gone", 5*time.Second, nil, "-x", a)
	}
	t.Logf("renamed to localhost: records gone %v after the rename", took.Round(time.Millisecond))
}
