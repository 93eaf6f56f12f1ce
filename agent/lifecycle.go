package agent

import (
	"context"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
	"github.com/addrreg/addrreg/scheduler"
)

// Agent runs the machine (step.go). Create with New, run with Run.
type Agent struct {
	cfg   Config
	mon   Monitor
	reg   Registrar
	clock scheduler.Clock

	// Channels into the owner goroutine.
	events    chan netmon.Event
	probes    chan probeResult
	results   chan exchangeResult
	tick      chan struct{}
	hup       chan struct{}
	names     chan string // from Config.HostNames
	statusReq chan chan Status

	// Owned by Run's goroutine.
	m       *machine
	timer   scheduler.Timer // the machine's one wake-up (effTimer)
	cancels map[int]context.CancelFunc
	writer  *stateWriter
	wg      sync.WaitGroup
	// exchanges started since the heap was last given back (releaseMemory)
	exchanges int
}

// New makes an agent. mon and reg must be running (their Run loops are the
// caller's: reg must outlive Run so that deregistration on stop can finish).
func New(cfg Config, mon Monitor, reg Registrar) *Agent {
	cfg = withDefaults(cfg)
	return &Agent{
		cfg: cfg, mon: mon, reg: reg, clock: cfg.Clock,
		events:    make(chan netmon.Event, 64),
		probes:    make(chan probeResult),
		results:   make(chan exchangeResult),
		tick:      make(chan struct{}, 1),
		hup:       make(chan struct{}, 1),
		names:     make(chan string),
		statusReq: make(chan chan Status),
		cancels:   map[int]context.CancelFunc{},
	}
}

// withDefaults fills in Config's defaults.
func withDefaults(cfg Config) Config {
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
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = defaultHeartbeat
	}
	if cfg.Retry == (scheduler.Retry{}) {
		cfg.Retry = scheduler.DefaultRetry
	}
	if cfg.Rand == nil {
		cfg.Rand = mrand.Float64
	}
	return cfg
}

// Rediscover restarts discovery on every interface (SIGHUP).
func (a *Agent) Rediscover() {
	select {
	case a.hup <- struct{}{}:
	default:
	}
}

// Run runs the agent until ctx ends, then deregisters what is owed (and,
// with DeregisterOnStop, everything registered), abandons what is in flight
// and returns within StopTimeout.
func (a *Agent) Run(ctx context.Context) error {
	loopCtx, cancelLoop := context.WithCancel(context.Background())
	defer cancelLoop()
	log := a.cfg.Logger
	a.m = newMachine(a.cfg, a.clock.Now(), loadState(a.cfg.StatePath, a.clock.Now(), log))
	if a.cfg.StatePath != "" {
		a.writer = newStateWriter(a.cfg.StatePath, log)
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.writer.run(loopCtx)
		}()
	}

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

	if a.cfg.HostNames != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.watchNames(loopCtx)
		}()
	}

	log.Info("agent started", "enable", a.cfg.Enable, "require_ra_flags", a.cfg.RequireRAFlags,
		"deregister", a.cfg.Deregister, "deregister_on_stop", a.cfg.DeregisterOnStop)
	a.perform(loopCtx, a.m.step(a.clock.Now(), evTimer{})) // the first heartbeat
	var runErr error
	var late event // a result that came with the stop
