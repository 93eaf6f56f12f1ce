package refserver

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestExpHeapChunks checks the chunked expiry heap against a sorted slice
// across chunk boundaries: pushes and pops interleaved, growth past several
// chunks, shrinking back and growing again.
func TestExpHeapChunks(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h expHeap
	var ref []int64
	for round, n := range []int{3*chunkLen + 17, chunkLen - 1, 2*chunkLen + 1} {
		for range n {
			at := r.Int64N(1 << 40)
			h.push(expEntry{at: at})
			ref = append(ref, at)
			if r.IntN(4) == 0 { // interleave a pop
				slices.Sort(ref)
				if got := h.pop().at; got != ref[0] {
					t.Fatalf("round %d: pop = %d, want %d", round, got, ref[0])
				}
				ref = ref[1:]
			}
		}
		if h.len() != len(ref) {
			t.Fatalf("round %d: len %d, want %d", round, h.len(), len(ref))
		}
		slices.Sort(ref)
		// Drain most of it: chunks are given back but for one spare.
		for len(ref) > 5 {
			if got := h.top().at; got != ref[0] {
				t.Fatalf("round %d: top = %d, want %d", round, got, ref[0])
			}
			if got := h.pop().at; got != ref[0] {
				t.Fatalf("round %d: pop = %d, want %d", round, got, ref[0])
			}
			ref = ref[1:]
		}
		if len(h.c.chunks) > 2 {
			t.Fatalf("round %d: %d chunks kept for %d entries", round, len(h.c.chunks), h.len())
		}
	}
	h.reset()
	if h.len() != 0 || len(h.c.chunks) > 2 {
		t.Fatalf("after reset: len %d, %d chunks", h.len(), len(h.c.chunks))
	}
}

// BenchmarkExpHeapPush is the cost of a registration's expiry entry with
// the heap growing from empty to a million entries (then emptied), as under
// a flood of new registrations.
func BenchmarkExpHeapPush(b *testing.B) {
	var h expHeap
	at := int64(1 << 40)
	for b.Loop() {
		if h.len() == 1<<20 {
			h.reset()
		}
		at += 1000
		h.push(expEntry{at: at})
	}
}
