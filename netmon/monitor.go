package netmon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/scheduler"
)

// Addr is one IPv6 address as the kernel reported it.
type Addr struct {
	Index     int
	Ifname    string
	IP        netip.Addr
	PrefixLen int
	Flags     uint32 // IFA_F_*
	Proto     uint8  // IFA_PROTO, 0 if absent
	// Preferred and Valid are the remaining lifetimes as read at Observed
	// (the kernel counts them down); Infinite for 0xffffffff.
	Preferred, Valid time.Duration
	Observed         time.Time
	Class            Class
	State            State
	// Registrable says whether RFC 9686 lets this address be registered
	// (see Classify).
	Registrable bool
}

// Remaining returns the lifetimes left at now, counted from Observed.
func (a Addr) Remaining(now time.Time) (preferred, valid time.Duration) {
	el := now.Sub(a.Observed)
	sub := func(d time.Duration) time.Duration {
		if d == Infinite {
			return d
		}
		return max(d-el, 0)
	}
	return sub(a.Preferred), sub(a.Valid)
}

func (a Addr) String() string {
	return fmt.Sprintf("%s/%d on %s(%d) %s %s pref %s valid %s flags %#x proto %d reg %t",
		a.IP, a.PrefixLen, a.Ifname, a.Index, a.Class, a.State, lft(a.Preferred), lft(a.Valid), a.Flags, a.Proto, a.Registrable)
}

func lft(d time.Duration) string {
	if d == Infinite {
		return "forever"
	}
	return d.String()
}

// Link is one network interface.
type Link struct {
	Index        int
	Name         string
	Up, LowerUp  bool // IFF_UP, IFF_LOWER_UP (carrier)
	HardwareAddr net.HardwareAddr
	// Managed and Other are the M and O flags of the last RA received on
	// the link, from the kernel (IFLA_INET6_FLAGS) or, with
	// Options.WatchRAs, from RAs seen on the wire (set if either says so).
	// From the wire, a flag holds while a router whose last RA set it is
	// within that RA's Router Lifetime (with lifetime 0, a router that is
	// not a default router, for Options.RAFlagsHold), and only RAs that pass RFC 4861
	// §6.1.2 count: link-local source, hop limit 255, well-formed. At most
	// Options.MaxRouters routers are kept per link.
	// When the link becomes usable again after being down (LinkChanged),
	// the flags read false until an RA is seen on the new attachment:
	// the kernel keeps IF_RA_MANAGED/OTHERCONF across down/up, and they
	// may describe the previous link. The kernel's flags count again once
	// it reports a change of them or a PIO (RTM_NEWPREFIX), i.e. once it
	// has processed an RA; with WatchRAs, any valid RA on the wire counts.
	// RAReceived says an RA has been seen: the kernel's IF_RA_RCVD (set
	// only for an RA that answers the kernel's own RS), or M or O set, or
	// any valid RA on the wire. With the kernel alone, an unsolicited RA with
	// neither flag is not noticed.
	Managed, Other, RAReceived bool
}

// Usable says whether the link is administratively up with carrier.
func (l Link) Usable() bool { return l.Up && l.LowerUp }

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	LinkAdded EventKind = iota
	LinkRemoved
	LinkRenamed
	// LinkUpdated: admin state, carrier or hardware address changed.
	LinkUpdated
	// LinkChanged: the link became usable (up with carrier) after having been
	// down since the consumer last heard of it: the link may be a new one
	// (RFC 9686 §4.2: re-discover server support). Reported even if the
	// down/up happened entirely between two Next calls.
	LinkChanged
	AddrAdded
	// AddrUpdated: flags, class, state or lifetimes (by more than
	// Options.LifetimeSlack) changed.
	AddrUpdated
	AddrRemoved
	// RAFlags: the link's Managed, Other or RAReceived changed.
	RAFlags
	// ClockJump: the wall clock moved against the monotonic clock (settime
	// or suspend/resume). Every address's lifetimes are re-read right after;
	// changed ones follow as AddrUpdated.
	ClockJump
)

