package registrar

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"go.uber.org/goleak"

	"github.com/addrreg/addrreg/scheduler"
)

// fakeConn stands in for the raw socket: it records what is sent, with the
// fake clock's time, and delivers what a test injects.
type fakeConn struct {
	clock  scheduler.Clock
	in     chan inbound
	closed chan struct{}
	once   sync.Once

	mu     sync.Mutex
	sent   []sent
	onSend func(s sent) // called after each send, outside the lock
	// refuse, if set, is asked before each send (n counts from 1) and
	// its error, if any, fails the send as sendmsg would.
	refuse   func(n int) error
	attempts int
}

type sent struct {
	at      time.Time
	ifindex int
	src     netip.Addr
	m       message
	raw     []byte // the datagram as sent, UDP header included
}

type inbound struct {
	err     error // recv fails with it
	b       []byte
	dst     netip.Addr
	ifindex int
}

func newFakeConn(clock scheduler.Clock) *fakeConn {
	return &fakeConn{clock: clock, in: make(chan inbound, 16), closed: make(chan struct{})}
}

func (c *fakeConn) send(b []byte, ifindex int, src netip.Addr) error {
	select {
	case <-c.closed:
		return net.ErrClosed
	default:
	}
	c.mu.Lock()
	c.attempts++
	n, refuse := c.attempts, c.refuse
	c.mu.Unlock()
	if refuse != nil {
		if err := refuse(n); err != nil {
			return err
		}
	}
	// Parse it back as if a server had sent it: swap the ports.
	own := append([]byte{0x02, 0x23, 0x02, 0x22}, b[4:]...)
	m, err := parseDatagram(own)
	if err != nil {
		return err
	}
	s := sent{at: c.clock.Now(), ifindex: ifindex, src: src, m: m, raw: own}
	c.mu.Lock()
	c.sent = append(c.sent, s)
	hook := c.onSend
	c.mu.Unlock()
	if hook != nil {
		hook(s)
	}
	return nil
}

func (c *fakeConn) recv(b []byte) (int, netip.Addr, int, netip.Addr, error) {
	select {
	case <-c.closed:
		return 0, netip.Addr{}, 0, netip.Addr{}, net.ErrClosed
	case d := <-c.in:
		if d.err != nil {
			return 0, netip.Addr{}, 0, netip.Addr{}, d.err
		}
		return copy(b, d.b), d.dst, d.ifindex, netip.MustParseAddr("fe80::547"), nil
	}
}

