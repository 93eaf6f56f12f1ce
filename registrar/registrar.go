package registrar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

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

// debug reports whether debug logging is on, so the hot path builds no
// log attributes otherwise.
func (r *Registrar) debug() bool { return r.log.Enabled(context.Background(), slog.LevelDebug) }
