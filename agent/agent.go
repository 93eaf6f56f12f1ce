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
// Per address: pending → registering → registered (or failed, retried after
// a backoff: retry.go); deregistering when it goes away. What the server
// holds is kept in a state file (statefile.go) across restarts.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
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
	// Retry is the backoff after a failed exchange or discovery; the zero
	// value means scheduler.DefaultRetry (30 s doubling to 1 h).
	Retry scheduler.Retry
	// StatePath is the state file (statefile.go); empty: none.
	StatePath string
	Clock     scheduler.Clock
	// Rand returns values uniform in [0, 1) for the retry jitter; default
	// math/rand/v2.Float64. Called from Run's goroutine only.
	Rand   func() float64
	Logger *slog.Logger
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
	reprobe   chan probeRetry
	hup       chan struct{}
	wake      chan struct{}
	statusReq chan chan Status

	// Owned by Run's goroutine.
	ifaces map[int]*iface
	// queue holds keys only; what a key needs (a registration, a refresh,
	// a deregistration or nothing any more) is decided from the state when
	// it reaches the front, so an entry can never carry a stale intent.
	queue  []key
	queued map[key]bool
	// owed: addresses removed from their interface that are owed a
	// deregistration (RFC 9686 §4.7). Re-adding the address cancels it.
	owed      map[key]bool
	inflight  int
	gen       int // generation counter for exchanges and probes, agent-wide
	deadlines *scheduler.Deadlines[key]
	wakeArmed bool
	stopping  bool
	wg        sync.WaitGroup
	// fatal ends Run: a component failed beyond retry (the registrar's
	// socket is closed).
	fatal error
	state stateFile
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

// Re-discovery (RFC 8415 §18.2.6 spirit): a link without registration
// support is asked again after the default Information Refresh Time, so a
// server that starts offering option 148 is noticed without a link flap. A
// probe that failed is tried again after Config.Retry's backoff.
const reprobeUnsupported = 24 * time.Hour // IRT_DEFAULT, RFC 8415 §21.23

type iface struct {
	index     int
	name      string
	hw        string // hardware address: with the name, the link's identity in the state file
	up        bool   // admin up and carrier
	seenMO    bool   // an RA with M or O since the link came up
	state     IfState
	probeGen  int
	stopProbe context.CancelFunc
	probeFrom netip.Addr // the link-local address the running probe uses
	retry     scheduler.Timer
	probeFail int                 // consecutive failed probes (retry backoff)
	lls       map[netip.Addr]bool // DAD-complete link-local addresses
	linkLocal netip.Addr          // the one discovery uses
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
	// told is the preferred lifetime the last replied-to exchange carried
	// (reg has the valid one), for the state file.
	told     time.Duration
	failures int // consecutive failed exchanges (retry backoff)
	gen      int // of the exchange in flight; results of others are stale
	cancel   context.CancelFunc
	again    bool // a trigger arrived during the exchange: look again when it ends
}

type probeResult struct {
	ifindex, gen int
	supported    bool
	err          error
}

type probeRetry struct{ ifindex, gen int }

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
	if cfg.Retry == (scheduler.Retry{}) {
		cfg.Retry = scheduler.DefaultRetry
	}
	if cfg.Rand == nil {
		cfg.Rand = mrand.Float64
	}
	return &Agent{
		cfg: cfg, mon: mon, reg: reg, clock: cfg.Clock, log: cfg.Logger,
		lim:       rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst),
		events:    make(chan netmon.Event, 64),
		probes:    make(chan probeResult),
		results:   make(chan exchangeResult),
		due:       make(chan []key),
		reprobe:   make(chan probeRetry),
		hup:       make(chan struct{}, 1),
		wake:      make(chan struct{}, 1),
		statusReq: make(chan chan Status),
		state:     newStateFile(cfg.StatePath, cfg.Logger),
		ifaces:    map[int]*iface{},
		queued:    map[key]bool{},
		owed:      map[key]bool{},
	}
}

// Rediscover restarts discovery on every interface (SIGHUP).
func (a *Agent) Rediscover() {
	select {
	case a.hup <- struct{}{}:
	default:
	}
}

func (a *Agent) nextGen() int {
	a.gen++
	return a.gen
}

