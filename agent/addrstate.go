package agent

import (
	"time"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/scheduler"
)

// An address's state, in three parts that each say one thing: where its
// registration stands (outcome), what runs for it (activity) and what the
// server may hold from us (serverHold, bounded by bindingLimit). Phase,
// what status shows, is derived from them (addr.phase). The combinations
// the types cannot rule out are checked by addr.invalid, which the
// property test calls after every step.

// outcome is how the address's last exchange ended, while none runs.
type outcome int

const (
	notRegistered outcome = iota // none yet, or cancelled, or the address quiesced: Pending
	registered                   // a reply came: Registered
	failed                       // no reply (or refused): a retry is due (retry.go): Failed
)

// activity is what runs for the address.
type activity int

const (
	idle activity = iota
	// exchanging: an exchange (addr.gen) is in flight.
	exchanging
	// exchangingRecheck: in flight, and a trigger (a lifetime change, a
	// rename, a due refresh) came meanwhile: consider the address again
	// when it ends.
	exchangingRecheck
	// pausedForRA: a registration, refresh or retry came due while the
	// link's RA condition had lapsed (RequireRAFlags); it runs when an RA
	// with M or O is back (raFlags).
	pausedForRA
)

// holdKind is what the server may hold for the address from us.
type holdKind int

const (
	holdNothing     holdKind = iota // nothing we know of
	holdUnconfirmed                 // a transmission went out (this run, or the last: the state file) and no reply is known
	holdRegistered                  // a reply came: the server holds a registration
)

// serverHold is what the server may hold for the address from us, short of
// the exchange in flight (addr.held counts that too).
type serverHold struct {
	kind holdKind
	// preferred is the preferred lifetime the replied-to exchange carried
	// (for the state file); only with holdRegistered.
	preferred time.Duration
}

// transmitted: an exchange got a transmission out, so the server may hold
// the address even without a reply.
func (h *serverHold) transmitted() {
	if h.kind == holdNothing {
		h.kind = holdUnconfirmed
	}
}

// confirmed: a reply came to an exchange that told the server preferred.
func (h *serverHold) confirmed(preferred time.Duration) {
	*h = serverHold{kind: holdRegistered, preferred: preferred}
}

type addr struct {
	cur  netmon.Addr
	last outcome  // notRegistered while an exchange runs
	run  activity // what runs for it
	hold serverHold
	// reg is what the last exchange told the server, replied to
	// (registered) or not (failed): the refresh rule times both, so a
	// failed address is tried again when a registered one would be
	// refreshed, not at every RA that re-announces it.
	reg      scheduler.Reg
	failures int // consecutive failed exchanges (retry backoff)
	gen      int // of the exchange in flight; results of others are stale
	// limit: the latest the server may keep a binding from us.
	limit bindingLimit
	// toldName is the host name the last replied-to exchange carried,
	// sendingName the one the exchange in flight carries: a registered
	// address whose name is not the machine's is registered again
	// (consider).
	toldName, sendingName string
	note                  addrNote // what status reports (status.go)
}

// inFlight reports whether an exchange of the address's runs.
func (ad *addr) inFlight() bool { return ad.run == exchanging || ad.run == exchangingRecheck }

// held reports whether the server may hold a binding for ad from us.
func (ad *addr) held() bool { return ad.hold.kind != holdNothing || ad.inFlight() }

// phase is what status shows of the address.
func (ad *addr) phase() Phase {
	switch {
	case ad.inFlight():
		return Registering
	case ad.last == registered:
		return Registered
	case ad.last == failed:
		return Failed
	}
	return Pending
}

