package netmon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/topo"
	"go.uber.org/goleak"
)

// Real-kernel tests: each builds namespaces with test/topo and runs a
// Monitor on one of them. They need root (topo.RequireRoot).

// harness runs a Monitor on a node and collects its events.
type harness struct {
	t      *testing.T
	m      *Monitor
	events chan Event
	cancel context.CancelFunc
	done   chan error
	quiet  atomic.Bool
}

func startMonitor(t *testing.T, nd *topo.Node, o Options) *harness {
	t.Helper()
	h, err := nd.Handle()
	if err != nil {
		t.Fatal(err)
	}
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	o.Netns = h
	m := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	hs := &harness{t: t, m: m, events: make(chan Event, 1<<20), cancel: cancel, done: make(chan error, 1)}
	go func() { hs.done <- m.Run(ctx) }()
	go func() {
		for {
			ev, err := m.Next(ctx)
			if err != nil {
				close(hs.events)
				return
			}
			if !hs.quiet.Load() {
				t.Logf("event %s", ev)
			}
			hs.events <- ev
		}
	}()
	t.Cleanup(func() {
		hs.stop()
		h.Close()
	})
	return hs
}

func (hs *harness) stop() {
	hs.cancel()
	select {
	case err := <-hs.done:
		if err != nil {
			hs.t.Errorf("Run: %v", err)
		}
		hs.done <- nil
	case <-time.After(5 * time.Second):
		hs.t.Error("Run did not return within 5s of cancel")
	}
}

// wait returns the first event satisfying pred within timeout.
func (hs *harness) wait(what string, timeout time.Duration, pred func(Event) bool) Event {
	hs.t.Helper()
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case ev, ok := <-hs.events:
			if !ok {
				hs.t.Fatalf("monitor stopped while waiting for %s", what)
			}
			if pred(ev) {
				return ev
			}
		case <-tm.C:
			hs.t.Fatalf("no %s within %v", what, timeout)
		}
	}
}

// none fails if an event satisfying pred arrives within d.
func (hs *harness) none(what string, d time.Duration, pred func(Event) bool) {
	hs.t.Helper()
	tm := time.NewTimer(d)
	defer tm.Stop()
	for {
		select {
		case ev, ok := <-hs.events:
			if !ok {
				return
			}
			if pred(ev) {
				hs.t.Fatalf("unexpected %s: %s", what, ev)
			}
		case <-tm.C:
			return
		}
	}
}

func addrEv(f func(Addr) bool, kinds ...EventKind) func(Event) bool {
	return func(ev Event) bool {
		for _, k := range kinds {
			if ev.Kind == k && f(ev.Addr) {
				return true
			}
		}
		return false
	}
}

func inPrefix(p string) func(Addr) bool {
	pfx := netip.MustParsePrefix(p)
	return func(a Addr) bool { return pfx.Contains(a.IP) }
}

func isIP(s string) func(Addr) bool {
	ip := netip.MustParseAddr(s)
	return func(a Addr) bool { return a.IP == ip }
}

func and(fs ...func(Addr) bool) func(Addr) bool {
	return func(a Addr) bool {
		for _, f := range fs {
			if !f(a) {
				return false
			}
		}
		return true
	}
}

func class(c Class) func(Addr) bool { return func(a Addr) bool { return a.Class == c } }

func near(d, want, tol time.Duration) bool { return d >= want-tol && d <= want+tol }

