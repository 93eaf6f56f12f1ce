package agent

import (
	"errors"
	"testing"
	"time"

	"github.com/addrreg/addrreg/netmon"
)

// Discovery that keeps failing backs off like registrations: 30 s, 60 s,
// 120 s … between probes, not a probe every 30 s for ever.
func TestFailedProbeBacksOff(t *testing.T) {
	h := start(t, defaults(), true)
	h.reg.probeErr = errors.New("probe eth0: sendmsg: network is unreachable")
	h.mon.link(true, false, true)
	h.mon.add(ll)
	h.settle()
	probes := func() int { p, _ := h.reg.snapshot(); return p }
	want := 1
	for _, d := range []time.Duration{30 * time.Second, 60 * time.Second, 120 * time.Second, 240 * time.Second} {
		h.advance(d - time.Second)
		h.settle()
		if got := probes(); got != want {
			t.Fatalf("%d probes %v before the retry after %v, want %d", got, time.Second, d, want)
		}
		h.advance(time.Second)
		h.settle()
		want++
		if got := probes(); got != want {
			t.Fatalf("%d probes after the retry after %v, want %d", got, d, want)
		}
	}
	// Success resets the backoff.
	h.reg.mu.Lock()
	h.reg.probeErr = nil
	h.reg.mu.Unlock()
	h.advance(480 * time.Second)
	if st := h.settle(); st.Interfaces[0].State != IfSupported {
		t.Fatalf("state %v, want supported", st.Interfaces[0].State)
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
