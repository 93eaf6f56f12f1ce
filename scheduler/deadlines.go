package scheduler

import (
	"sync"
	"time"
)

// Deadlines is a set of keyed deadlines behind one [Timer]: a [Heap], with
// the timer armed only for the earliest entry and stopped while the set is
// empty, so thousands of pending deadlines cost one timer and an idle set
// makes no periodic wake-ups (the shape of mdlayher/schedgroup).
//
// Deadlines is safe for concurrent use. The fire callback is called from
// the timer's goroutine (synchronously from [FakeClock.Advance] under a
// FakeClock) without Deadlines' lock held, so it may call Set, Remove,
// When, Len and DueWithin. Calls of fire never overlap, and none starts
// after [Deadlines.Close] returns.
type Deadlines[K comparable] struct {
	clk  Clock
	fire func(now time.Time, due []K)

	// fireMu is held while fire runs: it serialises callbacks (a stale
	// timer run can overlap a fresh one with a real clock) and lets Close
	// wait for a running one. Lock order: fireMu before mu.
	fireMu sync.Mutex

	mu      sync.Mutex
	h       Heap[K]
	timer   Timer // created on first need, then only Reset and Stopped
	armed   bool
	armedAt time.Time
	closed  bool
}

// NewDeadlines returns an empty set whose due keys are passed to fire, in
// deadline order, with the clock's time at the wake-up. fire must not be nil.
func NewDeadlines[K comparable](clk Clock, fire func(now time.Time, due []K)) *Deadlines[K] {
	if fire == nil {
		panic("scheduler: NewDeadlines with nil fire")
	}
	return &Deadlines[K]{clk: clk, fire: fire}
}

// Set adds key with deadline at, or moves its deadline there. A deadline
// already past fires as soon as possible. After Close, Set does nothing.
func (d *Deadlines[K]) Set(key K, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.h.Set(key, at)
	d.rearmLocked()
}

// Remove deletes key's deadline and reports whether it had one.
func (d *Deadlines[K]) Remove(key K) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.h.Remove(key) {
		return false
	}
	d.rearmLocked()
	return true
}

// When returns key's deadline.
func (d *Deadlines[K]) When(key K) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.h.When(key)
}

// Len returns the number of pending deadlines.
func (d *Deadlines[K]) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.h.Len()
}

// DueWithin is [Heap.DueWithin] under the lock: same is called with
// Deadlines' lock held, so it must not call back into d.
func (d *Deadlines[K]) DueWithin(now time.Time, window time.Duration, same func(K) bool) []K {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := d.h.DueWithin(now, window, same)
	if len(keys) > 0 {
		d.rearmLocked()
	}
	return keys
}

// Close stops the timer and drops every deadline. It waits for a running
// fire to return, so it must not be called from fire. No fire starts after
// Close returns.
func (d *Deadlines[K]) Close() {
	d.mu.Lock()
	d.closed = true
	if d.timer != nil {
		d.timer.Stop()
	}
	d.armed = false
	d.h = Heap[K]{}
	d.mu.Unlock()
	// Wait out a fire already running; later timer runs see closed.
	d.fireMu.Lock()
	//lint:ignore SA2001 an empty critical section is the barrier here
	d.fireMu.Unlock()
}

// run is the timer's function.
func (d *Deadlines[K]) run() {
	d.fireMu.Lock()
	defer d.fireMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.armed = false
	now := d.clk.Now()
	due := d.h.PopDue(now)
	d.rearmLocked()
	d.mu.Unlock()
	if len(due) > 0 {
		d.fire(now, due)
	}
}

// rearmLocked points the one timer at the earliest deadline, touching it
// only when that changed, and stops it when nothing is pending.
func (d *Deadlines[K]) rearmLocked() {
	at, ok := d.h.Next()
	if !ok {
		if d.armed {
			d.timer.Stop()
			d.armed = false
		}
		return
	}
	if d.armed && at.Equal(d.armedAt) {
		return
	}
	wait := at.Sub(d.clk.Now())
	if d.timer == nil {
		d.timer = d.clk.AfterFunc(wait, d.run)
	} else {
		d.timer.Reset(wait)
	}
	d.armed, d.armedAt = true, at
}
