package scheduler

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// benchN is the scale the agent must handle cheaply: 10,000 addresses.
const benchN = 10000

// benchKey is shaped like the agent's key: interface index and address.
type benchKey struct {
	Index int
	Addr  netip.Addr
}

func benchKeys() []benchKey {
	keys := make([]benchKey, benchN)
	for i := range keys {
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i), 14: byte(i >> 8)}
		keys[i] = benchKey{Index: 1 + i%4, Addr: netip.AddrFrom16(a)}
	}
	return keys
}

// benchTimes returns benchN distinct deadlines spread over a day, shuffled.
func benchTimes(seed uint64) []time.Time {
	rng := rand.New(rand.NewPCG(seed, seed))
	ts := make([]time.Time, benchN)
	for i := range ts {
		ts[i] = t0.Add(time.Second + time.Duration(rng.Int64N(int64(24*time.Hour))))
	}
	return ts
}

func perAddr(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchN, "ns/addr")
}

// Scheduling 10,000 addresses into an empty set (one op = all 10,000).
func BenchmarkDeadlinesSchedule10k(b *testing.B) {
	keys, ts := benchKeys(), benchTimes(1)
	b.ReportAllocs()
	for b.Loop() {
		d := NewDeadlines(NewFakeClock(t0), func(time.Time, []benchKey) {})
		for i, k := range keys {
			d.Set(k, ts[i])
		}
		d.Close()
	}
	perAddr(b)
}

// Moving each of 10,000 scheduled addresses to a new deadline (one op = all
// 10,000), as after a router's lifetime cut.
func BenchmarkDeadlinesReschedule10k(b *testing.B) {
	keys := benchKeys()
	times := [2][]time.Time{benchTimes(2), benchTimes(3)}
	d := NewDeadlines(NewFakeClock(t0), func(time.Time, []benchKey) {})
	defer d.Close()
	for i, k := range keys {
		d.Set(k, times[1][i])
	}
	b.ReportAllocs()
	round := 0
	for b.Loop() {
		ts := times[round%2]
		for i, k := range keys {
			d.Set(k, ts[i])
		}
		round++
	}
	perAddr(b)
}

// Scheduling 10,000 addresses and letting every deadline fire, one wake-up
// per address (one op = all 10,000).
func BenchmarkDeadlinesFire10k(b *testing.B) {
	keys, ts := benchKeys(), benchTimes(4)
	b.ReportAllocs()
	for b.Loop() {
		clk := NewFakeClock(t0)
		fired := 0
		d := NewDeadlines(clk, func(_ time.Time, due []benchKey) { fired += len(due) })
		for i, k := range keys {
			d.Set(k, ts[i])
		}
		clk.Advance(25 * time.Hour)
		if fired != benchN {
			b.Fatalf("fired %d; want %d", fired, benchN)
		}
		d.Close()
	}
	perAddr(b)
}

// Coalescing: each wake-up takes its interface's addresses due within 60 s.
func BenchmarkDeadlinesFireCoalesced10k(b *testing.B) {
	keys, ts := benchKeys(), benchTimes(5)
	b.ReportAllocs()
	for b.Loop() {
		clk := NewFakeClock(t0)
		fired := 0
		var d *Deadlines[benchKey]
		d = NewDeadlines(clk, func(now time.Time, due []benchKey) {
			for _, k := range due {
				fired += 1 + len(d.DueWithin(now, DefaultCoalesce, func(o benchKey) bool { return o.Index == k.Index }))
			}
		})
		for i, k := range keys {
			d.Set(k, ts[i])
		}
		clk.Advance(25 * time.Hour)
		if fired != benchN {
			b.Fatalf("fired %d; want %d", fired, benchN)
		}
		d.Close()
	}
	perAddr(b)
}

func BenchmarkBackoffNext(b *testing.B) {
	rng := rand.New(rand.NewPCG(6, 6))
	bo := InformationRequest.Start(rng.Float64) // never ends: MRT, no MRC/MRD
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := bo.Next(0); !ok {
			b.Fatal("exchange ended")
		}
	}
}

func BenchmarkPolicyLifetimeChanged(b *testing.B) {
	p := NewPolicy(func() float64 { return 0.5 })
	r := p.Registered(t0, sec(86400), false)
	now := t0.Add(sec(1000))
	b.ReportAllocs()
	for b.Loop() {
		// Alternate a cut (refresh) with a lifetime counting down (none).
		if _, ok := p.LifetimeChanged(r, now, sec(7200), false); !ok {
			b.Fatal("no refresh for a cut")
		}
		if _, ok := p.LifetimeChanged(r, now, sec(85400), false); ok {
			b.Fatal("refresh for a countdown")
		}
	}
}

func BenchmarkPolicyInterval(b *testing.B) {
	p := policy(1.05)
	b.ReportAllocs()
	for b.Loop() {
		_ = p.Interval(sec(1800), false)
	}
}
