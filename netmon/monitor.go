package netmon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/scheduler"
)

// Options configure a Monitor. The zero value watches the current namespace.
type Options struct {
	// Netns is the namespace to watch; 0 or negative: the current one.
	// The handle must stay open while the Monitor is used.
	Netns netns.NsHandle
	// Include and Exclude override the DHCPv6 rule and registrability by
	// prefix (see ClassifyOptions).
	Include, Exclude []netip.Prefix
	// WatchRAs also listens for RAs on the wire (raw ICMPv6 socket,
	// CAP_NET_RAW), for when the kernel does not process them (accept_ra = 0)
	// and so keeps IFLA_INET6_FLAGS clear.
	WatchRAs bool
	// MaxRouters bounds the routers remembered per link from RAs on the
	// wire; an RA from a new router beyond it is ignored (counted, and
	// logged at most once per RALogInterval). Default DefaultMaxRouters.
	MaxRouters int
	// RAFlagsHold: how long the M and O flags of an RA with Router Lifetime
	// 0 (a router that is not a default router) count, renewed by its next
	// RA. Default DefaultRAFlagsHold (30 min).
	RAFlagsHold time.Duration
	// RALogInterval: RAs ignored (forged, malformed, beyond MaxRouters)
	// are logged at once, then summed into at most one line per reason
	// per interval. Default 10 s.
	RALogInterval time.Duration
	// ResubscribeAttempts: after this many attempts in a row to
	// re-establish the netlink subscription (subscribe and dump) have
	// failed, with backoff between them (about 11 s for the default 10),
	// Run gives up with ErrNetlinkLost. Default 10.
	ResubscribeAttempts int
	// RecvBufSize is the netlink receive buffer; default 4 MiB
	// (SO_RCVBUFFORCE when allowed, else capped by net.core.rmem_max).
	RecvBufSize int
	// QueueSize bounds the number of distinct pending changes (one per link
	// or address: changes to the same one are coalesced). Beyond it the
	// queue is dropped and the consumer is brought up to date by one diff of
	// its view against the current state. Default 4096.
	QueueSize int
	// LifetimeSlack: lifetime changes up to this are not reported (the
	// kernel reports whole seconds). Default 1.5 s.
	LifetimeSlack time.Duration
	// ClockCheckInterval is how often the clocks are compared when no
	// netlink message arrives: one wakeup per interval, two clock reads.
	// Default 30 s; they are also compared on every received datagram.
	ClockCheckInterval time.Duration
	// ClockJumpThreshold is the disagreement between wall-clock and
	// monotonic elapsed time that counts as a jump. Default 5 s.
	ClockJumpThreshold time.Duration
	Logger             *slog.Logger
	// Clock stamps Observed and At, times router expiry and the backoff
	// between netlink sessions; default the real clock.
	Clock scheduler.Clock
}

// Monitor watches one namespace's links and IPv6 addresses.
type Monitor struct {
	o       Options
	k       kernel
	clk     scheduler.Clock
	log     *slog.Logger
	running atomic.Bool
	closed  atomic.Bool
	notify  chan struct{}
	// ready is closed once the first subscription is open and its dump
	// applied (Ready).
	ready     chan struct{}
	readyOnce sync.Once

	mu sync.Mutex
	st *state
	// RAs from the wire, under mu: the timer that expires routers (armed
	// for expAt) and the log of ignored RAs. Timers are armed only while
	// raLive (the listener runs), so none outlives Run.
	raLive    bool
	expTimer  scheduler.Timer
	expAt     time.Time
	raDrops   dropLog
	raAccepts int

	// clock check: last readings.
	wallNow  func() time.Time // wall clock without monotonic reading
	lastWall time.Time
	lastMono time.Time
}

// New returns a Monitor; nothing happens until Run.
func New(o Options) *Monitor {
	m := newMonitor(o, nil)
	m.k = &nlKernel{ns: m.o.Netns}
	return m
}

