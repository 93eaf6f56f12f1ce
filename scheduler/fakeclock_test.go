package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestFakeClock(t *testing.T) {
	clk := NewFakeClock(t0)
	var got []string
	note := func(name string) func() {
		return func() { got = append(got, name+"@"+clk.Now().Sub(t0).String()) }
	}
	clk.AfterFunc(3*time.Second, note("c"))
	clk.AfterFunc(time.Second, note("a"))
	clk.AfterFunc(time.Second, note("a2")) // same deadline: in arming order
	stopped := clk.AfterFunc(2*time.Second, note("stopped"))
	reset := clk.AfterFunc(time.Hour, note("reset"))
	clk.AfterFunc(0, func() {
		note("zero")()
		clk.AfterFunc(0, note("armed inside"))
	})
	if clk.Pending() != 6 {
		t.Fatalf("Pending() = %d; want 6", clk.Pending())
	}
	if !stopped.Stop() || stopped.Stop() {
		t.Error("Stop: want true then false")
	}
	if !reset.Reset(2 * time.Second) {
		t.Error("Reset of an armed timer returned false")
	}
	clk.Advance(2500 * time.Millisecond)
	want := []string{"zero@0s", "armed inside@0s", "a@1s", "a2@1s", "reset@2s"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("fired (-want +got):\n%s", diff)
	}
	if now := clk.Now(); !now.Equal(t0.Add(2500 * time.Millisecond)) {
		t.Errorf("Now() = %v; want t0+2.5s", now.Sub(t0))
	}
	if clk.Pending() != 1 {
		t.Errorf("Pending() = %d; want 1", clk.Pending())
	}
	if reset.Reset(time.Second) {
		t.Error("Reset of a fired timer returned true")
	}
	clk.AdvanceTo(t0) // backwards: time stays
	if now := clk.Now(); !now.Equal(t0.Add(2500 * time.Millisecond)) {
		t.Errorf("AdvanceTo(past) moved Now to %v", now.Sub(t0))
	}
	if next, ok := clk.Next(); !ok || !next.Equal(t0.Add(3*time.Second)) {
		t.Errorf("Next() = %v, %v; want t0+3s", next.Sub(t0), ok)
	}
}

func TestFakeClockBlockUntil(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	clk := NewFakeClock(t0)
	fired := make(chan struct{})
	go clk.AfterFunc(time.Second, func() { close(fired) })
	clk.BlockUntil(1)
	clk.Advance(time.Second)
	<-fired

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err == nil {
		t.Error("BlockUntilContext with nothing armed returned nil; want the context's error")
	}
}
