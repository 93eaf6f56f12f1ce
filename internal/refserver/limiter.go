package refserver

import (
	"sync"
	"time"
)

// limiter is a token bucket per key. rate 0 disables it.
type limiter[K comparable] struct {
	mu    sync.Mutex
	rate  float64
	burst float64
	m     map[K]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter[K comparable](rate float64, burst int) limiter[K] {
	b := float64(burst)
	if b <= 0 {
		b = max(1, 2*rate)
	}
	return limiter[K]{rate: rate, burst: b, m: make(map[K]*bucket)}
}

func (l *limiter[K]) allow(k K, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[k]
	if b == nil {
		if len(l.m) >= 1<<16 {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.m[k] = b
	}
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(l.burst, b.tokens+dt*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// prune forgets the buckets that have refilled: they behave like new ones.
func (l *limiter[K]) prune(now time.Time) {
	for k, b := range l.m {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.m, k)
		}
	}
}
