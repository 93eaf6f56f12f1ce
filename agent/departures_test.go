package agent

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/scheduler"
)

// Deregistrations owed to addresses that left (departures.go): retried when
// refused, raced by no registration of the address re-added, kept across a
// carrier loss. Several were found by the property test (property_test.go),
// each pinned by the smallest sequence that shows it.

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

// A deregistration owed (the address removed while the link was up, its
// send refused) whose retry comes due while the carrier is lost is still
// owed when the link is back. It was dropped at that retry: the server
// kept the binding (for a static address, forever).
func TestOwedDeregistrationSurvivesCarrierLoss(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	a := registerStatic(h, "2001:db8::1")
	refuse(h, true) // and so is every send while the link is down
	h.mon.remove(a)
	h.mon.link(false, false, true)
	h.advance(time.Hour) // the retry comes due, and fails
	refuse(h, false)
	h.mon.send(netmon.Event{Kind: netmon.LinkChanged, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Other: true}})
	h.advance(time.Hour)
	wantSends(t, h, "the link back", false, true)
}
