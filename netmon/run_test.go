package netmon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/scheduler"
)

// runOnFakeClock runs m until Run returns, advancing the fake clock so that
// its backoff passes without waiting; it fails after 10 s of real time.
func runOnFakeClock(t *testing.T, m *Monitor, clk *scheduler.FakeClock) (time.Duration, error) {
	t.Helper()
	start := clk.Now()
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-done:
			return clk.Now().Sub(start), err
		case <-deadline:
			t.Fatal("Run did not give up")
		case <-time.After(time.Millisecond):
			clk.Advance(100 * time.Millisecond)
		}
	}
}

// A subscription that cannot be re-established ends Run with ErrNetlinkLost
// after Options.ResubscribeAttempts tries with backoff; a session that
// worked in between resets the count.
func TestRunGivesUp(t *testing.T) {
	link := newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0)
	tests := []struct {
		name     string
		subErr   func(n int) error
		scripts  []script
		wantErr  error // wrapped by Run's error
		wantSubs int
		minWait  time.Duration // backoff the fake clock must have covered
	}{
		{
			name:     "never subscribes",
			subErr:   func(int) error { return unix.EMFILE },
			wantErr:  unix.EMFILE,
			wantSubs: 10,
			// 0, 50, 100, 200, 400, 800 ms, 1.6, 3.2, 5 s
			minWait: 11 * time.Second,
		},
		{
			name: "a working session resets the count",
			// 0–8 fail, 9 works then ends with ENOBUFS, 10–19 fail.
			subErr: func(n int) error {
				if n == 9 {
					return nil
				}
				return unix.ENOMEM
			},
			wantErr:  unix.ENOMEM,
			scripts:  func() []script { s := make([]script, 10); s[9] = script{err: unix.ENOBUFS}; return s }(),
			wantSubs: 20,
			minWait:  2 * 11 * time.Second,
		},
		{
			name:     "no permission: at once",
			subErr:   func(int) error { return fmt.Errorf("open rtnetlink socket: %w", unix.EPERM) },
			wantErr:  unix.EPERM,
			wantSubs: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			k := &fakeKernel{dumps: [][]message{{link}}, subErr: tt.subErr, scripts: tt.scripts}
			clk := scheduler.NewFakeClock(t0)
			m := newMonitor(Options{Clock: clk, Logger: testLogger(t)}, k)
			waited, err := runOnFakeClock(t, m, clk)
			if !errors.Is(err, ErrNetlinkLost) {
				t.Fatalf("Run: %v, want ErrNetlinkLost", err)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Run: %v, want it to wrap %v", err, tt.wantErr)
			}
			k.mu.Lock()
			subs := k.subs
			k.mu.Unlock()
			if subs != tt.wantSubs {
				t.Errorf("%d subscribe attempts, want %d", subs, tt.wantSubs)
			}
			if waited < tt.minWait {
				t.Errorf("gave up after %v of backoff, want at least %v", waited, tt.minWait)
			}
			goleak.VerifyNone(t, ignore)
		})
	}
}

// Lookup and Run after Close fail with net.ErrClosed.
func TestClosed(t *testing.T) {
	m := newMonitor(Options{}, &fakeKernel{})
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Lookup(1, netip.MustParseAddr("::1")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Lookup after Close: %v", err)
	}
	if err := m.Run(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Run after Close: %v", err)
	}
}
