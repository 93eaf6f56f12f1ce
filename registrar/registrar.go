package registrar

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/scheduler"
)

// Sentinel errors Register and Probe return (wrapped) for conditions the
// caller branches on.
var (
	// ErrExchangeFailed: no valid reply before the retransmission
	// parameters ran out (MRC transmissions made and the last one's wait
	// over, or MRD reached).
	ErrExchangeFailed = errors.New("no valid reply: exchange failed")
	// ErrAddressGone: the Target's Lifetimes reported the address no longer
	// on its interface; the exchange was abandoned.
	ErrAddressGone = errors.New("address no longer on the interface")
	// ErrSocketBroken: Run's socket was closed under it or fails beyond
	// retry. Nothing can be sent or received any more: the daemon should
	// end so that its service manager starts it afresh.
	ErrSocketBroken = errors.New("registrar socket closed or broken")
)

// Config configures a Registrar. Only ClientID is required.
type Config struct {
	// ClientID is the Client Identifier sent in every message.
	ClientID dhcpv6.DUID
	// FQDN, if set, is sent as a Client FQDN option (39) in every
	// ADDR-REG-INFORM whose Target has no FQDN of its own (RFC 9686 §4.2,
	// encoding: see encodeFQDN; flags: see fqdnFlags).
	FQDN string
	// Retrans drives ADDR-REG-INFORM retransmission; the zero value means
	// scheduler.DefaultRegistration (IRT 1 s, MRC 3).
	Retrans scheduler.Retrans
	// Discovery drives Information-Request retransmission in Probe; the zero
	// value means scheduler.InformationRequest (IRT 1 s, MRT 3600 s).
	Discovery scheduler.Retrans
	// DiscoveryMaxDelay bounds the random delay before a probe's first
	// Information-Request (RFC 8415 §18.2.6); 0 means
	// scheduler.InfMaxDelay (1 s), negative means no delay.
	DiscoveryMaxDelay time.Duration
	// Clock defaults to scheduler.RealClock().
	Clock scheduler.Clock
	// Rand returns values uniform in [0, 1); it defaults to
	// math/rand/v2.Float64. Calls are serialised.
	Rand func() float64
	// Logger defaults to one that discards.
	Logger *slog.Logger
}

// Target is one address to register (or deregister) on one interface.
type Target struct {
	Ifindex int
	// Ifname names the interface in errors and logs; empty means "#index".
	// The caller knows it: the registrar looks nothing up per exchange.
	Ifname string
	Addr   netip.Addr
	// Lifetimes is called at every transmission and when a reply arrives
	// and returns the address's current lifetimes, or ok false once the
	// address is no longer on interface Ifindex. A deregistration returns
	// (0, 0, true).
	Lifetimes func() (preferred, valid time.Duration, ok bool)
	// Deregister marks a deregistration (RFC 9686 §4.7): Lifetimes returns
	// zeros, and the address may already be gone from the interface, so it
	// is sent once (from the removed address, which IPV6_FREEBIND allows)
	// and a reply is awaited for one IRT only: a server answers by unicast
	// to the address, which reaches the host only while it still holds it.
	Deregister bool
	// NoWait, with Deregister: send once and return without waiting for a
	// reply (a stopping daemon deregistering many addresses in its budget).
	NoWait bool
	// FQDN, if set, is the name this exchange's Client FQDN option
	// carries instead of Config.FQDN: a caller that follows the host's
	// name as it changes (addrregd) sets it per exchange.
	FQDN string
}

// Result describes one finished (or abandoned) exchange.
type Result struct {
	Replied bool // a valid ADDR-REG-REPLY arrived
	Sends   int  // transmissions made, the first included
	// Preferred and Valid are the lifetimes the last transmission carried,
	// as Lifetimes returned them (the wire truncates to whole seconds).
	Preferred, Valid time.Duration
	// Duration runs from the first transmission to the end of the exchange.
	Duration time.Duration
	// LastSent is when the last transmission went out: the moment its
	// lifetimes were true, from which the server counts them down.
	LastSent time.Time
}

