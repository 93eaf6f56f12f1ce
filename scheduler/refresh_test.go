package scheduler

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func sec(n float64) time.Duration { return time.Duration(n * float64(time.Second)) }

// policy returns the default policy with a fixed multiplier.
func policy(m float64) Policy {
	p := NewPolicy(func() float64 { return 0.5 })
	p.Multiplier = m
	return p
}

func TestNewPolicy(t *testing.T) {
	want := Policy{Multiplier: 0.9, Tolerance: 3 * time.Second, StaticInterval: 4 * time.Hour, Coalesce: time.Minute}
	if diff := cmp.Diff(want, NewPolicy(func() float64 { return 0 })); diff != "" {
		t.Errorf("NewPolicy (-want +got):\n%s", diff)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		if m := NewPolicy(rng.Float64).Multiplier; m < 0.9 || m > 1.1 {
			t.Fatalf("Multiplier = %v; want in [0.9, 1.1]", m)
		}
	}
}

func TestInterval(t *testing.T) {
	capped := policy(1)
	capped.MaxInterval = 4 * time.Hour
	tests := []struct {
		name   string
		p      Policy
		valid  time.Duration
		static bool
		want   time.Duration
	}{
		{"1800 s, multiplier 1", policy(1), sec(1800), false, sec(1440)},
		{"1800 s, multiplier 0.9", policy(0.9), sec(1800), false, sec(1296)},
		{"1800 s, multiplier 1.1", policy(1.1), sec(1800), false, sec(1584)},
		{"multiplier out of range is clamped", policy(2), sec(1800), false, sec(1584)},
		{"zero multiplier means 1", Policy{}, sec(1800), false, sec(1440)},
		{"4 h cap (draft -08)", capped, sec(86400), false, 4 * time.Hour},
		{"under the cap", capped, sec(1800), false, sec(1440)},
		{"static", policy(1.1), sec(1800), true, 4 * time.Hour},
		{"infinite is static", policy(1.1), Infinite, false, 4 * time.Hour},
		{"infinite, capped", capped, Infinite, false, 4 * time.Hour},
		{"expired", policy(1), 0, false, 0},
	}
	for _, tt := range tests {
		if got := tt.p.Interval(tt.valid, tt.static); got != tt.want {
			t.Errorf("%s: Interval(%v, %v) = %v; want %v", tt.name, tt.valid, tt.static, got, tt.want)
		}
	}
}

// SPEC.md §1: valid 1800 s → the next refresh lands between 1296 s and 1584 s.
func TestRegisteredSpec1800(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, u := range append([]float64{0, 0.5, justBelowOne}, rng.Float64(), rng.Float64()) {
		p := NewPolicy(func() float64 { return u })
		r := p.Registered(t0, sec(1800), false)
		if got := r.Next.Sub(t0); got < sec(1296) || got > sec(1584) {
			t.Errorf("multiplier %v: next refresh after %v; want in [1296 s, 1584 s]", p.Multiplier, got)
		}
		if r.Periodic() {
			t.Errorf("finite SLAAC address reported periodic")
		}
	}
}

func TestRegistered(t *testing.T) {
	p := policy(1)
	tests := []struct {
		name         string
		valid        time.Duration
		static       bool
		want         Reg
		wantPeriodic bool
	}{
		{"finite", sec(1800), false, Reg{At: t0, Valid: sec(1800), Next: t0.Add(sec(1440))}, false},
		{"static", Infinite, true, Reg{At: t0, Valid: Infinite, Static: true, Next: t0.Add(4 * time.Hour)}, true},
		{"infinite", Infinite, false, Reg{At: t0, Valid: Infinite, Next: t0.Add(4 * time.Hour)}, true},
	}
	for _, tt := range tests {
		got := p.Registered(t0, tt.valid, tt.static)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: Registered (-want +got):\n%s", tt.name, diff)
		}
		if got.Periodic() != tt.wantPeriodic {
			t.Errorf("%s: Periodic() = %v; want %v", tt.name, got.Periodic(), tt.wantPeriodic)
		}
	}
}

