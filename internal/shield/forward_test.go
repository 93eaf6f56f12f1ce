package shield

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"
)

// fakeConn is a frameConn without a socket. ReadFrame returns what the test
// queues with deliver (unix.EAGAIN when nothing is queued); WriteFrame
// records the frames, or fails with writeErr.
type fakeConn struct {
	in      chan readResult
	pending *readResult // taken by Wait, returned by the next ReadFrame

	mu       sync.Mutex
	sent     [][]byte
	writeErr error
	closed   bool
	wrote    chan struct{} // a token per WriteFrame
}

type readResult struct {
	out []byte
	err error
}

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan readResult, 16), wrote: make(chan struct{}, 64)}
}

func (c *fakeConn) deliver(out []byte, err error) { c.in <- readResult{out, err} }

func (c *fakeConn) ReadFrame() ([]byte, error) {
	if r := c.pending; r != nil {
		c.pending = nil
		return r.out, r.err
	}
	select {
	case r := <-c.in:
		return r.out, r.err
	default:
		return nil, unix.EAGAIN
	}
}

func (c *fakeConn) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-c.in:
		c.pending = &r
	case <-t.C:
	}
	return nil
}

func (c *fakeConn) WriteFrame(out []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writeErr != nil {
		return c.writeErr
	}
	c.sent = append(c.sent, bytes.Clone(out))
	select {
	case c.wrote <- struct{}{}:
	default:
	}
	return nil
}

func (c *fakeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

// takeSent returns the frames written since the last call.
func (c *fakeConn) takeSent() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sent
	c.sent = nil
	return s
}

// fakeSwitch is a Switch on fake ports named by cfg.Ports, with a clock
// the test sets.
type fakeSwitch struct {
	*Switch
	conns map[string]*fakeConn
	clock time.Time
	log   bytes.Buffer // the Switch's log, as JSON lines
}

func newFakeSwitch(t *testing.T, cfg SwitchConfig) *fakeSwitch {
	t.Helper()
	fs := &fakeSwitch{conns: map[string]*fakeConn{}, clock: time.Unix(1000, 0)}
	cfg.Logger = slog.New(slog.NewJSONHandler(&fs.log, nil))
	sw, err := NewSwitch(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range cfg.Ports {
		fs.conns[p.Name] = newFakeConn()
	}
	sw.now = func() time.Time { return fs.clock }
	sw.dial = func(p Port) (frameConn, error) { return fs.conns[p.Name], nil }
	fs.Switch = sw
	return fs
}

// attach gives the ports their conns, as Run does, for tests that call
// handle themselves.
func (fs *fakeSwitch) attach() {
	for _, p := range fs.ports {
		p.conn = fs.conns[p.Name]
	}
}

func (fs *fakeSwitch) port(name string) *port {
	for _, p := range fs.ports {
		if p.Name == name {
			return p
		}
	}
	panic("no port " + name)
}

// logLines returns the log as "level msg reason" lines, with
// " suppressed=N" when the line says so.
func (fs *fakeSwitch) logLines(t *testing.T) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(fs.log.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		s := fmt.Sprintf("%v %v %v", m["level"], m["msg"], m["reason"])
		if n, ok := m["suppressed"]; ok {
			s += fmt.Sprintf(" suppressed=%v", n)
		}
		lines = append(lines, s)
	}
	return lines
}

var (
	macA     = [6]byte{0x02, 0, 0, 0, 0, 0x0a} // behind the trusted port a
	macB     = [6]byte{0x02, 0, 0, 0, 0, 0x0b}
	macC     = [6]byte{0x02, 0, 0, 0, 0, 0x0c}
	macD     = [6]byte{0x02, 0, 0, 0, 0, 0x0d}
	macBcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	macGroup = [6]byte{0x33, 0x33, 0, 1, 0, 2} // ff02::1:2
)

// wire prefixes frame with a virtio-net header and sets its MAC
// addresses, as packetConn's ReadFrame returns it.
func wire(dst, src [6]byte, frame []byte) []byte {
	out := append(make([]byte, vnetLen), frame...)
	copy(out[vnetLen:], dst[:])
	copy(out[vnetLen+6:], src[:])
	return out
}

// echo is an ordinary IPv6 frame (ICMPv6): DHCPv6-Shield passes it.
func echo(dst, src [6]byte) []byte { return wire(dst, src, build(nil, upper(58, 8))) }

