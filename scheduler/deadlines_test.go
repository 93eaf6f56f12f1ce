package scheduler

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

type firing struct {
	At  time.Duration // since t0
	Due []string
}

// recorder collects what a Deadlines fires.
func recorder(clk *FakeClock) (*Deadlines[string], *[]firing) {
	var got []firing
	d := NewDeadlines(clk, func(now time.Time, due []string) {
		got = append(got, firing{now.Sub(t0), slices.Clone(due)})
	})
	return d, &got
}

func TestDeadlinesFire(t *testing.T) {
	s := time.Second
	type set struct {
		key string
		at  time.Duration
	}
	tests := []struct {
		name    string
		sets    []set
		remove  []string
		advance time.Duration
		want    []firing
		left    int
	}{
		{
			name:    "in deadline order, ties together in Set order",
			sets:    []set{{"c", 3 * s}, {"a", 1 * s}, {"b2", 2 * s}, {"b1", 2 * s}},
			advance: 10 * s,
			want:    []firing{{1 * s, []string{"a"}}, {2 * s, []string{"b2", "b1"}}, {3 * s, []string{"c"}}},
		},
		{
			name:    "moved later and earlier",
			sets:    []set{{"a", 1 * s}, {"b", 2 * s}, {"a", 5 * s}, {"b", 500 * time.Millisecond}},
			advance: 10 * s,
			want:    []firing{{500 * time.Millisecond, []string{"b"}}, {5 * s, []string{"a"}}},
		},
		{
			name:    "removed never fires",
			sets:    []set{{"a", 1 * s}, {"b", 2 * s}},
			remove:  []string{"a", "nope"},
			advance: 10 * s,
			want:    []firing{{2 * s, []string{"b"}}},
		},
		{
			name:    "not yet due",
			sets:    []set{{"a", 1 * s}, {"b", 20 * s}},
			advance: 10 * s,
			want:    []firing{{1 * s, []string{"a"}}},
			left:    1,
		},
		{
			name:    "past deadline fires at once",
			sets:    []set{{"a", -5 * s}},
			advance: 0,
			want:    []firing{{0, []string{"a"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := NewFakeClock(t0)
			d, got := recorder(clk)
			defer d.Close()
			for _, s := range tt.sets {
				d.Set(s.key, t0.Add(s.at))
			}
			for _, k := range tt.remove {
				d.Remove(k)
			}
			clk.Advance(tt.advance)
			if diff := cmp.Diff(tt.want, *got); diff != "" {
				t.Errorf("firings (-want +got):\n%s", diff)
			}
			if d.Len() != tt.left {
				t.Errorf("Len() = %d; want %d", d.Len(), tt.left)
			}
			if want := min(tt.left, 1); clk.Pending() != want {
				t.Errorf("Pending() = %d; want %d", clk.Pending(), want)
			}
		})
	}
}

func TestDeadlinesWhenRemoveLen(t *testing.T) {
	clk := NewFakeClock(t0)
	d, _ := recorder(clk)
	defer d.Close()
	if _, ok := d.When("a"); ok {
		t.Error("When on empty set reported a deadline")
	}
	d.Set("a", t0.Add(time.Minute))
	d.Set("a", t0.Add(time.Hour))
	if at, ok := d.When("a"); !ok || !at.Equal(t0.Add(time.Hour)) {
		t.Errorf("When(a) = %v, %v; want t0+1h, true", at, ok)
	}
	if d.Len() != 1 || clk.Pending() != 1 {
		t.Errorf("Len, Pending = %d, %d; want 1, 1", d.Len(), clk.Pending())
	}
	if !d.Remove("a") || d.Remove("a") {
		t.Error("Remove(a) twice: want true then false")
	}
	if d.Len() != 0 || clk.Pending() != 0 {
		t.Errorf("after Remove: Len, Pending = %d, %d; want 0, 0 (no idle timer)", d.Len(), clk.Pending())
	}
}

// fire may call back into Deadlines, including a deadline already past: it
// fires in the same Advance, after the running fire returns.
func TestDeadlinesReentrant(t *testing.T) {
	clk := NewFakeClock(t0)
	var got []firing
	var d *Deadlines[string]
	d = NewDeadlines(clk, func(now time.Time, due []string) {
		got = append(got, firing{now.Sub(t0), slices.Clone(due)})
		if due[0] == "a" {
			d.Set("again", now.Add(-time.Second))
			d.Set("later", now.Add(time.Second))
			_, _ = d.When("later")
			_ = d.Len()
		}
	})
	defer d.Close()
	d.Set("a", t0.Add(time.Second))
	clk.Advance(time.Minute)
	want := []firing{{time.Second, []string{"a"}}, {time.Second, []string{"again"}}, {2 * time.Second, []string{"later"}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("firings (-want +got):\n%s", diff)
	}
}

type ifAddr struct {
	Index int
	Addr  string
}

// RFC 9686 §4.6 coalescing: the fired address's interface-mates due within
// 60 s go with it; later ones and other interfaces' do not.
func TestDeadlinesDueWithin(t *testing.T) {
	clk := NewFakeClock(t0)
	p := NewPolicy(func() float64 { return 0.5 })
	var got [][]ifAddr
	var d *Deadlines[ifAddr]
	d = NewDeadlines(clk, func(now time.Time, due []ifAddr) {
		for _, k := range due {
			batch := append([]ifAddr{k}, d.DueWithin(now, p.Coalesce, func(o ifAddr) bool { return o.Index == k.Index })...)
			got = append(got, batch)
		}
	})
	defer d.Close()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	d.Set(ifAddr{1, "a"}, at(100))
	d.Set(ifAddr{1, "c 60 s later"}, at(160)) // the window's edge is inside
	d.Set(ifAddr{1, "b 30 s later"}, at(130))
	d.Set(ifAddr{1, "d 61 s later"}, at(161))
	d.Set(ifAddr{2, "other iface 10 s later"}, at(110))
	d.Set(ifAddr{1, "e"}, at(1000))

	clk.Advance(100 * time.Second)
	want := [][]ifAddr{{{1, "a"}, {1, "b 30 s later"}, {1, "c 60 s later"}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("coalesced (-want +got):\n%s", diff)
	}
	if d.Len() != 3 || clk.Pending() != 1 {
		t.Errorf("Len, Pending = %d, %d; want 3, 1", d.Len(), clk.Pending())
	}
	if next, _ := clk.Next(); !next.Equal(at(110)) {
		t.Errorf("timer at %v; want the other interface's t0+110s", next.Sub(t0))
	}
	clk.Advance(time.Hour)
	want = append(want, []ifAddr{{2, "other iface 10 s later"}}, []ifAddr{{1, "d 61 s later"}}, []ifAddr{{1, "e"}})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("all (-want +got):\n%s", diff)
	}
	if got := d.DueWithin(clk.Now(), time.Hour, func(ifAddr) bool { return true }); got != nil {
		t.Errorf("DueWithin on empty set = %v; want nil", got)
	}
}

func TestDeadlinesClose(t *testing.T) {
	clk := NewFakeClock(t0)
	d, got := recorder(clk)
	d.Set("a", t0.Add(time.Second))
	d.Close()
	if clk.Pending() != 0 {
		t.Errorf("Pending() after Close = %d; want 0", clk.Pending())
	}
	d.Set("b", t0)
	clk.Advance(time.Hour)
	if len(*got) != 0 || d.Len() != 0 {
		t.Errorf("after Close: fired %v, Len %d; want nothing", *got, d.Len())
	}
	d.Close() // idempotent
}

// Property: over random Sets, moves, Removes and Advances, every key still
// set fires exactly once, at or after its deadline, in deadline order, and
// never more than one timer is armed.
func TestDeadlinesProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for iter := range 200 {
		clk := NewFakeClock(t0)
		want := map[int]time.Time{} // key → deadline still expected to fire
		var last time.Time
		d := NewDeadlines(clk, func(now time.Time, due []int) {
			// The next wake-up may be armed already; two never.
			if p := clk.Pending(); p > 1 {
				t.Fatalf("#%d: %d timers armed", iter, p)
			}
			for _, k := range due {
				at, ok := want[k]
				if !ok {
					t.Fatalf("#%d: key %d fired but was not pending", iter, k)
				}
				if now.Before(at) {
					t.Fatalf("#%d: key %d fired at %v before its deadline %v", iter, k, now, at)
				}
				if at.Before(last) {
					t.Fatalf("#%d: key %d (due %v) fired after one due %v", iter, k, at, last)
				}
				last = at
				delete(want, k)
			}
		})
		n := 1 + rng.IntN(300)
		for op := range 4 * n {
			k := rng.IntN(n)
			switch r := rng.IntN(10); {
			case r < 6:
				// Never before the clock: a past deadline would fire out of
				// order relative to ones already fired, legitimately.
				at := clk.Now().Add(time.Duration(rng.Int64N(int64(time.Hour))))
				d.Set(k, at)
				want[k] = at
			case r < 8:
				if _, ok := want[k]; d.Remove(k) != ok {
					t.Fatalf("#%d op %d: Remove(%d) disagrees with the model", iter, op, k)
				}
				delete(want, k)
			default:
				clk.Advance(time.Duration(rng.Int64N(int64(10 * time.Minute))))
			}
			if clk.Pending() > 1 {
				t.Fatalf("#%d op %d: %d timers armed", iter, op, clk.Pending())
			}
			if d.Len() != len(want) {
				t.Fatalf("#%d op %d: Len() = %d; model has %d", iter, op, d.Len(), len(want))
			}
		}
		clk.Advance(2 * time.Hour)
		// A key fires only while the model expects it and is then dropped
		// from the model, so an empty model means exactly once each.
		if len(want) != 0 {
			t.Fatalf("#%d: %d keys never fired", iter, len(want))
		}
		if clk.Pending() != 0 {
			t.Fatalf("#%d: %d timers armed when idle", iter, clk.Pending())
		}
		d.Close()
	}
}

func TestDeadlinesRealClock(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	clk := RealClock()
	ch := make(chan string, 10)
	d := NewDeadlines(clk, func(now time.Time, due []string) {
		for _, k := range due {
			ch <- k
		}
	})
	now := clk.Now()
	d.Set("b", now.Add(20*time.Millisecond))
	d.Set("a", now.Add(5*time.Millisecond))
	d.Set("never", now.Add(time.Hour))
	var got []string
	for len(got) < 2 {
		select {
		case k := <-ch:
			got = append(got, k)
		case <-time.After(5 * time.Second):
			t.Fatalf("fired %v within 5 s; want [a b]", got)
		}
	}
	if diff := cmp.Diff([]string{"a", "b"}, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	d.Close()
}

// Close waits for a running fire and nothing fires after it returns.
func TestDeadlinesCloseWaitsForFire(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	started, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	calls := 0
	clk := NewFakeClock(t0)
	d := NewDeadlines(clk, func(time.Time, []int) {
		mu.Lock()
		calls++
		mu.Unlock()
		close(started)
		<-release
	})
	d.Set(1, t0)
	d.Set(2, t0.Add(30*time.Millisecond))
	// The FakeClock runs fire in the goroutine that advances it.
	advanced := make(chan struct{})
	go func() { clk.Advance(0); close(advanced) }()
	<-started
	closed := make(chan struct{})
	go func() { d.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while fire was running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-closed
	<-advanced
	clk.Advance(time.Hour) // past key 2's deadline
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Errorf("fire called %d times; want 1 (none after Close)", calls)
	}
}

// Concurrent use from several goroutines under the race detector.
func TestDeadlinesConcurrent(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var mu sync.Mutex
	fired := map[int]int{}
	d := NewDeadlines(RealClock(), func(_ time.Time, due []int) {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range due {
			fired[k]++
		}
	})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 250 {
				k := g*1000 + i
				if i%7 == 0 {
					// Far off, so it cannot fire before it is removed.
					d.Set(k, time.Now().Add(time.Hour))
					d.Remove(k)
					continue
				}
				d.Set(k, time.Now().Add(time.Hour))
				d.Set(k, time.Now().Add(time.Duration(i%10)*time.Millisecond))
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for d.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	d.Close()
	mu.Lock()
	defer mu.Unlock()
	for k, c := range fired {
		if c != 1 || k%1000%7 == 0 {
			t.Errorf("key %d fired %d times", k, c)
		}
	}
	if want := 4 * (250 - 36); len(fired) != want {
		t.Errorf("%d keys fired; want %d", len(fired), want)
	}
}

// Heap alone: Next is the earliest deadline, PopDue takes what is due in
// order (equal deadlines in Set order), Set moves a key.
func TestHeap(t *testing.T) {
	var h Heap[string]
	if _, ok := h.Next(); ok || h.PopDue(t0) != nil {
		t.Fatal("zero Heap not empty")
	}
	h.Set("c", t0.Add(3*time.Second))
	h.Set("a", t0.Add(time.Second))
	h.Set("b", t0.Add(time.Second))
	h.Set("d", t0.Add(4*time.Second))
	h.Set("c", t0.Add(-time.Second)) // moved earlier
	if at, ok := h.Next(); !ok || !at.Equal(t0.Add(-time.Second)) {
		t.Fatalf("Next = %v, %v", at, ok)
	}
	if diff := cmp.Diff([]string{"c", "a", "b"}, h.PopDue(t0.Add(time.Second))); diff != "" {
		t.Errorf("PopDue (-want +got):\n%s", diff)
	}
	if !h.Remove("d") || h.Remove("d") || h.Len() != 0 {
		t.Errorf("Remove: %d left", h.Len())
	}
}
