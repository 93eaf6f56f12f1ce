package agent

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
	"github.com/addrreg/addrreg/scheduler"
)

// fakeMon is the monitor. Under a harness, send steps the machine at once;
// under the real loop (lifecycle_test.go), Next hands the events over.
type fakeMon struct {
	h     *harness // nil: events go to Next
	ch    chan netmon.Event
	mu    sync.Mutex
	addrs map[netip.Addr]netmon.Addr
	// lookErr makes Lookup fail.
	lookErr error
	// clk, when set, makes Lookup count an address's lifetimes down from
	// its Observed time, as the kernel does (netmon reads them afresh).
	clk *scheduler.FakeClock
}

func newFakeMon() *fakeMon {
	return &fakeMon{ch: make(chan netmon.Event, 1024), addrs: map[netip.Addr]netmon.Addr{}}
}

func (m *fakeMon) Next(ctx context.Context) (netmon.Event, error) {
	select {
	case e := <-m.ch:
		return e, nil
	case <-ctx.Done():
		return netmon.Event{}, ctx.Err()
	}
}

// send delivers an event.
func (m *fakeMon) send(e netmon.Event) {
	if m.h != nil {
		m.h.deliver(evNetmon{e})
		return
	}
	m.ch <- e
}

func (m *fakeMon) Lookup(_ int, ip netip.Addr) (netmon.Addr, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lookErr != nil {
		return netmon.Addr{}, false, m.lookErr
	}
	a, ok := m.addrs[ip]
	if ok && m.clk != nil && !a.Observed.IsZero() {
		now := m.clk.Now()
		a.Preferred, a.Valid = a.Remaining(now)
		a.Observed = now
	}
	return a, ok, nil
}

func (m *fakeMon) link(up bool, managed, other bool) {
	m.send(netmon.Event{Kind: netmon.LinkAdded, Link: netmon.Link{Index: 2, Name: "eth0", Up: up, LowerUp: up, Managed: managed, Other: other}})
}

func (m *fakeMon) add(a netmon.Addr) {
	m.mu.Lock()
	m.addrs[a.IP] = a
	m.mu.Unlock()
	m.send(netmon.Event{Kind: netmon.AddrAdded, Addr: a})
}

func (m *fakeMon) update(a netmon.Addr) {
	m.mu.Lock()
	m.addrs[a.IP] = a
	m.mu.Unlock()
	m.send(netmon.Event{Kind: netmon.AddrUpdated, Addr: a})
}

func (m *fakeMon) remove(a netmon.Addr) {
	m.mu.Lock()
	delete(m.addrs, a.IP)
	m.mu.Unlock()
	m.send(netmon.Event{Kind: netmon.AddrRemoved, Addr: a})
}

type sent struct {
	addr         netip.Addr
	pref, valid  time.Duration
	deregistered bool
	at           time.Time // the fake clock's time of the send
	fqdn         string    // the Client FQDN it carried ("": none)
}

// fakeReg is the registrar: scripted answers, and a record of what was
// sent. It is safe for concurrent use (the real loop calls it from the
// exchanges' goroutines).
type fakeReg struct {
	mu        sync.Mutex
	supported bool
	probes    int
	sends     []sent
	silent    bool // no server: registrations wait for their context
	fail      bool // no reply: every exchange fails after its transmissions
	refuse    bool // every send refused (EPERM): nothing reaches the server
	// holdDereg: deregistrations wait until the harness releases them (or
	// for their context).
	holdDereg  bool
	probeErr   error         // Probe fails with this
	blockProbe bool          // Probe waits for its context (no server answers)
	probeFrom  []netip.Addr  // source of each probe
	lastSent   time.Duration // Result.LastSent = now - lastSent
	clk        *scheduler.FakeClock
}

// probe records a probe and says how it ends; block: it waits for its
// context.
func (r *fakeReg) probe(from netip.Addr) (ok bool, err error, block bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.probes++
	r.probeFrom = append(r.probeFrom, from)
	return r.supported, r.probeErr, r.blockProbe
}

