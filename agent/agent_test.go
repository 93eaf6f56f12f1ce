package agent

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/scheduler"
)

// These tests drive the state machine (step.go) synchronously through
// harness (harness_test.go): each event is stepped and its effects
// performed, with the fakes' results fed back, until nothing is left to
// do; time moves only with the fake clock. The owner loop's wiring is
// tested in lifecycle_test.go, the real kernel, sockets and server in the
// end-to-end tests (e2e_test.go and others).

func TestRegistersAfterDiscovery(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	h.mon.add(global("2001:db8::1", 1800*time.Second))
	dhcp := global("2001:db8::99", 1800*time.Second)
	dhcp.Class, dhcp.Registrable = netmon.ClassDHCPv6, false
	h.mon.add(dhcp)
	tent := global("2001:db8::2", 1800*time.Second)
	tent.State, tent.Registrable = netmon.StateTentative, false
	h.mon.add(tent)
	st := h.settle()
	probes, sends := h.reg.snapshot()
	if probes != 1 {
		t.Errorf("probes = %d, want 1", probes)
	}
	if len(sends) != 1 || sends[0].addr != netip.MustParseAddr("2001:db8::1") || sends[0].valid != 1800*time.Second {
		t.Fatalf("sends = %+v, want one registration of 2001:db8::1 valid 1800s", sends)
	}
	if p := phaseOf(st, "2001:db8::1"); p != Registered {
		t.Errorf("phase = %v, want registered", p)
	}
	// DAD completes: the tentative address becomes registrable and is registered.
	tent.State, tent.Registrable = netmon.StatePreferred, true
	h.mon.update(tent)
	h.settle()
	if _, sends = h.reg.snapshot(); len(sends) != 2 || sends[1].addr != tent.IP {
		t.Fatalf("after DAD: sends = %+v, want 2001:db8::2 registered second", sends)
	}
}

func TestNothingWithoutSupportOrFlags(t *testing.T) {
	t.Run("no option 148", func(t *testing.T) {
		h := start(t, defaults(), false)
		h.mon.link(true, true, true)
		h.mon.add(ll)
		h.mon.add(global("2001:db8::1", time.Hour))
		h.settle()
		if probes, sends := h.reg.snapshot(); probes != 1 || len(sends) != 0 {
			t.Fatalf("probes=%d sends=%+v, want 1 probe and no registration", probes, sends)
		}
	})
	t.Run("no M or O", func(t *testing.T) {
		h := start(t, defaults(), true)
		h.mon.link(true, false, false)
		h.mon.add(ll)
		h.mon.add(global("2001:db8::1", time.Hour))
		h.settle()
		if _, sends := h.reg.snapshot(); len(sends) != 0 {
			t.Fatalf("registered without an RA with M or O: %+v", sends)
		}
		h.mon.send(netmon.Event{Kind: netmon.RAFlags, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Managed: true}})
		h.settle()
		if _, sends := h.reg.snapshot(); len(sends) != 1 {
			t.Fatalf("after M flag: sends = %+v, want 1", sends)
		}
	})
	t.Run("flag overrides the RA rule", func(t *testing.T) {
		cfg := defaults()
		cfg.RequireRAFlags = false
		h := start(t, cfg, true)
		h.mon.link(true, false, false)
		h.mon.add(ll)
		h.mon.add(global("2001:db8::1", time.Hour))
		h.settle()
		if _, sends := h.reg.snapshot(); len(sends) != 1 {
			t.Fatalf("sends = %+v, want 1", sends)
		}
	})
	t.Run("disabled sends nothing", func(t *testing.T) {
		cfg := defaults()
		cfg.Enable = false
		h := start(t, cfg, true)
		h.mon.link(true, true, true)
		h.mon.add(ll)
		h.mon.add(global("2001:db8::1", time.Hour))
		h.settle()
		if probes, sends := h.reg.snapshot(); probes != 0 || len(sends) != 0 {
			t.Fatalf("disabled agent sent: probes=%d sends=%+v", probes, sends)
		}
	})
}

