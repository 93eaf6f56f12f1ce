package scheduler

import (
	"slices"
	"time"
)

// Heap is a set of keyed deadlines with no timer: a min-heap ordered by
// deadline (equal deadlines in Set order) with an index by key. A state
// machine that arms one timer for its earliest deadline holds one (the
// agent does); [Deadlines] puts a timer and a lock around one. The zero
// value is empty and ready to use; it is not safe for concurrent use.
type Heap[K comparable] struct {
	heap  []entry[K]
	index map[K]int // key → position in heap
	seq   uint64    // insertion counter: equal deadlines come out in Set order
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

// Set adds key with deadline at, or moves its deadline there.
func (h *Heap[K]) Set(key K, at time.Time) {
	if h.index == nil {
		h.index = make(map[K]int)
	}
	h.seq++
	if i, ok := h.index[key]; ok {
		h.heap[i].at, h.heap[i].seq = at, h.seq
		if !h.up(i) {
			h.down(i)
		}
		return
	}
	h.heap = append(h.heap, entry[K]{key: key, at: at, seq: h.seq})
	i := len(h.heap) - 1
	h.index[key] = i
	h.up(i)
}

// Remove deletes key's deadline and reports whether it had one.
func (h *Heap[K]) Remove(key K) bool {
	i, ok := h.index[key]
	if ok {
		h.removeAt(i)
	}
	return ok
}

// When returns key's deadline.
func (h *Heap[K]) When(key K) (time.Time, bool) {
	i, ok := h.index[key]
	if !ok {
		return time.Time{}, false
	}
	return h.heap[i].at, true
}

// Len returns the number of deadlines.
func (h *Heap[K]) Len() int { return len(h.heap) }

// Next returns the earliest deadline; false when there is none.
func (h *Heap[K]) Next() (time.Time, bool) {
	if len(h.heap) == 0 {
		return time.Time{}, false
	}
	return h.heap[0].at, true
}

// PopDue removes and returns, in deadline order, the keys whose deadlines
// are no later than now.
func (h *Heap[K]) PopDue(now time.Time) []K {
	var due []K
	for len(h.heap) > 0 && !h.heap[0].at.After(now) {
		due = append(due, h.heap[0].key)
		h.removeAt(0)
	}
	return due
}

// DueWithin removes and returns, in deadline order, the keys for which same
// returns true whose deadlines are no later than now + window. It is RFC
// 9686 §4.6's optional coalescing: when one address's refresh fires, the
// agent calls it with window = Policy.Coalesce and same matching the
// fired key's interface, and refreshes those addresses too. same must not
// change h.
func (h *Heap[K]) DueWithin(now time.Time, window time.Duration, same func(K) bool) []K {
	limit := now.Add(window)
	// Walk only the part of the heap due by limit: a parent is never later
	// than its children, so a late node prunes its whole subtree.
	var hits []entry[K]
	stack := []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(h.heap) || h.heap[i].at.After(limit) {
			continue
		}
		if same(h.heap[i].key) {
			hits = append(hits, h.heap[i])
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
		h.removeAt(h.index[e.key])
	}
	return keys
}

// removeAt deletes the heap entry at i.
func (h *Heap[K]) removeAt(i int) {
	last := len(h.heap) - 1
	delete(h.index, h.heap[i].key)
	if i != last {
		h.heap[i] = h.heap[last]
		h.index[h.heap[i].key] = i
	}
	var zero entry[K]
	h.heap[last] = zero // drop references held by K
	h.heap = h.heap[:last]
	if i != last {
		if !h.up(i) {
			h.down(i)
		}
	}
}

// up moves the entry at i towards the root; it reports whether it moved.
func (h *Heap[K]) up(i int) bool {
	moved := false
	for i > 0 {
		p := (i - 1) / 2
		if !h.heap[i].before(&h.heap[p]) {
			break
		}
		h.swap(i, p)
		i = p
		moved = true
	}
	return moved
}

func (h *Heap[K]) down(i int) {
	n := len(h.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.heap[r].before(&h.heap[l]) {
			m = r
		}
		if !h.heap[m].before(&h.heap[i]) {
			return
		}
		h.swap(i, m)
		i = m
	}
}

func (h *Heap[K]) swap(i, j int) {
	h.heap[i], h.heap[j] = h.heap[j], h.heap[i]
	h.index[h.heap[i].key] = i
	h.index[h.heap[j].key] = j
}
