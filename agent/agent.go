// Package agent wires netmon, registrar and scheduler into addrregd's
// behaviour (RFC 9686 §4): per interface it discovers whether a server wants
// registrations, then registers every eligible address from that address,
// refreshes the registrations as their lifetimes change and deregisters
// addresses that go away.
//
// One goroutine (Run's) owns all state. Netmon events, probe and exchange
// results, refresh deadlines and SIGHUP requests reach it over channels;
// exchanges run in their own goroutines, at most Config.MaxInflight at once
// and started no faster than Config.Rate.
//
// Per interface: unknown → probing → supported / unsupported (and down).
// Per address: pending → registering → registered (or failed, retried at the
// next trigger); deregistering when it goes away.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
	"github.com/addrreg/addrreg/scheduler"
)

// Monitor is what the agent needs of netmon.
type Monitor interface {
	Next(ctx context.Context) (netmon.Event, error)
	Lookup(ifindex int, ip netip.Addr) (netmon.Addr, bool, error)
}

// Registrar is what the agent needs of the registrar.
type Registrar interface {
	Probe(ctx context.Context, ifindex int, linkLocal netip.Addr) (bool, error)
	Register(ctx context.Context, t registrar.Target) (registrar.Result, error)
}

// Config is the agent's behaviour; cmd/addrregd fills it from flags.
type Config struct {
	// Enable: when false the agent watches and logs but sends nothing at all.
	Enable bool
	// Interfaces limits the agent to these interface names (empty = all);
	// Exclude removes names from that set.
	Interfaces, Exclude []string
	// RequireRAFlags: register on an interface only after an RA with M or O
	// has been seen there since it came up (RFC 9686 §4.1 SHOULD NOT).
	RequireRAFlags bool
	// Deregister sends zero lifetimes when an address leaves its interface.
	Deregister bool
	// DeregisterOnStop deregisters every registered address when Run's
	// context ends. A stopping daemon does not mean the addresses are out of
	// use, so it is off by default.
	DeregisterOnStop bool
	// StopTimeout bounds the work done after the context ends (default 1.5 s).
	StopTimeout time.Duration
	// Policy is the refresh policy (RFC 9686 §4.6).
	Policy scheduler.Policy
	// Rate is how many exchanges may start per second (bursts after start-up
	// or a renumbering); Burst how many at once. 0 = 100/s, burst 10.
	Rate  float64
	Burst int
	// MaxInflight bounds concurrent exchanges (default 256).
	MaxInflight int
	Clock       scheduler.Clock
	Logger      *slog.Logger
}

// Agent is the state machine. Create with New, run with Run.
type Agent struct {
	cfg   Config
	mon   Monitor
	reg   Registrar
	clock scheduler.Clock
	log   *slog.Logger
	lim   *rate.Limiter

	// Channels into the owner goroutine.
	events    chan netmon.Event
	probes    chan probeResult
	results   chan exchangeResult
	due       chan []key
	hup       chan struct{}
	wake      chan struct{}
	statusReq chan chan Status

	// Owned by Run's goroutine.
	ifaces    map[int]*iface
	queue     []job
	queued    map[key]bool
	inflight  int
	deadlines *scheduler.Deadlines[key]
	wakeArmed bool
	wg        sync.WaitGroup
	stopping  bool
}

type key struct {
	ifindex int
	addr    netip.Addr
}

func (k key) String() string { return fmt.Sprintf("%s%%%d", k.addr, k.ifindex) }

// IfState is an interface's discovery state.
type IfState int

// Interface states.
const (
	IfUnknown IfState = iota
	IfDown
	IfProbing
	IfSupported
	IfUnsupported
)

func (s IfState) String() string {
	return [...]string{"unknown", "down", "probing", "supported", "unsupported"}[s]
}

// Phase is an address's registration state.
type Phase int

// Address phases.
const (
	Pending Phase = iota
	Registering
	Registered
	Failed
	Deregistering
)

