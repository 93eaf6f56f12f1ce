package registrar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/addrreg/addrreg/scheduler"
)

// A send the kernel refuses (a firewall's EPERM, ENOBUFS …) is a lost
// transmission: the exchange keeps its transaction ID and RFC 8415 timers
// and is answered once a send gets through.
func TestRefusedSendIsALostTransmission(t *testing.T) {
	r, c, clock := fakeRegistrar(t, Config{}, 0.5) // RAND 0: RT 1 s, 2 s, 4 s
	c.refuse = func(n int) error {
		if n <= 2 {
			return fmt.Errorf("send to ff02::1:2: %w", []error{syscall.EPERM, syscall.ENOBUFS}[n-1])
		}
		return nil
	}
	// Once the reply is in, the clock stands still: the exchange's next
	// retransmission timer is armed after the send, and advancing to it
	// before Register has read the reply would make its Duration 7 s.
	var replied atomic.Bool
	c.onSend = func(s sent) { r.deliver(replyTo(t, s, msgAddrRegReply)); replied.Store(true) }
	res, err := registerDriven(r, clock, replied.Load)
	if err != nil || !res.Replied || res.Sends != 1 {
		t.Fatalf("Register = %+v, %v; want a reply to the one send that got through", res, err)
	}
	s := c.sends()
	if len(s) != 1 || s[0].at.Sub(t0) != 3*time.Second {
		t.Fatalf("sends %+v, want one at 3 s (after two refused, 1 s and 2 s apart)", s)
	}
	if res.Duration != 3*time.Second {
		t.Errorf("Duration %v, want 3s from the first (refused) transmission", res.Duration)
	}
	want := map[string]uint64{"EPERM": 1, "ENOBUFS": 1}
	if diff := cmp.Diff(want, r.Stats().SendErrors); diff != "" {
		t.Errorf("SendErrors (-want +got):\n%s", diff)
	}
}

// Every send refused: the exchange fails only when MRC runs out, saying so.
func TestAllSendsRefused(t *testing.T) {
	var logs bytes.Buffer // slog's handler serialises writes
	r, c, clock := fakeRegistrar(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, 0.5)
	c.refuse = func(int) error { return syscall.EPERM }
	res, err := registerDriven(r, clock, nil)
	if !errors.Is(err, ErrExchangeFailed) || !errors.Is(err, syscall.EPERM) || res.Sends != 0 {
		t.Fatalf("Register = %+v, %v; want ErrExchangeFailed wrapping EPERM, no sends", res, err)
	}
	for _, w := range []string{"eth7", "3 of 3 transmissions refused"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if res.Duration != 7*time.Second {
		t.Errorf("gave up after %v, want 7s (1+2+4)", res.Duration)
	}
	if got := r.Stats().SendErrors["EPERM"]; got != 3 {
		t.Errorf("SendErrors[EPERM] = %d, want 3", got)
	}
	if n := strings.Count(logs.String(), "send refused"); n != 1 {
		t.Errorf("%d log lines about refused sends, want 1 per exchange:\n%s", n, logs.String())
	}
}

// A closed socket ends the exchange at once: no retransmission helps.
func TestClosedSocketEndsExchange(t *testing.T) {
	r, c, _ := fakeRegistrar(t, Config{}, 0.5)
	c.refuse = func(int) error { return net.ErrClosed }
	lt := func() (time.Duration, time.Duration, bool) { return time.Hour, time.Hour, true }
	if _, err := r.Register(context.Background(), Target{Ifindex: 3, Addr: testAddr, Lifetimes: lt}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Register = %v, want net.ErrClosed", err)
	}
}

// Run retries failed reads with backoff (not a 10 ms loop) and ends with
// ErrSocketBroken when the socket is closed under it.
func TestRunReceiveErrors(t *testing.T) {
	clock := scheduler.NewFakeClock(t0)
	r, c, done := runRegistrar(t, clock, context.Background())
	for i := 0; i < 5; i++ {
		c.in <- inbound{err: syscall.ENOBUFS}
		clock.BlockUntil(1) // backing off on the fake clock
		want := recvBackoff(i + 1)
		if at, _ := clock.Next(); at.Sub(clock.Now()) != want {
			t.Fatalf("read error %d: backing off %v, want %v", i+1, at.Sub(clock.Now()), want)
		}
		clock.Advance(want)
	}
	if got := r.Stats().RecvErrors; got != 5 {
		t.Errorf("RecvErrors = %d, want 5", got)
	}
	c.close() // closed under Run, whose context is alive
	select {
	case err := <-done:
		if !errors.Is(err, ErrSocketBroken) {
			t.Fatalf("Run = %v, want ErrSocketBroken", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not end on a closed socket")
	}
}

func TestRecvBackoff(t *testing.T) {
	var got []time.Duration
	for i := 1; i <= 9; i++ {
		got = append(got, recvBackoff(i))
	}
	ms := time.Millisecond
	want := []time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// A read failing for recvGiveUp is a socket broken beyond retry.
func TestRunGivesUp(t *testing.T) {
	clock := scheduler.NewFakeClock(t0)
	_, c, done := runRegistrar(t, clock, context.Background())
	check := func(err error) {
		if !errors.Is(err, ErrSocketBroken) || clock.Now().Sub(t0) < recvGiveUp {
			t.Fatalf("Run = %v at %v, want ErrSocketBroken after %v", err, clock.Now().Sub(t0), recvGiveUp)
		}
	}
	for {
		c.in <- inbound{err: syscall.ENOMEM}
		for clock.Pending() == 0 {
			select {
			case err := <-done:
				check(err)
				return
			case <-time.After(time.Millisecond):
			}
		}
		at, _ := clock.Next()
		clock.AdvanceTo(at)
	}
}

// runRegistrar starts Run over a fakeConn on clock, with Run's result on
// done (Run ends with ctx or the fake's close).
func runRegistrar(t *testing.T, clock *scheduler.FakeClock, ctx context.Context) (*Registrar, *fakeConn, chan error) {
	t.Helper()
	r, err := newRegistrar(Config{ClientID: testDUID, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	c := newFakeConn(clock)
	r.conn = c
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return r, c, done
}

// registerDriven runs one registration of testAddr on "eth7" with the
// fake clock advanced to each timer as it is armed.
func registerDriven(r *Registrar, clock *scheduler.FakeClock, stop func() bool) (Result, error) {
	lt := func() (time.Duration, time.Duration, bool) { return time.Hour, time.Hour, true }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go driveUntil(ctx, clock, stop)
	return r.Register(context.Background(), Target{Ifindex: 3, Ifname: "eth7", Addr: testAddr, Lifetimes: lt})
}
