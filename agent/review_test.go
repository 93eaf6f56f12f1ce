package agent

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/scheduler"
)

// An address deregistered (removed) and then re-added and registered again
// is in the state file: the server holds it, so a restart that finds it
// gone must deregister it.
func TestStateKeepsReaddedAddress(t *testing.T) {
	cfg := defaults()
	cfg.StatePath = filepath.Join(t.TempDir(), "state.json")
	h := startOnLink(t, cfg, true)
	a := global("2001:db8::1", 600*time.Second)
	h.mon.add(a)
	h.settle()
	h.mon.remove(a)
	h.settle()
	h.mon.add(a)
	if p := phaseOf(h.settle(), "2001:db8::1"); p != Registered {
		t.Fatalf("phase = %v, want registered", p)
	}
	if _, sends := h.reg.snapshot(); len(sends) != 3 || !sends[1].deregistered {
		t.Fatalf("sends = %+v, want register, deregister, register", sends)
	}
	h.advance(stateDebounce)
	h.settle()
	h.shutdown()
	got, err := readState(cfg.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Addr != a.IP || got[0].Valid != 600 {
		t.Fatalf("state file = %+v, want 2001:db8::1 registered for 600 s", got)
	}
}

// An exchange that ends because the address looked gone (its lifetimes
// lookup said so) with no netmon event after it — the address was only
// briefly unassigned or not registrable, and netmon coalesced that away —
// must not leave the address pending with nothing scheduled.
func TestAddressGoneWithoutEventIsRetried(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	a := global("2001:db8::1", 600*time.Second)
	// The event arrives, but the kernel lookup at the transmission does
	// not find the address.
	h.mon.send(netmon.Event{Kind: netmon.AddrAdded, Addr: a})
	h.settle()
	if _, sends := h.reg.snapshot(); len(sends) != 0 {
		t.Fatalf("sends = %+v, want none while the lookup misses", sends)
	}
	// It is back (no event: nothing changed since netmon's last word).
	h.mon.mu.Lock()
	h.mon.addrs[a.IP] = a
	h.mon.mu.Unlock()
	for range 10 {
		h.advance(time.Minute)
		h.settle()
	}
	if p := phaseOf(h.settle(), "2001:db8::1"); p != Registered {
		t.Fatalf("phase = %v after 10 min, want registered", p)
	}
}

// A link event (an RA changing the flags, a carrier blip report) while a
// failed probe's retry is pending must not probe at once: discovery keeps
// its backoff (issue 9: probes follow the same principle).
func TestLinkEventKeepsProbeBackoff(t *testing.T) {
	h := start(t, defaults(), true)
	h.reg.probeErr = errors.New("probe eth0: no reply")
	h.mon.link(true, false, true)
	h.mon.add(ll)
	h.settle()
	for _, managed := range []bool{true, false, true, false} {
		h.advance(time.Second)
		h.mon.send(netmon.Event{Kind: netmon.RAFlags, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Managed: managed, Other: true}})
		h.settle()
	}
	if p, _ := h.reg.snapshot(); p != 1 {
		t.Fatalf("%d probes within 4 s of a failed one, want 1 (next after the 30 s backoff)", p)
	}
	h.advance(30 * time.Second)
	h.settle()
	if p, _ := h.reg.snapshot(); p != 2 {
		t.Fatalf("%d probes after the backoff, want 2", p)
	}
}

