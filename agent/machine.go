package agent

import (
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"github.com/addrreg/addrreg/netmon"
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
	queue  keyQueue // of exchanges waiting for the rate or the in-flight bound (pacing.go)
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
	counters   Counters  // statusschema.go, kept by status.go
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
	stale staleAddrs
	// savedHash: hashSnapshot of the last snapshot handed to the writer,
	// if saved (not the snapshot: 88 bytes an address).
	saved     bool
	savedHash uint64
	// summary: the heartbeat's counts, kept until a step changes
	// something (nil: count again).
	summary *Summary
}

// deregFlight is one address's deregistrations in flight.
type deregFlight struct {
	count int       // how many
	rec   savedAddr // its state-file record
}

// newMachine applies Config's defaults (New has) and starts the heartbeat
// at now. stale is what the state file held (statefile.go).
func newMachine(cfg Config, now time.Time, stale []savedAddr) *machine {
	m := &machine{
		cfg:              cfg,
		lim:              rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst),
		ifaces:           map[int]*iface{},
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

func (m *machine) emit(e effect) { m.out = append(m.out, e) }

func (m *machine) logAt(level slog.Level, msg string, args ...any) {
	m.emit(effLog{level, msg, args})
}

func (m *machine) debug(msg string, args ...any) { m.logAt(slog.LevelDebug, msg, args...) }

func (m *machine) info(msg string, args ...any) { m.logAt(slog.LevelInfo, msg, args...) }

func (m *machine) warn(msg string, args ...any) { m.logAt(slog.LevelWarn, msg, args...) }

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

// ifaceOf returns the interface l names, created on first sight.
func (m *machine) ifaceOf(l netmon.Link) *iface {
	ifc, ok := m.ifaces[l.Index]
	if !ok {
		ifc = &iface{index: l.Index, name: l.Name, addrs: map[netip.Addr]*addr{}, linkLocals: map[netip.Addr]bool{}}
		m.ifaces[l.Index] = ifc
	}
	return ifc
}

// raAllows reports whether the RA condition lets registrations start on ifc.
func (m *machine) raAllows(ifc *iface) bool { return !m.cfg.RequireRAFlags || ifc.raMO }

// sortedIfaces lists the interfaces by index, for work done in a stable
// order (the pacing queue's).
func (m *machine) sortedIfaces() []*iface {
	out := make([]*iface, 0, len(m.ifaces))
	for _, ifc := range m.ifaces {
		out = append(out, ifc)
	}
	slices.SortFunc(out, func(a, b *iface) int { return a.index - b.index })
	return out
}

// sortedAddrs lists ifc's addresses in order.
func sortedAddrs(ifc *iface) []netip.Addr {
	out := make([]netip.Addr, 0, len(ifc.addrs))
	for ip := range ifc.addrs {
		out = append(out, ip)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