var kindNames = [...]string{
	LinkAdded: "link-added", LinkRemoved: "link-removed", LinkRenamed: "link-renamed",
	LinkUpdated: "link-updated", LinkChanged: "link-changed", AddrAdded: "addr-added",
	AddrUpdated: "addr-updated", AddrRemoved: "addr-removed", RAFlags: "ra-flags",
	ClockJump: "clock-jump",
}

func (k EventKind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event is one change. Link is set for every kind but ClockJump (for address
// events it is the address's link, as last known); Addr for Addr* events
// (for AddrRemoved: the address as last reported). At is when the change was
// observed.
type Event struct {
	Kind EventKind
	Link Link
	Addr Addr
	At   time.Time
}

func (e Event) String() string {
	switch e.Kind {
	case AddrAdded, AddrUpdated, AddrRemoved:
		return e.Kind.String() + " " + e.Addr.String()
	case ClockJump:
		return e.Kind.String()
	}
	return fmt.Sprintf("%s %s(%d) up %t lower %t M %t O %t ra %t", e.Kind, e.Link.Name, e.Link.Index,
		e.Link.Up, e.Link.LowerUp, e.Link.Managed, e.Link.Other, e.Link.RAReceived)
}

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

// ErrRunning is returned by Run when the Monitor is already running.
var ErrRunning = errors.New("netmon: monitor already running")

// ErrNetlinkLost is wrapped by every error Run returns when it gives up:
// the netlink subscription could not be (re-)established, for lack of
// permission or after Options.ResubscribeAttempts tries in a row. The
// Monitor then knows nothing of the kernel any more; a daemon should exit
// (non-zero, so that its supervisor restarts it) rather than run deaf.
var ErrNetlinkLost = errors.New("netmon: netlink subscription lost")

// Run dumps the kernel's state, then streams changes until ctx ends. On any
// receive error (ENOBUFS included) it re-subscribes, re-dumps and queues only
// the differences. It returns nil when ctx ends, or an error wrapping
// ErrNetlinkLost when it cannot watch the kernel any more: no permission to
// open the sockets, or Options.ResubscribeAttempts failed attempts in a row
// to subscribe and dump, with backoff between them. All goroutines it starts
// have stopped, and its idle request sockets are closed, when it returns.
func (m *Monitor) Run(ctx context.Context) error {
	if m.closed.Load() {
		return fmt.Errorf("netmon: run: %w", net.ErrClosed)
	}
	if !m.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer m.running.Store(false)
	defer m.k.closeIdle()

	// The RA listener starts once the first dump has shown the links, so
	// that no RA is dropped for an interface not known yet; it stops (and
	// then its timers) before Run returns.
	raStarted := false
	defer func() {
		if raStarted {
			m.stopRATimers()
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	synced := func() {
		if m.o.WatchRAs && !raStarted {
			raStarted = true
			m.startRATimers()
			wg.Go(func() { m.watchRAs(ctx) })
		}
		m.readyOnce.Do(func() { close(m.ready) })
	}

	m.resetClock()
	backoff := time.Duration(0)
	failures := 0
	for {
		start := m.clk.Now()
		established, err := m.session(ctx, synced)
		if ctx.Err() != nil {
			return nil
		}
		if isFatal(err) {
			err = fmt.Errorf("%w: %w", ErrNetlinkLost, err)
			m.log.Error("netmon stopped", "err", err)
			return err
		}
		if established {
			failures = 0
		} else {
			failures++
		}
		if failures >= m.o.ResubscribeAttempts {
			err = fmt.Errorf("%w: %d attempts in a row to subscribe failed, the last: %w", ErrNetlinkLost, failures, err)
			m.log.Error("netmon stopped", "err", err)
			return err
		}
		m.mu.Lock()
		m.st.resyncs++
		m.mu.Unlock()
		if established && m.clk.Now().Sub(start) > 10*time.Second {
			backoff = 0
		}
		m.log.Warn("netlink session ended, resyncing", "err", err, "backoff", backoff, "failures", failures)
		if backoff > 0 && !m.sleep(ctx, backoff) {
			return nil
		}
		// A burst that overflows the buffer is usually over within a second;
		// waiting a little lets it pass instead of re-dumping into it. A
		// subscription that cannot be made is retried more slowly.
		limit := time.Second
		if failures > 0 {
			limit = 5 * time.Second
		}
		backoff = min(max(2*backoff, 50*time.Millisecond), limit)
	}
}

// sleep waits d on the Monitor's clock; false if ctx ended first.
func (m *Monitor) sleep(ctx context.Context, d time.Duration) bool {
	done := make(chan struct{})
	t := m.clk.AfterFunc(d, func() { close(done) })
	select {
	case <-ctx.Done():
		t.Stop()
		return false
	case <-done:
		return true
	}
}

func isFatal(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) ||
		errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPROTONOSUPPORT) ||
		errors.Is(err, unix.EBADF) || errors.Is(err, unix.EINVAL)
}

// session subscribes, dumps, calls synced, then applies streamed messages
// until an error. established says the subscription and the dump succeeded.
func (m *Monitor) session(ctx context.Context, synced func()) (established bool, err error) {
	s, err := m.k.subscribe(m.o.RecvBufSize)
	if err != nil {
		return false, err
	}
	stop := context.AfterFunc(ctx, func() { s.close() })
	defer func() {
		if stop() {
			s.close()
		}
	}()
	// Subscribed before the dump, so nothing that happens during it is lost;
	// messages queued meanwhile are applied after it, and each carries its
	// object's full state, so the last one for each object wins.
	if err := m.resync(); err != nil {
		return false, err
	}
	synced()
	for {
		deadline := time.Now().Add(m.o.ClockCheckInterval)
		msgs, err := s.recv(deadline)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if err := m.checkClock(); err != nil {
				return true, err
			}
			continue
		}
		if err != nil {
			return true, err
		}
		now := m.clk.Now()
		m.mu.Lock()
		m.st.applyMessages(msgs, now)
		m.mu.Unlock()
		if err := m.checkClock(); err != nil {
			return true, err
		}
	}
}

// resync dumps everything and diffs it into the state.
func (m *Monitor) resync() error {
	var msgs []message
	var err error
	for range 5 {
		msgs, err = m.k.dump()
		if !errors.Is(err, errDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	now := m.clk.Now()
	m.mu.Lock()
	m.st.resync(msgs, now)
	m.mu.Unlock()
	return nil
}

func (m *Monitor) resetClock() {
	now := time.Now()
	m.lastMono, m.lastWall = now, m.wallNow()
}

// checkClock compares wall-clock and monotonic time elapsed since the last
// check. Go's monotonic clock (CLOCK_MONOTONIC) stops during suspend while
// the wall clock does not, and settimeofday moves only the wall clock: either
// shows as a disagreement. On one, it queues ClockJump and re-reads every
// lifetime.
func (m *Monitor) checkClock() error {
	now := time.Now()
	wall := m.wallNow()
	monoEl := now.Sub(m.lastMono)
	wallEl := wall.Sub(m.lastWall)
	m.lastMono, m.lastWall = now, wall
	d := wallEl - monoEl
	if d < 0 {
		d = -d
	}
	if d <= m.o.ClockJumpThreshold {
		return nil
	}
	m.log.Warn("clock jump, re-reading lifetimes", "reason", "wall-monotonic", "delta", wallEl-monoEl)
	m.mu.Lock()
	m.st.clockJump(m.clk.Now())
	m.mu.Unlock()
	return m.resync()
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
