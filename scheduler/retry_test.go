package scheduler

import (
	"testing"
	"time"
)

func TestRetryDelay(t *testing.T) {
	r := Retry{First: 30 * time.Second, Max: time.Hour}
	top := func() float64 { return 0 }           // no jitter: the nominal delay
	bottom := func() float64 { return 0.999999 } // the most jitter
	for _, tc := range []struct {
		failures int
		limit    time.Duration
		want     time.Duration
	}{
		{0, 0, 30 * time.Second},
		{1, 0, 30 * time.Second},
		{2, 0, time.Minute},
		{3, 0, 2 * time.Minute},
		{7, 0, 32 * time.Minute},
		{8, 0, time.Hour},
		{1000, 0, time.Hour}, // no overflow
		{8, 10 * time.Minute, 10 * time.Minute},
		{1, 10 * time.Second, 10 * time.Second}, // the refresh interval caps the first delay too
		{3, 2 * time.Hour, 2 * time.Minute},
	} {
		if got := r.Delay(tc.failures, tc.limit, top); got != tc.want {
			t.Errorf("Delay(%d, %v) = %v, want %v", tc.failures, tc.limit, got, tc.want)
		}
		got := r.Delay(tc.failures, tc.limit, bottom)
		if lo := tc.want * 8 / 10; got < lo || got > tc.want {
			t.Errorf("jittered Delay(%d, %v) = %v, want in [%v, %v]", tc.failures, tc.limit, got, lo, tc.want)
		}
	}
}

// A fake clock walks a server that never answers: the delays double from
// First to Max, so over a day an address costs at most one exchange per
// step, and a success resets the walk.
func TestRetryWalk(t *testing.T) {
	r := Retry{First: 30 * time.Second, Max: time.Hour}
	clk := NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	start := clk.Now()
	u := 0.0
	rnd := func() float64 {
		u += 0.37
		if u >= 1 {
			u -= 1
		}
		return u
	}
	exchanges, failures := 0, 0
	var prev time.Duration
	for clk.Now().Sub(start) < 24*time.Hour {
		exchanges++
		failures++
		d := r.Delay(failures, 0, rnd)
		if d < 24*time.Second || d > time.Hour {
			t.Fatalf("step %d: delay %v out of [24s, 1h]", failures, d)
		}
		if failures > 1 && failures < 8 && d < prev {
			t.Fatalf("step %d: delay %v shorter than the previous %v", failures, d, prev)
		}
		prev = d
		clk.Advance(d)
	}
	// 30 s … 32 min is 7 steps (about 63 min), then hourly: about 30 in a day.
	if exchanges < 24 || exchanges > 36 {
		t.Fatalf("%d exchanges in a day against a silent server, want about 30", exchanges)
	}
	if got := r.Delay(1, 0, func() float64 { return 0 }); got != r.First {
		t.Fatalf("after a success the delay is %v, want First %v", got, r.First)
	}
}

func TestRetryValidate(t *testing.T) {
	for _, r := range []Retry{{}, {First: -1, Max: time.Hour}, {First: time.Minute, Max: time.Second}} {
		if r.Validate() == nil {
			t.Errorf("%+v: want an error", r)
		}
	}
	if err := DefaultRetry.Validate(); err != nil {
		t.Error(err)
	}
}