func (p Phase) String() string {
	return [...]string{"pending", "registering", "registered", "failed", "deregistering"}[p]
}

type iface struct {
	index     int
	name      string
	up        bool // admin up and carrier
	seenMO    bool // an RA with M or O since the link came up
	state     IfState
	probeGen  int
	stopProbe context.CancelFunc
	linkLocal netip.Addr
	addrs     map[netip.Addr]*addr
}

type addr struct {
	cur   netmon.Addr
	phase Phase
	// reg is what the last exchange told the server, replied to
	// (Registered) or not (Failed): the refresh rule times both, so a
	// failed address is tried again when a registered one would be
	// refreshed, not at every RA that re-announces it.
	reg    scheduler.Reg
	hasReg bool // the server holds a registration from us (a reply came)
	gen    int
	cancel context.CancelFunc
	again  bool // a trigger arrived during the exchange: look again when it ends
}

type job struct {
	k     key
	dereg bool
}

type probeResult struct {
	ifindex, gen int
	supported    bool
	err          error
}

type exchangeResult struct {
	k     key
	gen   int
	dereg bool
	res   registrar.Result
	err   error
}

// New makes an agent. mon and reg must be running (their Run loops are the
// caller's: reg must outlive Run so that deregistration on stop can finish).
func New(cfg Config, mon Monitor, reg Registrar) *Agent {
	if cfg.Clock == nil {
		cfg.Clock = scheduler.RealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 100
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 10
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 256
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 1500 * time.Millisecond
	}
	a := &Agent{
		cfg: cfg, mon: mon, reg: reg, clock: cfg.Clock, log: cfg.Logger,
		lim:       rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst),
		events:    make(chan netmon.Event, 64),
		probes:    make(chan probeResult),
		results:   make(chan exchangeResult),
		due:       make(chan []key),
		hup:       make(chan struct{}, 1),
		wake:      make(chan struct{}, 1),
		statusReq: make(chan chan Status),
		ifaces:    map[int]*iface{},
		queued:    map[key]bool{},
	}
	return a
}

// Rediscover restarts discovery on every interface (SIGHUP).
func (a *Agent) Rediscover() {
	select {
	case a.hup <- struct{}{}:
	default:
	}
}

// Run runs the agent until ctx ends, then (with DeregisterOnStop)
// deregisters, abandons what is in flight and returns within StopTimeout.
func (a *Agent) Run(ctx context.Context) error {
	loopCtx, cancelLoop := context.WithCancel(context.Background())
	defer cancelLoop()
	a.deadlines = scheduler.NewDeadlines(a.clock, func(_ time.Time, due []key) {
		select {
		case a.due <- due:
		case <-loopCtx.Done():
		}
	})
	defer a.deadlines.Close()

	// The reader: netmon's queue already coalesces, so this only moves
	// events onto the owner's channel.
	readErr := make(chan error, 1)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			ev, err := a.mon.Next(loopCtx)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case a.events <- ev:
			case <-loopCtx.Done():
				readErr <- loopCtx.Err()
				return
			}
		}
	}()

	a.log.Info("agent started", "enable", a.cfg.Enable, "require_ra_flags", a.cfg.RequireRAFlags,
		"deregister", a.cfg.Deregister, "deregister_on_stop", a.cfg.DeregisterOnStop)
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-readErr:
			runErr = fmt.Errorf("netmon: %w", err)
			break loop
		case ev := <-a.events:
			a.handleEvent(loopCtx, ev)
		case pr := <-a.probes:
			a.handleProbe(loopCtx, pr)
		case r := <-a.results:
			a.handleResult(loopCtx, r)
		case keys := <-a.due:
			a.handleDue(keys)
		case <-a.hup:
			a.rediscoverAll(loopCtx)
		case <-a.wake:
			a.wakeArmed = false
		case c := <-a.statusReq:
			c <- a.status()
		}
		a.pump(loopCtx)
	}
	a.stop(cancelLoop)
	return runErr
}