// Stats are the registrar's counters since New.
type Stats struct {
	Sent          uint64 // ADDR-REG-INFORM transmissions, retransmissions included
	Retransmitted uint64 // ADDR-REG-INFORM retransmissions
	Probes        uint64 // Information-Request transmissions
	Accepted      uint64 // replies accepted (ADDR-REG-REPLY and Reply)
	Dropped       map[DropReason]uint64
	// SendErrors counts transmissions the kernel refused (sendmsg failed),
	// by errno name ("EPERM", "ENOBUFS" …; "other" without an errno).
	// Each is a lost transmission: the exchange goes on.
	SendErrors map[string]uint64
	// RecvErrors counts failed reads of the socket (retried with backoff).
	RecvErrors uint64
}

// Registrar sends ADDR-REG-INFORMs and Information-Requests and matches
// their replies. Its socket lives in the network namespace New ran in. Run
// must be running for replies to arrive; Register and Probe may be called
// from any number of goroutines.
type Registrar struct {
	cfg      Config
	clientID []byte
	fqdn     []byte
	clock    scheduler.Clock
	log      *slog.Logger
	conn     conn
	// foreignNS: the socket is not in the process's own namespace (tests).
	foreignNS bool

	randMu sync.Mutex
	randFn func() float64

	mu        sync.Mutex
	exchanges map[xid]*exchange
	stats     Stats

	closeOnce sync.Once
	closeErr  error

	srv servers // servers.go
}

// exchange is one outstanding transaction; Run hands it datagrams whose
// transaction ID matches.
type exchange struct {
	xid  xid
	ch   chan datagram
	stop chan struct{} // closed to end the exchange early; nil = never
	// For the one log line about refused sends.
	what  string // "ADDR-REG-INFORM" or "Information-Request"
	iface ifaceName
	addr  netip.Addr
}

// probeCollect is how long Probe keeps listening after a Reply without
// option 148 for another server's Reply with it.
const probeCollect = time.Second

// errCollected ends a probe's exchange once its collection time is over.
var errCollected = errors.New("probe: collection time over")

type datagram struct {
	m       message // parsed from its own copy of the bytes
	dst     netip.Addr
	ifindex int
	src     netip.Addr // the server's address (servers.go)
}

// New validates cfg, fills in defaults and opens the raw socket in the
// calling goroutine's current network namespace (lock the OS thread around
// New when switching namespaces). It needs CAP_NET_RAW.
func New(cfg Config) (*Registrar, error) {
	r, err := newRegistrar(cfg)
	if err != nil {
		return nil, err
	}
	c, err := listenRaw()
	if err != nil {
		return nil, err
	}
	r.conn = c
	r.foreignNS = inForeignNS()
	return r, nil
}

