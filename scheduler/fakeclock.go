package scheduler

import (
	"context"
	"sync"
	"time"
)

// FakeClock is a [Clock] whose time moves only when a test says so. It is
// exact and deterministic: timers fire in deadline order (ties in the order
// they were armed), synchronously, from [FakeClock.Advance]. It is safe for
// concurrent use; timer functions run without its lock held, so they may
// use the clock and arm timers (a timer armed for now or earlier during
// Advance fires within the same Advance, after the running function
// returns, never re-entrantly).
type FakeClock struct {
	mu     sync.Mutex
	cond   *sync.Cond // broadcast whenever the set of armed timers changes
	now    time.Time
	seq    uint64
	timers map[*fakeTimer]struct{} // armed timers only
}

// NewFakeClock returns a FakeClock reading start.
func NewFakeClock(start time.Time) *FakeClock {
	c := &FakeClock{now: start, timers: make(map[*fakeTimer]struct{})}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc arms a timer that calls f once the clock has advanced by d.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) Timer {
	t := &fakeTimer{c: c, f: f}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armLocked(t, d)
	return t
}

func (c *FakeClock) armLocked(t *fakeTimer, d time.Duration) {
	t.when = c.now.Add(d)
	c.seq++
	t.seq = c.seq
	c.timers[t] = struct{}{}
	c.cond.Broadcast()
}

// Advance moves the clock forward by d, calling every timer that falls due
// on the way, each with the clock reading that timer's deadline, then
// leaves the clock at the old time plus d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	c.AdvanceTo(target)
}

// AdvanceTo moves the clock forward to t as [FakeClock.Advance] does. A t
// before the clock's time fires what is already due and leaves time alone.
func (c *FakeClock) AdvanceTo(t time.Time) {
	c.mu.Lock()
	for {
		next := c.nextLocked(t)
		if next == nil {
			break
		}
		delete(c.timers, next)
		c.cond.Broadcast()
		if next.when.After(c.now) {
			c.now = next.when
		}
		f := next.f
		c.mu.Unlock()
		f()
		c.mu.Lock()
	}
	if t.After(c.now) {
		c.now = t
	}
	c.mu.Unlock()
}

// nextLocked returns the armed timer due earliest, no later than limit. A
// linear scan is enough: tests arm few timers (Deadlines arms one).
func (c *FakeClock) nextLocked(limit time.Time) *fakeTimer {
	var best *fakeTimer
	for t := range c.timers {
		if t.when.After(limit) && t.when.After(c.now) {
			continue
		}
		if best == nil || t.when.Before(best.when) || (t.when.Equal(best.when) && t.seq < best.seq) {
			best = t
		}
	}
	return best
}

// Pending returns the number of armed timers. A test asserts "no periodic
// wake-ups" with Pending() == 0 once everything is idle.
func (c *FakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Next returns the deadline of the earliest armed timer.
func (c *FakeClock) Next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var best *fakeTimer
	for t := range c.timers {
		if best == nil || t.when.Before(best.when) {
			best = t
		}
	}
	if best == nil {
		return time.Time{}, false
	}
	return best.when, true
}

// BlockUntil waits until at least n timers are armed: for tests whose code
// under test arms its timers from another goroutine, so the test advances
// the clock only once the code is actually waiting.
func (c *FakeClock) BlockUntil(n int) {
	_ = c.BlockUntilContext(context.Background(), n)
}

// BlockUntilContext is [FakeClock.BlockUntil] that gives up with ctx's
// error when ctx ends.
func (c *FakeClock) BlockUntilContext(ctx context.Context, n int) error {
	// Wake the waiter below when ctx ends; the lock makes sure the
	// broadcast cannot slip in between its check and its Wait.
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.timers) < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.cond.Wait()
	}
	return nil
}

type fakeTimer struct {
	c    *FakeClock
	f    func()
	when time.Time // guarded by c.mu
	seq  uint64    // guarded by c.mu
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, armed := t.c.timers[t]
	if armed {
		delete(t.c.timers, t)
		t.c.cond.Broadcast()
	}
	return armed
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, armed := t.c.timers[t]
	t.c.armLocked(t, d)
	return armed
}