// stop finishes the agent: registrations in flight are abandoned,
// deregistrations sent first when asked, and whatever is still in flight
// after StopTimeout abandoned too.
func (a *Agent) stop(cancelLoop context.CancelFunc) {
	a.stopping = true
	a.queue, a.queued = nil, map[key]bool{}
	var dereg []job
	for _, ifc := range a.ifaces {
		if ifc.stopProbe != nil {
			ifc.stopProbe()
		}
		for _, ad := range ifc.addrs {
			if ad.cancel != nil {
				ad.cancel()
				ad.cancel = nil
			}
			if a.cfg.DeregisterOnStop && a.cfg.Enable && (ad.hasReg || ad.phase == Registering) {
				dereg = append(dereg, job{k: key{ifc.index, ad.cur.IP}, dereg: true})
			}
		}
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), a.cfg.StopTimeout)
	defer cancel()
	if len(dereg) > 0 {
		a.log.Info("stopping: deregistering", "addresses", len(dereg))
	}
	for len(dereg) > 0 || a.inflight > 0 {
		for len(dereg) > 0 && a.inflight < a.cfg.MaxInflight {
			a.startExchange(stopCtx, dereg[0])
			dereg = dereg[1:]
		}
		select {
		case r := <-a.results:
			a.inflight--
			a.logResult(r)
		case <-a.probes:
		case <-a.events:
		case <-a.due:
		case <-a.wake:
		case <-stopCtx.Done():
			a.log.Warn("stopping: abandoning exchanges in flight", "in_flight", a.inflight, "not_started", len(dereg))
			dereg = nil
			a.inflight = 0
		}
	}
	cancelLoop()
	// Drain so that every goroutine can deliver its last result and end.
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			a.log.Info("agent stopped")
			return
		case r := <-a.results:
			a.logResult(r)
		case <-a.probes:
		case <-a.events:
		case <-a.due:
		}
	}
}

func (a *Agent) wanted(name string) bool {
	if slices.Contains(a.cfg.Exclude, name) {
		return false
	}
	return len(a.cfg.Interfaces) == 0 || slices.Contains(a.cfg.Interfaces, name)
}

func (a *Agent) handleEvent(ctx context.Context, ev netmon.Event) {
	switch ev.Kind {
	case netmon.LinkAdded, netmon.LinkUpdated, netmon.LinkRenamed, netmon.LinkChanged, netmon.RAFlags:
		a.handleLink(ctx, ev)
	case netmon.LinkRemoved:
		if ifc, ok := a.ifaces[ev.Link.Index]; ok {
			a.log.Info("interface removed", "iface", ifc.name)
			a.leaveLink(ifc, false)
			delete(a.ifaces, ev.Link.Index)
		}
	case netmon.AddrAdded, netmon.AddrUpdated:
		a.handleAddr(ctx, ev.Addr)
	case netmon.AddrRemoved:
		a.handleAddrRemoved(ev.Addr)
	case netmon.ClockJump:
		a.log.Info("clock jumped: lifetimes re-read")
	}
}

func (a *Agent) iface(l netmon.Link) *iface {
	ifc, ok := a.ifaces[l.Index]
	if !ok {
		ifc = &iface{index: l.Index, name: l.Name, addrs: map[netip.Addr]*addr{}}
		a.ifaces[l.Index] = ifc
	}
	return ifc
}