func newMonitor(o Options, k kernel) *Monitor {
	if o.RecvBufSize <= 0 {
		o.RecvBufSize = 4 << 20
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 4096
	}
	if o.LifetimeSlack <= 0 {
		o.LifetimeSlack = 1500 * time.Millisecond
	}
	if o.ClockCheckInterval <= 0 {
		o.ClockCheckInterval = 30 * time.Second
	}
	if o.ClockJumpThreshold <= 0 {
		o.ClockJumpThreshold = 5 * time.Second
	}
	if o.MaxRouters <= 0 {
		o.MaxRouters = DefaultMaxRouters
	}
	if o.RAFlagsHold <= 0 {
		o.RAFlagsHold = DefaultRAFlagsHold
	}
	if o.RALogInterval <= 0 {
		o.RALogInterval = 10 * time.Second
	}
	if o.ResubscribeAttempts <= 0 {
		o.ResubscribeAttempts = 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = scheduler.RealClock()
	}
	m := &Monitor{
		o:       o,
		k:       k,
		clk:     o.Clock,
		log:     o.Logger,
		notify:  make(chan struct{}, 1),
		ready:   make(chan struct{}),
		wallNow: func() time.Time { return time.Now().Round(0) },
	}
	m.st = newState(ClassifyOptions{Include: o.Include, Exclude: o.Exclude}, o.QueueSize, o.LifetimeSlack)
	m.st.signal = m.signal
	m.st.maxRouters = o.MaxRouters
	m.st.raFlagsHold = o.RAFlagsHold
	m.raDrops.every = o.RALogInterval
	return m
}

func (m *Monitor) signal() {
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

// Ready is closed once Run has subscribed to the kernel's changes and read
// the full state: from then on no change is missed (addrregd tells systemd
// READY=1).
func (m *Monitor) Ready() <-chan struct{} { return m.ready }

// Next returns the next change, waiting for one until ctx ends. Changes to
// the same link or address are coalesced while they wait: Next
// always reports the latest state, and nothing that came and went in
// between.
func (m *Monitor) Next(ctx context.Context) (Event, error) {
	for {
		m.mu.Lock()
		ev, ok := m.st.next(m.clk.Now())
		m.mu.Unlock()
		if ok {
			return ev, nil
		}
		select {
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-m.notify:
		}
	}
}

// Snapshot returns the current state as the monitor knows it (which may be
// ahead of the events consumed so far), sorted by index and address.
func (m *Monitor) Snapshot() ([]Link, []Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.snapshot()
}

// Stats are counters for tests and metrics.
type Stats struct {
	Resyncs    int // sessions restarted after an error
	Overflows  int // times the event queue overflowed into a full diff
	ClockJumps int
	Messages   int // netlink messages applied
	// RAs read from the wire (Options.WatchRAs): accepted; ignored, by
	// reason ("source not link-local", "hop limit not 255", "malformed RA",
	// "too many routers", "unknown interface"); and the routers now kept
	// over all links.
	RAsAccepted int
	RAsIgnored  map[string]int
	Routers     int
}

// Stats returns counters.
func (m *Monitor) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Resyncs: m.st.resyncs, Overflows: m.st.overflows, ClockJumps: int(m.st.clock), Messages: m.st.messages,
		RAsAccepted: m.raAccepts, RAsIgnored: maps.Clone(m.raDrops.total), Routers: m.st.routerCount()}
}

// Close closes the request sockets Lookup keeps for reuse (each holds the
// Monitor's namespace alive). Run closes them too when it returns; Close
// makes it final: Lookup and Run then fail with net.ErrClosed. Call it
// after Run has returned.
func (m *Monitor) Close() error {
	m.closed.Store(true)
	return m.k.close()
}

// Lookup reads one address afresh from the kernel (RTM_GETADDR for ip on
// ifindex). It reports false, with no error, if the address is not on that
// interface. The registrar calls it before every transmission.
func (m *Monitor) Lookup(ifindex int, ip netip.Addr) (Addr, bool, error) {
	if m.closed.Load() {
		return Addr{}, false, fmt.Errorf("look up %s on ifindex %d: %w", ip, ifindex, net.ErrClosed)
	}
	msgs, err := m.k.getAddr(ifindex, ip)
	if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) {
		return Addr{}, false, nil
	}
	if err != nil {
		return Addr{}, false, fmt.Errorf("look up %s on ifindex %d: %w", ip, ifindex, err)
	}
	now := m.clk.Now()
	for _, msg := range msgs {
		if msg.Type != unix.RTM_NEWADDR {
			continue
		}
		pa, err := parseAddr(msg)
		if err != nil {
			return Addr{}, false, fmt.Errorf("look up %s on ifindex %d: %w", ip, ifindex, err)
		}
		if pa.Index != ifindex || pa.Raw.IP != ip.WithZone("") {
			continue
		}
		m.mu.Lock()
		a := m.st.makeAddr(pa, now)
		m.mu.Unlock()
		return a, true, nil
	}
	return Addr{}, false, nil
}
