package agent

import (
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
	"github.com/addrreg/addrreg/scheduler"
)

// machine is the agent's state and its transitions, with no I/O: step
// takes an event and the time, changes the state and returns the effects
// the owner loop (lifecycle.go) performs. It starts no goroutine, arms no
// timer and reads no clock: every deadline it keeps (refreshes, retries,
// re-probes, pacing, the state file's debounce, the heartbeat) is folded
// into one wake-up that an effTimer asks the loop to arm; the loop answers
// with evTimer. Tests drive it synchronously (agent_test.go).
type machine struct {
	cfg Config
	lim *rate.Limiter
	now time.Time // of the step under way
	out []effect  // the step's effects so far

	ifaces map[int]*iface
	// queue holds keys only; what a key needs (a registration, a refresh,
	// a deregistration or nothing any more) is decided from the state when
	// it reaches the front, so an entry can never carry a stale intent.
	queue  []key
	queued map[key]bool
	// deregDue: addresses removed from their interface whose
	// deregistration (RFC 9686 §4.7) is due, queued or at a deadline (a
	// retry, the end of relinkGrace), on a link that is up (one that is
	// down or removed keeps them in stale), each with its state-file
	// record. Re-adding the address cancels it.
	deregDue map[key]savedAddr
	// deregInFlight: deregistrations in flight (a re-added address waits
	// for them), with the record the state file keeps until one gets out.
	deregInFlight map[key]deregFlight
	inflight      int
	gen           int // generation counter for exchanges and probes, agent-wide
	// deadlines: each address's next refresh or retry, and each owed
	// deregistration's retry.
	deadlines  scheduler.Heap[key]
	paceAt     time.Time // the rate limiter's next token, while the queue waits for it
	saveAt     time.Time // the state file's debounce; zero: nothing to save
	beatAt     time.Time // the next heartbeat; zero without Config.Heartbeat
	armedAt    time.Time // the wake-up the loop's timer is armed for; zero: none
	counters   Counters  // status.go
	stopping   bool
	stopDeregs []key // deregistrations still to send while stopping
	// stopDeregistered: deregistered while stopping; left out of the last
	// write.
	stopDeregistered map[key]bool
	// fqdn is the name every exchange carries (Config.FQDN, then each
	// evHostName); empty: none.
	fqdn string
	// fatal ends Run: a component failed beyond retry (the registrar's
	// socket is closed).
	fatal error

	// stale: deregistrations that wait for their link (stale.go).
	stale     staleAddrs
	lastSaved []savedAddr // the last snapshot handed to the writer
}

// Re-discovery (RFC 8415 §18.2.6 spirit): a link without registration
// support is asked again after the default Information Refresh Time, so a
// server that starts offering option 148 is noticed without a link flap. A
// probe that failed is tried again after Config.Retry's backoff.
const reprobeUnsupported = 24 * time.Hour // IRT_DEFAULT, RFC 8415 §21.23

// deregFlight is one address's deregistrations in flight.
type deregFlight struct {
	count int       // how many
	rec   savedAddr // its state-file record
}

// Events: what the owner loop feeds the machine.
type event interface{ isEvent() }

type (
	evNetmon struct{ netmon.Event } // from the monitor
	evProbe  probeResult            // a probe ended
	evResult exchangeResult         // an exchange ended
	evTimer  struct{}               // the wake-up armed by effTimer came
	// evRediscover is SIGHUP: discover afresh on every interface.
	evRediscover struct{}
	// evStop: Run's context ended. Deregistrations owed (and, with
	// DeregisterOnStop, every registration) go out; nothing else starts.
	evStop struct{}
	// evAbandon: StopTimeout ran out; what is in flight is given up.
	evAbandon struct{}
	// evHostName: the name to send changed (the host was renamed).
	evHostName struct{ name string }
)

func (evNetmon) isEvent()     {}
func (evProbe) isEvent()      {}
func (evResult) isEvent()     {}
func (evTimer) isEvent()      {}
func (evRediscover) isEvent() {}
func (evStop) isEvent()       {}
func (evAbandon) isEvent()    {}
func (evHostName) isEvent()   {}

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

// Effects: what the owner loop does for the machine, in order.
type effect interface{ isEffect() }

