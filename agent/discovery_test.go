package agent

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
	"github.com/addrreg/addrreg/scheduler"
)

func raFlags(managed, other bool) netmon.Event {
	return netmon.Event{Kind: netmon.RAFlags, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Managed: managed, Other: other}}
}

// The RA condition lapses (the router's lifetime ran out): nothing new
// starts on the link — no registration, refresh or retry — but nothing is
// deregistered and the bindings stay registered. When an RA with M or O is
// back, every address whose refresh or retry came due meanwhile goes at
// once, and new addresses are registered.
func TestRAFlagsLapsePausesAndResumes(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	static := global("2001:db8::5", netmon.Infinite)
	static.Class = netmon.ClassStatic
	h.mon.add(static)
	h.mon.add(global("2001:db8::1", time.Hour))
	h.reg.fail = true
	h.mon.add(global("2001:db8::f", time.Hour))
	h.reg.fail = false
	h.settle()
	_, before := h.reg.snapshot()
	if len(before) != 3 {
		t.Fatalf("sends %+v, want 3 registrations", before)
	}

	h.mon.send(raFlags(false, false))
	if !h.logged("RA with M or O flag lapsed: starting no registration or refresh until one is seen again; registrations kept") {
		t.Error("the lapse is not logged")
	}
	h.mon.add(global("2001:db8::2", time.Hour)) // new during the lapse
	h.advance(5 * time.Hour)                    // past the static refresh (4 h) and the failed one's retries
	st := h.settle()
	if _, sends := h.reg.snapshot(); len(sends) != 3 {
		t.Fatalf("sends during the lapse: %+v", sends[3:])
	}
	want := map[string]Phase{"2001:db8::5": Registered, "2001:db8::1": Registered, "2001:db8::f": Failed, "2001:db8::2": Pending}
	for ip, p := range want {
		if got := phaseOf(st, ip); got != p {
			t.Errorf("%s during the lapse: %v, want %v (bindings kept, nothing deregistered)", ip, got, p)
		}
	}
	if st.Interfaces[0].SeenMO || st.Interfaces[0].State != IfSupported {
		t.Errorf("interface %+v, want supported without M/O", st.Interfaces[0])
	}

	h.mon.send(raFlags(true, false))
	st = h.settle()
	_, sends := h.reg.snapshot()
	var got []string
	for _, s := range sends[3:] {
		if s.deregistered {
			t.Errorf("deregistered %v", s.addr)
		}
		got = append(got, s.addr.String())
	}
	// The static refresh and the failed address's retry were held; the
	// new address is registered; the SLAAC one needs nothing.
	if diff := cmp.Diff([]string{"2001:db8::2", "2001:db8::5", "2001:db8::f"}, sorted(got)); diff != "" {
		t.Errorf("exchanges when M is back (-want +got):\n%s", diff)
	}
	for ip := range want {
		if p := phaseOf(st, ip); p != Registered {
			t.Errorf("%s: %v, want registered", ip, p)
		}
	}
	// The static address is on its 4 h cycle again.
	if next := addrStatus(t, st, "2001:db8::5").NextRefresh; !next.Equal(h.clk.Now().Add(4 * time.Hour)) {
		t.Errorf("static refresh at %v, want 4 h from now", next)
	}
}

// Without --require-ra-flags the RA condition does not gate anything.
func TestRAFlagsLapseIgnoredWhenNotRequired(t *testing.T) {
	cfg := defaults()
	cfg.RequireRAFlags = false
	h := startOnLink(t, cfg, true)
	static := global("2001:db8::5", netmon.Infinite)
	static.Class = netmon.ClassStatic
	h.mon.add(static)
	h.mon.send(raFlags(false, false))
	h.advance(4 * time.Hour)
	if _, sends := h.reg.snapshot(); len(sends) != 2 {
		t.Fatalf("sends %+v, want the registration and the 4 h refresh", sends)
	}
}

