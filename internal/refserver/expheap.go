package refserver

// expEntry is a binding's expiry in the heap: no pointers and 24 bytes
// (not time.Time and netip.Addr, 48 bytes with two pointers), so that a
// heap of a million entries is half the memory, and the garbage collector
// does not scan it. A binding's address is always a 16-byte IPv6 address
// without zone (an IA Address option's, RFC 8415 §21.6), which As16 and
// AddrFrom16 carry unchanged.
type expEntry struct {
	at   int64 // Binding.Expires, Unix ns
	addr [16]byte
}

// expHeap is a min-heap of expiries by time, stored in fixed-size chunks
// (table.go): growing it never copies the entries made so far (a slice
// grown by append copies all of them, and touches as much fresh memory,
// each time it grows by a quarter: 15 ms with the readers held up at
// 100,000 bindings on a VM where page faults are slow).
type expHeap struct{ c chunked[expEntry] }

func (e *expHeap) len() int { return e.c.n }

func (e *expHeap) less(i, j int) bool { return e.c.at(i).at < e.c.at(j).at }

func (e *expHeap) swap(i, j int) { a, b := e.c.at(i), e.c.at(j); *a, *b = *b, *a }

// top is the earliest entry; the heap must not be empty.
func (e *expHeap) top() expEntry { return *e.c.at(0) }

// reset empties the heap.
func (e *expHeap) reset() { e.c.truncate(0) }

func (e *expHeap) push(x expEntry) {
	e.c.grow()
	*e.c.at(e.c.n - 1) = x
	for j := e.c.n - 1; j > 0; {
		i := (j - 1) / 2
		if !e.less(j, i) {
			break
		}
		e.swap(i, j)
		j = i
	}
}

// pop removes and returns the earliest entry; the heap must not be empty.
func (e *expHeap) pop() expEntry {
	n := e.c.n - 1
	e.swap(0, n)
	for i := 0; ; {
		j := 2*i + 1
		if j >= n {
			break
		}
		if j+1 < n && e.less(j+1, j) {
			j++
		}
		if !e.less(j, i) {
			break
		}
		e.swap(i, j)
		i = j
	}
	x := *e.c.at(n)
	e.c.truncate(n)
	return x
}
