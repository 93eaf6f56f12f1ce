package netmon

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/topo"
)

// harness runs a Monitor on a node and collects its events.
type harness struct {
	t      *testing.T
	m      *Monitor
	events chan Event
	cancel context.CancelFunc
	done   chan error
}

func startMonitor(t *testing.T, nd *topo.Node, o Options) *harness {
	t.Helper()
	h, err := nd.Handle()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	o.Netns = h
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	m := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	hs := &harness{t: t, m: m, events: make(chan Event, 1<<16), cancel: cancel, done: make(chan error, 1)}
	go func() { hs.done <- m.Run(ctx) }()
	go func() {
		for {
			ev, err := m.Next(ctx)
			if err != nil {
				close(hs.events)
				return
			}
			t.Logf("event %s", ev)
			hs.events <- ev
		}
	}()
	t.Cleanup(hs.stop)
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

func addrEvent(kind EventKind, ifname string, f func(Addr) bool) func(Event) bool {
	return func(ev Event) bool {
		return ev.Kind == kind && ev.Addr.Ifname == ifname && f(ev.Addr)
	}
}

func inPrefix(p string) func(Addr) bool {
	pfx := netip.MustParsePrefix(p)
	return func(a Addr) bool { return pfx.Contains(a.IP) }
}

func near(d, want, tol time.Duration) bool { return d >= want-tol && d <= want+tol }

func TestNetnsSLAAC(t *testing.T) {
	topo.RequireRoot(t)
	t.Parallel()
	n := topo.New(t)
	r, h := n.Node("router"), n.Node("host")
	h.Sysctl(t, "net.ipv6.conf.eth0.use_tempaddr", "2")
	hs := startMonitor(t, h, Options{})
	ra := topo.RA{Managed: true, Prefixes: []topo.PIO{{Prefix: "2001:db8:1::/64", Valid: 9000 * time.Second, Preferred: 5000 * time.Second}}}
	rd := r.StartRadvd(t, ra)

	in := inPrefix("2001:db8:1::/64")
	stable := hs.wait("stable SLAAC address", 15*time.Second, addrEvent(AddrUpdated, "eth0", func(a Addr) bool {
		return in(a) && a.Class == ClassGlobal && a.Registrable
	}))
	if !near(stable.Addr.Valid, 9000*time.Second, 5*time.Second) || !near(stable.Addr.Preferred, 5000*time.Second, 5*time.Second) {
		t.Errorf("stable lifetimes %v/%v, want about 9000s/5000s", stable.Addr.Preferred, stable.Addr.Valid)
	}
	if stable.Addr.Proto != ProtoKernelRA {
		t.Errorf("stable proto %d, want %d", stable.Addr.Proto, ProtoKernelRA)
	}
	hs.wait("temporary address", 15*time.Second, func(ev Event) bool {
		return (ev.Kind == AddrAdded || ev.Kind == AddrUpdated) && in(ev.Addr) && ev.Addr.Class == ClassTemporary && ev.Addr.Registrable
	})
	_ = rd
	links, addrs := hs.m.Snapshot()
	t.Logf("links %v", links)
	for _, a := range addrs {
		t.Logf("addr %s", a)
	}
	_ = strings.Contains
	_ = fmt.Sprint
}