// Run runs the agent until ctx ends, then deregisters what is owed (and,
// with DeregisterOnStop, everything registered), abandons what is in flight
// and returns within StopTimeout.
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
	a.loadState()
	a.startStateWriter(loopCtx)

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
	// A ready event must not win over a cancelled context: no new work
	// starts once the daemon is told to stop.
	for ctx.Err() == nil && a.fatal == nil {
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
		case pr := <-a.reprobe:
			a.handleReprobe(loopCtx, pr)
		case r := <-a.results:
			a.handleResult(r)
		case keys := <-a.due:
			a.handleDue(keys)
		case <-a.hup:
			a.rediscoverAll(loopCtx)
		case <-a.wake:
			a.wakeArmed = false
		case c := <-a.statusReq:
			c <- a.status()
			continue // changes nothing
		case <-a.state.tick:
			a.saveState()
			continue // an idle agent arms no timer
		}
		a.stateChanged()
		if ctx.Err() == nil && a.fatal == nil {
			a.pump(loopCtx)
		}
	}
	if runErr == nil {
		runErr = a.fatal
	}
	if runErr != nil {
		a.log.Error("agent stopping on a fatal error", "err", runErr)
	}
	a.stop(cancelLoop)
	return runErr
}

// stop finishes the agent. Registrations in flight are abandoned. Removed
// addresses still owed a deregistration get it, and with DeregisterOnStop
// so does every address the server holds: each is sent once without
// waiting for a reply, as many as fit in StopTimeout; the rest are logged.
func (a *Agent) stop(cancelLoop context.CancelFunc) {
	a.stopping = true
	var dereg []key
	for k := range a.owed {
		dereg = append(dereg, k)
	}
	for _, ifc := range a.ifaces {
		a.stopDiscovery(ifc)
		for ip, ad := range ifc.addrs {
			if ad.cancel != nil {
				ad.cancel()
				ad.cancel = nil
			}
			if a.cfg.DeregisterOnStop && a.cfg.Enable && ifc.up && (ad.hasReg || ad.phase == Registering) {
				dereg = append(dereg, key{ifc.index, ip})
			}
		}
	}
	a.queue, a.queued = nil, map[key]bool{}
	stopCtx, cancel := context.WithTimeout(context.Background(), a.cfg.StopTimeout)
	defer cancel()
	if len(dereg) > 0 {
		a.log.Info("stopping: deregistering", "addresses", len(dereg))
	}
	for len(dereg) > 0 || a.inflight > 0 {
		for len(dereg) > 0 && a.inflight < a.cfg.MaxInflight && stopCtx.Err() == nil {
			a.startDeregistration(stopCtx, dereg[0], true)
			dereg = dereg[1:]
		}
		select {
		case r := <-a.results:
			a.inflight--
			a.logResult(r)
			if r.dereg && r.err == nil {
				a.state.forget(r.k)
			}
		case <-a.probes:
		case <-a.reprobe:
		case <-a.events:
		case <-a.due:
		case <-a.wake:
		case <-stopCtx.Done():
			a.log.Warn("stopping: abandoning exchanges", "in_flight", a.inflight, "deregistrations_not_sent", len(dereg))
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
			a.saveStateNow()
			a.log.Info("agent stopped")
			return
		case r := <-a.results:
			a.logResult(r)
		case <-a.probes:
		case <-a.reprobe:
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
			for k := range a.owed {
				if k.ifindex == ifc.index {
					delete(a.owed, k) // nothing can be sent on it any more
				}
			}
			delete(a.ifaces, ev.Link.Index)
		}
	case netmon.AddrAdded, netmon.AddrUpdated:
		a.handleAddr(ctx, ev.Addr)
	case netmon.AddrRemoved:
		a.handleAddrRemoved(ctx, ev.Addr)
	case netmon.ClockJump:
		// After a suspend the server has counted its bindings down in
		// real time while our timers (monotonic) stood still: refresh
		// every registration, paced like any burst.
		n := 0
		for _, ifc := range a.ifaces {
			for ip, ad := range ifc.addrs {
				if ad.phase == Registered || ad.phase == Failed {
					a.enqueue(key{ifc.index, ip})
					n++
				}
			}
		}
		a.log.Info("clock jumped (suspend/resume or time set): refreshing registrations", "addresses", n)
	}
}