// stable and temporary SLAAC addresses with radvd's lifetimes; a new
// AdvValidLifetime shows as an update; valid 0 as the kernel's 2-hour cut.
func TestNetnsSLAACLifetimes(t *testing.T) {
	topo.RequireRoot(t)
	t.Parallel()
	n := topo.New(t)
	r, h := n.Node("router"), n.Node("host")
	h.Sysctl(t, "net.ipv6.conf.eth0.use_tempaddr", "2")
	hs := startMonitor(t, h, Options{})
	ra := topo.RA{Managed: true, Prefixes: []topo.PIO{{Prefix: "2001:db8:1::/64", Valid: 9000 * time.Second, Preferred: 5000 * time.Second}}}
	rd := r.StartRadvd(t, ra)

	in := inPrefix("2001:db8:1::/64")
	stable := hs.wait("stable SLAAC address", 15*time.Second, addrEv(and(in, class(ClassGlobal), Addr.registrable), AddrAdded, AddrUpdated))
	if !near(stable.Addr.Valid, 9000*time.Second, 5*time.Second) || !near(stable.Addr.Preferred, 5000*time.Second, 5*time.Second) {
		t.Errorf("stable lifetimes %v/%v, want about 5000s/9000s", stable.Addr.Preferred, stable.Addr.Valid)
	}
	if stable.Addr.Proto != ProtoKernelRA {
		t.Errorf("stable proto %d, want %d", stable.Addr.Proto, ProtoKernelRA)
	}
	hs.wait("temporary address", 15*time.Second, addrEv(and(in, class(ClassTemporary), Addr.registrable), AddrAdded, AddrUpdated))

	ra.Prefixes[0].Valid, ra.Prefixes[0].Preferred = 8000*time.Second, 4000*time.Second
	rd.Update(t, ra)
	ev := hs.wait("stable address with valid 8000s", 10*time.Second, addrEv(and(isIP(stable.Addr.IP.String()), func(a Addr) bool {
		return near(a.Valid, 8000*time.Second, 3*time.Second)
	}), AddrUpdated))
	if !near(ev.Addr.Preferred, 4000*time.Second, 3*time.Second) {
		t.Errorf("preferred %v after the update, want about 4000s", ev.Addr.Preferred)
	}
	// Lookup reads the same from the kernel.
	a, ok, err := hs.m.Lookup(stable.Addr.Index, stable.Addr.IP)
	if err != nil || !ok || !near(a.Valid, 8000*time.Second, 3*time.Second) || a.Class != ClassGlobal || !a.Registrable {
		t.Errorf("Lookup(%s) = %s, %t, %v", stable.Addr.IP, a, ok, err)
	}
	if _, ok, err := hs.m.Lookup(stable.Addr.Index, netip.MustParseAddr("2001:db8:1::dead")); ok || err != nil {
		t.Errorf("Lookup(absent address) = %t, %v; want false, nil", ok, err)
	}

	// RFC 4862 §5.5.3(e): valid 0 cuts the remaining 8000 s to two hours.
	ra.Prefixes[0].Valid, ra.Prefixes[0].Preferred = 0, 0
	rd.Update(t, ra)
	ev = hs.wait("the two-hour cut", 10*time.Second, addrEv(and(isIP(stable.Addr.IP.String()), func(a Addr) bool {
		return near(a.Valid, 7199*time.Second, 2*time.Second)
	}), AddrUpdated))
	if ev.Addr.State != StateDeprecated || !ev.Addr.Registrable {
		t.Errorf("after valid 0: %s, want deprecated and still registrable", ev.Addr)
	}
}

func (a Addr) registrable() bool { return a.Registrable }

// M and O toggled in radvd are reported within one RA interval.
func TestNetnsRAFlags(t *testing.T) {
	topo.RequireRoot(t)
	t.Parallel()
	n := topo.New(t)
	r, h := n.Node("router"), n.Node("host")
	hs := startMonitor(t, h, Options{})
	ra := topo.RA{Prefixes: []topo.PIO{{Prefix: "2001:db8:2::/64", Valid: 600 * time.Second, Preferred: 300 * time.Second}}}
	rd := r.StartRadvd(t, ra)
	hs.wait("SLAAC address", 15*time.Second, addrEv(inPrefix("2001:db8:2::/64"), AddrAdded))

	for _, step := range []struct{ m, o bool }{{true, false}, {true, true}, {false, true}, {false, false}} {
		ra.Managed, ra.Other = step.m, step.o
		start := time.Now()
		rd.Update(t, ra)
		hs.wait(fmt.Sprintf("M=%t O=%t", step.m, step.o), 5*time.Second, func(ev Event) bool {
			return ev.Kind == RAFlags && ev.Link.Name == "eth0" && ev.Link.Managed == step.m && ev.Link.Other == step.o
		})
		// radvd's interval is 1 s (MinRtrAdvInterval 0.75 s) and it
		// sends at once on SIGHUP; allow the interval plus scheduling.
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("M=%t O=%t reported after %v, more than one RA interval", step.m, step.o, d)
		} else {
			t.Logf("M=%t O=%t reported after %v", step.m, step.o, d)
		}
	}
}