func (a *Agent) handleLink(ctx context.Context, ev netmon.Event) {
	l := ev.Link
	ifc := a.iface(l)
	if l.Name != "" && ifc.name != l.Name {
		if ifc.name != "" {
			a.log.Info("interface renamed", "iface", l.Name, "old", ifc.name)
		}
		ifc.name = l.Name
	}
	if !a.wanted(ifc.name) {
		if ifc.state != IfUnknown || len(ifc.addrs) > 0 {
			a.leaveLink(ifc, false)
		}
		return
	}
	up := l.Up && l.LowerUp
	wasUp := ifc.up
	ifc.up = up
	switch {
	case !up && wasUp:
		a.log.Info("interface down", "iface", ifc.name)
		a.leaveLink(ifc, true)
		ifc.state = IfDown
		return
	case !up:
		ifc.state = IfDown
		return
	case !wasUp || ev.Kind == netmon.LinkChanged:
		// RFC 9686 §4.1: discover afresh on every (re)connection, with no
		// cached knowledge of the link.
		if wasUp {
			a.leaveLink(ifc, true)
		}
		ifc.seenMO = false
	}
	if l.Managed || l.Other {
		if !ifc.seenMO {
			a.log.Info("RA with M or O flag seen", "iface", ifc.name, "managed", l.Managed, "other", l.Other)
		}
		ifc.seenMO = true
	}
	if ifc.state == IfUnknown || ifc.state == IfDown {
		a.startProbe(ctx, ifc)
	}
	a.registerAll(ifc)
}

// leaveLink forgets what was learnt about the link: support is unknown and
// every address must be registered again once it is re-discovered. With
// keepAddrs the addresses stay known (pending).
func (a *Agent) leaveLink(ifc *iface, keepAddrs bool) {
	if ifc.stopProbe != nil {
		ifc.stopProbe()
		ifc.stopProbe = nil
	}
	ifc.probeGen++
	ifc.state = IfUnknown
	for ip, ad := range ifc.addrs {
		k := key{ifc.index, ip}
		a.deadlines.Remove(k)
		delete(a.queued, k)
		if ad.cancel != nil {
			ad.cancel()
			ad.cancel = nil
		}
		ad.gen++
		ad.phase, ad.hasReg = Pending, false
		if !keepAddrs {
			delete(ifc.addrs, ip)
		}
	}
}

func (a *Agent) startProbe(ctx context.Context, ifc *iface) {
	if !a.cfg.Enable || !ifc.up {
		return
	}
	if !ifc.linkLocal.IsValid() {
		// Waiting for a DAD-complete link-local address: its arrival probes.
		ifc.state = IfUnknown
		return
	}
	if ifc.stopProbe != nil {
		ifc.stopProbe()
	}
	ifc.probeGen++
	ifc.state = IfProbing
	pctx, cancel := context.WithCancel(ctx)
	ifc.stopProbe = cancel
	gen, index, ll := ifc.probeGen, ifc.index, ifc.linkLocal
	a.log.Info("discovering registration support", "iface", ifc.name, "from", ll)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ok, err := a.reg.Probe(pctx, index, ll)
		select {
		case a.probes <- probeResult{ifindex: index, gen: gen, supported: ok, err: err}:
		case <-ctx.Done():
		}
	}()
}

func (a *Agent) handleProbe(ctx context.Context, pr probeResult) {
	ifc, ok := a.ifaces[pr.ifindex]
	if !ok || pr.gen != ifc.probeGen {
		return
	}
	ifc.stopProbe = nil
	switch {
	case pr.err != nil:
		if errors.Is(pr.err, context.Canceled) {
			return
		}
		a.log.Warn("discovery failed", "iface", ifc.name, "err", pr.err)
		ifc.state = IfUnknown
	case pr.supported:
		a.log.Info("registration supported on link", "iface", ifc.name)
		ifc.state = IfSupported
		a.registerAll(ifc)
	default:
		a.log.Info("registration not offered on link (no option 148): registering nothing", "iface", ifc.name)
		ifc.state = IfUnsupported
	}
}

// eligible reports whether ad on ifc may be registered now.
func (a *Agent) eligible(ifc *iface, ad *addr) bool {
	return a.cfg.Enable && ifc.up && ifc.state == IfSupported &&
		(!a.cfg.RequireRAFlags || ifc.seenMO) && ad.cur.Registrable
}

