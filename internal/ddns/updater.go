package ddns

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/addrreg/addrreg/scheduler"
)

// Defaults of Config.
const (
	DefaultTimeout    = 3 * time.Second
	DefaultMaxPending = 65536
	// DefaultFlushEvery bounds how long a change may wait in memory
	// before the journal holds it while the worker is busy; an idle or
	// waiting worker writes the journal at once.
	DefaultFlushEvery = time.Second
)

// DefaultRetry is the backoff after a failed update: 1 s, 2 s, 4 s … 5 min.
var DefaultRetry = scheduler.Retry{First: time.Second, Max: 5 * time.Minute}

// Config configures an Updater.
type Config struct {
	// Server is the primary DNS server, host:port.
	Server string
	// ForwardZones hold the AAAA records (canonical FQDNs); ReverseZones
	// (under ip6.arpa) the PTRs. A name outside every forward zone gets
	// nothing, nor does its address a PTR.
	ForwardZones, ReverseZones []string
	Key                        *Key // nil: unsigned updates
	// TTL of the records; 0: a third of the binding's valid lifetime,
	// between MinTTL and MaxTTL.
	TTL time.Duration
	// Journal keeps pending work across restarts; nil: memory only.
	Journal Journal
	Clock   scheduler.Clock // nil: real time
	Logger  *slog.Logger    // nil: slog.Default()
	// Dial opens the connection for one exchange; nil: net.Dialer.
	Dial       func(ctx context.Context, network, addr string) (net.Conn, error)
	Timeout    time.Duration   // per exchange; 0: DefaultTimeout
	Retry      scheduler.Retry // zero: DefaultRetry
	MaxPending int             // 0: DefaultMaxPending
	FlushEvery time.Duration   // 0: DefaultFlushEvery
	Rand       func() float64  // backoff jitter; nil: math/rand/v2
}

// Updater keeps DNS in step with the bindings: Enqueue hands it a change
// without waiting, and one goroutine (Run) sends the updates, one address
// at a time, retrying with backoff what fails.
type Updater struct {
	cfg   Config
	log   *slog.Logger
	clock scheduler.Clock
	m     metrics

	mu     sync.Mutex
	intake []Change
	// ignored: the Seq of changes Enqueue did not queue (Journal).
	ignored []int64
	wake    chan struct{}
	size    atomic.Int64 // len(intake) + len(pending)

	// Owned by Run.
	pending   map[netip.Addr]*entry
	order     []netip.Addr // pending addresses, oldest first
	dirty     map[netip.Addr]bool
	lastFlush time.Time
	downUntil time.Time // the server did not answer: wait for it
	failures  int       // consecutive exchanges without an answer
	// done: the outcomes not yet in the journal (at most maxOutcomes);
	// attempt: the record the update under way is about.
	done    []Outcome
	attempt Outcome
	// taken: the Seq of the changes merged or ignored since the last
	// Apply.
	taken []int64
}

// maxOutcomes bounds the outcomes kept while the journal cannot be
// written; the oldest go first.
const maxOutcomes = 4096

// entry is a Pending with its retry state.
type entry struct {
	Pending
	failures int
	retryAt  time.Time
}

