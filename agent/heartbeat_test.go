package agent

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// The heartbeat runs in the owner loop: it reports what the loop holds, and
// while the loop is wedged no beat comes (systemd's watchdog then restarts
// the daemon).
func TestHeartbeatFromTheOwnerLoop(t *testing.T) {
	beats := make(chan Summary, 16)
	wedge := make(chan struct{})
	var wedged atomic.Bool
	cfg := defaults()
	cfg.HeartbeatInterval = 10 * time.Second
	cfg.Heartbeat = func(s Summary) {
		beats <- s
		if wedged.Load() {
			<-wedge
		}
	}
	h := startOnLink(t, cfg, true)
	h.mon.add(global("2001:db8::1", 1800*time.Second))
	h.mon.add(global("2001:db8::2", 1800*time.Second))
	h.settle()
	next := func() Summary {
		t.Helper()
		select {
		case s := <-beats:
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("no heartbeat")
			return Summary{}
		}
	}
	var s Summary
	for s.Registered < 2 { // a beat from before the settle may be queued
		h.clk.Advance(10 * time.Second)
		s = next()
	}
	if want := (Summary{Interfaces: 1, Supported: 1, Addresses: 2, Registered: 2}); s != want {
		t.Errorf("summary %+v, want %+v", s, want)
	}
	if got, want := s.String(), "1/1 interfaces support registration, 2/2 addresses registered"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}

	wedged.Store(true)
	h.clk.Advance(10 * time.Second)
	next() // the loop is now stuck in this beat
	for range 3 {
		h.clk.Advance(10 * time.Second)
	}
	select {
	case s := <-beats:
		t.Errorf("a wedged loop beat: %+v", s)
	case <-time.After(300 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := h.ag.Status(ctx); err == nil {
		t.Error("Status answered from a wedged loop")
	}
	close(wedge)
	h.clk.Advance(10 * time.Second)
	next() // beating again once unstuck
}