// TestForward steps frames through handle on three fake ports and checks
// where each one went: learning, flooding, ageing and the shield's drops.
func TestForward(t *testing.T) {
	const age = time.Minute
	type step struct {
		in  string        // the port the frame arrives on
		out []byte        // virtio-net header and frame
		at  time.Duration // since the start of the case
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  [][]string // per step, the ports the frame went out of
		macs  int        // learned addresses at the end
	}{
		{
			name:  "unknown unicast floods",
			steps: []step{{in: "a", out: echo(macB, macA)}},
			want:  [][]string{{"b", "c"}},
			macs:  1,
		},
		{
			name:  "learned unicast goes to its port only",
			steps: []step{{in: "b", out: echo(macA, macB)}, {in: "a", out: echo(macB, macA)}, {in: "c", out: echo(macA, macC)}},
			want:  [][]string{{"a", "c"}, {"b"}, {"a"}},
			macs:  3,
		},
		{
			name:  "broadcast floods although the source is known",
			steps: []step{{in: "b", out: echo(macA, macB)}, {in: "b", out: echo(macBcast, macB)}},
			want:  [][]string{{"a", "c"}, {"a", "c"}},
			macs:  1,
		},
		{
			name:  "multicast Solicit from an untrusted port floods",
			steps: []step{{in: "b", out: wire(macGroup, macB, build(nil, toServer(msgSolicit)))}},
			want:  [][]string{{"a", "c"}},
			macs:  1,
		},
		{
			name:  "destination on the receiving port: sent nowhere",
			steps: []step{{in: "b", out: echo(macA, macB)}, {in: "b", out: echo(macB, macD)}},
			want:  [][]string{{"a", "c"}, nil},
			macs:  2,
		},
		{
			name:  "a station that moves is followed",
			steps: []step{{in: "b", out: echo(macA, macB)}, {in: "c", out: echo(macA, macB), at: 2 * time.Second}, {in: "a", out: echo(macB, macA), at: 3 * time.Second}},
			want:  [][]string{{"a", "c"}, {"a", "b"}, {"c"}},
			macs:  2,
		},
		{
			name:  "a learned address ages out and floods again",
			steps: []step{{in: "b", out: echo(macA, macB)}, {in: "a", out: echo(macB, macA), at: age + time.Second}},
			want:  [][]string{{"a", "c"}, {"b", "c"}},
			macs:  2,
		},
		{
			name:  "a group source address is not learned",
			steps: []step{{in: "b", out: echo(macA, macGroup)}},
			want:  [][]string{{"a", "c"}},
			macs:  0,
		},
		{
			name:  "a runt passes but goes nowhere",
			steps: []step{{in: "b", out: wire(macA, macB, make([]byte, 14))[:vnetLen+13]}},
			want:  [][]string{nil},
		},
		{
			name: "client-bound DHCPv6 from untrusted ports is dropped",
			steps: []step{
				{in: "b", out: wire(macGroup, macB, build(nil, toClient(msgAdvertise)))},
				{in: "c", out: wire(macD, macC, build(nil, toClient(msgReply)))},
				{in: "c", out: wire(macD, macC, build([]uint16{0x88a8, 0x8100}, toClient(msgReply)))},
			},
			want: [][]string{nil, nil, nil},
		},
		{
			name:  "Relay-Reply from an untrusted port is dropped",
			steps: []step{{in: "b", out: wire(macA, macB, build(nil, udp(547, 547, dhcp(msgRelayRepl))))}},
			want:  [][]string{nil},
		},
		{
			name: "server messages from the trusted port are forwarded",
			steps: []step{
				{in: "b", out: echo(macA, macB)},
				{in: "a", out: wire(macB, macA, build(nil, toClient(msgReply)))},
				{in: "a", out: wire(macGroup, macA, build(nil, toClient(msgAdvertise)))},
				{in: "a", out: wire(macB, macA, build(nil, udp(547, 547, dhcp(msgRelayRepl))))},
			},
			want: [][]string{{"a", "c"}, {"b"}, {"b", "c"}, {"b"}},
			macs: 2,
		},
		{
			name:  "truncated IPv6 from an untrusted port is dropped",
			steps: []step{{in: "b", out: wire(macA, macB, build(nil, toServer(msgSolicit))[:14+20])}},
			want:  [][]string{nil},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFakeSwitch(t, SwitchConfig{Ports: []Port{{Name: "a", Trusted: true}, {Name: "b"}, {Name: "c"}}, MACAge: age})
			fs.attach()
			t0 := fs.clock
			lim := newLimiter(100, 1)
			var got [][]string
			for i, st := range tc.steps {
				fs.clock = t0.Add(st.at)
				fs.handle(fs.port(st.in), lim, st.out)
				var to []string
				for _, p := range fs.ports {
					for _, f := range fs.conns[p.Name].takeSent() {
						to = append(to, p.Name)
						if !bytes.Equal(f, st.out) {
							t.Errorf("step %d: port %s sent\n%x\nwant it as received\n%x", i, p.Name, f, st.out)
						}
					}
				}
				got = append(got, to)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ports each step's frame went out of (-want +got):\n%s", diff)
			}
			if n := fs.macs.len(); n != tc.macs {
				t.Errorf("MAC table holds %d addresses, want %d", n, tc.macs)
			}
		})
	}
}

