package agent

import (
	"testing"
	"time"
)

// The heartbeat is the machine's: one at start, then every interval, with
// what the machine holds. (That it runs in the owner loop, and stops while
// the loop is wedged, is lifecycle_test.go's.)
func TestHeartbeat(t *testing.T) {
	cfg := defaults()
	cfg.HeartbeatInterval = 10 * time.Second
	cfg.Heartbeat = func(Summary) {}
	h := startOnLink(t, cfg, true)
	h.mon.add(global("2001:db8::1", 1800*time.Second))
	h.mon.add(global("2001:db8::2", 1800*time.Second))
	h.settle()
	if len(h.beats) != 1 || h.beats[0] != (Summary{}) {
		t.Fatalf("beats %+v, want one at start, of nothing", h.beats)
	}
	h.advance(10*time.Second - time.Nanosecond)
	if len(h.beats) != 1 {
		t.Fatalf("%d beats before the interval, want 1", len(h.beats))
	}
	h.advance(time.Nanosecond)
	if len(h.beats) != 2 {
		t.Fatalf("%d beats after the interval, want 2", len(h.beats))
	}
	s := h.beats[1]
	if want := (Summary{Interfaces: 1, Supported: 1, Addresses: 2, Registered: 2}); s != want {
		t.Errorf("summary %+v, want %+v", s, want)
	}
	if got, want := s.String(), "1/1 interfaces support registration, 2/2 addresses registered"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	h.advance(time.Minute)
	if len(h.beats) != 8 {
		t.Errorf("%d beats after 70 s, want 8", len(h.beats))
	}
}