func TestRefreshOnLifetimeChange(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	a := global("2001:db8::1", 86400*time.Second)
	h.mon.add(a)
	h.settle()

	// Counting down in step: no refresh.
	h.advance(100 * time.Second)
	a.Valid = 86300 * time.Second
	h.mon.update(a)
	st := h.settle()
	if !st.Interfaces[0].Addresses[0].NextRefresh.IsZero() {
		t.Fatalf("refresh scheduled for a lifetime counting down in step: %+v", st)
	}
	// A cut to 7200 s: refresh at 0.8 × 7200 s × 1.0 from now.
	a.Valid = 7200 * time.Second
	h.mon.update(a)
	st = h.settle()
	want := h.clk.Now().Add(5760 * time.Second)
	if got := st.Interfaces[0].Addresses[0].NextRefresh; !got.Equal(want) {
		t.Fatalf("refresh at %v, want %v", got, want)
	}
	h.advance(5760 * time.Second)
	h.settle()
	_, sends := h.reg.snapshot()
	if len(sends) != 2 || sends[1].valid != 7200*time.Second {
		t.Fatalf("sends = %+v, want the refresh with the kernel's current lifetime", sends)
	}
}

func TestStaticRefreshAndCoalescing(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	s1 := global("2001:db8::10", netmon.Infinite)
	s1.Class = netmon.ClassStatic
	h.mon.add(s1)
	h.settle()
	h.advance(30 * time.Second)
	s2 := global("2001:db8::11", netmon.Infinite)
	s2.Class = netmon.ClassStatic
	h.mon.add(s2)
	h.settle()
	// s1 is due at 4h, s2 at 4h+30s: within the 60 s window, both go at 4h.
	h.advance(4*time.Hour - 30*time.Second)
	h.settle()
	_, sends := h.reg.snapshot()
	if len(sends) != 4 {
		t.Fatalf("sends = %+v, want 2 registrations and 2 coalesced refreshes at 4h", sends)
	}
}

func TestDeregistration(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	a := global("2001:db8::1", time.Hour)
	h.mon.add(a)
	h.settle()
	// Deprecated is still in use: no deregistration.
	a.Preferred, a.State = 0, netmon.StateDeprecated
	h.mon.update(a)
	h.settle()
	h.mon.remove(a)
	h.settle()
	_, sends := h.reg.snapshot()
	if len(sends) != 2 || !sends[1].deregistered || sends[1].valid != 0 || sends[1].pref != 0 {
		t.Fatalf("sends = %+v, want a registration then a zero-lifetime deregistration", sends)
	}
}

func TestStop(t *testing.T) {
	for _, dereg := range []bool{false, true} {
		cfg := defaults()
		cfg.DeregisterOnStop = dereg
		h := start(t, cfg, true)
		h.mon.link(true, false, true)
		h.mon.add(ll)
		h.mon.add(global("2001:db8::1", time.Hour))
		h.mon.add(global("2001:db8::2", time.Hour))
		h.settle()
		h.shutdown()
		_, sends := h.reg.snapshot()
		want := 2
		if dereg {
			want = 4
		}
		if len(sends) != want {
			t.Errorf("deregister-on-stop=%v: sends = %+v, want %d", dereg, sends, want)
		}
	}
}

func TestLinkChangeRediscovers(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	h.mon.add(global("2001:db8::1", time.Hour))
	h.settle()
	// Carrier down, then up: discovery and registration afresh.
	h.mon.send(netmon.Event{Kind: netmon.LinkUpdated, Link: netmon.Link{Index: 2, Name: "eth0", Up: true}})
	st := h.settle()
	if st.Interfaces[0].State != IfDown {
		t.Fatalf("state after carrier loss = %v", st.Interfaces[0].State)
	}
	h.mon.send(netmon.Event{Kind: netmon.LinkChanged, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Other: true}})
	h.settle()
	probes, sends := h.reg.snapshot()
	if probes != 2 || len(sends) != 2 {
		t.Fatalf("probes=%d sends=%d, want 2 and 2 after the link came back", probes, len(sends))
	}
}

func TestPacing(t *testing.T) {
	cfg := defaults()
	cfg.Rate, cfg.Burst = 100, 10
	h := startOnLink(t, cfg, true)
	for i := 0; i < 300; i++ {
		h.mon.add(global(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}).String(), time.Hour))
	}
	// The token bucket allows 10 at once, then 100 per second of the
	// fake clock: check the bound at every step of 100 ms.
	h.idle()
	for step := 0; step <= 40; step++ {
		_, sends := h.reg.snapshot()
		if limit := 10 + 10*step + 1; len(sends) > limit {
			t.Fatalf("%d exchanges started after %d ms at 100/s with burst 10 (limit %d)", len(sends), step*100, limit)
		}
		if len(sends) == 300 {
			if step < 28 {
				t.Fatalf("all 300 started after %d ms: not paced", step*100)
			}
			return
		}
		h.advance(100 * time.Millisecond)
		h.idle()
	}
	_, sends := h.reg.snapshot()
	t.Fatalf("only %d of 300 started after 4 s at 100/s", len(sends))
}

