package scheduler

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Retrans is one message type's RFC 8415 §15 retransmission parameters. A
// zero MRT, MRD or MRC leaves that bound off.
type Retrans struct {
	IRT time.Duration // initial retransmission time
	MRT time.Duration // maximum retransmission time
	MRD time.Duration // maximum retransmission duration, from the first send
	MRC int           // maximum transmissions in all, the first included
}

// DefaultRegistration is RFC 9686 §4.5's ADDR-REG-INFORM retransmission:
// IRT 1 s, MRC 3 (at most three transmissions).
var DefaultRegistration = Retrans{IRT: time.Second, MRC: 3}

// InformationRequest is RFC 8415 §7.6's INF_TIMEOUT 1 s and INF_MAX_RT
// 3600 s, with no MRC or MRD: Information-Request retries for ever. Wait
// [InitialDelay](InfMaxDelay, …) before its first transmission.
var InformationRequest = Retrans{IRT: time.Second, MRT: 3600 * time.Second}

// InfMaxDelay is RFC 8415 §7.6's INF_MAX_DELAY.
const InfMaxDelay = time.Second

// Validate reports parameters that would make a Backoff spin or misbehave.
func (r Retrans) Validate() error {
	switch {
	case r.IRT <= 0:
		return fmt.Errorf("retransmission IRT %v: must be positive", r.IRT)
	case r.MRT < 0, r.MRD < 0, r.MRC < 0:
		return errors.New("retransmission MRT, MRD and MRC must not be negative")
	}
	return nil
}

// InitialDelay returns a random delay uniform in [0, maxDelay), for the
// delay RFC 8415 §18.2.6 asks before a first Information-Request (maxDelay =
// [InfMaxDelay]) so that hosts that come up together do not all send at
// once. rand returns values uniform in [0, 1), as math/rand/v2.Float64.
func InitialDelay(maxDelay time.Duration, rand func() float64) time.Duration {
	if maxDelay <= 0 {
		return 0
	}
	return time.Duration(rand() * float64(maxDelay))
}

// Backoff walks the retransmissions of one exchange. It is not safe for
// concurrent use; one exchange is driven by one goroutine.
type Backoff struct {
	r    Retrans
	rand func() float64
	rt   time.Duration // RT of the last step; 0 before the first
	sent int           // transmissions made
	done bool
}

// Start begins an exchange whose first message has just been transmitted.
// rand returns values uniform in [0, 1), as math/rand/v2.Float64; it is
// called once per step (per call of Next) so every RAND is drawn afresh
// (RFC 8415 §15).
func (r Retrans) Start(rand func() float64) *Backoff {
	return &Backoff{r: r, rand: rand, sent: 1}
}

// Next is called when the last transmission has gone out (just after the
// first, or just after each retransmission), with the time elapsed since
// the first transmission, and returns how long to wait for a reply.
//
// ok reports whether another transmission follows that wait. With ok false
// the exchange has no more transmissions: MRC has been reached, or waiting
// reaches MRD (the wait is then clipped to end at MRD). wait is still how
// long a reply to the last transmission may be awaited; the exchange has
// failed once it passes unanswered. A caller may also treat ok false as
// immediate failure, which is RFC 8415 §15's literal reading ("fails once
// the client has transmitted the message MRC times"). So with MRC 3 there
// are exactly two calls with ok true; later calls return 0, false.
func (b *Backoff) Next(elapsed time.Duration) (wait time.Duration, ok bool) {
	if b.done {
		return 0, false
	}
	r := b.r
	if r.MRD != 0 && elapsed >= r.MRD {
		b.done = true
		return 0, false
	}
	// One RAND per step, drawn afresh, serves the step's formula and, if
	// it applies, the MRT cap.
	u := b.rand()
	var rt float64
	if b.rt == 0 {
		rt = jitter(float64(r.IRT), u)
	} else {
		prev := float64(b.rt)
		rt = 2*prev + randFactor(u)*prev
	}
	if r.MRT != 0 && rt > float64(r.MRT) {
		rt = jitter(float64(r.MRT), u)
	}
	b.rt = toDuration(rt)
	wait, ok = b.rt, true
	if r.MRD != 0 && wait >= r.MRD-elapsed {
		// A transmission at or after MRD would come too late to count.
		wait, ok = r.MRD-elapsed, false
	}
	if r.MRC != 0 && b.sent >= r.MRC {
		ok = false
	}
	if !ok {
		b.done = true
		return wait, false
	}
	b.sent++
	return wait, true
}

// Transmissions returns how many transmissions the exchange has made (or
// been told to make) so far, the first included.
func (b *Backoff) Transmissions() int { return b.sent }

// randFactor maps u, uniform in [0, 1), to RAND, uniform in [-0.1, +0.1).
func randFactor(u float64) float64 { return (2*u - 1) * 0.1 }

// jitter returns base + RAND*base.
func jitter(base, u float64) float64 { return base + randFactor(u)*base }

// toDuration rounds to the nanosecond and saturates, so unbounded doubling
// (no MRT, MRC or MRD) cannot overflow into negative waits.
func toDuration(f float64) time.Duration {
	if f >= math.MaxInt64 {
		return math.MaxInt64
	}
	if f < 0 {
		return 0
	}
	return time.Duration(math.Round(f))
}