// invalid names the first combination of ad's parts that must not be,
// or is empty: the types leave these representable.
func (ad *addr) invalid() string {
	switch {
	case ad.last < notRegistered || ad.last > failed:
		return "unknown outcome"
	case ad.run < idle || ad.run > pausedForRA:
		return "unknown activity"
	case ad.hold.kind < holdNothing || ad.hold.kind > holdRegistered:
		return "unknown hold"
	case ad.inFlight() && ad.last != notRegistered:
		return "an exchange in flight beside the outcome of the last"
	case ad.hold.kind != holdRegistered && ad.hold.preferred != 0:
		return "a preferred lifetime told without a registration"
	case ad.last == registered && ad.hold.kind != holdRegistered:
		return "registered, and the server holds no registration"
	case ad.last == failed && ad.failures == 0:
		return "failed without a failure counted"
	}
	return ""
}

// addrNote is what an address's status shows beyond its phase.
type addrNote struct {
	lastRegistered time.Time  // the last transmission of the exchange that got the last reply
	lastCarried    *Lifetimes // what the last exchange's last transmission carried (AddrStatus.Told)
	lastErr        string
}

// bindingLimit bounds how long the server may keep a binding for an
// address from us: until at + valid. An ADDR-REG-INFORM carries the
// address's current lifetimes (RFC 9686 §4.2), and the server keeps the
// binding for the valid lifetime it carried (RFC 9686 §4.3; SPEC.md): so
// the latest end of the address's valid lifetime the kernel reported while
// we followed it bounds every binding an INFORM of ours can have made,
// replied to or not. The zero value knows nothing; valid netmon.Infinite:
// never.
type bindingLimit struct {
	at    time.Time
	valid time.Duration
}

// extend takes a valid lifetime seen (or told) at at into the bound.
func (l *bindingLimit) extend(at time.Time, valid time.Duration) {
	switch {
	case l.at.IsZero(), valid == netmon.Infinite:
	case l.valid == netmon.Infinite, !at.Add(valid).After(l.at.Add(l.valid)):
		return
	}
	l.at, l.valid = at, valid
}

// inherit takes the bound of sa, a binding the server may hold from
// before (the state file, a due deregistration cancelled): none known
// is none at all.
func (l *bindingLimit) inherit(sa savedAddr, now time.Time) {
	if sa.At.IsZero() || sa.Valid == scheduler.InfiniteSeconds {
		l.extend(now, netmon.Infinite)
		return
	}
	l.extend(sa.At, time.Duration(sa.Valid)*time.Second)
}

// seconds is the bound in the state file's form, widened to a grid of a
// quarter of the valid lifetime (between 1 s and an hour, boundGrain): At
// rounded down, At + Valid rounded up. An RA that re-announces a
// prefix's lifetimes extends the bound by the seconds since the last one;
// on the grid that changes the file's entry a few times per valid
// lifetime, not at every RA, so the file of 10,000 addresses is not
// rewritten every few seconds for one SLAAC address. A wider bound only
// keeps a stale entry (and the deregistration owed for it) a little longer
// than the server's binding can last.
func (l bindingLimit) seconds() (at time.Time, valid uint32) {
	if l.at.IsZero() {
		return time.Time{}, 0
	}
	if l.valid == netmon.Infinite {
		return l.at.UTC().Round(0), scheduler.InfiniteSeconds
	}
	g := boundGrain(l.valid)
	start := l.at.Unix() // rounded down to the second
	end := l.at.Add(l.valid + time.Second - 1).Unix()
	start -= start % g
	if r := end % g; r != 0 {
		end += g - r
	}
	return time.Unix(start, 0).UTC(), uint32(min(end-start, int64(scheduler.InfiniteSeconds-1)))
}

// boundGrain is the state file's grid for a bound of valid lifetime
// valid, in seconds (bindingLimit.seconds).
func boundGrain(valid time.Duration) int64 {
	return int64(min(max(valid/4, time.Second), time.Hour) / time.Second)
}

// static reports whether na refreshes on an interval (RFC 9686 §4.6): a
// configured address, or one with an infinite valid lifetime.
func static(na netmon.Addr) bool {
	return na.Class == netmon.ClassStatic || na.Valid == netmon.Infinite
}