func (a *Agent) iface(l netmon.Link) *iface {
	ifc, ok := a.ifaces[l.Index]
	if !ok {
		ifc = &iface{index: l.Index, name: l.Name, addrs: map[netip.Addr]*addr{}, lls: map[netip.Addr]bool{}}
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
	if hw := l.HardwareAddr.String(); hw != "" {
		ifc.hw = hw
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
	a.stopDiscovery(ifc)
	ifc.state = IfUnknown
	for ip, ad := range ifc.addrs {
		a.quiesce(ifc, ad)
		if !keepAddrs {
			delete(ifc.addrs, ip)
		}
	}
}

// stopDiscovery cancels a running probe and a pending re-probe.
func (a *Agent) stopDiscovery(ifc *iface) {
	if ifc.stopProbe != nil {
		ifc.stopProbe()
		ifc.stopProbe = nil
	}
	if ifc.retry != nil {
		ifc.retry.Stop()
		ifc.retry = nil
	}
	ifc.probeGen = a.nextGen()
	ifc.probeFrom = netip.Addr{}
}

// quiesce stops all work on an address: no refresh due, no exchange in
// flight (a queued key finds nothing to do). The server's binding, if any,
// is forgotten: the address will be registered afresh when eligible.
func (a *Agent) quiesce(ifc *iface, ad *addr) {
	a.deadlines.Remove(key{ifc.index, ad.cur.IP})
	if ad.cancel != nil {
		ad.cancel()
		ad.cancel = nil
	}
	ad.gen = a.nextGen()
	ad.phase, ad.hasReg, ad.again, ad.failures = Pending, false, false, 0
}

func (a *Agent) startProbe(ctx context.Context, ifc *iface) {
	if !a.cfg.Enable || !ifc.up || a.stopping {
		return
	}
	a.stopDiscovery(ifc)
	if !ifc.linkLocal.IsValid() {
		// Waiting for a DAD-complete link-local address: its arrival probes.
		ifc.state = IfUnknown
		return
	}
	ifc.state = IfProbing
	pctx, cancel := context.WithCancel(ctx)
	ifc.stopProbe, ifc.probeFrom = cancel, ifc.linkLocal
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
	ifc.stopProbe, ifc.probeFrom = nil, netip.Addr{}
	switch {
	case pr.err != nil:
		if errors.Is(pr.err, context.Canceled) {
			return
		}
		if a.fatalError(pr.err) {
			return
		}
		ifc.probeFail++
		d := a.cfg.Retry.Delay(ifc.probeFail, 0, a.cfg.Rand)
		a.log.Warn("discovery failed; trying again", "iface", ifc.name, "err", pr.err, "in", d, "failures", ifc.probeFail)
		ifc.state = IfUnknown
		a.scheduleReprobe(ctx, ifc, d)
	case pr.supported:
		ifc.probeFail = 0
		a.log.Info("registration supported on link", "iface", ifc.name)
		ifc.state = IfSupported
		a.claimStale(ifc)
		a.registerAll(ifc)
	default:
		ifc.probeFail = 0
		a.log.Info("registration not offered on link (no option 148): registering nothing", "iface", ifc.name)
		ifc.state = IfUnsupported
		a.scheduleReprobe(ctx, ifc, reprobeUnsupported)
	}
}

func (a *Agent) scheduleReprobe(ctx context.Context, ifc *iface, d time.Duration) {
	gen, index := ifc.probeGen, ifc.index
	ifc.retry = a.clock.AfterFunc(d, func() {
		select {
		case a.reprobe <- probeRetry{index, gen}:
		case <-ctx.Done():
		}
	})
}

func (a *Agent) handleReprobe(ctx context.Context, pr probeRetry) {
	ifc, ok := a.ifaces[pr.ifindex]
	if !ok || pr.gen != ifc.probeGen || !ifc.up {
		return
	}
	ifc.retry = nil
	if ifc.state == IfUnknown || ifc.state == IfUnsupported {
		a.startProbe(ctx, ifc)
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

// linkLocalChanged picks the link-local address discovery uses and
// restarts a probe that was sent from one the interface no longer holds.
func (a *Agent) linkLocalChanged(ctx context.Context, ifc *iface) {
	if !ifc.lls[ifc.linkLocal] {
		ifc.linkLocal = netip.Addr{}
		for ip := range ifc.lls {
			if !ifc.linkLocal.IsValid() || ip.Less(ifc.linkLocal) {
				ifc.linkLocal = ip
			}
		}
	}
	switch {
	case !ifc.up:
	case ifc.state == IfProbing && ifc.probeFrom != ifc.linkLocal:
		a.startProbe(ctx, ifc) // from the new address, or wait for one
	case ifc.state == IfUnknown && ifc.linkLocal.IsValid() && (ifc.retry == nil):
		a.startProbe(ctx, ifc)
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
		// A tentative or DAD-failed link-local is no source for discovery.
		usable := na.State != netmon.StateTentative && na.State != netmon.StateDADFailed
		if usable != ifc.lls[na.IP] {
			if usable {
				ifc.lls[na.IP] = true
			} else {
				delete(ifc.lls, na.IP)
			}
			a.linkLocalChanged(ctx, ifc)
		}
		return
	}
	k := key{ifc.index, na.IP}
	ad, known := ifc.addrs[na.IP]
	if !known {
		ad = &addr{gen: a.nextGen()}
		ifc.addrs[na.IP] = ad
		if a.owed[k] {
			// Back before its deregistration went out: it never left.
			delete(a.owed, k)
			a.log.Info("address re-added: deregistration cancelled", "iface", ifc.name, "addr", na.IP)
		}
	}
	prev := ad.cur
	ad.cur = na
	if !na.Registrable {
		if known && prev.Registrable {
			// Tentative again, DAD-failed, now excluded: stop, but send no
			// deregistration for an address that is still assigned (a
			// DAD-failed one belongs to another node).
			a.log.Info("address no longer registrable", "iface", ifc.name, "addr", na.IP, "class", na.Class, "state", na.State)
			a.quiesce(ifc, ad)
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
		a.enqueue(k)
	case Registering:
		ad.again = true
	case Failed:
		// Its retry is scheduled (retry.go) and will carry the current
		// lifetimes: a lifetime change must not bring it forward.
	case Registered:
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

func (a *Agent) handleAddrRemoved(ctx context.Context, na netmon.Addr) {
	ifc, ok := a.ifaces[na.Index]
	if !ok {
		return
	}
	if na.Class == netmon.ClassLinkLocal || ifc.lls[na.IP] {
		if ifc.lls[na.IP] {
			delete(ifc.lls, na.IP)
			a.linkLocalChanged(ctx, ifc)
		}
		return
	}
	ad, ok := ifc.addrs[na.IP]
	if !ok {
		return
	}
	held := ad.hasReg || ad.phase == Registering
	a.log.Info("address removed", "iface", ifc.name, "addr", na.IP)
	a.quiesce(ifc, ad)
	delete(ifc.addrs, na.IP)
	if held && a.cfg.Deregister && a.cfg.Enable && ifc.up {
		k := key{ifc.index, na.IP}
		a.owed[k] = true
		a.enqueue(k)
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
		a.enqueue(k)
		// RFC 9686 §4.6 (MAY): refresh the interface's other addresses due
		// within the coalescing window along with this one.
		if a.cfg.Policy.Coalesce > 0 {
			// Only refreshes coalesce: a failed address keeps its backoff.
			for _, o := range a.deadlines.DueWithin(now, a.cfg.Policy.Coalesce, func(o key) bool { return o.ifindex == k.ifindex && a.registered(o) }) {
				if !seen[o] {
					seen[o] = true
					a.enqueue(o)
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

func (a *Agent) enqueue(k key) {
	if a.queued[k] {
		return
	}
	a.queued[k] = true
	a.queue = append(a.queue, k)
}

type action int

const (
	actNone action = iota
	actRegister
	actDeregister
)

// next decides what the key at the front of the queue needs now.
func (a *Agent) next(k key) action {
	if a.owed[k] {
		return actDeregister
	}
	ifc, ok := a.ifaces[k.ifindex]
	if !ok {
		return actNone
	}
	ad, ok := ifc.addrs[k.addr]
	if !ok || !a.eligible(ifc, ad) {
		return actNone
	}
	if ad.phase == Registering {
		ad.again = true
		return actNone
	}
	return actRegister
}

// pump starts queued exchanges within the in-flight bound and the rate.
// Keys that need nothing any more are dropped without using a token.
func (a *Agent) pump(ctx context.Context) {
	for len(a.queue) > 0 && a.inflight < a.cfg.MaxInflight && !a.stopping {
		k := a.queue[0]
		act := a.next(k)
		if act != actNone {
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
		}
		a.queue = a.queue[1:]
		delete(a.queued, k)
		switch act {
		case actRegister:
			a.startRegistration(ctx, k)
		case actDeregister:
			// The address is gone: no reply can reach it (RFC 9686 §4.7).
			a.startDeregistration(ctx, k, true)
		}
	}
}

func (a *Agent) startRegistration(ctx context.Context, k key) {
	ad := a.ifaces[k.ifindex].addrs[k.addr]
	a.deadlines.Remove(k)
	xctx, cancel := context.WithCancel(ctx)
	ad.phase, ad.gen, ad.cancel = Registering, a.nextGen(), cancel
	a.run(ctx, xctx, cancel, exchangeResult{k: k, gen: ad.gen},
		registrar.Target{Ifindex: k.ifindex, Ifname: a.ifname(k.ifindex), Addr: k.addr, Lifetimes: a.lifetimes(k, ad.cur)})
}

func (a *Agent) startDeregistration(ctx context.Context, k key, noWait bool) {
	delete(a.owed, k)
	xctx, cancel := context.WithCancel(ctx)
	zero := func() (time.Duration, time.Duration, bool) { return 0, 0, true }
	a.run(ctx, xctx, cancel, exchangeResult{k: k, dereg: true},
		registrar.Target{Ifindex: k.ifindex, Ifname: a.ifname(k.ifindex), Addr: k.addr, Lifetimes: zero, Deregister: true, NoWait: noWait})
}

// run runs one exchange in its own goroutine and reports its result to the
// owner, unless the owner is gone (ctx).
func (a *Agent) run(ctx, xctx context.Context, cancel context.CancelFunc, r exchangeResult, t registrar.Target) {
	a.inflight++
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer cancel()
		r.res, r.err = a.reg.Register(xctx, t)
		select {
		case a.results <- r:
		case <-ctx.Done():
		}
	}()
}

// lifetimes reads the address's current lifetimes from the kernel at each
// transmission (RFC 9686 §4.2: the IA Address carries the current ones).
// last is what netmon reported when the exchange started (a copy: the
// exchange's goroutine must not read the owner's state).
func (a *Agent) lifetimes(k key, last netmon.Addr) func() (time.Duration, time.Duration, bool) {
	return func() (time.Duration, time.Duration, bool) {
		cur, ok, err := a.mon.Lookup(k.ifindex, k.addr)
		if err != nil {
			// A failed lookup (EMFILE, ENOBUFS, a timeout) is not the
			// address leaving: use netmon's last word, counted down.
			p, v := last.Remaining(a.clock.Now())
			return p, v, true
		}
		if !ok || !cur.Registrable {
			return 0, 0, false
		}
		return cur.Preferred, cur.Valid, true
	}
}

func (a *Agent) handleResult(r exchangeResult) {
	a.inflight--
	a.logResult(r)
	if a.fatalError(r.err) {
		return
	}
	if r.dereg {
		if r.err == nil {
			a.state.forget(r.k)
		}
		return
	}
	ifc, ok := a.ifaces[r.k.ifindex]
	if !ok {
		return
	}
	ad, ok := ifc.addrs[r.k.addr]
	if !ok || ad.gen != r.gen {
		return // forgotten or superseded while in flight
	}
	ad.cancel = nil
	switch {
	case errors.Is(r.err, context.Canceled), errors.Is(r.err, registrar.ErrAddressGone):
		ad.phase = Pending
	case r.err == nil && r.res.Replied:
		ad.phase, ad.hasReg, ad.failures = Registered, true, 0
		// The server counts the lifetimes from when the last
		// transmission carried them.
		at := r.res.LastSent
		if at.IsZero() {
			at = a.clock.Now()
		}
		ad.reg = a.cfg.Policy.Registered(at, r.res.Valid, a.static(ad.cur))
		ad.told = r.res.Preferred
		if ad.reg.Periodic() {
			a.deadlines.Set(r.k, ad.reg.Next)
		}
	default:
		// No valid reply (or every send refused): what the server holds,
		// if anything, is unknown; ad.reg keeps the last confirmed.
		ad.phase = Failed
		a.scheduleRetry(ifc, ad)
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
	case r.dereg && r.err != nil:
		a.log.Warn("deregistration not sent", append(attrs, "err", r.err)...)
	case r.dereg && r.res.Replied:
		a.log.Info("deregistered", attrs...)
	case r.dereg:
		a.log.Info("deregistration sent", attrs...)
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
		for k := range a.owed {
			if k.ifindex == ifc.index {
				is.Addresses = append(is.Addresses, AddrStatus{Addr: k.addr, Phase: Deregistering})
			}
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
