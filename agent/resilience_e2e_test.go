package agent_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/addrreg/addrreg/test/topo"
)

// Issue 9: addrregd keeps every address registered through refused sends,
// loss, server outages, a broken socket and restarts. Real kernel, radvd,
// the reference server; loss and refusals made with nftables (this kernel
// has no netem: SPEC.md §5).

// nft loads a ruleset into nd's namespace (its tables go with it).
func nft(t testing.TB, nd *topo.Node, rules string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(f, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	nd.MustExec(t, "nft", "-f", f)
}

// addStatics adds addresses (nodad: usable at once) to the host's eth0 in
// one ip -batch.
func (l *lab) addStatics(t testing.TB, addrs []netip.Addr) {
	t.Helper()
	l.ipBatch(t, "add", addrs)
}

func (l *lab) ipBatch(t testing.TB, verb string, addrs []netip.Addr) {
	t.Helper()
	var b strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&b, "addr %s %s/64 dev eth0", verb, a)
		if verb == "add" {
			b.WriteString(" nodad")
		}
		b.WriteByte('\n')
	}
	f := filepath.Join(t.TempDir(), "addrs.batch")
	if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	l.host.MustExec(t, "ip", "-6", "-batch", f)
}

func lossAddrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = benchAddr(i)
	}
	return out
}

// hasAll reports whether b holds every address in want.
func hasAll(want []netip.Addr) func(map[netip.Addr]binding) bool {
	return func(b map[netip.Addr]binding) bool {
		for _, a := range want {
			if _, ok := b[a]; !ok {
				return false
			}
		}
		return true
	}
}

var registeredLine = regexp.MustCompile(`msg=registered .*?addr=(\S+)`)

// confirmed returns the addresses the agent has logged as registered (a
// valid ADDR-REG-REPLY came back).
func confirmed(p *topo.Proc) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, m := range registeredLine.FindAllStringSubmatch(p.Output(), -1) {
		if a, err := netip.ParseAddr(m[1]); err == nil {
			out[a] = true
		}
	}
	return out
}

// A send refused by the host's firewall (nft output hook: sendmsg fails
// with EPERM) for 1.5 s is a lost transmission: the exchange goes on and
// the address is registered within 5 s of sends getting through.
func TestE2ERefusedSends(t *testing.T) {
	l := newLab(t, labOpts{})
	slaac := addrOf(l.globals(t, 1)[0])
	p := l.startAgent(t)
	l.waitBindings(t, slaac.String(), 15*time.Second, func(b map[netip.Addr]binding) bool { _, ok := b[slaac]; return ok })

	nft(t, l.host, "table inet refuse {\n chain out {\n  type filter hook output priority 0; policy accept;\n  udp dport 547 drop\n }\n}\n")
	static := netip.MustParseAddr("2001:db8:1::5e")
	l.addStatics(t, []netip.Addr{static})
	time.Sleep(1500 * time.Millisecond)
	l.host.MustExec(t, "nft", "delete", "table", "inet", "refuse")
	through := time.Now()
	l.waitBindings(t, static.String(), 5*time.Second, func(b map[netip.Addr]binding) bool { _, ok := b[static]; return ok })
	t.Logf("registered %v after sends got through", time.Since(through).Round(time.Millisecond))
	p.WaitOutput(t, "send refused: counted as a lost transmission", time.Second)
	// One exchange: the INFORMs the server saw share the refused ones'
	// transaction ID.
	if got := l.sniff.informs(static); len(got) == 0 || slices.ContainsFunc(got, func(m wireMsg) bool { return m.XID != got[0].XID }) {
		t.Errorf("INFORMs for %s: %v, want one exchange", static, got)
	}
}

// lossRun is one measurement: n static addresses added at once on a link
// that drops pct % of DHCPv6 datagrams each way.
type lossRun struct {
	fraction   float64       // of the n addresses the agent registered
	full       time.Duration // from adding them to the last one registered (0: never)
	maxPerAddr int           // INFORMs the server saw for one address, at most
	meanPerAdr float64
	sentPerAdr float64 // INFORMs the host transmitted, per address (mean)
}