// A deregistration whose one transmission the kernel refused (a firewall
// dropping UDP 547 for a moment, ENOBUFS) is a lost transmission, not the
// end of it: it is sent again after the retry delay. Otherwise the server
// keeps the binding until it expires — never, for a static address.
func TestRefusedDeregistrationIsRetried(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	a := global("2001:db8::1", netmon.Infinite)
	a.Class = netmon.ClassStatic
	h.mon.add(a)
	h.settle()
	h.reg.mu.Lock()
	h.reg.fail = true
	h.reg.mu.Unlock()
	h.mon.remove(a)
	h.settle()
	deregs := func() int {
		_, sends := h.reg.snapshot()
		n := 0
		for _, s := range sends {
			if s.deregistered {
				n++
			}
		}
		return n
	}
	if n := deregs(); n != 1 {
		t.Fatalf("%d deregistrations, want 1", n)
	}
	h.reg.mu.Lock()
	h.reg.fail = false
	h.reg.mu.Unlock()
	h.advance(scheduler.DefaultRetryFirst)
	h.settle()
	if n := deregs(); n != 2 {
		t.Fatalf("%d deregistrations %v after a refused one, want 2", n, scheduler.DefaultRetryFirst)
	}
	// Sent: nothing more.
	h.advance(time.Hour)
	h.settle()
	if n := deregs(); n != 2 {
		t.Fatalf("%d deregistrations after the one that went out, want 2", n)
	}
}

// Removed, then re-added while its deregistration is still being sent:
// the new registration must not start before the deregistration is done, or
// the two race on the wire and the server may apply the deregistration
// last, dropping an address the agent believes registered.
func TestReaddWaitsForDeregistrationInFlight(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	a := global("2001:db8::1", time.Hour)
	h.mon.add(a)
	h.settle()
	h.reg.holdDereg = true
	h.mon.remove(a)
	h.mon.add(a)
	// All the agent does until the deregistration ends: no registration.
	_, sends := h.reg.snapshot()
	if len(sends) != 1 || len(h.xB) != 1 {
		t.Fatalf("sends %+v, %d held: a registration started while the deregistration was in flight", sends, len(h.xB))
	}
	h.release()
	st := h.settle()
	_, sends = h.reg.snapshot()
	var got []string
	for _, s := range sends {
		got = append(got, map[bool]string{false: "register", true: "deregister"}[s.deregistered])
	}
	if diff := cmp.Diff([]string{"register", "deregister", "register"}, got); diff != "" {
		t.Errorf("exchanges (-want +got):\n%s", diff)
	}
	if p := phaseOf(st, "2001:db8::1"); p != Registered {
		t.Errorf("phase = %v, want registered", p)
	}
}

// What the server may hold decides both the state file and a live
// deregistration: an address whose failed exchanges sent nothing (every
// send refused, or the address was not found at the first transmission) is
// in neither; one whose INFORM went out but whose reply was lost is in both
// (the server may well have registered it).
func TestFailedAddressHeldOnlyIfSent(t *testing.T) {
	cfg := defaults()
	cfg.StatePath = filepath.Join(t.TempDir(), "state.json")
	h := startOnLink(t, cfg, true)
	never := global("2001:db8::1", 600*time.Second)
	h.mon.send(netmon.Event{Kind: netmon.AddrAdded, Addr: never}) // lookup misses: nothing sent
	h.settle()
	h.reg.mu.Lock()
	h.reg.fail = true // sent, no reply
	h.reg.mu.Unlock()
	lost := global("2001:db8::2", 600*time.Second)
	h.mon.add(lost)
	st := h.settle()
	if p1, p2 := phaseOf(st, "2001:db8::1"), phaseOf(st, "2001:db8::2"); p1 != Failed || p2 != Failed {
		t.Fatalf("phases %v, %v; want failed, failed", p1, p2)
	}
	h.advance(stateDebounce)
	h.settle()
	got, err := readState(cfg.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Addr != lost.IP {
		t.Errorf("state file = %+v, want only 2001:db8::2 (sent, reply lost)", got)
	}
	h.mon.remove(never)
	h.mon.remove(lost)
	h.settle()
	var dereg []netip.Addr
	_, sends := h.reg.snapshot()
	for _, s := range sends {
		if s.deregistered {
			dereg = append(dereg, s.addr)
		}
	}
	if len(dereg) != 1 || dereg[0] != lost.IP {
		t.Errorf("deregistered %v, want only 2001:db8::2", dereg)
	}
}