// New checks cfg and returns an Updater; Run starts it.
func New(cfg Config) (*Updater, error) {
	if cfg.Server == "" {
		return nil, errors.New("ddns: no server")
	}
	if len(cfg.ForwardZones) == 0 {
		return nil, errors.New("ddns: no forward zone")
	}
	cfg.ForwardZones, cfg.ReverseZones = slices.Clone(cfg.ForwardZones), slices.Clone(cfg.ReverseZones)
	for i, z := range cfg.ForwardZones {
		c, err := CheckZone(z)
		if err != nil {
			return nil, fmt.Errorf("ddns: forward %w", err)
		}
		cfg.ForwardZones[i] = c
	}
	for i, z := range cfg.ReverseZones {
		c, err := CheckReverseZone(z)
		if err != nil {
			return nil, fmt.Errorf("ddns: reverse %w", err)
		}
		cfg.ReverseZones[i] = c
	}
	if cfg.Clock == nil {
		cfg.Clock = scheduler.RealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Retry == (scheduler.Retry{}) {
		cfg.Retry = DefaultRetry
	}
	if err := cfg.Retry.Validate(); err != nil {
		return nil, fmt.Errorf("ddns: %w", err)
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = DefaultFlushEvery
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	u := &Updater{
		cfg: cfg, log: cfg.Logger, clock: cfg.Clock,
		wake:    make(chan struct{}, 1),
		pending: make(map[netip.Addr]*entry),
		dirty:   make(map[netip.Addr]bool),
	}
	u.m = newMetrics(func() float64 { return float64(u.size.Load()) })
	return u, nil
}

// Enqueue hands the updater a binding change. It never blocks: when the
// queue is full the change is dropped, counted and logged. Changes that
// touch no configured zone are ignored.
func (u *Updater) Enqueue(c Change) {
	name := c.Name
	c.Name, _ = qualify(u.cfg.ForwardZones, c.Name)
	c.PrevName, _ = qualify(u.cfg.ForwardZones, c.PrevName)
	if c.Name == "" && name != "" {
		u.log.Debug("DNS: name not in a forward zone, or not a host name: nothing published", "addr", c.Addr, "fqdn", name)
	}
	if c.Name == "" && c.PrevName == "" || c.Name == c.PrevName && string(c.DUID) == string(c.PrevDUID) {
		// Nothing to publish, or a refresh: the records stand.
		u.ignore(c.Seq)
		return
	}
	u.mu.Lock()
	if u.size.Load() >= int64(u.cfg.MaxPending) {
		if c.Seq != 0 {
			u.ignored = append(u.ignored, c.Seq)
		}
		u.mu.Unlock()
		u.m.dropped.Inc()
		u.log.Warn("DNS update queue full: change dropped", "addr", c.Addr, "fqdn", c.Name, "max", u.cfg.MaxPending)
		return
	}
	u.intake = append(u.intake, c)
	u.size.Add(1)
	u.mu.Unlock()
	u.signal()
}

// ignore notes that the change numbered seq (if any) needs no work.
func (u *Updater) ignore(seq int64) {
	if seq == 0 {
		return
	}
	u.mu.Lock()
	u.ignored = append(u.ignored, seq)
	u.mu.Unlock()
	u.signal()
}

func (u *Updater) signal() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// Pending returns how many addresses wait for DNS work (queued or
// being retried).
func (u *Updater) Pending() int { return int(u.size.Load()) }

// Run loads the journal and sends updates until ctx ends; it then writes
// what is still pending to the journal and returns. It is called once. A
// journal that cannot be read is logged and replaced: DNS updates go on
// without the work it held.
func (u *Updater) Run(ctx context.Context) error {
	if j := u.cfg.Journal; j != nil {
		ps, cs, err := j.Load()
		if err != nil {
			u.m.journal.Inc()
			u.log.Error("DNS journal unreadable: the updates pending before the restart are lost", "err", err)
		}
		// The changes committed but not taken before the restart:
		// merged (take) after the work loaded below.
		for _, c := range cs {
			u.Enqueue(c)
		}
		for _, p := range ps {
			if _, ok := u.pending[p.Addr]; !ok && p.Addr.IsValid() {
				u.order = append(u.order, p.Addr)
				u.size.Add(1)
			}
			u.pending[p.Addr] = &entry{Pending: p}
		}
		if len(ps)+len(cs) > 0 {
			u.log.Info("DNS updates pending from before the restart", "count", len(ps), "changes", len(cs))
		}
	}
	var timer scheduler.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		u.take()
		if ctx.Err() != nil {
			u.flush(true)
			return nil
		}
		now := u.clock.Now()
		i, next := u.ready(now)
		if i < 0 {
			u.flush(true)
			if timer != nil {
				timer.Stop()
				timer = nil
			}
			if !next.IsZero() {
				timer = u.clock.AfterFunc(next.Sub(now), u.signal)
			}
			select {
			case <-ctx.Done():
			case <-u.wake:
			}
			continue
		}
		u.flush(false)
		u.process(ctx, i, now)
	}
}

// take merges the intake into the pending entries.
func (u *Updater) take() {
	u.mu.Lock()
	in := u.intake
	u.intake = nil
	u.taken = append(u.taken, u.ignored...)
	u.ignored = u.ignored[:0]
	u.mu.Unlock()
	if len(in) == 0 {
		return
	}
	now := u.clock.Now()
	for _, c := range in {
		e, ok := u.pending[c.Addr]
		if !ok {
			e = &entry{}
			u.pending[c.Addr] = e
			u.order = append(u.order, c.Addr)
		} else {
			u.size.Add(-1) // coalesced
			// New work is tried at once (a refused update may now
			// be another); a server that does not answer still
			// holds everything back (downUntil).
			e.retryAt = time.Time{}
		}
		e.Pending = merge(e.Pending, c, ttlFor(u.cfg.TTL, c.Valid), now)
		u.dirty[c.Addr] = true
		if c.Seq != 0 {
			u.taken = append(u.taken, c.Seq)
		}
	}
}

// ready returns the index in order of the oldest entry due now, or -1
// and when the next one is due (zero: none is pending). Entries waiting
// for their backoff go to the back of order, so the first is normally due.
func (u *Updater) ready(now time.Time) (int, time.Time) {
	if now.Before(u.downUntil) {
		return -1, u.downUntil
	}
	var next time.Time
	for i, a := range u.order {
		e := u.pending[a]
		if !now.Before(e.retryAt) {
			return i, time.Time{}
		}
		if next.IsZero() || e.retryAt.Before(next) {
			next = e.retryAt
		}
	}
	return -1, next
}

// process sends the updates of order[i]; done, it leaves the queue, else
// it waits its backoff (and the server's, when there was no answer) at
// the back of the queue.
func (u *Updater) process(ctx context.Context, i int, now time.Time) {
	e := u.pending[u.order[i]]
	err := u.do(ctx, &e.Pending)
	if ctx.Err() != nil {
		return
	}
	if i == 0 {
		u.order = u.order[1:] // O(1): the common case while draining a queue
	} else {
		u.order = slices.Delete(u.order, i, i+1)
	}
	if err == nil {
		if e.failures > 0 {
			u.log.Info("DNS update done after failures", "addr", e.Addr, "failures", e.failures)
		}
		delete(u.pending, e.Addr)
		u.size.Add(-1)
		u.dirty[e.Addr] = true
		u.failures = 0
		return
	}
	u.order = append(u.order, e.Addr)
	e.failures++
	if e.failures == 1 {
		// Recorded once: a retry that fails again adds nothing new, a
		// success is recorded in turn.
		o := u.attempt
		o.Result, o.Err = OutcomeFailed, err.Error()
		u.note(o)
	}
	e.retryAt = now.Add(u.cfg.Retry.Delay(e.failures, 0, u.cfg.Rand))
	var rc rcodeError
	if !errors.As(err, &rc) {
		// No answer: the server is down or unreachable, so nothing
		// else is tried before the backoff ends either.
		u.failures++
		u.downUntil = now.Add(u.cfg.Retry.Delay(u.failures, 0, u.cfg.Rand))
		e.retryAt = u.downUntil
	}
	u.log.Warn("DNS update failed: will retry", "addr", e.Addr, "err", err, "retry_in", e.retryAt.Sub(now).Round(time.Millisecond))
}

// note keeps an outcome for the journal.
func (u *Updater) note(o Outcome) {
	if u.cfg.Journal == nil {
		return
	}
	o.Time = u.clock.Now()
	if len(u.done) >= maxOutcomes {
		u.done = slices.Delete(u.done, 0, len(u.done)-maxOutcomes+1)
	}
	u.done = append(u.done, o)
}

// flush writes the changed entries and the outcomes to the journal:
// always when forced, else once enough changed or FlushEvery passed.
func (u *Updater) flush(force bool) {
	j := u.cfg.Journal
	if j == nil || len(u.dirty) == 0 && len(u.done) == 0 && len(u.taken) == 0 {
		return
	}
	now := u.clock.Now()
	if !force && len(u.dirty)+len(u.done) < 1024 && now.Sub(u.lastFlush) < u.cfg.FlushEvery {
		return
	}
	var put []Pending
	var del []netip.Addr
	for a := range u.dirty {
		if e, ok := u.pending[a]; ok {
			put = append(put, e.Pending)
		} else {
			del = append(del, a)
		}
	}
	u.lastFlush = now
	if err := j.Apply(Batch{Put: put, Del: del, Done: u.done, Taken: u.taken}); err != nil {
		u.m.journal.Inc()
		u.log.Error("DNS journal not written: pending updates would not survive a restart", "err", err)
		return
	}
	clear(u.dirty)
	clear(u.done)
	u.done = u.done[:0]
	u.taken = u.taken[:0]
}

// rcodeError is an answer that says the update was not done and may be
// next time (SERVFAIL, REFUSED, NOTAUTH …).
type rcodeError struct {
	rcode int
	what  string
}

func (e rcodeError) Error() string {
	return fmt.Sprintf("%s: %s", e.what, dns.RcodeToString[e.rcode])
}

// do sends the updates of one Pending, in order: removals, then the
// name's AAAA (RFC 4703 conflict rule), then the PTR.
func (u *Updater) do(ctx context.Context, p *Pending) error {
	for _, d := range p.Drop {
		z := zoneOf(u.cfg.ForwardZones, d.Name)
		if z == "" {
			continue
		}
		u.attempt = Outcome{Addr: p.Addr, Record: "AAAA", Name: d.Name, DUID: d.DUID}
		r, err := u.send(ctx, removeAddr(z, d, p.Addr), "AAAA", "remove")
		if err != nil {
			return err
		}
		switch r {
		case dns.RcodeSuccess:
			r, err = u.send(ctx, removeDHCID(z, d), "DHCID", "remove")
			if err != nil {
				return err
			}
			if r != dns.RcodeSuccess && r != dns.RcodeNXRrset && r != dns.RcodeYXRrset {
				return rcodeError{r, "remove DHCID of " + d.Name}
			}
			u.log.Info("DNS AAAA removed", "addr", p.Addr, "fqdn", d.Name, "duid", hex.EncodeToString(d.DUID))
			u.note(Outcome{Addr: p.Addr, Record: "AAAA", Name: d.Name, DUID: d.DUID, Result: OutcomeRemoved})
		case dns.RcodeNXRrset:
			// Not this client's name (or already gone): nothing to remove.
			u.log.Debug("DNS AAAA not removed: name not held by this client", "addr", p.Addr, "fqdn", d.Name)
		default:
			return rcodeError{r, "remove AAAA " + d.Name}
		}
	}
	rev := reverseName(p.Addr)
	rz := zoneOf(u.cfg.ReverseZones, rev)
	if p.Want == nil {
		if rz != "" {
			u.attempt = Outcome{Addr: p.Addr, Record: "PTR"}
			if r, err := u.send(ctx, deletePTR(rz, rev), "PTR", "remove"); err != nil {
				return err
			} else if r != dns.RcodeSuccess {
				return rcodeError{r, "remove PTR " + rev}
			}
			u.log.Info("DNS PTR removed", "addr", p.Addr, "ptr", rev)
			u.note(Outcome{Addr: p.Addr, Record: "PTR", Result: OutcomeRemoved})
		}
		return nil
	}
	w := *p.Want
	z := zoneOf(u.cfg.ForwardZones, w.Name)
	if z == "" {
		return nil
	}
	u.attempt = Outcome{Addr: p.Addr, Record: "AAAA", Name: w.Name, DUID: w.DUID}
	r, err := u.send(ctx, addNew(z, w, p.Addr), "AAAA", "add")
	if err != nil {
		return err
	}
	if r == dns.RcodeYXDomain {
		if r, err = u.send(ctx, addMine(z, w, p.Addr), "AAAA", "add"); err != nil {
			return err
		}
	}
	switch r {
	case dns.RcodeSuccess:
		u.log.Info("DNS AAAA added", "addr", p.Addr, "fqdn", w.Name, "ttl", w.TTL, "duid", hex.EncodeToString(w.DUID))
		u.note(Outcome{Addr: p.Addr, Record: "AAAA", Name: w.Name, DUID: w.DUID, Result: OutcomeAdded})
	case dns.RcodeNXRrset:
		// RFC 4703 §5.3.2: the name exists without this client's DHCID.
		u.m.conflicts.Inc()
		u.log.Warn("DNS name held by another client: not taken", "addr", p.Addr, "fqdn", w.Name, "duid", hex.EncodeToString(w.DUID))
		u.attempt.Record = "PTR"
		if rz != "" {
			if r, err := u.send(ctx, deletePTR(rz, rev), "PTR", "remove"); err != nil {
				return err
			} else if r != dns.RcodeSuccess {
				return rcodeError{r, "remove PTR " + rev}
			}
		}
		u.note(Outcome{Addr: p.Addr, Record: "AAAA", Name: w.Name, DUID: w.DUID, Result: OutcomeConflict})
		return nil
	default:
		return rcodeError{r, "add AAAA " + w.Name}
	}
	if rz != "" {
		u.attempt.Record = "PTR"
		if r, err := u.send(ctx, setPTR(rz, rev, w.Name, w.TTL), "PTR", "add"); err != nil {
			return err
		} else if r != dns.RcodeSuccess {
			return rcodeError{r, "add PTR " + rev}
		}
		u.log.Info("DNS PTR added", "addr", p.Addr, "ptr", rev, "fqdn", w.Name)
		u.note(Outcome{Addr: p.Addr, Record: "PTR", Name: w.Name, DUID: w.DUID, Result: OutcomeAdded})
	}
	return nil
}

// send makes one exchange and returns the answer's RCODE; an error means
// no (authentic) answer came.
func (u *Updater) send(ctx context.Context, m *dns.Msg, record, op string) (int, error) {
	rc, err := u.exchange(ctx, m)
	result := resultNoAnswer
	if err == nil {
		result = dns.RcodeToString[rc]
	}
	u.m.updates.WithLabelValues(record, op, result).Inc()
	if err != nil {
		return 0, fmt.Errorf("%s %s in %s via %s: %w", op, record, m.Question[0].Name, u.cfg.Server, err)
	}
	return rc, nil
}

func (u *Updater) exchange(ctx context.Context, m *dns.Msg) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	c := &dns.Client{Net: "udp", Timeout: u.cfg.Timeout}
	if k := u.cfg.Key; k != nil {
		c.TsigSecret = map[string]string{k.Name: k.Secret}
		// TSIG signs with the wall clock (RFC 8945 §5.2.3), whatever
		// clock schedules the updates.
		m.SetTsig(k.Name, k.Algorithm, 300, time.Now().Unix())
	}
	conn, err := u.cfg.Dial(ctx, "udp", u.cfg.Server)
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	co := &dns.Conn{Conn: conn}
	defer co.Close()
	// The exchange waits on socket deadlines only: closing the socket
	// ends it at once when ctx is cancelled (a stopping server).
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, m, co)
	if err != nil {
		return 0, err
	}
	if r.Id != m.Id {
		return 0, errors.New("answer with another ID")
	}
	return r.Rcode, nil
}