func (r *fakeReg) Probe(ctx context.Context, _ int, from netip.Addr) (bool, error) {
	ok, err, block := r.probe(from)
	if block {
		<-ctx.Done()
		return false, ctx.Err()
	}
	return ok, err
}

// blocks reports whether an exchange for t would wait for its context.
func (r *fakeReg) blocks(t registrar.Target) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return (r.silent && !t.Deregister) || (r.holdDereg && t.Deregister)
}

// exchange runs one exchange that does not block.
func (r *fakeReg) exchange(t registrar.Target) (registrar.Result, error) {
	p, v, ok := t.Lifetimes()
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok {
		r.sends = append(r.sends, sent{t.Addr, p, v, t.Deregister, r.now(), t.FQDN})
	}
	if !ok {
		return registrar.Result{}, registrar.ErrAddressGone
	}
	if r.refuse {
		r.sends = r.sends[:len(r.sends)-1]
		return registrar.Result{}, errRefused
	}
	if r.fail {
		return registrar.Result{Sends: 3, Preferred: p, Valid: v}, registrar.ErrExchangeFailed
	}
	res := registrar.Result{Replied: true, Sends: 1, Preferred: p, Valid: v}
	if r.clk != nil {
		res.LastSent = r.clk.Now().Add(-r.lastSent)
	}
	return res, nil
}

// blocked records the first transmission of an exchange that then waits.
func (r *fakeReg) blocked(t registrar.Target) registrar.Result {
	p, v, ok := t.Lifetimes()
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok && !t.Deregister {
		r.sends = append(r.sends, sent{t.Addr, p, v, t.Deregister, r.now(), t.FQDN})
	}
	return registrar.Result{Sends: 1}
}

func (r *fakeReg) Register(ctx context.Context, t registrar.Target) (registrar.Result, error) {
	if r.blocks(t) {
		res := r.blocked(t)
		<-ctx.Done()
		return res, ctx.Err()
	}
	return r.exchange(t)
}

// now is the fake clock's time (zero without one).
func (r *fakeReg) now() time.Time {
	if r.clk == nil {
		return time.Time{}
	}
	return r.clk.Now()
}

func (r *fakeReg) snapshot() (int, []sent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.probes, append([]sent(nil), r.sends...)
}

// errRefused is fakeReg.refuse's error: a send the kernel refused.
var errRefused = errors.New("sendmsg: operation not permitted")

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func global(ip string, valid time.Duration) netmon.Addr {
	return netmon.Addr{Index: 2, Ifname: "eth0", IP: netip.MustParseAddr(ip), PrefixLen: 64,
		Preferred: valid / 2, Valid: valid, Class: netmon.ClassGlobal, State: netmon.StatePreferred, Registrable: true}
}

var ll = netmon.Addr{Index: 2, Ifname: "eth0", IP: netip.MustParseAddr("fe80::1"), PrefixLen: 64,
	Valid: netmon.Infinite, Preferred: netmon.Infinite, Class: netmon.ClassLinkLocal, State: netmon.StatePreferred}

// harness steps a machine synchronously: it performs each effect at once
// (a probe or exchange calls the fake and queues its result, unless the
// fake blocks it), feeds the results back in order, and fires the timer
// when the fake clock reaches it. After every call, the machine has done
// all it can until the clock moves or the test acts.
type harness struct {
	t       *testing.T
	clk     *scheduler.FakeClock
	mon     *fakeMon
	reg     *fakeReg
	ag      *Agent // unstarted: its configuration and its exchanges' targets
	m       *machine
	writer  *stateWriter
	timerAt time.Time
	results []event             // to feed back, in order
	probesB map[int]effProbe    // blocked probes, by generation
	xB      map[int]effExchange // blocked exchanges, by generation
	logs    []effLog
	beats   []Summary
	stopped bool
}