func (c *fakeConn) close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fakeConn) sends() []sent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sent(nil), c.sent...)
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fakeRegistrar returns a running Registrar over a fakeConn and a FakeClock,
// with rand always u. A *nowSignal in cfg.Clock is kept (its FakeClock is
// returned); any other Clock is replaced.
func fakeRegistrar(t *testing.T, cfg Config, u float64) (*Registrar, *fakeConn, *scheduler.FakeClock) {
	t.Helper()
	clock := scheduler.NewFakeClock(t0)
	if w, ok := cfg.Clock.(*nowSignal); ok {
		clock = w.FakeClock
	} else {
		cfg.Clock = clock
	}
	cfg.ClientID = testDUID
	cfg.Rand = func() float64 { return u }
	r, err := newRegistrar(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := newFakeConn(clock)
	r.conn = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r, c, clock
}

// nowSignal is a FakeClock that signals every Now call on ch (dropped when
// ch is full). The registrar reads the clock first thing when it acts on a
// fired retransmission timer, so a test that drains ch, advances the clock and
// then receives from ch knows the registrar has taken that timer up.
type nowSignal struct {
	*scheduler.FakeClock
	ch chan struct{}
}

func newNowSignal() *nowSignal {
	return &nowSignal{FakeClock: scheduler.NewFakeClock(t0), ch: make(chan struct{}, 64)}
}

func (c *nowSignal) Now() time.Time {
	select {
	case c.ch <- struct{}{}:
	default:
	}
	return c.FakeClock.Now()
}

// drain empties ch.
func (c *nowSignal) drain() {
	for {
		select {
		case <-c.ch:
		default:
			return
		}
	}
}

// drive advances clock to each timer as soon as one is armed, until ctx ends.
func drive(ctx context.Context, clock *scheduler.FakeClock) { driveUntil(ctx, clock, nil) }

// driveUntil is drive that stops advancing once stop (if not nil) reports
// true when a timer is armed.
func driveUntil(ctx context.Context, clock *scheduler.FakeClock, stop func() bool) {
	for clock.BlockUntilContext(ctx, 1) == nil {
		if stop != nil && stop() {
			return
		}
		if when, ok := clock.Next(); ok {
			clock.AdvanceTo(when)
		}
	}
}

func TestRegisterRetransmission(t *testing.T) {
	for _, tc := range []struct {
		name string
		u    float64 // rand; RAND = (2u-1)/10
	}{{"RAND 0", 0.5}, {"RAND -0.1", 0}, {"RAND +0.1", 0.999999}} {
		t.Run(tc.name, func(t *testing.T) {
			r, c, clock := fakeRegistrar(t, Config{}, tc.u)
			var calls int
			lt := func() (time.Duration, time.Duration, bool) {
				calls++
				return time.Duration(1000-calls) * time.Second, time.Duration(2000-calls) * time.Second, true
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go drive(ctx, clock)
			res, err := r.Register(context.Background(), Target{Ifindex: 3, Addr: testAddr, Lifetimes: lt})
			cancel()
			if !errors.Is(err, ErrExchangeFailed) {
				t.Fatalf("Register = %+v, %v; want ErrExchangeFailed", res, err)
			}
			// RFC 8415 §15 with IRT 1 s, MRC 3: RT1 = IRT(1+RAND),
			// RTn = RTn-1(2+RAND); sends at 0, RT1, RT1+RT2; failure
			// RT3 after the last.
			f := (2*tc.u - 1) * 0.1
			rt1 := time.Duration(float64(time.Second) * (1 + f))
			rt2 := time.Duration(float64(rt1) * (2 + f))
			rt3 := time.Duration(float64(rt2) * (2 + f))
			s := c.sends()
			var at []time.Duration
			for _, x := range s {
				at = append(at, x.at.Sub(t0))
			}
			approx := cmp.Comparer(func(a, b time.Duration) bool { d := a - b; return d < time.Microsecond && d > -time.Microsecond })
			if diff := cmp.Diff([]time.Duration{0, rt1, rt1 + rt2}, at, approx); diff != "" {
				t.Errorf("transmission times (-want +got):\n%s", diff)
			}
			if !cmp.Equal(rt1+rt2+rt3, res.Duration, approx) || res.Sends != 3 || res.Replied {
				t.Errorf("Result %+v, want 3 sends over %v", res, rt1+rt2+rt3)
			}
			for i, x := range s {
				want := message{typ: msgAddrRegInform, xid: s[0].m.xid, hasClientID: true, clientID: testDUID.ToBytes(),
					iaAddrs: 1, iaAddr: testAddr, iaPreferred: uint32(999 - i), iaValid: uint32(1999 - i)}
				if diff := cmp.Diff(want, x.m, cmp.AllowUnexported(message{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
					t.Errorf("transmission %d (-want +got):\n%s", i, diff)
				}
				if x.src != testAddr || x.ifindex != 3 {
					t.Errorf("transmission %d from %s on %d", i, x.src, x.ifindex)
				}
			}
			if res.Preferred != 997*time.Second || res.Valid != 1997*time.Second {
				t.Errorf("Result lifetimes %v/%v, want the third transmission's", res.Preferred, res.Valid)
			}
			if clock.Pending() != 0 {
				t.Errorf("%d timers left armed", clock.Pending())
			}
		})
	}
}

// deliver dispatches d at once, as Run would on receiving it, so that with
// a fake clock a reply is queued before the exchange's timer is armed.
func (r *Registrar) deliver(d inbound) { r.dispatch(d.b, d.dst, d.ifindex, netip.Addr{}) }

// replyTo makes the datagram a server would send in answer to s.
func replyTo(t testing.TB, s sent, typ uint8) inbound {
	return inbound{b: replyDatagram(t, typ, s.m.xid, s.m.iaAddr), dst: s.src, ifindex: s.ifindex}
}

func TestRegisterStopsAtValidReply(t *testing.T) {
	r, c, clock := fakeRegistrar(t, Config{}, 0.5)
	var mu sync.Mutex
	n := 0
	c.onSend = func(s sent) {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n == 2 {
			bad := replyTo(t, s, msgAddrRegReply)
			bad.dst = netip.MustParseAddr("2001:db8:1::99")
			r.deliver(bad)                             // dropped: destination
			r.deliver(replyTo(t, s, msgAddrRegInform)) // dropped: ADDR-REG-INFORM
			r.deliver(replyTo(t, s, msgAddrRegReply))  // accepted
		}
	}
	lt := func() (time.Duration, time.Duration, bool) { return time.Hour, time.Hour, true }
	type result struct {
		res Result
		err error
	}
	done := make(chan result)
	go func() {
		res, err := r.Register(context.Background(), Target{Ifindex: 3, Addr: testAddr, Lifetimes: lt})
		done <- result{res, err}
	}()
	clock.BlockUntil(1) // waiting after the first send
	clock.Advance(time.Second)
	out := <-done
	res, err := out.res, out.err
	if err != nil || !res.Replied || res.Sends != 2 || res.Duration != time.Second {
		t.Fatalf("Register = %+v, %v; want a reply to the second send, 1 s in", res, err)
	}
	if clock.Pending() != 0 {
		t.Errorf("%d timers left armed", clock.Pending())
	}
	want := Stats{Sent: 2, Retransmitted: 1, Accepted: 1, Dropped: map[DropReason]uint64{DropDestination: 1, DropInform: 1}}
	if diff := cmp.Diff(want, r.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

func TestProbe(t *testing.T) {
	ll := netip.MustParseAddr("fe80::10")
	for _, tc := range []struct {
		name    string
		extra   []string
		want    bool
		silence int
		second  bool // a second server answers too, with 148
	}{
		{"148 offered", []string{"0094 0000"}, true, 0, false},
		{"148 not offered", nil, false, 0, false},
		{"148 after five unanswered", []string{"0094 0000"}, true, 5, false},
		{"one server without 148, another with", nil, true, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Discovery with MRT 4 s; INF_MAX_DELAY 1 s and RAND 0 put
			// the first send at 0.5 s, then 1, 2, 4, 4, 4 s apart.
			r, c, clock := fakeRegistrar(t, Config{Discovery: scheduler.Retrans{IRT: time.Second, MRT: 4 * time.Second}}, 0.5)
			var mu sync.Mutex
			n := 0
			c.onSend = func(s sent) {
				mu.Lock()
				defer mu.Unlock()
				if n++; n > tc.silence {
					r.deliver(inbound{b: replyDatagram(t, msgReply, s.m.xid, testAddr, tc.extra...), dst: s.src, ifindex: s.ifindex})
					if tc.second {
						r.deliver(inbound{b: replyDatagram(t, msgReply, s.m.xid, testAddr, "0094 0000"), dst: s.src, ifindex: s.ifindex})
					}
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go drive(ctx, clock)
			got, err := r.Probe(context.Background(), 3, ll)
			cancel()
			if err != nil || got != tc.want {
				t.Fatalf("Probe = %v, %v; want %v", got, err, tc.want)
			}
			var at []time.Duration
			for _, x := range c.sends() {
				if x.m.typ != msgInfoRequest || x.src != ll || x.ifindex != 3 || x.m.xid != c.sends()[0].m.xid {
					t.Errorf("sent %+v", x)
				}
				at = append(at, x.at.Sub(t0))
			}
			want := []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, 3500 * time.Millisecond,
				7500 * time.Millisecond, 11500 * time.Millisecond, 15500 * time.Millisecond}[:tc.silence+1]
			if diff := cmp.Diff(want, at); diff != "" {
				t.Errorf("Information-Request times (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDispatch feeds Run datagrams that belong to no exchange.
func TestDispatch(t *testing.T) {
	r, c, _ := fakeRegistrar(t, Config{}, 0.5)
	for _, b := range [][]byte{
		{1, 2, 3},
		replyDatagram(t, msgAddrRegInform, testXID, testAddr),
		replyDatagram(t, msgAddrRegReply, testXID, testAddr),
		replyDatagram(t, msgReply, xid{1, 2, 3}, testAddr),
	} {
		c.in <- inbound{b: b, dst: testAddr, ifindex: 1}
	}
	want := map[DropReason]uint64{DropMalformed: 1, DropInform: 1, DropTransaction: 2}
	deadline := time.Now().Add(5 * time.Second)
	for !cmp.Equal(want, r.Stats().Dropped) {
		if time.Now().After(deadline) {
			t.Fatalf("Dropped = %v, want %v", r.Stats().Dropped, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCancelAndShutdown: Register and Probe return at once when their
// context ends; Run returns when its context ends and leaves no goroutine.
func TestCancelAndShutdown(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	clock := scheduler.NewFakeClock(t0)
	runCtx, stop := context.WithCancel(context.Background())
	r, _, done := runRegistrar(t, clock, runCtx)

	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() {
		_, err := r.Register(ctx, Target{Ifindex: 1, Addr: testAddr, Lifetimes: func() (time.Duration, time.Duration, bool) { return 0, 0, true }})
		errs <- err
	}()
	go func() {
		_, err := r.Probe(ctx, 1, netip.MustParseAddr("fe80::1"))
		errs <- err
	}()
	clock.BlockUntil(2) // both waiting: Register for a reply, Probe in its initial delay
	cancel()
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("got %v, want context.Canceled", err)
			}
		case <-time.After(time.Second):
			t.Fatal("Register or Probe did not return on cancel")
		}
	}
	if clock.Pending() != 0 {
		t.Errorf("%d timers left armed", clock.Pending())
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return on cancel")
	}
	if _, err := r.Register(context.Background(), Target{Ifindex: 1, Addr: testAddr,
		Lifetimes: func() (time.Duration, time.Duration, bool) { return 0, 0, true }}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Register after Run = %v, want net.ErrClosed", err)
	}
	goleak.VerifyNone(t, ignore)
}

func TestNewConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no Client ID", Config{}},
		{"bad FQDN", Config{ClientID: testDUID, FQDN: "a..b"}},
		{"bad Retrans", Config{ClientID: testDUID, Retrans: scheduler.Retrans{MRC: 3}}},
		{"bad Discovery", Config{ClientID: testDUID, Discovery: scheduler.Retrans{IRT: -1}}},
	} {
		if _, err := newRegistrar(tc.cfg); err == nil {
			t.Errorf("%s: newRegistrar succeeded", tc.name)
		}
	}
	r, err := newRegistrar(Config{ClientID: testDUID})
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.Retrans != scheduler.DefaultRegistration || r.cfg.Discovery != scheduler.InformationRequest || r.cfg.DiscoveryMaxDelay != scheduler.InfMaxDelay {
		t.Errorf("defaults: %+v", r.cfg)
	}
}

func TestInvalidTargets(t *testing.T) {
	r, _, _ := fakeRegistrar(t, Config{}, 0.5)
	lt := func() (time.Duration, time.Duration, bool) { return 0, 0, true }
	for _, tg := range []Target{
		{Ifindex: 0, Addr: testAddr, Lifetimes: lt},
		{Ifindex: 1, Addr: netip.MustParseAddr("192.0.2.1"), Lifetimes: lt},
		{Ifindex: 1, Addr: testAddr},
		{Ifindex: 1, Addr: netip.MustParseAddr("fe80::1"), Lifetimes: lt},
		{Ifindex: 1, Addr: netip.MustParseAddr("ff02::1:2"), Lifetimes: lt},
		{Ifindex: 1, Addr: netip.MustParseAddr("::1"), Lifetimes: lt},
		{Ifindex: 1, Addr: netip.MustParseAddr("::ffff:192.0.2.1"), Lifetimes: lt},
	} {
		if _, err := r.Register(context.Background(), tg); err == nil {
			t.Errorf("Register(%+v) succeeded", tg)
		}
	}
	if _, err := r.Probe(context.Background(), 1, testAddr); err == nil {
		t.Error("Probe from a global address succeeded")
	}
}

// benchConn answers every ADDR-REG-INFORM at once with a prepared
// ADDR-REG-REPLY carrying its transaction ID, at no cost of its own.
type benchConn struct {
	r     *Registrar
	reply []byte
}

func (c *benchConn) send(b []byte, ifindex int, src netip.Addr) error {
	copy(c.reply[udpHdrLen+1:udpHdrLen+4], b[udpHdrLen+1:udpHdrLen+4])
	c.r.dispatch(c.reply, src, ifindex, netip.Addr{})
	return nil
}
func (c *benchConn) recv([]byte) (int, netip.Addr, int, netip.Addr, error) {
	return 0, netip.Addr{}, 0, netip.Addr{}, net.ErrClosed
}
func (c *benchConn) close() error { return nil }

// BenchmarkRegister is one whole exchange with the socket taken out: build
// and send an ADDR-REG-INFORM, take the reply from the receive path,
// validate it, and return.
func BenchmarkRegister(b *testing.B) {
	r, err := newRegistrar(Config{ClientID: testDUID})
	if err != nil {
		b.Fatal(err)
	}
	r.conn = &benchConn{r: r, reply: replyDatagram(b, msgAddrRegReply, xid{}, testAddr)}
	tg := Target{Ifindex: 3, Addr: testAddr, Lifetimes: func() (time.Duration, time.Duration, bool) { return time.Hour, time.Hour, true }}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Register(ctx, tg); err != nil {
			b.Fatal(err)
		}
	}
}

// TestProbeCollect: after a Reply without option 148 the probe listens one
// second more, without retransmitting, for another server's Reply with it.
func TestProbeCollect(t *testing.T) {
	ll := netip.MustParseAddr("fe80::10")
	for _, tc := range []struct {
		name  string
		irt   time.Duration
		after time.Duration // when the second server answers with 148; 0 = never
		want  bool
	}{
		{"second server within the second", 5 * time.Second, 900 * time.Millisecond, true},
		{"no second server", 5 * time.Second, 0, false},
		// The retransmission comes due at 0.2 s, inside the window: the
		// probe still listens to its end instead of giving up then.
		{"retransmission due inside the window", 200 * time.Millisecond, 900 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			watch := newNowSignal()
			r, c, clock := fakeRegistrar(t, Config{Discovery: scheduler.Retrans{IRT: tc.irt}, DiscoveryMaxDelay: -1, Clock: watch}, 0.5)
			var first sent
			c.onSend = func(s sent) {
				first = s
				r.deliver(inbound{b: replyDatagram(t, msgReply, s.m.xid, testAddr), dst: s.src, ifindex: s.ifindex})
			}
			type result struct {
				ok  bool
				err error
			}
			done := make(chan result, 1)
			go func() {
				ok, err := r.Probe(context.Background(), 3, ll)
				done <- result{ok, err}
			}()
			clock.BlockUntil(2) // the retransmission timer and the collection timer
			if tc.after > 0 {
				if tc.irt < tc.after {
					// Let the probe act on its retransmission timer
					// (its next read of the clock) before the second
					// server answers.
					watch.drain()
					clock.Advance(tc.irt + tc.irt/2)
					select {
					case <-watch.ch:
					case <-time.After(5 * time.Second):
						t.Fatal("the probe did not read the clock after its retransmission timer fired")
					}
					clock.Advance(tc.after - tc.irt - tc.irt/2)
				} else {
					clock.Advance(tc.after)
				}
				r.deliver(inbound{b: replyDatagram(t, msgReply, first.m.xid, testAddr, "0094 0000"), dst: first.src, ifindex: first.ifindex})
			} else {
				clock.Advance(time.Second)
			}
			res := <-done
			if res.err != nil || res.ok != tc.want {
				t.Errorf("Probe = %v, %v; want %v", res.ok, res.err, tc.want)
			}
			if n := len(c.sends()); n != 1 {
				t.Errorf("%d Information-Requests, want 1", n)
			}
			if clock.Pending() != 0 {
				t.Errorf("%d timers left armed", clock.Pending())
			}
		})
	}
}

// A deregistration is one transmission with zero lifetimes, then one IRT
// for a reply: the address may already be gone, so no reply can reach it.
func TestDeregisterSendsOnce(t *testing.T) {
	r, c, clock := fakeRegistrar(t, Config{}, 0.5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go drive(ctx, clock)
	zero := func() (time.Duration, time.Duration, bool) { return 0, 0, true }
	res, err := r.Register(context.Background(), Target{Ifindex: 3, Addr: testAddr, Lifetimes: zero, Deregister: true})
	cancel()
	if !errors.Is(err, ErrExchangeFailed) || res.Sends != 1 || res.Replied {
		t.Fatalf("Register = %+v, %v; want one send, then ErrExchangeFailed", res, err)
	}
	s := c.sends()
	if len(s) != 1 || s[0].m.iaValid != 0 || s[0].m.iaPreferred != 0 || s[0].src != testAddr {
		t.Fatalf("sent %+v, want one zero-lifetime INFORM from %s", s, testAddr)
	}
	if res.Duration != time.Second {
		t.Errorf("waited %v for a reply, want IRT (1s)", res.Duration)
	}
	if !res.LastSent.Equal(t0) {
		t.Errorf("LastSent = %v, want the transmission time %v", res.LastSent, t0)
	}
	// NoWait: sent, and back at once.
	res, err = r.Register(context.Background(), Target{Ifindex: 3, Addr: testAddr, Lifetimes: zero, Deregister: true, NoWait: true})
	if err != nil || res.Sends != 1 || len(c.sends()) != 2 {
		t.Fatalf("NoWait deregistration = %+v, %v; want one more send and no wait", res, err)
	}
}

// The Client FQDN option: Config.FQDN by default, the Target's own name
// instead when it has one (addrregd follows the host's name), none when
// neither is set; a Target name that cannot be encoded fails the exchange
// before anything is sent.
func TestTargetFQDN(t *testing.T) {
	zero := func() (time.Duration, time.Duration, bool) { return 0, 0, true }
	for _, tc := range []struct {
		cfg, target string
		want        string // "": no option
		flags       uint8
	}{
		{cfg: "host.example.com", want: "[host.example.com]", flags: 1},
		{cfg: "host.example.com", target: "renamed", want: "[renamed]", flags: 1},
		{target: "renamed.example.org.", want: "[renamed.example.org]", flags: 1},
		{},
	} {
		r, c, _ := fakeRegistrar(t, Config{FQDN: tc.cfg}, 0.5)
		_, err := r.Register(context.Background(), Target{Ifindex: 3, Addr: testAddr, Lifetimes: zero, Deregister: true, NoWait: true, FQDN: tc.target})
		if err != nil {
			t.Fatalf("%+v: Register: %v", tc, err)
		}
		s := c.sends()
		if len(s) != 1 {
			t.Fatalf("%+v: %d sends", tc, len(s))
		}
		msg, err := dhcpv6.MessageFromBytes(s[0].raw[udpHdrLen:])
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		fq := msg.Options.FQDN()
		switch {
		case tc.want == "" && fq != nil:
			t.Errorf("%+v: Client FQDN %v, want none", tc, fq)
		case tc.want != "" && (fq == nil || fq.DomainName.String() != tc.want || fq.Flags != tc.flags):
			t.Errorf("%+v: Client FQDN %v, want %s with flags %#x", tc, fq, tc.want, tc.flags)
		}
	}
	r, c, _ := fakeRegistrar(t, Config{}, 0.5)
	if _, err := r.Register(context.Background(), Target{Ifindex: 3, Addr: testAddr, Lifetimes: zero, FQDN: "a..b"}); err == nil || len(c.sends()) != 0 {
		t.Errorf("Register with FQDN a..b: %v, %d sends; want an error and nothing sent", err, len(c.sends()))
	}
}
