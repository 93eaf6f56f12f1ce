package scheduler

import (
	"slices"
	"sync"
	"time"
)

// Deadlines is a set of keyed deadlines behind one [Timer]: a min-heap
// ordered by deadline, with the timer armed only for the earliest entry and
// stopped while the set is empty, so thousands of pending refreshes cost one
// timer and an idle agent makes no periodic wake-ups (the shape of
// mdlayher/schedgroup).
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
	heap    []entry[K]
	index   map[K]int // key → position in heap
	seq     uint64    // insertion counter: equal deadlines fire in Set order
	timer   Timer     // created on first need, then only Reset and Stopped
	armed   bool
	armedAt time.Time
	closed  bool
}

type entry[K comparable] struct {
	key K
	at  time.Time
	seq uint64
}

func (e *entry[K]) before(o *entry[K]) bool {
	if e.at.Equal(o.at) {
		return e.seq < o.seq
	}
	return e.at.Before(o.at)
}

// NewDeadlines returns an empty set whose due keys are passed to fire, in
// deadline order, with the clock's time at the wake-up. fire must not be nil.
func NewDeadlines[K comparable](clk Clock, fire func(now time.Time, due []K)) *Deadlines[K] {
	if fire == nil {
		panic("scheduler: NewDeadlines with nil fire")
	}
	return &Deadlines[K]{clk: clk, fire: fire, index: make(map[K]int)}
}

// Set adds key with deadline at, or moves its deadline there. A deadline
// already past fires as soon as possible. After Close, Set does nothing.
func (d *Deadlines[K]) Set(key K, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.seq++
	if i, ok := d.index[key]; ok {
		d.heap[i].at, d.heap[i].seq = at, d.seq
		if !d.up(i) {
			d.down(i)
		}
	} else {
		d.heap = append(d.heap, entry[K]{key: key, at: at, seq: d.seq})
		i := len(d.heap) - 1
		d.index[key] = i
		d.up(i)
	}
	d.rearmLocked()
}

// Remove deletes key's deadline and reports whether it had one.
func (d *Deadlines[K]) Remove(key K) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.index[key]
	if !ok {
		return false
	}
	d.removeAt(i)
	d.rearmLocked()
	return true
}

// When returns key's deadline.
func (d *Deadlines[K]) When(key K) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.index[key]
	if !ok {
		return time.Time{}, false
	}
	return d.heap[i].at, true
}

// Len returns the number of pending deadlines.
func (d *Deadlines[K]) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.heap)
}

// DueWithin removes and returns, in deadline order, the keys for which same
// returns true whose deadlines are no later than now + window. It is RFC
// 9686 §4.6's optional coalescing: when one address's refresh fires, the
// agent calls it with window = Policy.Coalesce and same matching the
// fired key's interface, and refreshes those addresses too. same is called
// with Deadlines' lock held, so it must not call back into d.
func (d *Deadlines[K]) DueWithin(now time.Time, window time.Duration, same func(K) bool) []K {
	limit := now.Add(window)
	d.mu.Lock()
	defer d.mu.Unlock()
	// Walk only the part of the heap due by limit: a parent is never later
	// than its children, so a late node prunes its whole subtree.
	var hits []entry[K]
	stack := []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(d.heap) || d.heap[i].at.After(limit) {
			continue
		}
		if same(d.heap[i].key) {
			hits = append(hits, d.heap[i])
		}
		stack = append(stack, 2*i+1, 2*i+2)
	}
	if len(hits) == 0 {
		return nil
	}
	slices.SortFunc(hits, func(a, b entry[K]) int {
		if a.before(&b) {
			return -1
		}
		return 1
	})
	keys := make([]K, len(hits))
	for n, e := range hits {
		keys[n] = e.key
		d.removeAt(d.index[e.key])
	}
	d.rearmLocked()
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
	d.heap, d.index = nil, nil
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
	var due []K
	for len(d.heap) > 0 && !d.heap[0].at.After(now) {
		due = append(due, d.heap[0].key)
		d.removeAt(0)
	}
	d.rearmLocked()
	d.mu.Unlock()
	if len(due) > 0 {
		d.fire(now, due)
	}
}

// rearmLocked points the one timer at the earliest deadline, touching it
// only when that changed, and stops it when nothing is pending.
func (d *Deadlines[K]) rearmLocked() {
	if len(d.heap) == 0 {
		if d.armed {
			d.timer.Stop()
			d.armed = false
		}
		return
	}
	at := d.heap[0].at
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

// removeAt deletes the heap entry at i.
func (d *Deadlines[K]) removeAt(i int) {
	last := len(d.heap) - 1
	delete(d.index, d.heap[i].key)
	if i != last {
		d.heap[i] = d.heap[last]
		d.index[d.heap[i].key] = i
	}
	var zero entry[K]
	d.heap[last] = zero // drop references held by K
	d.heap = d.heap[:last]
	if i != last {
		if !d.up(i) {
			d.down(i)
		}
	}
}

// up moves the entry at i towards the root; it reports whether it moved.
func (d *Deadlines[K]) up(i int) bool {
	moved := false
	for i > 0 {
		p := (i - 1) / 2
		if !d.heap[i].before(&d.heap[p]) {
			break
		}
		d.swap(i, p)
		i = p
		moved = true
	}
	return moved
}

func (d *Deadlines[K]) down(i int) {
	n := len(d.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && d.heap[r].before(&d.heap[l]) {
			m = r
		}
		if !d.heap[m].before(&d.heap[i]) {
			return
		}
		d.swap(i, m)
		i = m
	}
}

func (d *Deadlines[K]) swap(i, j int) {
	d.heap[i], d.heap[j] = d.heap[j], d.heap[i]
	d.index[d.heap[i].key] = i
	d.index[d.heap[j].key] = j
}