// drops is PortStats.Drops: every drop reason, with the counts given.
func drops(kv map[Reason]uint64) map[string]uint64 {
	m := map[string]uint64{}
	for _, r := range dropReasons {
		m[r.String()] = kv[r]
	}
	return m
}

// TestHandleCounts checks the counters and the rate-limited security log of
// one port's frames, and the send errors counted on the ports they go out of.
func TestHandleCounts(t *testing.T) {
	fs := newFakeSwitch(t, SwitchConfig{Ports: []Port{{Name: "a", Trusted: true}, {Name: "b"}, {Name: "c"}}, LogBurst: 1, LogRate: 1})
	fs.attach()
	fs.conns["a"].writeErr = unix.ENOBUFS
	fs.conns["c"].writeErr = unix.EIO
	b := fs.port("b")
	lim := newLimiter(fs.cfg.LogBurst, fs.cfg.LogRate)
	reply := wire(macGroup, macB, build(nil, toClient(msgReply)))
	for _, out := range [][]byte{
		reply,
		wire(macA, macB, build(nil, udp(547, 547, dhcp(msgRelayRepl)))),
		wire(macA, macB, build(nil, toServer(msgSolicit))[:14+20]),
		echo(macBcast, macB),
	} {
		fs.handle(b, lim, out)
	}
	fs.clock = fs.clock.Add(time.Second) // one more line allowed
	fs.handle(b, lim, reply)

	want := []PortStats{
		{Name: "a", Trusted: true, Drops: drops(nil), TxBusy: 1},
		{
			Name: "b", RxFrames: 5, Passed: 1, Dropped: 4, ServerMessages: 3, LogSuppressed: 2,
			Drops: drops(map[Reason]uint64{ReasonClientBoundDHCPv6: 2, ReasonRelayReply: 1, ReasonTruncated: 1}),
		},
		{Name: "c", Drops: drops(nil), TxErrors: 1},
	}
	if diff := cmp.Diff(want, fs.Stats().Ports, cmpopts.IgnoreFields(PortStats{}, "RxBytes", "Seen")); diff != "" {
		t.Errorf("port stats (-want +got):\n%s", diff)
	}
	if got := fs.Stats().Ports[1].Seen; got["pass"] != 1 || got["client_bound_dhcpv6"] != 2 {
		t.Errorf("b seen %v, want pass 1 and client_bound_dhcpv6 2", nonZero(got))
	}
	wantLog := []string{
		"WARN dhcpv6-shield drop: security alert client_bound_dhcpv6",
		"WARN dhcpv6-shield drop: security alert client_bound_dhcpv6 suppressed=2",
	}
	if diff := cmp.Diff(wantLog, fs.logLines(t)); diff != "" {
		t.Errorf("security log (-want +got):\n%s", diff)
	}
}

func TestClassifyReadErr(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want readOutcome
	}{
		{nil, readOK},
		{unix.EAGAIN, readIdle},
		{unix.EINTR, readIdle},
		{errOversize, readBad},
		{unix.ENETDOWN, readBad},
		{unix.ENOBUFS, readBad},
		{unix.EINVAL, readBad},
		{fmt.Errorf("wrapped: %w", unix.ENETDOWN), readBad},
		{unix.EBADF, readFatal},
		{errors.New("other"), readFatal},
	} {
		if got := classifyReadErr(tc.err); got != tc.want {
			t.Errorf("classifyReadErr(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