// wireLab is a router and a host whose kernel ignores RAs (accept_ra = 0),
// watched by a Monitor that reads them from the wire.
func wireLab(t *testing.T) (r, h *topo.Node, hs *harness) {
	t.Helper()
	topo.RequireRoot(t)
	t.Parallel()
	n := topo.New(t)
	r, h = n.Node("router"), n.Node("host")
	h.Sysctl(t, "net.ipv6.conf.eth0.accept_ra", "0")
	// A short hold: radvd's last RAs (lifetime 0) count for 3 s only.
	return r, h, startMonitor(t, h, Options{WatchRAs: true, RAFlagsHold: 3 * time.Second})
}

// With accept_ra = 0 the kernel keeps the flags clear; WatchRAs reads them
// from the wire.
func TestNetnsRAFlagsWire(t *testing.T) {
	r, h, hs := wireLab(t)
	// From the wire, M and O count within the Router Lifetime only.
	ra := topo.RA{Other: true, RouterLifetime: 30 * time.Second,
		Prefixes: []topo.PIO{{Prefix: "2001:db8:3::/64", Valid: 600 * time.Second, Preferred: 300 * time.Second}}}
	rd := r.StartRadvd(t, ra)
	hs.wait("O from the wire", 10*time.Second, func(ev Event) bool {
		return (ev.Kind == RAFlags || ev.Kind == LinkAdded) && ev.Link.Name == "eth0" && ev.Link.Other && !ev.Link.Managed && ev.Link.RAReceived
	})
	// A SIGHUP early in radvd's start can kill it (seen on a loaded
	// machine: it had sent its first RA, then exited): wait for its main
	// loop.
	rd.Proc().WaitOutput(t, "polling for", 5*time.Second)
	ra.Managed = true
	rd.Update(t, ra)
	hs.wait("M from the wire", 5*time.Second, func(ev Event) bool {
		return ev.Kind == RAFlags && ev.Link.Name == "eth0" && ev.Link.Other && ev.Link.Managed
	})
	if out := h.MustExec(t, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"); strings.TrimSpace(out) != "" {
		t.Errorf("accept_ra=0 but the kernel configured %s", out)
	}
	// radvd stopping sends RAs with Router Lifetime 0 (RFC 4861 §6.2.5):
	// no longer a default router; its flags count for the hold (3 s here),
	// and then, no RA coming any more, they go.
	rd.Proc().Stop()
	stopped := time.Now()
	hs.wait("flags withdrawn", 15*time.Second, func(ev Event) bool {
		return ev.Kind == RAFlags && ev.Link.Name == "eth0" && !ev.Link.Other && !ev.Link.Managed && ev.Link.RAReceived
	})
	if d := time.Since(stopped); d < 2500*time.Millisecond {
		t.Errorf("flags withdrawn %v after radvd stopped, before the 3 s hold of its lifetime-0 RAs", d)
	}
}

// From the wire, a router's M and O last as long as its Router Lifetime: a
// router that dies without a word (SIGKILL, no final RA) stops counting
// when its lifetime runs out.
func TestNetnsRAFlagsWireExpire(t *testing.T) {
	r, _, hs := wireLab(t)
	rd := r.StartRadvd(t, topo.RA{Managed: true, RouterLifetime: 4 * time.Second})
	hs.wait("M from the wire", 10*time.Second, func(ev Event) bool {
		return (ev.Kind == RAFlags || ev.Kind == LinkAdded) && ev.Link.Name == "eth0" && ev.Link.Managed
	})
	if err := rd.Proc().Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	hs.wait("M expired", 15*time.Second, func(ev Event) bool {
		return ev.Kind == RAFlags && ev.Link.Name == "eth0" && !ev.Link.Managed && ev.Link.RAReceived
	})
	// radvd advertises every second or less: M outlived the router by
	// most of the 4 s lifetime (1 s: slack for a loaded machine that
	// delayed radvd's last RA).
	if d := time.Since(killed); d < time.Second {
		t.Errorf("M cleared %v after the router died, before its 4 s lifetime ran out", d)
	} else {
		t.Logf("M cleared %v after the router died (lifetime 4 s)", d)
	}
}