func (a *Agent) registerAll(ifc *iface) {
	for _, ad := range ifc.addrs {
		if ad.phase == Pending || ad.phase == Failed {
			a.consider(ifc, ad)
		}
	}
}

func (a *Agent) handleAddr(ctx context.Context, na netmon.Addr) {
	ifc, ok := a.ifaces[na.Index]
	if !ok {
		ifc = a.iface(netmon.Link{Index: na.Index, Name: na.Ifname})
	}
	if !a.wanted(ifc.name) {
		return
	}
	if na.Class == netmon.ClassLinkLocal {
		wasValid := ifc.linkLocal.IsValid()
		if na.State != netmon.StateTentative && na.State != netmon.StateDADFailed {
			ifc.linkLocal = na.IP
			if !wasValid && ifc.up && ifc.state == IfUnknown {
				a.startProbe(ctx, ifc)
			}
		}
		return
	}
	ad, known := ifc.addrs[na.IP]
	if !known {
		ad = &addr{}
		ifc.addrs[na.IP] = ad
	}
	prev := ad.cur
	ad.cur = na
	if !na.Registrable {
		if known && prev.Registrable {
			a.log.Info("address no longer registrable", "iface", ifc.name, "addr", na.IP, "class", na.Class, "state", na.State)
			a.forget(ifc, ad, a.cfg.Deregister && ad.hasReg)
		}
		return
	}
	if !known || !prev.Registrable {
		a.log.Debug("address eligible", "iface", ifc.name, "addr", na.IP, "class", na.Class)
	}
	a.consider(ifc, ad)
}

// consider decides what an address needs after a trigger: a first
// registration, a refresh (RFC 9686 §4.6 lifetime change), or nothing.
func (a *Agent) consider(ifc *iface, ad *addr) {
	if !a.eligible(ifc, ad) {
		return
	}
	k := key{ifc.index, ad.cur.IP}
	switch ad.phase {
	case Pending:
		a.enqueue(job{k: k})
	case Registering, Deregistering:
		ad.again = true
	case Registered, Failed:
		now := a.clock.Now()
		// The event may have waited in netmon's queue: count the
		// lifetime down to now before comparing.
		valid := ad.cur.Valid
		if !ad.cur.Observed.IsZero() {
			_, valid = ad.cur.Remaining(now)
		}
		at, refresh := a.cfg.Policy.LifetimeChanged(ad.reg, now, valid, a.static(ad.cur))
		if !refresh {
			return
		}
		if cur, ok := a.deadlines.When(k); ok && !cur.After(at) {
			return // an earlier refresh is already due
		}
		a.log.Debug("lifetime changed: refresh scheduled", "iface", ifc.name, "addr", k.addr,
			"valid", valid, "told_server", ad.reg.Valid, "at", at)
		a.deadlines.Set(k, at)
	}
}

func (a *Agent) static(na netmon.Addr) bool {
	return na.Class == netmon.ClassStatic || na.Valid == netmon.Infinite
}

func (a *Agent) handleAddrRemoved(na netmon.Addr) {
	ifc, ok := a.ifaces[na.Index]
	if !ok {
		return
	}
	ad, ok := ifc.addrs[na.IP]
	if !ok {
		if na.IP == ifc.linkLocal {
			ifc.linkLocal = netip.Addr{}
		}
		return
	}
	a.log.Info("address removed", "iface", ifc.name, "addr", na.IP)
	a.forget(ifc, ad, a.cfg.Deregister && (ad.hasReg || ad.phase == Registering))
	delete(ifc.addrs, na.IP)
}

// forget stops all work on an address and optionally deregisters it.
func (a *Agent) forget(ifc *iface, ad *addr, dereg bool) {
	k := key{ifc.index, ad.cur.IP}
	a.deadlines.Remove(k)
	delete(a.queued, k)
	if ad.cancel != nil {
		ad.cancel()
		ad.cancel = nil
	}
	ad.gen++
	ad.phase, ad.hasReg, ad.again = Pending, false, false
	if dereg && a.cfg.Enable {
		ad.phase = Deregistering
		a.enqueue(job{k: k, dereg: true})
	}
}

