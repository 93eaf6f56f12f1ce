package agent

// keyQueue is the pacing queue (pacing.go): keys in the order they came,
// each at most once. It holds keys only; what a key needs (a registration,
// a refresh, a deregistration or nothing any more) is decided from the
// state when it reaches the front, so an entry can never carry a stale
// intent.
type keyQueue struct {
	keys []key
	in   map[key]bool
	peak int // the longest since in was made (pop)
}

// push queues k unless it is queued already.
func (q *keyQueue) push(k key) {
	if q.in[k] {
		return
	}
	if q.in == nil {
		q.in = map[key]bool{}
	}
	q.in[k] = true
	q.keys = append(q.keys, k)
	q.peak = max(q.peak, len(q.keys))
}

// front is the key that waits longest; ok is false when none waits.
func (q *keyQueue) front() (k key, ok bool) {
	if len(q.keys) == 0 {
		return key{}, false
	}
	return q.keys[0], true
}

// pop removes the front key. An emptied queue lets go of the storage a
// burst grew: a Go map keeps its buckets after its keys are deleted, so in
// would hold room for 10,000 keys (about 1 MB) for good after a start-up
// that queued 10,000 addresses.
func (q *keyQueue) pop() {
	delete(q.in, q.keys[0])
	q.keys = q.keys[1:]
	if len(q.keys) == 0 {
		q.keys = nil
		if q.peak > 64 {
			q.in, q.peak = nil, 0
		}
	}
}

func (q *keyQueue) len() int { return len(q.keys) }

// has reports whether k is queued.
func (q *keyQueue) has(k key) bool { return q.in[k] }

// clear empties the queue.
func (q *keyQueue) clear() { *q = keyQueue{} }