// newRegistrar is New without the socket.
func newRegistrar(cfg Config) (*Registrar, error) {
	if cfg.ClientID == nil {
		return nil, errors.New("registrar: Config.ClientID is required")
	}
	r := &Registrar{
		cfg:       cfg,
		clientID:  cfg.ClientID.ToBytes(),
		clock:     cfg.Clock,
		log:       cfg.Logger,
		exchanges: make(map[xid]*exchange),
		stats:     Stats{Dropped: make(map[DropReason]uint64), SendErrors: make(map[string]uint64)},
	}
	if len(r.clientID) == 0 || len(r.clientID) > 130 { // RFC 8415 §11.1: at most 128 octets after the type
		return nil, fmt.Errorf("registrar: Client ID %s: %d octets, want 1 to 130", cfg.ClientID, len(r.clientID))
	}
	if cfg.FQDN != "" {
		b, err := encodeFQDN(cfg.FQDN)
		if err != nil {
			return nil, fmt.Errorf("registrar: FQDN %q: %w", cfg.FQDN, err)
		}
		r.fqdn = b
	}
	if r.cfg.Retrans == (scheduler.Retrans{}) {
		r.cfg.Retrans = scheduler.DefaultRegistration
	}
	if r.cfg.Discovery == (scheduler.Retrans{}) {
		r.cfg.Discovery = scheduler.InformationRequest
	}
	if err := r.cfg.Retrans.Validate(); err != nil {
		return nil, fmt.Errorf("registrar: Retrans: %w", err)
	}
	if err := r.cfg.Discovery.Validate(); err != nil {
		return nil, fmt.Errorf("registrar: Discovery: %w", err)
	}
	if r.cfg.DiscoveryMaxDelay == 0 {
		r.cfg.DiscoveryMaxDelay = scheduler.InfMaxDelay
	}
	if r.clock == nil {
		r.clock = scheduler.RealClock()
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	rnd := cfg.Rand
	if rnd == nil {
		rnd = mrand.Float64
	}
	r.randFn = func() float64 {
		r.randMu.Lock()
		defer r.randMu.Unlock()
		return rnd()
	}
	return r, nil
}

// Close closes the socket; Run, Register and Probe then fail. Run closes it
// too when it returns. Close may be called more than once.
func (r *Registrar) Close() error {
	r.closeOnce.Do(func() { r.closeErr = r.conn.close() })
	return r.closeErr
}

// Run receives datagrams and hands each to the exchange whose transaction ID
// it carries, until ctx is done (it then returns nil). A failed read is
// retried with a capped backoff; a socket closed under it (not by ctx) or
// broken beyond retry ends Run with an error wrapping ErrSocketBroken. It
// closes the socket when it returns.
func (r *Registrar) Run(ctx context.Context) error {
	defer r.Close()
	stop := context.AfterFunc(ctx, func() { r.Close() })
	defer stop()
	buf := make([]byte, 65536)
	var (
		fails    int
		failFrom time.Time
	)
	for {
		n, dst, ifindex, src, err := r.conn.recv(buf)
		if err == nil {
			if fails > 0 {
				r.log.Info("registrar receiving again", "failed_reads", fails, "for", r.clock.Now().Sub(failFrom))
				fails = 0
			}
			r.dispatch(buf[:n], dst, ifindex, src)
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if fatalSocketError(err) {
			return fmt.Errorf("%w: receive: %w", ErrSocketBroken, err)
		}
		r.mu.Lock()
		r.stats.RecvErrors++
		r.mu.Unlock()
		fails++
		if fails == 1 {
			failFrom = r.clock.Now()
			// A raw socket reports little but ENOBUFS-like trouble here;
			// losing a datagram is what retransmission is for.
			r.log.Warn("registrar receive failed; retrying with backoff", "err", err)
		} else if d := r.clock.Now().Sub(failFrom); d >= recvGiveUp {
			return fmt.Errorf("%w: every read failed for %v: %w", ErrSocketBroken, d.Round(time.Second), err)
		}
		if err := r.sleep(ctx, recvBackoff(fails)); err != nil {
			return nil
		}
	}
}

// Receive-error backoff: 10 ms doubling to 1 s; a socket whose every read
// fails for recvGiveUp is broken beyond retry.
const (
	recvBackoffMin = 10 * time.Millisecond
	recvBackoffMax = time.Second
	recvGiveUp     = time.Minute
)

func recvBackoff(fails int) time.Duration {
	d := recvBackoffMin
	for i := 1; i < fails && d < recvBackoffMax; i++ {
		d *= 2
	}
	return min(d, recvBackoffMax)
}

// fatalSocketError reports errors no retry can cure: the descriptor is
// closed or is not (any more) the socket, or it was destroyed (SOCK_DESTROY,
// "ss -K").
func fatalSocketError(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, unix.EBADF) ||
		errors.Is(err, unix.ENOTSOCK) || errors.Is(err, unix.ECONNABORTED)
}

// errnoName names err's errno for the SendErrors counter.
func errnoName(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
		return "errno " + strconv.Itoa(int(errno))
	}
	return "other"
}

// refused marks a transmission the kernel refused: lost, like one dropped
// on the way (RFC 8415 §15 retransmission covers both).
type refused struct{ err error }

func (e *refused) Error() string { return e.err.Error() }
func (e *refused) Unwrap() error { return e.err }