// Static, DHCPv6-like /128 and ULA addresses; Include overrides the DHCPv6 rule.
func TestNetnsClasses(t *testing.T) {
	topo.RequireRoot(t)
	t.Parallel()
	n := topo.New(t)
	r, h := n.Node("router"), n.Node("host")
	hs := startMonitor(t, h, Options{Include: []netip.Prefix{netip.MustParsePrefix("2001:db8:7::/64")}})
	r.StartRadvd(t, topo.RA{Prefixes: []topo.PIO{{Prefix: "fd12:3456:789a:1::/64", Valid: 600 * time.Second, Preferred: 300 * time.Second}}})

	hs.wait("ULA", 15*time.Second, addrEv(and(inPrefix("fd12:3456:789a:1::/64"), class(ClassULA), Addr.registrable), AddrAdded, AddrUpdated))

	h.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:5::10/64", "dev", "eth0", "nodad")
	hs.wait("static", 5*time.Second, addrEv(and(isIP("2001:db8:5::10"), class(ClassStatic), Addr.registrable), AddrAdded))
	h.MustExec(t, "ip", "-6", "addr", "del", "2001:db8:5::10/64", "dev", "eth0")
	hs.wait("static removed", 5*time.Second, addrEv(isIP("2001:db8:5::10"), AddrRemoved))

	// As dhclient, NetworkManager and systemd-networkd add an IA_NA address.
	h.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:6::20/128", "dev", "eth0", "valid_lft", "3600", "preferred_lft", "1800", "nodad")
	ev := hs.wait("DHCPv6 address", 5*time.Second, addrEv(isIP("2001:db8:6::20"), AddrAdded))
	if ev.Addr.Class != ClassDHCPv6 || ev.Addr.Registrable || !near(ev.Addr.Valid, time.Hour, 2*time.Second) {
		t.Errorf("got %s, want a non-registrable dhcpv6 address valid 1h", ev.Addr)
	}
	h.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:7::30/128", "dev", "eth0", "valid_lft", "3600", "preferred_lft", "1800", "nodad")
	ev = hs.wait("included /128", 5*time.Second, addrEv(isIP("2001:db8:7::30"), AddrAdded))
	if ev.Addr.Class != ClassGlobal || !ev.Addr.Registrable {
		t.Errorf("got %s, want a registrable global address (Include)", ev.Addr)
	}
}

// A duplicate address fails DAD and is never registrable; a unique one is
// reported tentative first, registrable once DAD completes.
func TestNetnsDAD(t *testing.T) {
	topo.RequireRoot(t)
	t.Parallel()
	n := topo.New(t)
	r, h := n.Node("router"), n.Node("host")
	h.WaitAddrs(t, "eth0", topo.LinkLocal, 10*time.Second)
	r.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:9::1/64", "dev", "eth0", "nodad")
	hs := startMonitor(t, h, Options{})
	hs.wait("link", 5*time.Second, func(ev Event) bool { return ev.Kind == LinkAdded && ev.Link.Name == "eth0" })

	h.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:9::1/64", "dev", "eth0")
	h.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:9::2/64", "dev", "eth0")
	dup, uniq := isIP("2001:db8:9::1"), isIP("2001:db8:9::2")
	seenDupFail, seenTentative := false, false
	deadline := time.After(10 * time.Second)
	for !seenDupFail || !seenTentative {
		select {
		case ev := <-hs.events:
			switch {
			case dup(ev.Addr) && ev.Addr.Registrable:
				t.Fatalf("duplicate address reported registrable: %s", ev)
			case dup(ev.Addr) && ev.Addr.State == StateDADFailed:
				seenDupFail = true
			case uniq(ev.Addr) && ev.Kind == AddrAdded:
				if ev.Addr.State != StateTentative || ev.Addr.Registrable {
					t.Fatalf("new address not tentative: %s", ev)
				}
				seenTentative = true
			}
		case <-deadline:
			t.Fatalf("dad-failed seen %t, tentative seen %t", seenDupFail, seenTentative)
		}
	}
	ev := hs.wait("DAD completion", 10*time.Second, addrEv(uniq, AddrUpdated))
	if ev.Addr.State != StatePreferred || !ev.Addr.Registrable {
		t.Errorf("after DAD: %s, want preferred and registrable", ev.Addr)
	}
	hs.none("duplicate becoming registrable", 2*time.Second, func(ev Event) bool { return dup(ev.Addr) && ev.Addr.Registrable })
}