// A server that never answers: the failed address is not tried again at
// every RA that re-announces it, only after the retry backoff (30 s, 60 s,
// 120 s …, capped at its refresh interval), so a silent server sees at most
// MRC transmissions per address per step, never a storm; a success resets
// the backoff.
func TestFailedIsRetriedWithBackoff(t *testing.T) {
	h := start(t, defaults(), true)
	h.reg.fail = true
	h.mon.link(true, false, true)
	h.mon.add(ll)
	a := global("2001:db8::1", 600*time.Second)
	h.mon.add(a)
	st := h.settle()
	if p := phaseOf(st, "2001:db8::1"); p != Failed {
		t.Fatalf("phase = %v, want failed", p)
	}
	exchanges := func() int { _, s := h.reg.snapshot(); return len(s) }
	// RAs re-announce the address, lifetimes reset to what the RA says:
	// no new exchange before the retry is due.
	for i := 1; i <= 5; i++ {
		h.advance(2 * time.Second)
		h.mon.update(a)
		h.settle()
	}
	if n := exchanges(); n != 1 {
		t.Fatalf("%d exchanges after re-announcements, want 1", n)
	}
	last := t0
	// 30 s, 60 s, 120 s, 240 s, then the refresh interval (0.8 × 600 s).
	for i, d := range []time.Duration{30 * time.Second, 60 * time.Second, 120 * time.Second, 240 * time.Second, 480 * time.Second, 480 * time.Second} {
		st = h.settle()
		want := last.Add(d)
		if got := st.Interfaces[0].Addresses[0].NextRefresh; !got.Equal(want) {
			t.Fatalf("retry %d at %v, want %v (after %v)", i+1, got, want, d)
		}
		h.advanceTo(want)
		h.settle()
		if n := exchanges(); n != i+2 {
			t.Fatalf("%d exchanges after retry %d, want %d", n, i+1, i+2)
		}
		last = want
	}
	// A success resets the backoff: the next failure waits 30 s again.
	h.reg.mu.Lock()
	h.reg.fail = false
	h.reg.mu.Unlock()
	h.advanceTo(last.Add(480 * time.Second))
	if p := phaseOf(h.settle(), "2001:db8::1"); p != Registered {
		t.Fatalf("phase = %v, want registered", p)
	}
}

// Every kind of address (static, SLAAC, temporary, ULA) gets a retry when
// its exchange fails: none sits failed without one scheduled.
func TestEveryFailedAddressHasARetry(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	h.reg.fail = true
	static := global("2001:db8::5", netmon.Infinite)
	static.Class = netmon.ClassStatic
	temp := global("2001:db8::7", 600*time.Second)
	temp.Class = netmon.ClassTemporary
	ula := global("fd00::1", 900*time.Second)
	for _, a := range []netmon.Addr{static, global("2001:db8::6", 600*time.Second), temp, ula} {
		h.mon.add(a)
	}
	st := h.settle()
	for _, as := range st.Interfaces[0].Addresses {
		if as.Phase != Failed || as.NextRefresh.IsZero() || as.NextRefresh.After(t0.Add(30*time.Second)) {
			t.Errorf("%s: phase %v, retry at %v; want failed with a retry within 30 s", as.Addr, as.Phase, as.NextRefresh)
		}
	}
}

// Removed and re-added before the (rate-limited) deregistration went out:
// the deregistration is cancelled, the address registered again, and it
// does not stay pending.
func TestReaddCancelsQueuedDeregistration(t *testing.T) {
	cfg := defaults()
	cfg.Rate, cfg.Burst = 1, 1
	h := startOnLink(t, cfg, true)
	a := global("2001:db8::1", netmon.Infinite)
	a.Class = netmon.ClassStatic
	h.mon.add(a)
	h.settle()
	h.mon.remove(a) // the token is spent: the deregistration waits
	h.mon.add(a)
	h.idle()
	for range 3 {
		h.advance(time.Second)
		h.idle()
	}
	st := h.settle()
	_, sends := h.reg.snapshot()
	for _, x := range sends {
		if x.deregistered {
			t.Fatalf("deregistration sent for an address that was re-added: %+v", sends)
		}
	}
	if p := phaseOf(st, "2001:db8::1"); p != Registered {
		t.Fatalf("phase %v after re-add, want registered; sends %+v", p, sends)
	}
}