type (
	// effProbe starts discovery on a link from a link-local address.
	effProbe struct {
		ifindex, gen int
		ifname       string
		from         netip.Addr
	}
	// effCancel cancels the probe or exchange gen (its result still
	// comes, with context.Canceled if the cancel came first).
	effCancel struct{ gen int }
	// effExchange starts one registration or deregistration exchange.
	effExchange struct {
		k      key
		gen    int
		ifname string
		dereg  bool
		noWait bool        // send once, wait for no reply
		last   netmon.Addr // netmon's last word on the address
		fqdn   string      // the Client FQDN to send; empty: none
	}
	// effTimer arms the loop's one timer for at; zero stops it.
	effTimer struct{ at time.Time }
	// effSave hands a snapshot to the state file's writer.
	effSave struct{ snap []savedAddr }
	// effHeartbeat calls Config.Heartbeat.
	effHeartbeat struct{ s Summary }
	// effLog is one log line.
	effLog struct {
		level slog.Level
		msg   string
		args  []any
	}
)

func (effProbe) isEffect()     {}
func (effCancel) isEffect()    {}
func (effExchange) isEffect()  {}
func (effTimer) isEffect()     {}
func (effSave) isEffect()      {}
func (effHeartbeat) isEffect() {}
func (effLog) isEffect()       {}

// newMachine applies Config's defaults (New has) and starts the heartbeat
// at now. stale is what the state file held (statefile.go).
func newMachine(cfg Config, now time.Time, stale []savedAddr) *machine {
	m := &machine{
		cfg:              cfg,
		lim:              rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst),
		ifaces:           map[int]*iface{},
		queued:           map[key]bool{},
		deregDue:         map[key]savedAddr{},
		deregInFlight:    map[key]deregFlight{},
		stale:            newStaleAddrs(stale),
		stopDeregistered: map[key]bool{},
		fqdn:             cfg.FQDN,
	}
	if cfg.Heartbeat != nil {
		m.beatAt = now // a first beat at once
	}
	return m
}

// step is the transition function: it applies ev at now and returns the
// effects, in the order the loop must perform them.
func (m *machine) step(now time.Time, ev event) []effect {
	m.now, m.out = now, nil
	changed := true
	switch ev := ev.(type) {
	case evNetmon:
		if !m.stopping {
			m.handleEvent(ev.Event)
		}
	case evProbe:
		if !m.stopping {
			m.handleProbe(probeResult(ev))
		}
	case evResult:
		if m.stopping {
			m.stoppedResult(exchangeResult(ev))
		} else {
			m.handleResult(exchangeResult(ev))
		}
	case evTimer:
		changed = m.wakeUp()
	case evRediscover:
		if !m.stopping {
			m.rediscoverAll()
		}
	case evStop:
		m.stop()
	case evAbandon:
		m.abandon()
	case evHostName:
		if !m.stopping {
			m.hostNameChanged(ev.name)
		}
	}
	if changed && !m.stopping {
		m.stateChanged()
	}
	if !m.stopping && m.fatal == nil {
		m.pump()
	}
	m.arm()
	out := m.out
	m.out = nil
	return out
}

// wakeUp handles whatever is due at m.now: refreshes and retries,
// re-probes, a paced start, the state file and the heartbeat. It reports
// whether anything but the state file and the heartbeat was due (those
// change nothing to save).
func (m *machine) wakeUp() bool {
	m.armedAt = time.Time{} // it fired
	if m.stopping {
		return false
	}
	worked := false
	if due := m.deadlines.PopDue(m.now); len(due) > 0 {
		m.handleDue(due)
		worked = true
	}
	for _, ifc := range m.ifaces {
		if !ifc.disc.next.IsZero() && !ifc.disc.next.After(m.now) {
			m.reprobe(ifc)
			worked = true
		}
	}
	if !m.paceAt.IsZero() && !m.paceAt.After(m.now) {
		m.paceAt = time.Time{} // pump, after this, starts what waited
		worked = true
	}
	if !m.stale.expiry.IsZero() && !m.stale.expiry.After(m.now) {
		m.dropStale()
		worked = true
	}
	if !m.saveAt.IsZero() && !m.saveAt.After(m.now) {
		m.saveState()
	}
	if !m.beatAt.IsZero() && !m.beatAt.After(m.now) {
		m.beatAt = m.now.Add(m.cfg.HeartbeatInterval)
		m.emit(effHeartbeat{m.summarize()})
	}
	return worked
}