// Carrier down/up on the peer end is a link change; so are admin down/up and
// renames and removals.
func TestNetnsLinks(t *testing.T) {
	topo.RequireRoot(t)
	t.Parallel()
	n := topo.New(t)
	h := n.Node("host")
	hs := startMonitor(t, h, Options{})
	hs.wait("eth0", 5*time.Second, func(ev Event) bool { return ev.Kind == LinkAdded && ev.Link.Name == "eth0" && ev.Link.Usable() })

	h.SetCarrier(t, "eth0", false)
	hs.wait("carrier down", 5*time.Second, func(ev Event) bool {
		return ev.Kind == LinkUpdated && ev.Link.Name == "eth0" && ev.Link.Up && !ev.Link.LowerUp
	})
	h.SetCarrier(t, "eth0", true)
	hs.wait("link change on carrier up", 5*time.Second, func(ev Event) bool {
		return ev.Kind == LinkChanged && ev.Link.Name == "eth0" && ev.Link.Usable()
	})

	h.MustExec(t, "ip", "link", "set", "eth0", "down")
	hs.wait("admin down", 5*time.Second, func(ev Event) bool { return ev.Kind == LinkUpdated && ev.Link.Name == "eth0" && !ev.Link.Up })
	h.MustExec(t, "ip", "link", "set", "eth0", "up")
	hs.wait("link change on admin up", 5*time.Second, func(ev Event) bool { return ev.Kind == LinkChanged && ev.Link.Name == "eth0" })

	h.MustExec(t, "ip", "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1")
	hs.wait("dummy0 added", 5*time.Second, func(ev Event) bool { return ev.Kind == LinkAdded && ev.Link.Name == "dummy0" })
	h.MustExec(t, "ip", "link", "set", "dummy0", "name", "dummy9")
	hs.wait("rename", 5*time.Second, func(ev Event) bool { return ev.Kind == LinkRenamed && ev.Link.Name == "dummy9" })
	h.MustExec(t, "ip", "link", "del", "dummy9")
	hs.wait("removal", 5*time.Second, func(ev Event) bool { return ev.Kind == LinkRemoved && ev.Link.Name == "dummy9" })
}