func TestLifetimeChanged(t *testing.T) {
	capped := policy(1)
	capped.MaxInterval = 4 * time.Hour
	type reg struct {
		valid  time.Duration
		static bool
	}
	tests := []struct {
		name   string
		p      Policy
		reg    reg           // registered at t0
		dt     time.Duration // the change is seen at t0+dt
		valid  time.Duration
		static bool
		want   time.Duration // refresh at t0+want
		ok     bool
	}{
		{name: "counting down in step", p: policy(1), reg: reg{sec(1800), false}, dt: sec(100), valid: sec(1700)},
		{name: "unchanged at once", p: policy(1), reg: reg{sec(1800), false}, valid: sec(1800)},
		{name: "exactly 3 s more: tolerated", p: policy(1), reg: reg{sec(1800), false}, dt: sec(100), valid: sec(1703)},
		{name: "exactly 3 s less: tolerated", p: policy(1), reg: reg{sec(1800), false}, dt: sec(100), valid: sec(1697)},
		{
			// min(100 + 0.8*1703.000000001, 1440) = 1440: already planned.
			name: "just over 3 s more", p: policy(1), reg: reg{sec(1800), false}, dt: sec(100), valid: sec(1703) + 1,
			want: sec(1440), ok: true,
		},
		{
			// A bigger cut: 100 + 0.8*1000 < 1440.
			name: "just over 3 s less", p: policy(1), reg: reg{sec(1800), false}, dt: sec(100), valid: sec(1697) - 1,
			want: sec(1440), ok: true,
		},
		{
			name: "cut", p: policy(1), reg: reg{sec(1800), false}, dt: sec(100), valid: sec(1000),
			want: sec(900), ok: true,
		},
		{
			// An RA resets the lifetime: refresh when already planned.
			name: "RA extends lifetime", p: policy(1), reg: reg{sec(1800), false}, dt: sec(100), valid: sec(1800),
			want: sec(1440), ok: true,
		},
		{
			// SPEC.md §1, renumbering: 86400 s cut to 7200 s; with the
			// largest multiplier the refresh is 0.88 × 7200 s after the cut.
			name: "cut 86400 s to 7200 s", p: policy(1.1), reg: reg{sec(86400), false}, dt: sec(1000), valid: sec(7200),
			want: sec(1000 + 0.88*7200), ok: true,
		},
		{
			name: "planned time passed: now", p: policy(1), reg: reg{sec(1800), false}, dt: sec(1500), valid: sec(1800),
			want: sec(1500), ok: true,
		},
		{
			name: "cap: planned time wins", p: capped, reg: reg{sec(86400), false}, dt: sec(600), valid: sec(86400),
			want: 4 * time.Hour, ok: true,
		},
		{name: "static, unchanged", p: policy(1), reg: reg{Infinite, true}, dt: sec(600), valid: Infinite, static: true},
		{name: "infinite, unchanged", p: policy(1), reg: reg{Infinite, false}, dt: sec(600), valid: Infinite},
		{
			name: "infinite cut to finite", p: policy(1), reg: reg{Infinite, false}, dt: sec(600), valid: sec(7200),
			want: sec(600 + 0.8*7200), ok: true,
		},
		{
			// Becoming static: the refresh moves the address to the 4 h
			// cycle, no later than already planned.
			name: "becomes static", p: policy(1), reg: reg{sec(1800), false}, dt: sec(10), valid: Infinite, static: true,
			want: sec(1440), ok: true,
		},
		{
			name: "stops being static", p: policy(1), reg: reg{Infinite, true}, dt: sec(60), valid: sec(3600),
			want: sec(60 + 0.8*3600), ok: true,
		},
		{
			name: "static with finite lifetime changes", p: policy(1), reg: reg{sec(3600), true}, dt: sec(100), valid: sec(3600), static: true,
			want: 4 * time.Hour, ok: true,
		},
		{name: "static with finite lifetime counts down", p: policy(1), reg: reg{sec(3600), true}, dt: sec(100), valid: sec(3500), static: true},
		{
			name: "expired: now", p: policy(1), reg: reg{sec(1800), false}, dt: sec(100), valid: 0,
			want: sec(100), ok: true,
		},
		{name: "past expiry, still 0", p: policy(1), reg: reg{sec(100), false}, dt: sec(200), valid: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.p.Registered(t0, tt.reg.valid, tt.reg.static)
			at, ok := tt.p.LifetimeChanged(r, t0.Add(tt.dt), tt.valid, tt.static)
			type result struct {
				At time.Duration
				OK bool
			}
			var got result
			if ok {
				got = result{at.Sub(t0), true}
			}
			if diff := cmp.Diff(result{tt.want, tt.ok}, got); diff != "" {
				t.Errorf("LifetimeChanged (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLifetimeSeconds(t *testing.T) {
	tests := []struct {
		s uint32
		d time.Duration
	}{
		{0, 0},
		{1800, sec(1800)},
		{0xfffffffe, time.Duration(0xfffffffe) * time.Second},
		{0xffffffff, Infinite},
	}
	for _, tt := range tests {
		if got := Lifetime(tt.s); got != tt.d {
			t.Errorf("Lifetime(%d) = %v; want %v", tt.s, got, tt.d)
		}
		if got := Seconds(tt.d); got != tt.s {
			t.Errorf("Seconds(%v) = %d; want %d", tt.d, got, tt.s)
		}
	}
	if got := Seconds(sec(1.9)); got != 1 {
		t.Errorf("Seconds(1.9 s) = %d; want 1 (round down)", got)
	}
}

// randLifetime returns a finite valid lifetime from 1 s to ~136 years, as
// the kernel could report, biased towards realistic values.
func randLifetime(rng *rand.Rand) time.Duration {
	if rng.IntN(4) == 0 {
		return Lifetime(uint32(1 + rng.Int64N(0xfffffffe)))
	}
	return Lifetime(uint32(1 + rng.IntN(30*86400)))
}

func randPolicy(rng *rand.Rand) Policy {
	p := NewPolicy(rng.Float64)
	if rng.IntN(2) == 0 {
		p.MaxInterval = time.Duration(1 + rng.Int64N(int64(48*time.Hour)))
	}
	return p
}

// 88 % of valid, exactly: valid × 22/25 rounded down.
func pct88(valid time.Duration) time.Duration { return valid/25*22 + valid%25*22/25 }

// Property: a refresh never lands later than 88 % of the time from the
// registration (or from the change that scheduled it) to expiry, and
// never before the change.
func TestRefreshWithin88PercentProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 100000 {
		p := randPolicy(rng)
		v0 := randLifetime(rng)
		r := p.Registered(t0, v0, false)
		if d := r.Next.Sub(t0); d > pct88(v0) || d < 0 {
			t.Fatalf("#%d %+v: registered valid %v, next refresh after %v; want ≤ %v", i, p, v0, d, pct88(v0))
		}
		dt := time.Duration(rng.Int64N(int64(v0) + 1))
		now := t0.Add(dt)
		v1 := randLifetime(rng)
		if rng.IntN(3) == 0 { // near the countdown, around the tolerance
			v1 = max(v0-dt+time.Duration(rng.Int64N(int64(4*p.Tolerance)))-2*p.Tolerance, 0)
		}
		at, ok := p.LifetimeChanged(r, now, v1, false)
		if !ok {
			continue
		}
		if at.Before(now) {
			t.Fatalf("#%d: refresh at %v before the change at %v", i, at, now)
		}
		if d := at.Sub(now); d > pct88(v1) {
			t.Fatalf("#%d %+v: valid %v→%v after %v: refresh %v after the change; want ≤ %v", i, p, v0, v1, dt, d, pct88(v1))
		}
		if at.After(r.Next) && at.After(now) {
			t.Fatalf("#%d: refresh at %v later than planned %v", i, at, r.Next)
		}
	}
}

// Property: one lifetime change schedules at most one refresh, however
// many times the kernel then reports the new lifetime (counting down in
// step) before and after the refresh goes out. The agent is modelled: a
// fired refresh re-registers with the current lifetime.
func TestOneChangeOneRefreshProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for i := range 2000 {
		p := randPolicy(rng)
		clk := NewFakeClock(t0)
		v0 := Lifetime(uint32(60 + rng.IntN(86400)))
		r := p.Registered(t0, v0, false)

		// One change, seen at t1: from then on the kernel's lifetime is
		// v1 counting down.
		t1 := t0.Add(time.Duration(rng.Int64N(int64(v0))))
		v1 := Lifetime(uint32(10 + rng.IntN(86400)))
		current := func(now time.Time) time.Duration { return v1 - now.Sub(t1) }

		fired := 0
		d := NewDeadlines(clk, func(now time.Time, due []int) {
			fired += len(due)
			r = p.Registered(now, current(now), false)
		})
		clk.AdvanceTo(t1)
		_, changed := p.LifetimeChanged(r, t1, v1, false)
		for range 20 {
			now := clk.Now()
			left := current(now)
			if left <= 0 {
				break
			}
			if at, ok := p.LifetimeChanged(r, now, left, false); ok {
				d.Set(0, at)
			}
			clk.Advance(time.Duration(rng.Int64N(int64(left)/4 + 1)))
		}
		clk.AdvanceTo(t1.Add(v1))
		if want := map[bool]int{false: 0, true: 1}[changed]; fired != want {
			t.Fatalf("#%d: %d refreshes for one change (valid %v→%v at %v); want %d", i, fired, v0, v1, t1.Sub(t0), want)
		}
		if clk.Pending() != 0 {
			t.Fatalf("#%d: %d timers armed when idle", i, clk.Pending())
		}
		d.Close()
	}
}
