package scheduler

import (
	"fmt"
	"time"
)

// Defaults of [Retry]: a failed exchange is tried again after about 30 s,
// then 1 min, 2 min … up to 1 h.
const (
	DefaultRetryFirst = 30 * time.Second
	DefaultRetryMax   = time.Hour
)

// Retry is the backoff between failed exchanges of one address (or failed
// discoveries on one link). RFC 9686 §4.5 fixes the retransmissions within
// an exchange (IRT 1 s, MRC 3) and says nothing of what follows a failed
// one; waiting for the refresh rule would leave the host unknown to the
// server for most of a lifetime. So a failed exchange is followed by a new
// one (new transaction ID, full MRC) after First, 2·First, 4·First …,
// capped at Max and at the address's refresh interval, each delay jittered
// so that hosts failing together (a server outage) do not retry together.
// A success resets the count.
//
// The bound a server sees: at most MRC transmissions per address per step
// of this backoff.
type Retry struct {
	First time.Duration // delay after the first failure
	Max   time.Duration // cap on any delay
}

// DefaultRetry is First 30 s, Max 1 h.
var DefaultRetry = Retry{First: DefaultRetryFirst, Max: DefaultRetryMax}

// Validate reports a Retry that would spin or never grow.
func (r Retry) Validate() error {
	switch {
	case r.First <= 0:
		return fmt.Errorf("retry first delay %v: must be positive", r.First)
	case r.Max < r.First:
		return fmt.Errorf("retry cap %v: must be at least the first delay %v", r.Max, r.First)
	}
	return nil
}

// retryJitter is how far below the nominal delay a jittered one may fall:
// delays are uniform in (1-retryJitter, 1] × nominal, so jitter never
// pushes a delay beyond its cap.
const retryJitter = 0.2

// Delay returns how long to wait before the next exchange after failures
// consecutive failed ones (failures ≥ 1; less counts as 1): First ×
// 2^(failures-1), capped at Max and, when limit is positive, at limit (the
// address's refresh interval), then jittered down by up to 20 %. rand
// returns values uniform in [0, 1), as math/rand/v2.Float64.
func (r Retry) Delay(failures int, limit time.Duration, rand func() float64) time.Duration {
	ceiling := r.Max
	if limit > 0 && limit < ceiling {
		ceiling = limit
	}
	d := r.First
	for i := 1; i < failures && d < ceiling; i++ {
		d *= 2 // d < ceiling ≤ Max: cannot overflow before the cap stops it
	}
	d = min(d, ceiling)
	return d - time.Duration(retryJitter*rand()*float64(d))
}