// ≥ 5,000 addresses added and removed in one burst through a small receive
// buffer: the kernel drops messages (ENOBUFS), the monitor resyncs, and the
// set the consumer built from events equals `ip -6 addr` exactly.
func TestNetnsOverflow(t *testing.T) {
	topo.RequireRoot(t)
	t.Parallel()
	n := topo.New(t)
	h := n.Node("host")
	// No dummy driver on every kernel: a veth pair inside the namespace.
	h.MustExec(t, "ip", "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1")
	h.MustExec(t, "ip", "link", "set", "dummy1", "up")
	h.MustExec(t, "ip", "link", "set", "dummy0", "up")
	hs := startMonitor(t, h, Options{RecvBufSize: 4096, QueueSize: 512})
	hs.quiet.Store(true)
	hs.wait("dummy0", 5*time.Second, func(ev Event) bool { return ev.Kind == LinkAdded && ev.Link.Name == "dummy0" })

	const total, removed = 6000, 3000
	var batch strings.Builder
	for i := range total {
		fmt.Fprintf(&batch, "addr add 2001:db8:%x::%x/64 dev dummy0 nodad\n", i/0x1000+0x10, i%0x1000+1)
	}
	for i := range removed {
		fmt.Fprintf(&batch, "addr del 2001:db8:%x::%x/64 dev dummy0\n", i/0x1000+0x10, i%0x1000+1)
	}
	f := t.TempDir() + "/batch"
	if err := os.WriteFile(f, []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h.MustExec(t, "ip", "-6", "-batch", f)
	t.Logf("ip -batch took %v", time.Since(start))

	want := kernelAddrs(t, h)
	got := map[string]string{}
	deadline := time.After(60 * time.Second)
	for {
		if equalSets(got, want) && hs.m.Stats().Resyncs > 0 {
			break
		}
		select {
		case ev := <-hs.events:
			k := ev.Addr.Ifname + " " + ev.Addr.IP.String() + "/" + strconv.Itoa(ev.Addr.PrefixLen)
			switch ev.Kind {
			case AddrAdded, AddrUpdated:
				got[k] = stateWord(ev.Addr)
			case AddrRemoved:
				delete(got, k)
			}
		case <-time.After(2 * time.Second):
			// Quiet: DAD may have completed since; read the kernel again.
			want = kernelAddrs(t, h)
		case <-deadline:
			missing, extra := 0, 0
			for k := range want {
				if _, ok := got[k]; !ok {
					missing++
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					extra++
				}
			}
			t.Fatalf("after 60s: consumer has %d, ip shows %d (%d missing, %d extra); stats %+v", len(got), len(want), missing, extra, hs.m.Stats())
		}
	}
	st := hs.m.Stats()
	t.Logf("in sync %v after the burst started", time.Since(start))
	t.Logf("consumer set equals ip -6 addr: %d addresses; stats %+v", len(want), st)
	if len(want) < total-removed {
		t.Errorf("ip shows %d addresses, want at least %d", len(want), total-removed)
	}
	_, snap := hs.m.Snapshot()
	if len(snap) != len(want) {
		t.Errorf("Snapshot has %d addresses, ip shows %d", len(snap), len(want))
	}
}

func stateWord(a Addr) string {
	switch a.State {
	case StateTentative, StateOptimistic:
		return "tentative"
	case StateDADFailed:
		return "dadfailed"
	}
	return ""
}

// kernelAddrs parses `ip -6 -o addr` into "ifname ip/len" → state word.
func kernelAddrs(t *testing.T, h *topo.Node) map[string]string {
	t.Helper()
	out := h.MustExec(t, "ip", "-6", "-o", "addr", "show")
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[2] != "inet6" {
			continue
		}
		st := ""
		if strings.Contains(line, " tentative") {
			st = "tentative"
		}
		if strings.Contains(line, " dadfailed") {
			st = "dadfailed"
		}
		m[f[1]+" "+f[3]] = st
	}
	return m
}