// The transitions are pure: a step returns the effects and performs none.
func TestStepReturnsEffects(t *testing.T) {
	m := newMachine(withDefaults(defaults()), t0, nil)
	up := netmon.Event{Kind: netmon.LinkAdded, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Other: true}}
	if effs := m.step(t0, evNetmon{up}); hasEffect[effProbe](effs) {
		t.Fatalf("probe without a link-local address: %+v", effs)
	}
	effs := m.step(t0, evNetmon{netmon.Event{Kind: netmon.AddrAdded, Addr: ll}})
	probes := effectsOf[effProbe](effs)
	if len(probes) != 1 || probes[0].from != ll.IP || probes[0].ifname != "eth0" {
		t.Fatalf("effects %+v, want one probe from %v", effs, ll.IP)
	}
	a := global("2001:db8::1", time.Hour)
	if effs := m.step(t0, evNetmon{netmon.Event{Kind: netmon.AddrAdded, Addr: a}}); hasEffect[effExchange](effs) {
		t.Fatalf("exchange before discovery: %+v", effs)
	}
	effs = m.step(t0, evProbe{ifindex: 2, gen: probes[0].gen, supported: true})
	xs := effectsOf[effExchange](effs)
	if len(xs) != 1 || xs[0].k != (key{2, a.IP}) || xs[0].dereg || xs[0].last != a {
		t.Fatalf("effects %+v, want the registration of %v", effs, a.IP)
	}
	// The reply: registered, nothing to start, no timer for a SLAAC address
	// (it refreshes when its lifetimes change) but the state file's.
	effs = m.step(t0.Add(time.Second), evResult{k: xs[0].k, gen: xs[0].gen, res: registrar0(a)})
	if hasEffect[effExchange](effs) || hasEffect[effProbe](effs) {
		t.Fatalf("effects %+v after the reply", effs)
	}
	if m.ifaces[2].addrs[a.IP].phase() != Registered {
		t.Fatalf("phase %v", m.ifaces[2].addrs[a.IP].phase())
	}
	// Removed: a deregistration with zero lifetimes, sent once.
	effs = m.step(t0.Add(2*time.Second), evNetmon{netmon.Event{Kind: netmon.AddrRemoved, Addr: a}})
	xs = effectsOf[effExchange](effs)
	if len(xs) != 1 || !xs[0].dereg || !xs[0].noWait || xs[0].k.addr != a.IP {
		t.Fatalf("effects %+v, want a deregistration", effs)
	}
	// Stopping with it in flight: nothing new, the stop waits for it.
	effs = m.step(t0.Add(3*time.Second), evStop{})
	if hasEffect[effExchange](effs) || m.stopped() {
		t.Fatalf("stop: effects %+v, stopped %v", effs, m.stopped())
	}
	m.step(t0.Add(3*time.Second), evResult{k: xs[0].k, gen: xs[0].gen, dereg: true, res: registrar0(netmon.Addr{})})
	if !m.stopped() {
		t.Fatal("not stopped after the last result")
	}
	if snap := m.snapshot(); len(snap) != 0 {
		t.Errorf("snapshot %+v after the deregistration, want empty", snap)
	}
}

func hasEffect[E effect](effs []effect) bool { return len(effectsOf[E](effs)) > 0 }

func effectsOf[E effect](effs []effect) []E {
	var out []E
	for _, e := range effs {
		if x, ok := e.(E); ok {
			out = append(out, x)
		}
	}
	return out
}

// registrar0 is a reply to one transmission carrying a's lifetimes.
func registrar0(a netmon.Addr) registrar.Result {
	return registrar.Result{Replied: true, Sends: 1, Preferred: a.Preferred, Valid: a.Valid, LastSent: t0}
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

// Discovery on a reconnected link starts afresh (RFC 9686 §4.1), its
// backoff too: after a long outage had pushed the probe retries to an
// hour, a link that comes back and whose first probe fails is asked again
// after Retry.First, not after the hour it had reached before.
func TestReconnectResetsProbeBackoff(t *testing.T) {
	h := start(t, defaults(), true)
	h.reg.probeErr = errors.New("probe eth0: no reply")
	h.mon.link(true, false, true)
	h.mon.add(ll)
	h.advance(6 * time.Hour) // failures 1…: 30 s, 1 min, … 1 h
	h.mon.link(false, false, true)
	h.mon.send(netmon.Event{Kind: netmon.LinkChanged, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Other: true}})
	before, _ := h.reg.snapshot()
	h.advance(scheduler.DefaultRetryFirst)
	if p, _ := h.reg.snapshot(); p != before+1 {
		t.Fatalf("%d probes %v after the reconnection's failed one, want 1", p-before, scheduler.DefaultRetryFirst)
	}
}