// wake is the earliest thing due; zero when nothing is.
func (m *machine) wake() time.Time {
	var at time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	if !m.stopping {
		if t, ok := m.deadlines.Next(); ok {
			earlier(t)
		}
		for _, ifc := range m.ifaces {
			earlier(ifc.disc.next)
		}
		earlier(m.paceAt)
		earlier(m.stale.expiry)
		earlier(m.saveAt)
		earlier(m.beatAt)
	}
	return at
}

// arm asks the loop to move its timer when the earliest wake-up changed.
func (m *machine) arm() {
	if at := m.wake(); !at.Equal(m.armedAt) {
		m.armedAt = at
		m.emit(effTimer{at})
	}
}

func (m *machine) emit(e effect) { m.out = append(m.out, e) }

func (m *machine) logAt(level slog.Level, msg string, args ...any) {
	m.emit(effLog{level, msg, args})
}

func (m *machine) debug(msg string, args ...any) { m.logAt(slog.LevelDebug, msg, args...) }
func (m *machine) info(msg string, args ...any)  { m.logAt(slog.LevelInfo, msg, args...) }
func (m *machine) warn(msg string, args ...any)  { m.logAt(slog.LevelWarn, msg, args...) }

func (m *machine) nextGen() int {
	m.gen++
	return m.gen
}

func (m *machine) wanted(name string) bool {
	if slices.Contains(m.cfg.Exclude, name) {
		return false
	}
	return len(m.cfg.Interfaces) == 0 || slices.Contains(m.cfg.Interfaces, name)
}

// ifname is the interface's name for the registrar's errors and logs (it
// then looks nothing up).
func (m *machine) ifname(index int) string {
	if ifc, ok := m.ifaces[index]; ok {
		return ifc.name
	}
	return ""
}

// stop starts the end: registrations in flight are abandoned (cancelled).
// Removed addresses still owed a deregistration get it, and with
// DeregisterOnStop so does every address the server may hold: each is sent
// once without waiting for a reply, as many as the loop lets finish within
// StopTimeout (then evAbandon).
func (m *machine) stop() {
	if m.stopping {
		return
	}
	m.stopping = true
	var dereg []key
	for k := range m.deregDue {
		dereg = append(dereg, k)
	}
	for _, ifc := range m.ifaces {
		m.stopDiscovery(ifc)
		for ip, ad := range ifc.addrs {
			if ad.inFlight() {
				m.emit(effCancel{ad.gen})
				// Its INFORM may be out: the server may hold it (the
				// snapshot keeps it).
				ad.run = idle
				ad.hold.transmitted()
			}
			if m.cfg.DeregisterOnStop && m.cfg.Enable && ifc.up && ad.held() {
				dereg = append(dereg, key{ifc.index, ip})
			}
		}
	}
	slices.SortFunc(dereg, func(x, y key) int {
		if x.ifindex != y.ifindex {
			return x.ifindex - y.ifindex
		}
		return x.addr.Compare(y.addr)
	})
	m.queue, m.queued = nil, map[key]bool{}
	m.paceAt, m.saveAt, m.beatAt = time.Time{}, time.Time{}, time.Time{}
	if len(dereg) > 0 {
		m.info("stopping: deregistering", "addresses", len(dereg))
	}
	m.stopDeregs = dereg
	m.startStopDeregistrations()
}

func (m *machine) startStopDeregistrations() {
	for len(m.stopDeregs) > 0 && m.inflight < m.cfg.MaxInflight {
		m.startDeregistration(m.stopDeregs[0], true)
		m.stopDeregs = m.stopDeregs[1:]
	}
}

// stoppedResult is an exchange's end while stopping.
func (m *machine) stoppedResult(r exchangeResult) {
	if m.inflight > 0 {
		m.inflight--
	}
	m.logResult(r)
	if r.dereg && r.err == nil {
		m.stopDeregistered[r.k] = true
	}
	m.startStopDeregistrations()
}

// stopped reports whether the stop has nothing left to do.
func (m *machine) stopped() bool { return m.stopping && len(m.stopDeregs) == 0 && m.inflight == 0 }

// abandon gives up what is in flight or still to send when StopTimeout
// ran out.
func (m *machine) abandon() {
	if m.inflight > 0 || len(m.stopDeregs) > 0 {
		m.warn("stopping: abandoning exchanges", "in_flight", m.inflight, "deregistrations_not_sent", len(m.stopDeregs))
	}
	m.stopDeregs, m.inflight = nil, 0
}