func equalSets(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Every goroutine Run starts (the netlink reader, the RA listener, namespace
// helpers) has stopped when it returns. Not parallel: goleak reads all stacks.
func TestNetnsNoGoroutineLeak(t *testing.T) {
	topo.RequireRoot(t)
	n := topo.New(t)
	r, h := n.Node("router"), n.Node("host")
	r.StartRadvd(t, topo.RA{Managed: true, Prefixes: []topo.PIO{{Prefix: "2001:db8:4::/64", Valid: 600 * time.Second, Preferred: 300 * time.Second}}})
	ns, err := h.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ignore := goleak.IgnoreCurrent()
	m := New(Options{Netns: ns, WatchRAs: true, Logger: testLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	for {
		c, cc := context.WithTimeout(ctx, 15*time.Second)
		ev, err := m.Next(c)
		cc()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == RAFlags && ev.Link.Managed {
			break
		}
	}
	if _, ok, err := m.Lookup(1, netip.MustParseAddr("::1")); !ok || err != nil {
		t.Errorf("Lookup(::1 on lo) = %t, %v", ok, err)
	}
	stopRun(t, cancel, done)
	goleak.VerifyNone(t, ignore)
}

// The kernel keeps IF_RA_MANAGED across carrier down/up; the monitor does
// not trust it on what may be a new link until an RA is processed there.
func TestNetnsRAFlagsAfterReconnect(t *testing.T) {
	topo.RequireRoot(t)
	t.Parallel()
	n := topo.New(t)
	r, h := n.Node("router"), n.Node("host")
	hs := startMonitor(t, h, Options{})
	ra := topo.RA{Managed: true, Prefixes: []topo.PIO{{Prefix: "2001:db8:4::/64", Valid: 600 * time.Second, Preferred: 300 * time.Second}}}
	rd := r.StartRadvd(t, ra)
	// A consumer slower than the first RA hears of M with the link itself.
	hs.wait("M", 10*time.Second, func(ev Event) bool {
		return (ev.Kind == RAFlags || ev.Kind == LinkAdded) && ev.Link.Name == "eth0" && ev.Link.Managed
	})
	rd.Proc().Stop()

	h.SetCarrier(t, "eth0", false)
	time.Sleep(200 * time.Millisecond)
	h.SetCarrier(t, "eth0", true)
	ev := hs.wait("link change", 5*time.Second, func(ev Event) bool { return ev.Kind == LinkChanged && ev.Link.Name == "eth0" })
	if ev.Link.Managed || ev.Link.Other {
		t.Errorf("stale RA flags after reconnecting: %s", ev)
	}
	hs.none("M without an RA", 3*time.Second, func(ev Event) bool { return ev.Kind == RAFlags && ev.Link.Managed })

	r.StartRadvd(t, ra)
	hs.wait("M from an RA on the new attachment", 10*time.Second, func(ev Event) bool { return ev.Kind == RAFlags && ev.Link.Managed })
}

// RFC 4429 optimistic SLAAC addresses are reported optimistic and become
// registrable only when DAD completes.
func TestNetnsOptimistic(t *testing.T) {
	topo.RequireRoot(t)
	t.Parallel()
	n := topo.New(t)
	r, h := n.Node("router"), n.Node("host")
	h.Sysctl(t, "net.ipv6.conf.eth0.optimistic_dad", "1")
	h.Sysctl(t, "net.ipv6.conf.eth0.use_optimistic", "1")
	hs := startMonitor(t, h, Options{})
	r.StartRadvd(t, topo.RA{Prefixes: []topo.PIO{{Prefix: "2001:db8:8::/64", Valid: 600 * time.Second, Preferred: 300 * time.Second}}})
	in := inPrefix("2001:db8:8::/64")
	ev := hs.wait("SLAAC address", 15*time.Second, addrEv(in, AddrAdded))
	if ev.Addr.State != StateOptimistic || ev.Addr.Registrable {
		t.Errorf("new SLAAC address %s, want optimistic and not registrable", ev.Addr)
	}
	ev = hs.wait("DAD completion", 10*time.Second, addrEv(and(in, Addr.registrable), AddrUpdated))
	if ev.Addr.State != StatePreferred {
		t.Errorf("after DAD: %s", ev.Addr)
	}
}

// A router that is not a default router (radvd's AdvDefaultLifetime 0)
// still sets M and O for the link (RFC 4861 §4.2): read from the wire, they
// count, for the hold after its last RA.
func TestNetnsRAFlagsWireNotDefaultRouter(t *testing.T) {
	r, _, hs := wireLab(t)
	r.StartRadvd(t, topo.RA{Other: true}) // RouterLifetime 0
	hs.wait("O from a non-default router", 10*time.Second, func(ev Event) bool {
		return (ev.Kind == RAFlags || ev.Kind == LinkAdded) && ev.Link.Name == "eth0" && ev.Link.Other && !ev.Link.Managed && ev.Link.RAReceived
	})
}
