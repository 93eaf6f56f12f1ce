package scheduler

import (
	"math"
	"time"
)

// Infinite is the valid lifetime of an address that never expires. The
// wire's 0xffffffff seconds (RFC 8415 §21.6, RFC 4862 §5.5.3; the kernel's
// INFINITY_LIFE_TIME) maps to it; see [Lifetime].
const Infinite = time.Duration(math.MaxInt64)

// InfiniteSeconds is the lifetime in seconds that means infinity on the
// wire and in the kernel's IFA_CACHEINFO.
const InfiniteSeconds = math.MaxUint32

// Lifetime converts a lifetime in seconds, as netlink and DHCPv6 carry it,
// to a Duration, mapping 0xffffffff to [Infinite].
func Lifetime(seconds uint32) time.Duration {
	if seconds == InfiniteSeconds {
		return Infinite
	}
	return time.Duration(seconds) * time.Second
}

// Seconds converts a lifetime back to wire seconds: [Infinite] (or anything
// too long for 32 bits) becomes 0xffffffff, and partial seconds are rounded
// down so the server is never told more than the truth.
func Seconds(d time.Duration) uint32 {
	if d < 0 {
		return 0
	}
	s := d / time.Second
	if s >= InfiniteSeconds {
		return InfiniteSeconds
	}
	return uint32(s)
}

// Defaults from RFC 9686 §4.6 and SPEC.md §1.
const (
	DefaultTolerance      = 3 * time.Second // RFC 9686 erratum 8600
	DefaultStaticInterval = 4 * time.Hour   // StaticAddrRegRefreshInterval
	DefaultCoalesce       = 60 * time.Second
)

// Policy is RFC 9686 §4.6's refresh rule with its parameters. The zero
// value is usable but has no tolerance, no static interval and no desync;
// start from [NewPolicy].
type Policy struct {
	// Multiplier is AddrRegDesyncMultiplier, chosen once per agent in
	// [0.9, 1.1] so that hosts do not refresh in lockstep. Values outside
	// that range are clamped into it; 0 means 1.
	Multiplier float64
	// Tolerance: a valid-lifetime change no larger than this (compared with
	// what the server was told, less elapsed time) does not trigger a refresh.
	Tolerance time.Duration
	// StaticInterval is the refresh interval for static addresses and
	// addresses with an infinite valid lifetime.
	StaticInterval time.Duration
	// MaxInterval caps the interval for finite lifetimes; 0 = no cap. 4 h
	// reproduces draft -08's min(4 h, 80 %) × multiplier.
	MaxInterval time.Duration
	// Coalesce is AddrRegRefreshCoalesce: when one address of an interface
	// refreshes, its others due within this window refresh with it.
	Coalesce time.Duration
}

// NewPolicy returns the default Policy with its desync multiplier drawn
// from rand (uniform in [0, 1), as math/rand/v2.Float64).
func NewPolicy(rand func() float64) Policy {
	return Policy{
		Multiplier:     0.9 + 0.2*rand(),
		Tolerance:      DefaultTolerance,
		StaticInterval: DefaultStaticInterval,
		Coalesce:       DefaultCoalesce,
	}
}

func (p Policy) multiplier() float64 {
	switch m := p.Multiplier; {
	case m == 0:
		return 1
	case m < 0.9:
		return 0.9
	case m > 1.1:
		return 1.1
	default:
		return m
	}
}

// periodic reports whether an address refreshes on a fixed timer rather
// than only on lifetime changes (RFC 9686 §4.6: static or infinite).
func periodic(valid time.Duration, static bool) bool {
	return static || valid == Infinite
}

// Interval returns AddrRegRefreshInterval for an address whose current
// valid lifetime is valid: 0.8 × valid × Multiplier, capped at MaxInterval
// when set; StaticInterval for static addresses and infinite lifetimes.
func (p Policy) Interval(valid time.Duration, static bool) time.Duration {
	if periodic(valid, static) {
		return p.StaticInterval
	}
	if valid <= 0 {
		return 0
	}
	iv := time.Duration(float64(valid) * 0.8 * p.multiplier())
	// 0.8 × 1.1 = 88 % is the promise; float rounding must not break it
	// by a nanosecond. valid/25*22 + … is valid*22/25 without overflow.
	if limit := valid/25*22 + valid%25*22/25; iv > limit {
		iv = limit
	}
	if p.MaxInterval > 0 && iv > p.MaxInterval {
		iv = p.MaxInterval
	}
	return iv
}

// Reg is what the last registration or refresh of one address told the
// server.
type Reg struct {
	At     time.Time     // when it was sent
	Valid  time.Duration // valid lifetime it carried
	Static bool          // the address was static
	Next   time.Time     // NextAddrRegRefreshTime
}

// Periodic reports whether the address refreshes every StaticInterval
// regardless of changes (static or infinite lifetime): the agent then
// schedules Next after every registration. For other addresses only
// [Policy.LifetimeChanged] schedules refreshes.
func (r Reg) Periodic() bool { return periodic(r.Valid, r.Static) }

// Registered records a registration or refresh sent at now with valid
// lifetime valid: NextAddrRegRefreshTime = now + interval (RFC 9686 §4.6).
// It schedules nothing itself.
func (p Policy) Registered(now time.Time, valid time.Duration, static bool) Reg {
	return Reg{At: now, Valid: valid, Static: static, Next: now.Add(p.Interval(valid, static))}
}

// LifetimeChanged is called when the kernel reports that the address last
// registered as r now has valid lifetime valid at now. It reports whether a
// refresh is needed and when: min(now + Interval(valid), r.Next), or now if
// that has passed (RFC 9686 §4.6).
//
// A refresh is needed when the lifetime differs from what the server
// believes (r.Valid less the time since r.At) by strictly more than
// Tolerance, so lifetimes counting down in step never refresh, and so does
// a change between finite and infinite. A change of staticness (either way)
// also refreshes, at the same time, because the refresh is what switches
// the address between periodic and on-change refreshing ([Reg.Periodic]);
// the min with r.Next means it never comes later than already planned.
// Between two infinite lifetimes there is nothing to tell the server.
//
// A valid lifetime of 0 means the address has expired: the agent should
// deregister rather than refresh; this returns now, true for it if the
// server believed otherwise.
func (p Policy) LifetimeChanged(r Reg, now time.Time, valid time.Duration, static bool) (at time.Time, refresh bool) {
	if !p.differs(r, now, valid, static) {
		return time.Time{}, false
	}
	at = now.Add(p.Interval(valid, static))
	if r.Next.Before(at) {
		at = r.Next
	}
	if at.Before(now) {
		at = now
	}
	return at, true
}

func (p Policy) differs(r Reg, now time.Time, valid time.Duration, static bool) bool {
	if periodic(r.Valid, r.Static) != periodic(valid, static) {
		return true
	}
	if r.Valid == Infinite || valid == Infinite {
		return r.Valid != valid
	}
	elapsed := max(now.Sub(r.At), 0) // a clock step back counts as no time
	believed := max(r.Valid-elapsed, 0)
	diff := valid - believed
	if diff < 0 {
		diff = -diff
	}
	return diff > p.Tolerance
}