// sendErr classifies a failed send: fatal errors are returned as they are
// (the exchange ends), any other is counted and returned as *refused.
func (r *Registrar) sendErr(err error) error {
	if fatalSocketError(err) {
		return err
	}
	r.mu.Lock()
	r.stats.SendErrors[errnoName(err)]++
	r.mu.Unlock()
	return &refused{err}
}

// dispatch parses one datagram and queues it to its exchange.
func (r *Registrar) dispatch(b []byte, dst netip.Addr, ifindex int, src netip.Addr) {
	m, err := parseDatagram(b)
	if err != nil {
		r.drop(DropMalformed, xid{}, dst, ifindex)
		return
	}
	if m.typ == msgAddrRegInform { // RFC 9686 §4.2: clients discard them
		r.drop(DropInform, m.xid, dst, ifindex)
		return
	}
	r.mu.Lock()
	ex := r.exchanges[m.xid]
	r.mu.Unlock()
	if ex == nil {
		r.drop(DropTransaction, m.xid, dst, ifindex)
		return
	}
	own := append([]byte(nil), b...) // m refers to b, which is reused
	m, _ = parseDatagram(own)
	select {
	case ex.ch <- datagram{m: m, dst: dst, ifindex: ifindex, src: src}:
	default:
		r.drop(DropBacklog, m.xid, dst, ifindex)
	}
}

func (r *Registrar) drop(why DropReason, x xid, dst netip.Addr, ifindex int) {
	r.mu.Lock()
	r.stats.Dropped[why]++
	r.mu.Unlock()
	if r.debug() {
		r.log.LogAttrs(context.Background(), slog.LevelDebug, "reply dropped", slog.String("reason", string(why)),
			slog.Any("xid", x), slog.Any("iface", r.iface(ifindex)), slog.Any("addr", dst))
	}
}

// Stats returns a copy of the counters.
func (r *Registrar) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Dropped = maps.Clone(r.stats.Dropped)
	s.SendErrors = nil
	if len(r.stats.SendErrors) > 0 {
		s.SendErrors = maps.Clone(r.stats.SendErrors)
	}
	return s
}

// open registers a new exchange under a fresh random transaction ID (RFC
// 8415 §16.1: new per exchange, from a good random source).
func (r *Registrar) open() *exchange {
	ex := &exchange{ch: make(chan datagram, 8)}
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		rand.Read(ex.xid[:]) // never fails (crypto/rand, Go 1.24+)
		if r.exchanges[ex.xid] == nil {
			r.exchanges[ex.xid] = ex
			return ex
		}
	}
}

func (r *Registrar) done(ex *exchange) {
	r.mu.Lock()
	delete(r.exchanges, ex.xid)
	r.mu.Unlock()
}