func (a *Agent) handleDue(keys []key) {
	now := a.clock.Now()
	seen := map[key]bool{}
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		a.enqueue(job{k: k})
		// RFC 9686 §4.6 (MAY): refresh the interface's other addresses due
		// within the coalescing window along with this one.
		if a.cfg.Policy.Coalesce > 0 {
			for _, o := range a.deadlines.DueWithin(now, a.cfg.Policy.Coalesce, func(o key) bool { return o.ifindex == k.ifindex }) {
				if !seen[o] {
					seen[o] = true
					a.enqueue(job{k: o})
				}
			}
		}
	}
}

func (a *Agent) rediscoverAll(ctx context.Context) {
	a.log.Info("re-discovering on every interface")
	for _, ifc := range a.ifaces {
		if !ifc.up || !a.wanted(ifc.name) {
			continue
		}
		a.leaveLink(ifc, true)
		a.startProbe(ctx, ifc)
	}
}

func (a *Agent) enqueue(j job) {
	if a.queued[j.k] {
		// A deregistration replaces a queued registration.
		if j.dereg {
			for i := range a.queue {
				if a.queue[i].k == j.k {
					a.queue[i].dereg = true
				}
			}
		}
		return
	}
	a.queued[j.k] = true
	a.queue = append(a.queue, j)
}

// pump starts queued exchanges within the in-flight bound and the rate.
func (a *Agent) pump(ctx context.Context) {
	for len(a.queue) > 0 && a.inflight < a.cfg.MaxInflight {
		now := a.clock.Now()
		r := a.lim.ReserveN(now, 1)
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			if !a.wakeArmed {
				a.wakeArmed = true
				a.clock.AfterFunc(d, func() {
					select {
					case a.wake <- struct{}{}:
					default:
					}
				})
			}
			return
		}
		j := a.queue[0]
		a.queue = a.queue[1:]
		delete(a.queued, j.k)
		a.startExchange(ctx, j)
	}
}

func (a *Agent) startExchange(ctx context.Context, j job) {
	ifc, ok := a.ifaces[j.k.ifindex]
	if !ok {
		return
	}
	ad, ok := ifc.addrs[j.k.addr]
	var gen int
	if ok {
		gen = ad.gen
	}
	if !j.dereg {
		if !ok || !a.eligible(ifc, ad) || a.stopping {
			return
		}
		a.deadlines.Remove(j.k)
		ad.phase = Registering
	}
	xctx, cancel := context.WithCancel(ctx)
	if ok && !j.dereg {
		ad.cancel = cancel
	}
	t := registrar.Target{Ifindex: j.k.ifindex, Addr: j.k.addr}
	if j.dereg {
		t.Lifetimes = func() (time.Duration, time.Duration, bool) { return 0, 0, true }
		t.Deregister = true
	} else {
		t.Lifetimes = a.lifetimes(j.k)
	}
	a.inflight++
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer cancel()
		res, err := a.reg.Register(xctx, t)
		select {
		case a.results <- exchangeResult{k: j.k, gen: gen, dereg: j.dereg, res: res, err: err}:
		case <-ctx.Done():
			// The owner is gone (stop timed out): nobody to tell.
		}
	}()
}

// lifetimes reads the address's current lifetimes from the kernel at each
// transmission (RFC 9686 §4.2: the IA Address carries the current ones).
func (a *Agent) lifetimes(k key) func() (time.Duration, time.Duration, bool) {
	return func() (time.Duration, time.Duration, bool) {
		cur, ok, err := a.mon.Lookup(k.ifindex, k.addr)
		if err != nil || !ok || !cur.Registrable {
			return 0, 0, false
		}
		return cur.Preferred, cur.Valid, true
	}
}