func runLoss(t testing.TB, pct, n int, wait time.Duration, agentArgs ...string) lossRun {
	t.Helper()
	l := newLab(t, labOpts{serverArg: unlimitedServer})
	slaac := addrOf(l.globals(t, 1)[0])
	p := l.startAgent(t, append([]string{"--log-level", "info"}, agentArgs...)...)
	l.waitBindings(t, slaac.String(), 20*time.Second, func(b map[netip.Addr]binding) bool { _, ok := b[slaac]; return ok })

	// Loss on arrival, each way: INFORMs at the server (multicast to
	// ff02::1:2), replies at the host. Leasequery (unicast) is spared.
	nft(t, l.server, fmt.Sprintf("table inet loss {\n chain in {\n  type filter hook input priority 0; policy accept;\n  ip6 daddr ff02::1:2 udp dport 547 numgen random mod 100 < %d drop\n }\n}\n", pct))
	// The host's output counts every INFORM transmitted.
	nft(t, l.host, fmt.Sprintf("table inet loss {\n chain in {\n  type filter hook input priority 0; policy accept;\n  udp sport 547 udp dport 546 numgen random mod 100 < %d drop\n }\n"+
		" chain out {\n  type filter hook output priority 0; policy accept;\n  udp dport 547 counter\n }\n}\n", pct))
	addrs := lossAddrs(n)
	start := time.Now()
	l.addStatics(t, addrs)
	var r lossRun
	for deadline := start.Add(wait); ; time.Sleep(100 * time.Millisecond) {
		c := confirmed(p)
		got := 0
		for _, a := range addrs {
			if c[a] {
				got++
			}
		}
		r.fraction = float64(got) / float64(n)
		if got == n {
			r.full = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(2 * time.Second) // the last replies' exchanges end
	total := 0
	for _, a := range addrs {
		k := len(l.sniff.informs(a))
		total += k
		r.maxPerAddr = max(r.maxPerAddr, k)
	}
	r.meanPerAdr = float64(total) / float64(n)
	m := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(l.host.MustExec(t, "nft", "list", "chain", "inet", "loss", "out"))
	if m == nil {
		t.Fatal("no INFORM counter in the host's nft table")
	}
	sent, _ := strconv.Atoi(m[1])
	r.sentPerAdr = float64(sent) / float64(n)
	return r
}

// 30 % loss each way, 100 addresses: all registered, and the server sees
// at most 4 × MRC INFORMs per address. The retry backoff is scaled down 15×
// (first 2 s, cap 8 s instead of 30 s and 1 h-or-refresh) so the test
// is short. Exchanges themselves keep their real timing (IRT 1 s, MRC 3:
// 7 s each when they fail), so the time is not simply 15× shorter; 120 s
// are allowed for a loaded machine (a run takes 30-60 s).
func TestE2ELoss(t *testing.T) {
	r := runLoss(t, 30, 100, 120*time.Second, "--retry-first", "2s", "--retry-max", "8s")
	t.Logf("30%% loss each way, 100 addresses: %.0f%% registered, all in %v; INFORMs per address at the server: max %d, mean %.2f; transmitted: mean %.2f",
		100*r.fraction, r.full.Round(100*time.Millisecond), r.maxPerAddr, r.meanPerAdr, r.sentPerAdr)
	if r.fraction != 1 {
		t.Fatalf("%.0f%% of the addresses registered within 120 s", 100*r.fraction)
	}
	if r.maxPerAddr > 4*3 {
		t.Errorf("the server saw %d INFORMs for one address, want at most 4 × MRC = 12", r.maxPerAddr)
	}
}

// BenchmarkE2ELoss measures registration under loss for the closing note
// of issue 9: the registered fraction, the time to full registration and
// the INFORMs per address the server saw, for 100 addresses at each loss
// rate in ADDRREG_LOSS (default "10,30,50" percent each way), with the
// retry backoff scaled 15× down as in TestE2ELoss:
//
//	sudo go test ./agent -run '^$' -bench BenchmarkE2ELoss -benchtime 1x -v
func BenchmarkE2ELoss(b *testing.B) {
	rates := os.Getenv("ADDRREG_LOSS")
	if rates == "" {
		rates = "10,30,50"
	}
	for _, s := range strings.Split(rates, ",") {
		pct, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || pct < 0 || pct > 100 {
			b.Fatalf("ADDRREG_LOSS: %q is not a percentage", s)
		}
		b.Run(fmt.Sprintf("loss=%d%%", pct), func(b *testing.B) {
			r := runLoss(b, pct, 100, 5*time.Minute, "--retry-first", "2s", "--retry-max", "8s")
			b.ReportMetric(100*r.fraction, "%registered")
			b.ReportMetric(r.full.Seconds(), "s-to-all")
			b.ReportMetric(float64(r.maxPerAddr), "max-informs/addr")
			b.ReportMetric(r.meanPerAdr, "mean-informs/addr")
			b.ReportMetric(r.sentPerAdr, "sent-informs/addr")
		})
	}
}

// The server down while addresses are added: every one is registered soon
// after it returns, and the retries respect --rate. Scaled 3× down from the
// issue's 60 s outage and 2 minutes: a 20 s outage, --retry-first 10s,
// and 40 s allowed after the return.
func TestE2EServerOutage(t *testing.T) {
	l := newLab(t, labOpts{serverArg: unlimitedServer})
	slaac := addrOf(l.globals(t, 1)[0])
	l.startAgent(t, "--retry-first", "10s", "--retry-max", "20m", "--rate", "20", "--burst", "5")
	l.waitBindings(t, slaac.String(), 15*time.Second, func(b map[netip.Addr]binding) bool { _, ok := b[slaac]; return ok })
	l.refserver.Stop()
	down := time.Now()
	addrs := lossAddrs(40)
	for i := 0; i < 4; i++ { // added during the outage, 5 s apart
		l.addStatics(t, addrs[i*10:(i+1)*10])
		time.Sleep(5 * time.Second)
	}
	time.Sleep(time.Until(down.Add(20 * time.Second)))
	l.startRefserver(t, unlimitedServer...)
	back := time.Now()
	l.waitBindings(t, "every address added during the outage", 40*time.Second, hasAll(addrs))
	t.Logf("all %d registered %v after the server came back", len(addrs), time.Since(back).Round(100*time.Millisecond))
	// --rate 20 --burst 5: no more than 25 exchanges start in any second.
	var starts []time.Time
	seen := map[dhcpv6.TransactionID]bool{}
	for _, m := range l.sniff.informs(netip.Addr{}) {
		if !seen[m.XID] {
			seen[m.XID] = true
			starts = append(starts, m.At)
		}
	}
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	for i := range starts {
		j := i
		for j < len(starts) && starts[j].Sub(starts[i]) < time.Second {
			j++
		}
		if j-i > 25 {
			t.Fatalf("%d exchanges started within a second from %v, beyond --rate 20 --burst 5", j-i, starts[i].Format("15:04:05.000"))
		}
	}
}

// The registrar's socket closed under the running daemon (a test build's
// fault injection: SIGUSR2 closes it; the product has no such hook): the
// daemon exits non-zero within 1 s, saying why, rather than run deaf.
func TestE2ESocketClosedExits(t *testing.T) {
	l := newLab(t, labOpts{})
	slaac := addrOf(l.globals(t, 1)[0])
	bin := topo.BuildBinaryTags(t, "./cmd/addrregd", "addrreg_faultinject")
	p := l.host.Start(t, "addrregd", bin, "-i", "eth0", "--duid", testDUID, "--state-file", l.statePath(t))
	l.waitBindings(t, slaac.String(), 15*time.Second, func(b map[netip.Addr]binding) bool { _, ok := b[slaac]; return ok })
	start := time.Now()
	if err := p.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	err := p.Wait(t, 3*time.Second)
	took := time.Since(start)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("addrregd exited with %v, want a non-zero status", err)
	}
	if took > time.Second {
		t.Errorf("addrregd took %v to exit, want < 1s", took)
	}
	for _, w := range []string{"registrar socket closed or broken", "exiting so the service manager restarts addrregd"} {
		if !strings.Contains(p.Output(), w) {
			t.Errorf("log does not say %q", w)
		}
	}
}

// kill -9, 20 of 100 registered addresses removed while the daemon is
// down, restart: exactly those 20 are deregistered, nothing else. A
// truncated or garbage state file then only logs a warning.
func TestE2ERestartDeregistersWhatWentAway(t *testing.T) {
	l := newLab(t, labOpts{serverArg: unlimitedServer})
	slaac := addrOf(l.globals(t, 1)[0])
	addrs := lossAddrs(100)
	l.addStatics(t, addrs)
	p := l.startAgent(t, "--log-level", "info")
	l.waitBindings(t, "all 100 addresses", 30*time.Second, hasAll(append([]netip.Addr{slaac}, addrs...)))
	// The state file (debounced) lists them all before the kill.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(l.statePath(t))
		n := 0
		for _, a := range addrs {
			if strings.Contains(string(b), `"`+a.String()+`"`) {
				n++
			}
		}
		if n == len(addrs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state file lists %d of %d addresses:\n%s", n, len(addrs), b)
		}
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.Wait(t, 5*time.Second)
	gone, kept := addrs[:20], addrs[20:]
	l.ipBatch(t, "del", gone)
	before := len(l.sniff.all())
	p = l.startAgent(t, "--log-level", "info")
	l.waitBindings(t, "the 20 removed addresses gone", 20*time.Second, func(b map[netip.Addr]binding) bool {
		for _, a := range gone {
			if _, ok := b[a]; ok {
				return false
			}
		}
		return true
	})
	b := l.waitBindings(t, "the 80 others registered again", 20*time.Second, func(map[netip.Addr]binding) bool {
		c := confirmed(p)
		for _, a := range kept {
			if !c[a] {
				return false
			}
		}
		return true
	})
	for _, a := range append([]netip.Addr{slaac}, kept...) {
		if _, ok := b[a]; !ok {
			t.Errorf("%s lost its binding", a)
		}
	}
	var dereg []netip.Addr
	for _, m := range l.sniff.all()[before:] {
		if m.Type == dhcpv6.MessageTypeAddrRegInform && m.Valid == 0 && m.Preferred == 0 {
			dereg = append(dereg, m.IAAddr)
		}
	}
	slices.SortFunc(dereg, netip.Addr.Compare)
	dereg = slices.Compact(dereg)
	if !slices.Equal(dereg, gone) {
		t.Errorf("deregistered %v, want exactly the 20 removed: %v", dereg, gone)
	}

	for _, bad := range []struct{ name, content string }{
		{"truncated", `{"version":1,"addresses":[{"iface":"eth0","addr":"2001:db8:1::`},
		{"garbage", "\x00\xffnot json at all"},
	} {
		p.Signal(syscall.SIGKILL)
		p.Wait(t, 5*time.Second)
		if err := os.WriteFile(l.statePath(t), []byte(bad.content), 0o600); err != nil {
			t.Fatal(err)
		}
		n := len(l.sniff.informs(kept[0]))
		p = l.startAgent(t, "--log-level", "info")
		p.WaitOutput(t, "state file unreadable: ignoring it", 10*time.Second)
		l.sniff.waitInforms(t, kept[0], n+1, 15*time.Second) // registering as usual
		select {
		case <-p.Done():
			t.Fatalf("%s state file: addrregd exited:\n%s", bad.name, p.Output())
		default:
		}
	}
}