// Register runs one ADDR-REG-INFORM exchange for t (RFC 9686 §4.2–4.4) with
// a new transaction ID, kept across its retransmissions. t.Lifetimes is read
// at every transmission, so each carries the address's current lifetimes.
// It returns when a valid ADDR-REG-REPLY arrives (Result.Replied, nil), or
// with an error wrapping ErrExchangeFailed, ErrAddressGone or ctx.Err().
func (r *Registrar) Register(ctx context.Context, t Target) (Result, error) {
	// RFC 9686 §4.2: global scope only (ULA included); never link-local,
	// loopback or multicast. Anything finer is the caller's to decide.
	if t.Ifindex <= 0 || !t.Addr.Is6() || t.Addr.Is4In6() || !t.Addr.IsGlobalUnicast() || t.Lifetimes == nil {
		return Result{}, fmt.Errorf("register %s on ifindex %d: invalid target (need an IPv6 global unicast address, an interface and Lifetimes)", t.Addr, t.Ifindex)
	}
	addr := t.Addr.WithZone("")
	fqdn := r.fqdn
	if t.FQDN != "" {
		b, err := encodeFQDN(t.FQDN)
		if err != nil {
			return Result{}, fmt.Errorf("register %s on ifindex %d: FQDN %q: %w", t.Addr, t.Ifindex, t.FQDN, err)
		}
		fqdn = b
	}
	ex := r.open()
	defer r.done(ex)
	ex.what, ex.iface, ex.addr = "ADDR-REG-INFORM", r.ifaceNamed(t.Ifindex, t.Ifname), addr
	e := expect{typ: msgAddrRegReply, xid: ex.xid, ifindex: t.Ifindex, dst: addr, iaAddr: true, clientID: r.clientID}
	assigned := func() bool { _, _, ok := t.Lifetimes(); return ok }

	var res Result
	buf := make([]byte, 0, 128)
	transmit := func(elapsed time.Duration) error {
		pref, valid, ok := t.Lifetimes()
		if !ok {
			return ErrAddressGone
		}
		buf = appendInform(buf[:0], &inform{
			xid: ex.xid, clientID: r.clientID, elapsed: elapsed, addr: addr,
			preferred: pref, valid: valid, fqdn: fqdn,
		})
		if err := r.conn.send(buf, t.Ifindex, addr); err != nil {
			return r.sendErr(err)
		}
		res.Sends++
		res.Preferred, res.Valid = max(pref, 0), max(valid, 0)
		res.LastSent = r.clock.Now()
		r.mu.Lock()
		r.stats.Sent++
		if res.Sends > 1 {
			r.stats.Retransmitted++
		}
		r.mu.Unlock()
		if r.debug() {
			r.log.LogAttrs(ctx, slog.LevelDebug, "ADDR-REG-INFORM sent", slog.Any("iface", ex.iface),
				slog.Any("addr", addr), slog.Any("xid", ex.xid), slog.Int("send", res.Sends),
				slog.Duration("preferred", pref), slog.Duration("valid", valid), slog.Duration("elapsed", elapsed))
		}
		return nil
	}
	check := func(d *datagram) (bool, error) {
		why := validate(&d.m, d.dst, d.ifindex, &e, assigned)
		switch why {
		case "":
			r.noteServer(d)
			return true, nil
		case DropAddressGone:
			r.drop(why, d.m.xid, d.dst, d.ifindex)
			return false, ErrAddressGone
		}
		r.drop(why, d.m.xid, d.dst, d.ifindex)
		return false, nil
	}
	rt := r.cfg.Retrans
	if t.Deregister {
		rt = scheduler.Retrans{IRT: rt.IRT, MRC: 1}
		if t.NoWait {
			err := transmit(0)
			if err != nil {
				err = fmt.Errorf("deregister %s on %s: %w", addr, ex.iface, err)
			}
			return res, err
		}
	}
	start, err := r.transact(ctx, ex, rt, transmit, check)
	if !start.IsZero() {
		res.Duration = r.clock.Now().Sub(start)
	}
	if err != nil {
		return res, fmt.Errorf("register %s on %s (xid %s, %d sends): %w", addr, ex.iface, ex.xid, res.Sends, err)
	}
	res.Replied = true
	if r.debug() {
		r.log.LogAttrs(ctx, slog.LevelDebug, "ADDR-REG-REPLY accepted", slog.Any("iface", ex.iface),
			slog.Any("addr", addr), slog.Any("xid", ex.xid), slog.Int("sends", res.Sends), slog.Duration("duration", res.Duration))
	}
	return res, nil
}