// A carrier flap while a paced burst is queued: every address is registered
// once after the link comes back, none twice, and none before.
func TestFlapDuringBurstNoDuplicates(t *testing.T) {
	cfg := defaults()
	cfg.Rate, cfg.Burst = 100, 10
	h := startOnLink(t, cfg, true)
	for i := range 100 {
		h.mon.add(global(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}).String(), time.Hour))
	}
	h.idle()
	h.mon.send(netmon.Event{Kind: netmon.LinkUpdated, Link: netmon.Link{Index: 2, Name: "eth0", Up: true}})
	h.mon.send(netmon.Event{Kind: netmon.LinkChanged, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Other: true}})
	h.idle()
	for range 40 {
		h.advance(100 * time.Millisecond)
		h.idle()
	}
	h.settle()
	_, sends := h.reg.snapshot()
	if len(sends) != 110 {
		t.Fatalf("%d exchanges, want 10 before the flap and 100 after", len(sends))
	}
}

// Discovery follows the link-local address: replaced while a probe runs,
// the probe restarts from the new one; tentative ones are never used.
func TestProbeFollowsLinkLocal(t *testing.T) {
	h := start(t, defaults(), true)
	h.reg.blockProbe = true
	h.mon.link(true, false, true)
	tent := ll
	tent.IP, tent.State = netip.MustParseAddr("fe80::9"), netmon.StateTentative
	h.mon.add(tent)
	h.mon.add(ll)
	h.settle()
	ll2 := ll
	ll2.IP = netip.MustParseAddr("fe80::2")
	h.mon.add(ll2)
	h.mon.remove(ll)
	h.settle()
	h.reg.mu.Lock()
	from := append([]netip.Addr(nil), h.reg.probeFrom...)
	h.reg.mu.Unlock()
	want := []netip.Addr{ll.IP, ll2.IP}
	if len(from) != 2 || from[0] != want[0] || from[1] != want[1] {
		t.Fatalf("probes sent from %v, want %v", from, want)
	}
}

// A probe that fails is tried again after a while; a link without support
// is asked again after a day.
func TestReprobe(t *testing.T) {
	h := start(t, defaults(), false)
	h.reg.probeErr = errors.New("sendmsg: network is unreachable")
	h.mon.link(true, false, true)
	h.mon.add(ll)
	h.settle()
	h.reg.mu.Lock()
	h.reg.probeErr = nil
	h.reg.mu.Unlock()
	h.advance(scheduler.DefaultRetryFirst)
	st := h.settle()
	if probes, _ := h.reg.snapshot(); probes != 2 || st.Interfaces[0].State != IfUnsupported {
		t.Fatalf("probes=%d state=%v after the retry, want 2 and unsupported", probes, st.Interfaces[0].State)
	}
	h.reg.mu.Lock()
	h.reg.supported = true
	h.reg.mu.Unlock()
	h.advance(reprobeUnsupported)
	st = h.settle()
	if probes, _ := h.reg.snapshot(); probes != 3 || st.Interfaces[0].State != IfSupported {
		t.Fatalf("probes=%d state=%v a day later, want 3 and supported", probes, st.Interfaces[0].State)
	}
}

// DAD failure (the address is another node's) stops the work but sends no
// deregistration; neither does its later removal.
func TestNoDeregistrationOfAStillAssignedAddress(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	a := global("2001:db8::1", time.Hour)
	h.mon.add(a)
	h.settle()
	a.State, a.Registrable = netmon.StateDADFailed, false
	h.mon.update(a)
	h.settle()
	h.mon.remove(a)
	h.settle()
	if _, sends := h.reg.snapshot(); len(sends) != 1 {
		t.Fatalf("sends = %+v, want only the registration", sends)
	}
}

