// Run's netlink session loop: subscribe, dump, stream, re-subscribe with
// backoff; and the wall-clock check that reports ClockJump.

package netmon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrRunning is returned by Run when the Monitor is already running.
var ErrRunning = errors.New("netmon: monitor already running")

// ErrNetlinkLost is wrapped by every error Run returns when it gives up:
// the netlink subscription could not be (re-)established, for lack of
// permission or after Options.ResubscribeAttempts tries in a row. The
// Monitor then knows nothing of the kernel any more; a daemon should exit
// (non-zero, so that its supervisor restarts it) rather than run deaf.
var ErrNetlinkLost = errors.New("netmon: netlink subscription lost")

// Run dumps the kernel's state, then streams changes until ctx ends. On any
// receive error (ENOBUFS included) it re-subscribes, re-dumps and queues only
// the differences. It returns nil when ctx ends, or an error wrapping
// ErrNetlinkLost when it cannot watch the kernel any more: no permission to
// open the sockets, or Options.ResubscribeAttempts failed attempts in a row
// to subscribe and dump, with backoff between them. All goroutines it starts
// have stopped, and its idle request sockets are closed, when it returns.
func (m *Monitor) Run(ctx context.Context) error {
	if m.closed.Load() {
		return fmt.Errorf("netmon: run: %w", net.ErrClosed)
	}
	if !m.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer m.running.Store(false)
	defer m.k.closeIdle()

	// The RA listener starts once the first dump has shown the links, so
	// that no RA is dropped for an interface not known yet; it stops (and
	// then its timers) before Run returns.
	raStarted := false
	defer func() {
		if raStarted {
			m.stopRATimers()
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	synced := func() {
		if m.o.WatchRAs && !raStarted {
			raStarted = true
			m.startRATimers()
			wg.Go(func() { m.watchRAs(ctx) })
		}
		m.readyOnce.Do(func() { close(m.ready) })
	}

	m.resetClock()
	backoff := time.Duration(0)
	failures := 0
	for {
		start := m.clk.Now()
		established, err := m.session(ctx, synced)
		if ctx.Err() != nil {
			return nil
		}
		if isFatal(err) {
			err = fmt.Errorf("%w: %w", ErrNetlinkLost, err)
			m.log.Error("netmon stopped", "err", err)
			return err
		}
		if established {
			failures = 0
		} else {
			failures++
		}
		if failures >= m.o.ResubscribeAttempts {
			err = fmt.Errorf("%w: %d attempts in a row to subscribe failed, the last: %w", ErrNetlinkLost, failures, err)
			m.log.Error("netmon stopped", "err", err)
			return err
		}
		m.mu.Lock()
		m.st.resyncs++
		m.mu.Unlock()
		if established && m.clk.Now().Sub(start) > 10*time.Second {
			backoff = 0
		}
		m.log.Warn("netlink session ended, resyncing", "err", err, "backoff", backoff, "failures", failures)
		if backoff > 0 && !m.sleep(ctx, backoff) {
			return nil
		}
		// A burst that overflows the buffer is usually over within a second;
		// waiting a little lets it pass instead of re-dumping into it. A
		// subscription that cannot be made is retried more slowly.
		limit := time.Second
		if failures > 0 {
			limit = 5 * time.Second
		}
		backoff = min(max(2*backoff, 50*time.Millisecond), limit)
	}
}

// sleep waits d on the Monitor's clock; false if ctx ended first.
func (m *Monitor) sleep(ctx context.Context, d time.Duration) bool {
	done := make(chan struct{})
	t := m.clk.AfterFunc(d, func() { close(done) })
	select {
	case <-ctx.Done():
		t.Stop()
		return false
	case <-done:
		return true
	}
}

func isFatal(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) ||
		errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPROTONOSUPPORT) ||
		errors.Is(err, unix.EBADF) || errors.Is(err, unix.EINVAL)
}

// session subscribes, dumps, calls synced, then applies streamed messages
// until an error. established says the subscription and the dump succeeded.
func (m *Monitor) session(ctx context.Context, synced func()) (established bool, err error) {
	s, err := m.k.subscribe(m.o.RecvBufSize)
	if err != nil {
		return false, err
	}
	stop := context.AfterFunc(ctx, func() { s.close() })
	defer func() {
		if stop() {
			s.close()
		}
	}()
	// Subscribed before the dump, so nothing that happens during it is lost;
	// messages queued meanwhile are applied after it, and each carries its
	// object's full state, so the last one for each object wins.
	if err := m.resync(); err != nil {
		return false, err
	}
	synced()
	for {
		deadline := time.Now().Add(m.o.ClockCheckInterval)
		msgs, err := s.recv(deadline)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if err := m.checkClock(); err != nil {
				return true, err
			}
			continue
		}
		if err != nil {
			return true, err
		}
		now := m.clk.Now()
		m.mu.Lock()
		m.st.applyMessages(msgs, now)
		m.mu.Unlock()
		if err := m.checkClock(); err != nil {
			return true, err
		}
	}
}

// resync dumps everything and diffs it into the state.
func (m *Monitor) resync() error {
	var msgs []message
	var err error
	for range 5 {
		msgs, err = m.k.dump()
		if !errors.Is(err, errDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	now := m.clk.Now()
	m.mu.Lock()
	m.st.resync(msgs, now)
	m.mu.Unlock()
	return nil
}

func (m *Monitor) resetClock() {
	now := time.Now()
	m.lastMono, m.lastWall = now, m.wallNow()
}

// checkClock compares wall-clock and monotonic time elapsed since the last
// check. Go's monotonic clock (CLOCK_MONOTONIC) stops during suspend while
// the wall clock does not, and settimeofday moves only the wall clock: either
// shows as a disagreement. On one, it queues ClockJump and re-reads every
// lifetime.
func (m *Monitor) checkClock() error {
	now := time.Now()
	wall := m.wallNow()
	monoEl := now.Sub(m.lastMono)
	wallEl := wall.Sub(m.lastWall)
	m.lastMono, m.lastWall = now, wall
	d := wallEl - monoEl
	if d < 0 {
		d = -d
	}
	if d <= m.o.ClockJumpThreshold {
		return nil
	}
	m.log.Warn("clock jump, re-reading lifetimes", "reason", "wall-monotonic", "delta", wallEl-monoEl)
	m.mu.Lock()
	m.st.clockJump(m.clk.Now())
	m.mu.Unlock()
	return m.resync()
}