// Probe asks the DHCPv6 servers on interface ifindex whether they support
// address registration (RFC 9686 §4.1): after a random delay of up to
// DiscoveryMaxDelay it sends an Information-Request from linkLocal whose ORO
// includes OPTION_ADDR_REG_ENABLE, retransmitted per Config.Discovery until a
// Reply with its transaction ID arrives on that interface, for that address.
// supported reports whether that Reply carries option 148; after a Reply
// without it, Probe listens one second more (not retransmitting) in case
// another server on the link answers with it. Without MRC or MRD
// it only ends with a Reply or ctx; err then wraps ctx.Err().
func (r *Registrar) Probe(ctx context.Context, ifindex int, linkLocal netip.Addr) (supported bool, err error) {
	if ifindex <= 0 || !linkLocal.Is6() || !linkLocal.IsLinkLocalUnicast() {
		return false, fmt.Errorf("probe ifindex %d from %s: invalid interface or non link-local address", ifindex, linkLocal)
	}
	src := linkLocal.WithZone("")
	if d := r.cfg.DiscoveryMaxDelay; d > 0 {
		if err := r.sleep(ctx, scheduler.InitialDelay(d, r.randFn)); err != nil {
			return false, fmt.Errorf("probe %s: %w", r.iface(ifindex), err)
		}
	}
	ex := r.open()
	defer r.done(ex)
	ex.what, ex.iface, ex.addr = "Information-Request", r.iface(ifindex), src
	e := expect{typ: msgReply, xid: ex.xid, ifindex: ifindex, dst: src, clientID: r.clientID}
	sends := 0
	buf := make([]byte, 0, 128)
	transmit := func(elapsed time.Duration) error {
		buf = appendInfoRequest(buf[:0], ex.xid, r.clientID, elapsed)
		if err := r.conn.send(buf, ifindex, src); err != nil {
			return r.sendErr(err)
		}
		sends++
		r.mu.Lock()
		r.stats.Probes++
		r.mu.Unlock()
		if r.debug() {
			r.log.LogAttrs(ctx, slog.LevelDebug, "Information-Request sent", slog.Any("iface", r.iface(ifindex)),
				slog.Any("addr", src), slog.Any("xid", ex.xid), slog.Int("send", sends), slog.Duration("elapsed", elapsed))
		}
		return nil
	}
	// A link may have several servers, not all of them registration
	// servers: after a Reply without option 148, listen probeCollect longer
	// (without retransmitting) for one with it.
	var collect scheduler.Timer
	ex.stop = make(chan struct{})
	check := func(d *datagram) (bool, error) {
		if why := validate(&d.m, d.dst, d.ifindex, &e, nil); why != "" {
			r.drop(why, d.m.xid, d.dst, d.ifindex)
			return false, nil
		}
		if d.m.addrRegEnable {
			r.noteServer(d)
			supported = true
			return true, nil
		}
		if collect == nil {
			collect = r.clock.AfterFunc(probeCollect, func() { close(ex.stop) })
		}
		return false, nil
	}
	transmit0 := transmit
	transmit = func(elapsed time.Duration) error {
		if collect != nil {
			return errCollected // a Reply came: no more Information-Requests
		}
		return transmit0(elapsed)
	}
	_, err = r.transact(ctx, ex, r.cfg.Discovery, transmit, check)
	if errors.Is(err, errCollected) {
		// A retransmission came due inside the window: listen out the
		// rest of it (until ex.stop) rather than cutting it short.
		var accepted bool
		if accepted, err = r.await(ctx, ex, nil, check); accepted {
			err = nil
		}
	}
	if collect != nil {
		collect.Stop()
		if errors.Is(err, errCollected) || errors.Is(err, ErrExchangeFailed) {
			err = nil // answered, without 148
		}
	}
	if err != nil {
		return false, fmt.Errorf("probe %s from %s (xid %s, %d sends): %w", r.iface(ifindex), src, ex.xid, sends, err)
	}
	if r.debug() {
		r.log.LogAttrs(ctx, slog.LevelDebug, "Reply to Information-Request", slog.Any("iface", r.iface(ifindex)),
			slog.Any("addr", src), slog.Any("xid", ex.xid), slog.Bool("addr_reg_enable", supported))
	}
	return supported, nil
}