// A deregistration owed for a removed address is sent on stop even when it
// was still waiting for the rate limiter.
func TestStopSendsOwedDeregistration(t *testing.T) {
	cfg := defaults()
	cfg.Rate, cfg.Burst = 1, 1
	h := startOnLink(t, cfg, true)
	a := global("2001:db8::1", time.Hour)
	h.mon.add(a)
	h.settle()
	h.mon.remove(a)
	h.idle()
	h.shutdown()
	_, sends := h.reg.snapshot()
	if len(sends) != 2 || !sends[1].deregistered {
		t.Fatalf("sends = %+v, want the registration and, on stop, the deregistration", sends)
	}
}

// The refresh baseline is the last transmission, not the reply's arrival.
func TestRefreshBaselineIsLastTransmission(t *testing.T) {
	h := start(t, defaults(), true)
	h.reg.lastSent = 10 * time.Second
	h.mon.link(true, false, true)
	h.mon.add(ll)
	a := global("2001:db8::10", netmon.Infinite)
	a.Class = netmon.ClassStatic
	h.mon.add(a)
	st := h.settle()
	want := t0.Add(-10 * time.Second).Add(4 * time.Hour)
	if got := st.Interfaces[0].Addresses[0].NextRefresh; !got.Equal(want) {
		t.Fatalf("static refresh at %v, want 4h after the last transmission (%v)", got, want)
	}
}

// A netlink lookup that fails is not the address leaving: the exchange
// goes on with netmon's last lifetimes.
func TestLookupErrorIsNotAddressGone(t *testing.T) {
	h := start(t, defaults(), true)
	h.mon.lookErr = errors.New("netlink: too many open files")
	h.mon.link(true, false, true)
	h.mon.add(ll)
	a := global("2001:db8::1", time.Hour)
	a.Observed = t0
	h.mon.add(a)
	st := h.settle()
	_, sends := h.reg.snapshot()
	if len(sends) != 1 || sends[0].valid != time.Hour || phaseOf(st, "2001:db8::1") != Registered {
		t.Fatalf("sends %+v, phase %v; want a registration with netmon's lifetimes", sends, phaseOf(st, "2001:db8::1"))
	}
}

// A clock jump (suspend/resume) refreshes every registration.
func TestClockJumpRefreshes(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	h.mon.add(global("2001:db8::1", time.Hour))
	h.mon.add(global("2001:db8::2", time.Hour))
	h.settle()
	h.mon.send(netmon.Event{Kind: netmon.ClockJump})
	h.settle()
	if _, sends := h.reg.snapshot(); len(sends) != 4 {
		t.Fatalf("%d exchanges, want 2 registrations and 2 refreshes after the jump", len(sends))
	}
}

// An exchange in flight is cancelled when its address goes or its link
// drops; its late result changes nothing. A removed address whose INFORM
// was on the wire is owed a deregistration (the server may hold it).
func TestInFlightExchangeCancelled(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	h.reg.silent = true
	a := global("2001:db8::1", time.Hour)
	h.mon.add(a)
	if st := h.idle(); st.InFlight != 1 || phaseOf(st, "2001:db8::1") != Registering {
		t.Fatalf("status %+v, want the registration in flight", st)
	}
	h.mon.remove(a)
	st := h.settle()
	if _, sends := h.reg.snapshot(); len(sends) != 2 || !sends[1].deregistered || len(h.xB) != 0 {
		t.Fatalf("sends %+v (%d blocked), want the registration cancelled, then a deregistration", sends, len(h.xB))
	}
	if len(st.Interfaces[0].Addresses) != 0 {
		t.Fatalf("addresses %+v after the removal", st.Interfaces[0].Addresses)
	}

	b := global("2001:db8::2", time.Hour)
	h.mon.add(b)
	h.mon.send(netmon.Event{Kind: netmon.LinkUpdated, Link: netmon.Link{Index: 2, Name: "eth0", Up: true}})
	if st := h.settle(); phaseOf(st, "2001:db8::2") != Pending || len(h.xB) != 0 {
		t.Fatalf("after carrier loss: %+v, %d blocked; want pending, nothing in flight", st, len(h.xB))
	}
	h.reg.silent = false
	h.mon.send(netmon.Event{Kind: netmon.LinkChanged, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Other: true}})
	if p := phaseOf(h.settle(), "2001:db8::2"); p != Registered {
		t.Fatalf("phase %v after the link came back, want registered", p)
	}
}