func start(t *testing.T, cfg Config, supported bool) *harness {
	t.Helper()
	h := &harness{t: t, clk: scheduler.NewFakeClock(t0), mon: newFakeMon(), reg: &fakeReg{supported: supported},
		probesB: map[int]effProbe{}, xB: map[int]effExchange{}}
	h.mon.h = h
	h.reg.clk = h.clk
	cfg.Clock = h.clk
	if cfg.Policy == (scheduler.Policy{}) {
		cfg.Policy = scheduler.NewPolicy(func() float64 { return 0.5 }) // multiplier 1.0
	}
	if cfg.Rate == 0 {
		cfg.Rate, cfg.Burst = 1e6, 1e6
	}
	if cfg.Rand == nil {
		cfg.Rand = func() float64 { return 0 } // retries at their nominal delay
	}
	h.ag = New(cfg, h.mon, h.reg)
	cfg = h.ag.cfg
	if cfg.StatePath != "" {
		h.writer = newStateWriter(cfg.StatePath, cfg.Logger)
	}
	h.m = newMachine(cfg, h.clk.Now(), loadState(cfg.StatePath, h.clk.Now(), cfg.Logger))
	h.deliver(evTimer{}) // as Run does: the first heartbeat
	t.Cleanup(h.shutdown)
	return h
}

// deliver steps ev, then everything that follows from it.
func (h *harness) deliver(ev event) {
	h.t.Helper()
	if h.stopped {
		return
	}
	h.perform(h.m.step(h.clk.Now(), ev))
	for n := 0; ; n++ {
		if n > 1e6 {
			h.t.Fatal("the machine does not come to rest")
		}
		switch {
		case len(h.results) > 0:
			ev := h.results[0]
			h.results = h.results[1:]
			h.perform(h.m.step(h.clk.Now(), ev))
		case !h.timerAt.IsZero() && !h.timerAt.After(h.clk.Now()):
			h.timerAt = time.Time{}
			h.perform(h.m.step(h.clk.Now(), evTimer{}))
		default:
			return
		}
	}
}

// perform does what the owner loop does for each effect, synchronously.
func (h *harness) perform(effects []effect) {
	for _, e := range effects {
		switch e := e.(type) {
		case effLog:
			h.logs = append(h.logs, e)
			h.ag.cfg.Logger.Log(context.Background(), e.level, e.msg, e.args...)
		case effProbe:
			ok, err, block := h.reg.probe(e.from)
			if block {
				h.probesB[e.gen] = e
				continue
			}
			h.results = append(h.results, evProbe{ifindex: e.ifindex, gen: e.gen, supported: ok, err: err})
		case effCancel:
			if p, ok := h.probesB[e.gen]; ok {
				delete(h.probesB, e.gen)
				h.results = append(h.results, evProbe{ifindex: p.ifindex, gen: p.gen, err: context.Canceled})
			}
			if x, ok := h.xB[e.gen]; ok {
				delete(h.xB, e.gen)
				h.results = append(h.results, evResult{k: x.k, gen: x.gen, dereg: x.dereg, res: registrar.Result{Sends: 1}, err: context.Canceled})
			}
		case effExchange:
			t := h.ag.target(e)
			if h.reg.blocks(t) {
				h.reg.blocked(t)
				h.xB[e.gen] = e
				continue
			}
			res, err := h.reg.exchange(t)
			h.results = append(h.results, evResult{k: e.k, gen: e.gen, dereg: e.dereg, res: res, err: err})
		case effTimer:
			h.timerAt = e.at
		case effSave:
			if h.writer != nil {
				h.writer.write(e.snap)
			}
		case effHeartbeat:
			h.beats = append(h.beats, e.s)
			if h.ag.cfg.Heartbeat != nil {
				h.ag.cfg.Heartbeat(e.s)
			}
		default:
			h.t.Fatalf("unknown effect %T", e)
		}
	}
}

// release ends the held deregistrations (fakeReg.holdDereg), in the order
// they started.
func (h *harness) release() {
	h.t.Helper()
	h.reg.mu.Lock()
	h.reg.holdDereg = false
	h.reg.mu.Unlock()
	gens := make([]int, 0, len(h.xB))
	for g, x := range h.xB {
		if x.dereg {
			gens = append(gens, g)
		}
	}
	slices.Sort(gens)
	for _, g := range gens {
		x := h.xB[g]
		delete(h.xB, g)
		res, err := h.reg.exchange(h.ag.target(x))
		h.deliver(evResult{k: x.k, gen: x.gen, dereg: true, res: res, err: err})
	}
}