// transact drives the transmissions of ex (RFC 8415 §15) until check
// accepts a datagram. transmit is called for every transmission with the
// time since the first. A transmission the kernel refuses (*refused: EPERM
// from a firewall, ENOBUFS, ENETDOWN, EINVAL from a full neighbour table …)
// counts as made and lost: the exchange keeps its transaction ID and its
// timers, and fails only when MRC or MRD runs out; the first refusal of
// an exchange is logged. It returns when the first transmission was due
// and nil, or an error from transmit or check, ErrExchangeFailed (noting
// refused sends), or ctx.Err().
func (r *Registrar) transact(ctx context.Context, ex *exchange, rt scheduler.Retrans,
	transmit func(elapsed time.Duration) error, check func(*datagram) (bool, error)) (time.Time, error) {
	var (
		start   time.Time
		bo      *scheduler.Backoff
		refusal int
		lastErr error
	)
	for {
		if err := ctx.Err(); err != nil {
			return start, err
		}
		now := r.clock.Now()
		elapsed := time.Duration(0)
		if bo == nil {
			start = now
		} else {
			elapsed = now.Sub(start)
		}
		if err := transmit(elapsed); err != nil {
			var rf *refused
			if !errors.As(err, &rf) {
				return start, err
			}
			refusal++
			lastErr = rf.err
			if refusal == 1 {
				r.log.Warn("send refused: counted as a lost transmission", "iface", ex.iface, "addr", ex.addr,
					"msg", ex.what, "xid", ex.xid, "err", rf.err)
			}
		}
		if bo == nil {
			bo = rt.Start(r.randFn)
		}
		wait, more := bo.Next(elapsed)
		// RT counts from the transmission: the time transmit took (a
		// netlink lookup of the lifetimes, the send) is part of it.
		wait = max(wait-r.clock.Now().Sub(now), 0)
		fired := make(chan struct{})
		tm := r.clock.AfterFunc(wait, func() { close(fired) })
		accepted, err := r.await(ctx, ex, fired, check)
		tm.Stop()
		switch {
		case err != nil:
			return start, err
		case accepted:
			r.mu.Lock()
			r.stats.Accepted++
			r.mu.Unlock()
			return start, nil
		case !more && refusal > 0:
			return start, fmt.Errorf("%w (%d of %d transmissions refused, last: %w)", ErrExchangeFailed, refusal, bo.Transmissions(), lastErr)
		case !more:
			return start, ErrExchangeFailed
		}
	}
}

// await waits for the timer or for a datagram check accepts.
func (r *Registrar) await(ctx context.Context, ex *exchange, fired <-chan struct{},
	check func(*datagram) (bool, error)) (bool, error) {
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-ex.stop:
			return false, errCollected
		case <-fired:
			// A reply queued as the timer fired still counts.
			for {
				select {
				case d := <-ex.ch:
					if ok, err := check(&d); ok || err != nil {
						return ok, err
					}
				default:
					return false, nil
				}
			}
		case d := <-ex.ch:
			if ok, err := check(&d); ok || err != nil {
				return ok, err
			}
		}
	}
}

func (r *Registrar) sleep(ctx context.Context, d time.Duration) error {
	fired := make(chan struct{})
	tm := r.clock.AfterFunc(d, func() { close(fired) })
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-fired:
		return nil
	}
}

// debug reports whether debug logging is on, so the hot path builds no
// log attributes otherwise.
func (r *Registrar) debug() bool { return r.log.Enabled(context.Background(), slog.LevelDebug) }

// ifaceName logs an interface index as its name, looked up only when a
// handler actually formats it, and only when the registrar's socket is in
// the process's own namespace: the lookup runs in the calling thread's
// namespace and would name another interface. Otherwise it is "#index".
type ifaceName struct {
	index  int
	name   string
	lookup bool
}

func (r *Registrar) iface(index int) ifaceName { return ifaceName{index: index, lookup: !r.foreignNS} }

// ifaceNamed is iface with the name already known (no lookup); an empty
// name logs as "#index".
func (r *Registrar) ifaceNamed(index int, name string) ifaceName {
	return ifaceName{index: index, name: name}
}

func (i ifaceName) LogValue() slog.Value { return slog.StringValue(i.String()) }

func (i ifaceName) String() string {
	if i.name != "" {
		return i.name
	}
	if i.lookup {
		if ifi, err := net.InterfaceByIndex(i.index); err == nil {
			return ifi.Name
		}
	}
	return "#" + strconv.Itoa(i.index)
}

// inForeignNS reports whether the calling thread is in another network
// namespace than the process's main thread.
func inForeignNS() bool {
	var self, thread unix.Stat_t
	if unix.Stat("/proc/self/ns/net", &self) != nil || unix.Stat("/proc/thread-self/ns/net", &thread) != nil {
		return false
	}
	return self.Ino != thread.Ino || self.Dev != thread.Dev
}
