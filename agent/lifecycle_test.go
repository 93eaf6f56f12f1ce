package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
	"github.com/addrreg/addrreg/scheduler"
)

// These tests run the owner loop (Run) with the fakes: that it feeds the
// machine, performs its effects (goroutines, the timer, the state file's
// writer, the heartbeat) and ends every goroutine it starts. They wait
// for what the loop does (a log line, a beat), never for a stretch of wall
// clock; the deadlines only end a test whose loop hangs.

// lines records log messages and wakes whoever waits for one.
type lines struct {
	mu      sync.Mutex
	msgs    []string
	changed chan struct{}
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *lines) WithGroup(string) slog.Handler            { return l }
func (l *lines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	close(l.changed)
	l.changed = make(chan struct{})
	return nil
}

// count returns how often msg was logged and a channel closed at the next line.
func (l *lines) count(msg string) (int, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n, l.changed
}

type running struct {
	t    *testing.T
	clk  *scheduler.FakeClock
	mon  *fakeMon
	reg  *fakeReg
	ag   *Agent
	log  *lines
	stop context.CancelFunc
	done chan error
}

func run(t *testing.T, cfg Config, supported bool) *running {
	t.Helper()
	r := &running{t: t, clk: scheduler.NewFakeClock(t0), mon: newFakeMon(), reg: &fakeReg{supported: supported},
		log: &lines{changed: make(chan struct{})}, done: make(chan error, 1)}
	r.reg.clk = r.clk
	cfg.Clock, cfg.Logger = r.clk, slog.New(r.log)
	cfg.Policy = scheduler.NewPolicy(func() float64 { return 0.5 })
	r.ag = New(cfg, r.mon, r.reg)
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	// Every goroutine the agent starts ends with Run: none outlives it.
	before := goleak.IgnoreCurrent()
	go func() { r.done <- r.ag.Run(ctx) }()
	t.Cleanup(func() {
		r.shutdown()
		goleak.VerifyNone(t, before)
	})
	return r
}

// wait waits until msg has been logged n times.
func (r *running) wait(msg string, n int) {
	r.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		got, changed := r.log.count(msg)
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			r.t.Fatalf("%q logged %d times, want %d", msg, got, n)
		}
	}
}

// shutdown ends Run and returns its error.
func (r *running) shutdown() error {
	r.t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(10 * time.Second):
		r.t.Fatal("agent did not stop within 10 s")
		return nil
	}
}

// The loop's whole round: discovery, a registration, status served by the
// loop, a refresh on the loop's timer, SIGHUP, a deregistration, the stop
// (deregistering on stop) and the state file's last write.
func TestRunWiring(t *testing.T) {
	cfg := defaults()
	cfg.DeregisterOnStop = true
	cfg.StatePath = filepath.Join(t.TempDir(), "state.json")
	r := run(t, cfg, true)
	r.mon.link(true, false, true)
	r.mon.add(ll)
	static := global("2001:db8::5", netmon.Infinite)
	static.Class = netmon.ClassStatic
	r.mon.add(static)
	dyn := global("2001:db8::1", time.Hour)
	r.mon.add(dyn)
	r.wait("registered", 2)
	st, err := r.ag.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if phaseOf(st, "2001:db8::5") != Registered || phaseOf(st, "2001:db8::1") != Registered || st.InFlight != 0 {
		t.Fatalf("status %+v, want both registered", st)
	}
	// The static address's refresh is due in 4 h: the loop's timer.
	r.clk.Advance(4 * time.Hour)
	r.wait("registered", 3)
	r.ag.Rediscover()
	r.wait("discovering registration support", 2)
	r.wait("registered", 5)
	r.mon.remove(dyn)
	r.wait("deregistered", 1)
	if err := r.shutdown(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	r.wait("agent stopped", 1)
	_, sends := r.reg.snapshot()
	if last := sends[len(sends)-1]; !last.deregistered || last.addr != static.IP {
		t.Errorf("last exchange %+v, want the static address deregistered on stop", last)
	}
	got, err := readState(cfg.StatePath)
	if err != nil || len(got) != 0 {
		t.Errorf("state file after deregistering everything: %+v, %v; want empty", got, err)
	}
}

// A registrar whose socket is gone ends Run with the error.
func TestRunEndsOnBrokenRegistrar(t *testing.T) {
	r := run(t, defaults(), true)
	r.reg.probeErr = fmt.Errorf("probe eth0: %w", registrar.ErrSocketBroken)
	r.mon.link(true, false, true)
	r.mon.add(ll)
	select {
	case err := <-r.done:
		r.done <- err
		if !errors.Is(err, registrar.ErrSocketBroken) {
			t.Fatalf("Run = %v, want ErrSocketBroken", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end")
	}
}

// Exchanges that never end are abandoned after StopTimeout: Run returns
// and leaves no goroutine behind.
func TestRunAbandonsOnStop(t *testing.T) {
	cfg := defaults()
	cfg.StopTimeout = time.Millisecond
	cfg.DeregisterOnStop = true
	r := run(t, cfg, true)
	r.mon.link(true, false, true)
	r.mon.add(ll)
	r.mon.add(global("2001:db8::1", time.Hour))
	r.wait("registered", 1)
	r.reg.mu.Lock()
	r.reg.holdDereg = true
	r.reg.mu.Unlock()
	r.shutdown()
	r.wait("stopping: abandoning exchanges", 1)
}

// The heartbeat runs in the owner loop: while the loop is wedged in one,
// it serves nothing else (no status), and beats again once free.
func TestHeartbeatFromTheOwnerLoop(t *testing.T) {
	beats := make(chan Summary, 16)
	wedge := make(chan struct{})
	var mu sync.Mutex
	wedged := false
	cfg := defaults()
	cfg.HeartbeatInterval = 10 * time.Second
	cfg.Heartbeat = func(s Summary) {
		beats <- s
		mu.Lock()
		w := wedged
		mu.Unlock()
		if w {
			<-wedge
		}
	}
	r := run(t, cfg, true)
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
	next() // at start
	mu.Lock()
	wedged = true
	mu.Unlock()
	r.clk.Advance(10 * time.Second)
	next() // the loop is now stuck in this beat
	answered := make(chan struct{})
	go func() {
		r.ag.Status(context.Background())
		close(answered)
	}()
	for range 3 {
		r.clk.Advance(10 * time.Second) // beats due, but the loop is stuck
	}
	for range 1000 {
		select {
		case <-answered:
			t.Fatal("Status answered from a wedged loop")
		case s := <-beats:
			t.Fatalf("a wedged loop beat: %+v", s)
		default:
		}
		runtime.Gosched() // let the loop answer, if it could
	}
	mu.Lock()
	wedged = false
	mu.Unlock()
	close(wedge)
	<-answered
	next() // beating again once unstuck: the beat that came due meanwhile
}