// advance moves the fake clock by d, firing the timer at each wake-up on
// the way.
func (h *harness) advance(d time.Duration) { h.advanceTo(h.clk.Now().Add(d)) }

func (h *harness) advanceTo(target time.Time) {
	h.t.Helper()
	for !h.stopped && !h.timerAt.IsZero() && !h.timerAt.After(target) {
		if h.timerAt.After(h.clk.Now()) {
			h.clk.AdvanceTo(h.timerAt)
		}
		h.timerAt = time.Time{}
		h.deliver(evTimer{})
	}
	if target.After(h.clk.Now()) {
		h.clk.AdvanceTo(target)
	}
}

// status is the machine's status.
func (h *harness) report() Status { return h.m.report(nil) }

// idle is the status when some work may wait (for the rate, a blocked
// fake): the machine has always done all it can by then.
func (h *harness) idle() Status { return h.report() }

// settle is the status for a test that expects the machine to have
// finished: nothing queued behind the rate limit, no exchange under way.
func (h *harness) settle() Status {
	h.t.Helper()
	st := h.report()
	if st.Queued != 0 || st.InFlight != 0 {
		h.t.Fatalf("agent did not settle: %d queued, %d in flight: %+v", st.Queued, st.InFlight, st)
	}
	return st
}

// shutdown stops the machine as Run does when its context ends: what is
// owed goes out, what is blocked is abandoned, the state file is written.
func (h *harness) shutdown() {
	if h.stopped {
		return
	}
	h.deliver(evStop{})
	if !h.m.stopped() {
		h.deliver(evAbandon{}) // StopTimeout: blocked calls never end
	}
	h.stopped = true
	if h.writer != nil {
		h.writer.write(h.m.snapshot())
	}
}

// logged reports whether the machine logged msg.
func (h *harness) logged(msg string) bool {
	return slices.ContainsFunc(h.logs, func(l effLog) bool { return l.msg == msg })
}

func phaseOf(st Status, ip string) Phase {
	for _, i := range st.Interfaces {
		for _, a := range i.Addresses {
			if a.Addr == netip.MustParseAddr(ip) {
				return a.Phase
			}
		}
	}
	return -1
}

// startOnLink starts an agent whose eth0 is up, has seen an RA with the O
// flag and has its link-local address.
func startOnLink(t *testing.T, cfg Config, supported bool) *harness {
	t.Helper()
	h := start(t, cfg, supported)
	h.mon.link(true, false, true)
	h.mon.add(ll)
	return h
}

func defaults() Config {
	return Config{Enable: true, RequireRAFlags: true, Deregister: true}
}

// registerStatic adds a static address and lets it register.
func registerStatic(h *harness, ip string) netmon.Addr {
	a := global(ip, netmon.Infinite)
	a.Class = netmon.ClassStatic
	h.mon.add(a)
	h.settle()
	return a
}

// refuse makes every send fail (fakeReg.refuse), or not.
func refuse(h *harness, on bool) {
	h.reg.mu.Lock()
	h.reg.refuse = on
	h.reg.mu.Unlock()
}

// wantSends checks what went out: a registration (false) or a
// deregistration (true), in order.
func wantSends(t *testing.T, h *harness, what string, dereg ...bool) {
	t.Helper()
	_, sends := h.reg.snapshot()
	got := make([]bool, len(sends))
	for i, s := range sends {
		got[i] = s.deregistered
	}
	if !slices.Equal(got, dereg) {
		t.Errorf("%s: sends = %+v, want deregistered = %v", what, sends, dereg)
	}
}

// inSnapshot reports whether ip is in the state file's snapshot.
func inSnapshot(h *harness, ip string) bool {
	return slices.ContainsFunc(h.m.snapshot(), func(sa savedAddr) bool { return sa.Addr == netip.MustParseAddr(ip) })
}