loop:
	for a.m.fatal == nil {
		var ev event
		select {
		case <-ctx.Done():
			break loop
		case err := <-readErr:
			runErr = fmt.Errorf("netmon: %w", err)
			break loop
		case e := <-a.events:
			ev = evNetmon{e}
		case pr := <-a.probes:
			delete(a.cancels, pr.gen)
			ev = evProbe(pr)
		case r := <-a.results:
			delete(a.cancels, r.gen)
			ev = evResult(r)
		case <-a.tick:
			ev = evTimer{}
		case <-a.hup:
			ev = evRediscover{}
		case name := <-a.names:
			ev = evHostName{name}
		case c := <-a.statusReq:
			servers, _ := a.reg.(ServerSource)
			c <- a.m.report(servers)
			continue // changes nothing
		}
		// A ready event must not win over a cancelled context: no new
		// work starts once the daemon is told to stop.
		if ctx.Err() != nil {
			if _, ok := ev.(evResult); ok {
				late = ev
			}
			break
		}
		a.perform(loopCtx, a.m.step(a.clock.Now(), ev))
		a.releaseMemory()
	}
	if runErr == nil {
		runErr = a.m.fatal
	}
	if runErr != nil {
		log.Error("agent stopping on a fatal error", "err", runErr)
	}
	a.stop(loopCtx, cancelLoop, late)
	return runErr
}

// stop steps the machine through its stop: deregistrations go out, each
// sent once without waiting for a reply, as many as fit in StopTimeout;
// then what is left is abandoned, every goroutine ends and the state file
// is written a last time.
func (a *Agent) stop(loopCtx context.Context, cancelLoop context.CancelFunc, late event) {
	a.perform(loopCtx, a.m.step(a.clock.Now(), evStop{}))
	if late != nil {
		a.perform(loopCtx, a.m.step(a.clock.Now(), late))
	}
	timeout := time.NewTimer(a.cfg.StopTimeout)
	defer timeout.Stop()
	for !a.m.stopped() {
		select {
		case r := <-a.results:
			delete(a.cancels, r.gen)
			a.perform(loopCtx, a.m.step(a.clock.Now(), evResult(r)))
		case <-a.probes:
		case <-a.events:
		case <-a.names:
		case <-a.tick:
		case <-timeout.C:
			a.perform(loopCtx, a.m.step(a.clock.Now(), evAbandon{}))
		}
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	cancelLoop()
	// Drain so that every goroutine can deliver its last result and end.
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			if a.writer != nil {
				a.writer.write(a.m.snapshot())
			}
			a.cfg.Logger.Info("agent stopped")
			return
		case r := <-a.results:
			a.perform(loopCtx, a.m.step(a.clock.Now(), evResult(r)))
		case <-a.probes:
		case <-a.events:
		case <-a.names:
		case <-a.tick:
		}
	}
}

// watchNames moves Config.HostNames' names onto the owner's channel until
// loopCtx ends. A source that fails is not fatal: the name sent stays
// the last one.
func (a *Agent) watchNames(loopCtx context.Context) {
	for {
		name, err := a.cfg.HostNames.Next(loopCtx)
		if err != nil {
			if loopCtx.Err() == nil {
				a.cfg.Logger.Warn("host name no longer followed: registrations keep the last name", "err", err)
			}
			return
		}
		select {
		case a.names <- name:
		case <-loopCtx.Done():
			return
		}
	}
}

// Status returns a snapshot of the state; ctx bounds the wait for the
// owner goroutine, which builds it between two events.
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

// perform carries out the machine's effects, in order.
func (a *Agent) perform(loopCtx context.Context, effects []effect) {
	for _, e := range effects {
		switch e := e.(type) {
		case effLog:
			a.cfg.Logger.Log(context.Background(), e.level, e.msg, e.args...)
		case effProbe:
			a.startProbe(loopCtx, e)
		case effExchange:
			a.exchanges++
			a.startExchange(loopCtx, e)
		case effCancel:
			a.cancel(e.gen)
		case effTimer:
			a.armTimer(e.at)
		case effSave:
			if a.writer != nil {
				a.writer.offer(e.snap)
			}
		case effHeartbeat:
			if a.cfg.Heartbeat != nil {
				a.cfg.Heartbeat(e.s)
			}
		}
	}
}

// releaseAfter is how many exchanges a burst must have started for its
// end to give the heap back (releaseMemory).
const releaseAfter = 1000