func (a *Agent) handleResult(_ context.Context, r exchangeResult) {
	a.inflight--
	a.logResult(r)
	ifc, ok := a.ifaces[r.k.ifindex]
	if !ok {
		return
	}
	ad, ok := ifc.addrs[r.k.addr]
	if !ok || ad.gen != r.gen {
		return // forgotten or superseded while in flight
	}
	if r.dereg {
		if ad.phase == Deregistering {
			ad.phase = Pending
			// The address may have come back meanwhile.
			if ad.cur.Registrable {
				a.consider(ifc, ad)
			}
		}
		return
	}
	ad.cancel = nil
	switch {
	case errors.Is(r.err, context.Canceled):
		ad.phase = Pending
	default:
		ad.phase = Failed
		if r.err == nil && r.res.Replied {
			ad.phase, ad.hasReg = Registered, true
		}
		ad.reg = a.cfg.Policy.Registered(a.clock.Now(), r.res.Valid, a.static(ad.cur))
		if ad.reg.Periodic() {
			a.deadlines.Set(r.k, ad.reg.Next)
		}
	}
	if ad.again {
		ad.again = false
		a.consider(ifc, ad)
	}
}

func (a *Agent) logResult(r exchangeResult) {
	attrs := []any{"iface", r.k.ifindex, "addr", r.k.addr, "sends", r.res.Sends}
	if ifc, ok := a.ifaces[r.k.ifindex]; ok {
		attrs[1] = ifc.name
	}
	switch {
	case r.dereg && r.res.Replied:
		a.log.Info("deregistered", attrs...)
	case r.dereg:
		a.log.Info("deregistration sent", append(attrs, "replied", false)...)
	case r.err == nil && r.res.Replied:
		a.log.Info("registered", append(attrs, "preferred", r.res.Preferred, "valid", r.res.Valid, "took", r.res.Duration)...)
	case errors.Is(r.err, context.Canceled):
		a.log.Debug("exchange abandoned", attrs...)
	default:
		a.log.Warn("registration failed", append(attrs, "err", r.err)...)
	}
}

// Status is a snapshot of the agent's state, for logs and tests.
type Status struct {
	Interfaces []IfaceStatus
	Queued     int
	InFlight   int
}

// IfaceStatus is one interface's state.
type IfaceStatus struct {
	Name      string
	State     IfState
	SeenMO    bool
	Addresses []AddrStatus
}

// AddrStatus is one address's state.
type AddrStatus struct {
	Addr        netip.Addr
	Phase       Phase
	NextRefresh time.Time // zero when none is scheduled
}

// Status returns a snapshot of the state; ctx bounds the wait for the owner.
func (a *Agent) Status(ctx context.Context) (Status, error) {
	c := make(chan Status, 1)
	select {
	case a.statusReq <- c:
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
	select {
	case s := <-c:
		return s, nil
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
}

func (a *Agent) status() Status {
	s := Status{Queued: len(a.queue), InFlight: a.inflight}
	for _, ifc := range a.ifaces {
		is := IfaceStatus{Name: ifc.name, State: ifc.state, SeenMO: ifc.seenMO}
		for ip, ad := range ifc.addrs {
			as := AddrStatus{Addr: ip, Phase: ad.phase}
			if at, ok := a.deadlines.When(key{ifc.index, ip}); ok {
				as.NextRefresh = at
			}
			is.Addresses = append(is.Addresses, as)
		}
		slices.SortFunc(is.Addresses, func(x, y AddrStatus) int { return x.Addr.Compare(y.Addr) })
		s.Interfaces = append(s.Interfaces, is)
	}
	slices.SortFunc(s.Interfaces, func(x, y IfaceStatus) int {
		if x.Name < y.Name {
			return -1
		}
		if x.Name > y.Name {
			return 1
		}
		return 0
	})
	return s
}