// releaseMemory gives the heap a burst grew back to the kernel once the
// burst is over (nothing queued, nothing in flight) and the state file it
// changed is written (encoding 10,000 addresses takes a few MB). The Go
// runtime keeps what it freed up to the next collection's goal, twice the
// live heap by default, and returns memory above that only slowly: after
// registering 10,000 addresses at start-up an idle addrregd would keep
// some 20 MB it never uses again. One forced collection per 1,000
// exchanges at most, in its own goroutine or the writer's (the loop goes
// on meanwhile).
func (a *Agent) releaseMemory() {
	if a.exchanges < releaseAfter || a.m.queue.len() > 0 || a.m.inflight > 0 {
		return
	}
	if !a.m.saveAt.IsZero() {
		return // the next step that saves will do
	}
	a.exchanges = 0
	if a.writer != nil {
		a.writer.releaseAfterWrite()
		return
	}
	a.wg.Go(debug.FreeOSMemory)
}

func (a *Agent) cancel(gen int) {
	if c, ok := a.cancels[gen]; ok {
		c()
		delete(a.cancels, gen)
	}
}

// armTimer points the loop's one timer at the machine's wake-up; zero
// stops it.
func (a *Agent) armTimer(at time.Time) {
	if a.timer != nil {
		a.timer.Stop()
	}
	if at.IsZero() {
		return
	}
	d := at.Sub(a.clock.Now())
	switch {
	case d <= 0:
		a.fire()
	case a.timer == nil:
		a.timer = a.clock.AfterFunc(d, a.fire)
	default:
		a.timer.Reset(d)
	}
}

// fire is the timer's function: one pending tick is enough.
func (a *Agent) fire() {
	select {
	case a.tick <- struct{}{}:
	default:
	}
}

func (a *Agent) startProbe(loopCtx context.Context, p effProbe) {
	a.spawn(loopCtx, p.gen, func(ctx context.Context) {
		ok, err := a.reg.Probe(ctx, p.ifindex, p.from)
		select {
		case a.probes <- probeResult{ifindex: p.ifindex, gen: p.gen, supported: ok, err: err}:
		case <-loopCtx.Done():
		}
	})
}

// startExchange runs one exchange in its own goroutine and reports its
// result to the owner, unless the owner is gone (loopCtx).
func (a *Agent) startExchange(loopCtx context.Context, x effExchange) {
	t := a.target(x)
	a.spawn(loopCtx, x.gen, func(ctx context.Context) {
		r := exchangeResult{k: x.k, gen: x.gen, dereg: x.dereg}
		r.res, r.err = a.reg.Register(ctx, t)
		select {
		case a.results <- r:
		case <-loopCtx.Done():
		}
	})
}

// spawn runs work in its own goroutine with a context that effCancel for
// gen cancels, as does the loop's end.
func (a *Agent) spawn(loopCtx context.Context, gen int, work func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(loopCtx)
	a.cancels[gen] = cancel
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer cancel()
		work(ctx)
	}()
}

// target is what the registrar needs for x.
func (a *Agent) target(x effExchange) registrar.Target {
	if x.dereg {
		zero := func() (time.Duration, time.Duration, bool) { return 0, 0, true }
		return registrar.Target{Ifindex: x.k.ifindex, Ifname: x.ifname, Addr: x.k.addr, Lifetimes: zero, Deregister: true, NoWait: x.noWait, FQDN: x.fqdn}
	}
	return registrar.Target{Ifindex: x.k.ifindex, Ifname: x.ifname, Addr: x.k.addr, Lifetimes: a.currentLifetimes(x.k, x.last), FQDN: x.fqdn}
}

// currentLifetimes reads the address's current lifetimes from the kernel at each
// transmission (RFC 9686 §4.2: the IA Address carries the current ones).
// last is what netmon reported when the exchange started (a copy: the
// exchange's goroutine must not read the owner's state).
func (a *Agent) currentLifetimes(k key, last netmon.Addr) func() (time.Duration, time.Duration, bool) {
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
