package netmon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/ndp"
	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/scheduler"
)

// raBytes is an RA as it arrives on a raw ICMPv6 socket (from the type
// octet), built by mdlayher/ndp.
func raBytes(t testing.TB, m, o bool, lifetime time.Duration, opts ...ndp.Option) []byte {
	t.Helper()
	b, err := ndp.MarshalMessage(&ndp.RouterAdvertisement{
		CurrentHopLimit: 64, ManagedConfiguration: m, OtherConfiguration: o,
		RouterLifetime: lifetime, Options: opts,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseRA(t *testing.T) {
	pio := &ndp.PrefixInformation{PrefixLength: 64, OnLink: true, AutonomousAddressConfiguration: true,
		ValidLifetime: ndp.Infinity, PreferredLifetime: time.Hour, Prefix: netip.MustParseAddr("2001:db8:1::")}
	valid := raBytes(t, false, true, 1800*time.Second, pio, &ndp.MTU{MTU: 1500})
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), valid...)) }
	tests := []struct {
		name string
		b    []byte
		want raInfo
		err  error
	}{
		{"O and PIO", valid, raInfo{other: true, lifetime: 1800 * time.Second}, nil},
		{"M, no options", raBytes(t, true, false, 9000*time.Second), raInfo{managed: true, lifetime: 9000 * time.Second}, nil},
		{"lifetime 0", raBytes(t, true, true, 0), raInfo{managed: true, other: true}, nil},
		{"max lifetime", raBytes(t, false, false, 65535*time.Second), raInfo{lifetime: 65535 * time.Second}, nil},
		{"empty", nil, raInfo{}, errRAMalformed},
		{"15 octets", valid[:15], raInfo{}, errRAMalformed},
		{"router solicitation", mod(func(b []byte) []byte { b[0] = 133; return b }), raInfo{}, errRAMalformed},
		{"code 1", mod(func(b []byte) []byte { b[1] = 1; return b }), raInfo{}, errRAMalformed},
		{"option of length 0", mod(func(b []byte) []byte { b[17] = 0; return b }), raInfo{}, errRAMalformed},
		{"option past the end", mod(func(b []byte) []byte { return b[:len(b)-1] }), raInfo{}, errRAMalformed},
		{"one stray octet", mod(func(b []byte) []byte { return append(b, 1) }), raInfo{}, errRAMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRA(tt.b)
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(raInfo{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = parseRA(valid) }); n != 0 {
		t.Errorf("parseRA allocates %v times per RA", n)
	}
}

// RFC 4861 §6.1.2: only an RA from a link-local source with hop limit 255
// can come from a router on the link.
func TestCheckRASource(t *testing.T) {
	tests := []struct {
		src string
		hop int
		err error
	}{
		{"fe80::1", 255, nil},
		{"fe80::1%eth0", 255, nil},
		{"fe80::1", 254, errRAHopLimit},
		{"fe80::1", 64, errRAHopLimit},
		{"fe80::1", -1, errRAHopLimit}, // no control message
		{"2001:db8::1", 255, errRANotLinkLocal},
		{"fd00::1", 255, errRANotLinkLocal},
		{"::", 255, errRANotLinkLocal},
		{"ff02::1", 255, errRANotLinkLocal},
		{"::ffff:169.254.0.1", 255, errRANotLinkLocal},
		{"169.254.0.1", 255, errRANotLinkLocal},
	}
	for _, tt := range tests {
		if err := checkRASource(netip.MustParseAddr(tt.src), tt.hop); err != tt.err {
			t.Errorf("checkRASource(%s, %d) = %v, want %v", tt.src, tt.hop, err, tt.err)
		}
	}
	if err := checkRASource(netip.Addr{}, 255); err != errRANotLinkLocal {
		t.Errorf("checkRASource(invalid) = %v", err)
	}
}

// The router table, step by step on a fake clock: a flag holds while a
// router that set it is within its lifetime; at most the limit are kept.
func TestRouters(t *testing.T) {
	r1, r2, r3 := netip.MustParseAddr("fe80::1"), netip.MustParseAddr("fe80::2"), netip.MustParseAddr("fe80::3")
	type step struct {
		at      time.Duration // since t0
		src     netip.Addr    // invalid: just expire at this time
		ra      raInfo
		err     error
		m, o    bool
		n       int
		nextExp time.Duration // after expiring at this time; -1: none
	}
	steps := []step{
		{at: 0, src: r1, ra: raInfo{other: true, lifetime: 30 * time.Second}, o: true, n: 1, nextExp: 30 * time.Second},
		{at: 10 * time.Second, src: r2, ra: raInfo{managed: true, lifetime: 60 * time.Second}, m: true, o: true, n: 2, nextExp: 30 * time.Second},
		// Table of 2 is full: a third router is refused, the others stay.
		{at: 20 * time.Second, src: r3, ra: raInfo{managed: true, other: true, lifetime: time.Hour}, err: errRATableFull, m: true, o: true, n: 2, nextExp: 30 * time.Second},
		// Router 1 re-advertises without O: its new RA is what counts.
		{at: 25 * time.Second, src: r1, ra: raInfo{lifetime: 30 * time.Second}, m: true, n: 2, nextExp: 55 * time.Second},
		// Router 1 sets O again, then its lifetime runs out (55 s).
		{at: 26 * time.Second, src: r1, ra: raInfo{other: true, lifetime: 29 * time.Second}, m: true, o: true, n: 2, nextExp: 55 * time.Second},
		{at: 55 * time.Second, m: true, n: 1, nextExp: 70 * time.Second},
		// Room again: router 3 gets in.
		{at: 56 * time.Second, src: r3, ra: raInfo{other: true, lifetime: 10 * time.Second}, m: true, o: true, n: 2, nextExp: 66 * time.Second},
		// Router 2 stops being a default router (lifetime 0, RFC 4861
		// §6.3.4) but still sets M: M counts on, for the hold (100 s).
		{at: 57 * time.Second, src: r2, ra: raInfo{managed: true}, m: true, o: true, n: 2, nextExp: 66 * time.Second},
		{at: 65*time.Second + 999*time.Millisecond, m: true, o: true, n: 2, nextExp: 66 * time.Second},
		{at: 66 * time.Second, m: true, n: 1, nextExp: 157 * time.Second},
		{at: 156*time.Second + 999*time.Millisecond, m: true, n: 1, nextExp: 157 * time.Second},
		// It sent nothing more: after the hold its M is gone.
		{at: 157 * time.Second, n: 0, nextExp: -1},
		// A router that is not a default router and sets nothing counts
		// as a router that sets nothing.
		{at: 158 * time.Second, src: r1, ra: raInfo{}, n: 1, nextExp: 258 * time.Second},
		// And a non-default router clears its flags at once.
		{at: 159 * time.Second, src: r3, ra: raInfo{other: true}, o: true, n: 2, nextExp: 258 * time.Second},
		{at: 160 * time.Second, src: r3, ra: raInfo{}, n: 2, nextExp: 258 * time.Second},
	}
	r := routers{}
	for i, s := range steps {
		now := t0.Add(s.at)
		if s.src.IsValid() {
			if _, err := r.observe(s.src, s.ra, now, 2, 100*time.Second); err != s.err {
				t.Fatalf("step %d: observe err %v, want %v", i, err, s.err)
			}
		}
		_, next := r.expire(now)
		m, o := r.flags()
		if m != s.m || o != s.o || len(r) != s.n {
			t.Errorf("step %d at %v: M %t O %t routers %d, want %t %t %d", i, s.at, m, o, len(r), s.m, s.o, s.n)
		}
		want := time.Time{}
		if s.nextExp >= 0 {
			want = t0.Add(s.nextExp)
		}
		if !next.Equal(want) {
			t.Errorf("step %d: next expiry %v, want %v", i, next, want)
		}
	}
}

// syncBuf collects log output.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) lines(substr string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range strings.Split(s.b.String(), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// wireMonitor is a Monitor on a fake clock with link 2 (eth0) up, its RA
// timers live as while Run runs, and its log captured.
func wireMonitor(t *testing.T, o Options) (*Monitor, *scheduler.FakeClock, *syncBuf) {
	t.Helper()
	clk := scheduler.NewFakeClock(t0)
	logs := &syncBuf{}
	o.Clock = clk
	o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	m := newMonitor(o, &fakeKernel{})
	m.st.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	drain(m.st, t0)
	m.startRATimers()
	t.Cleanup(m.stopRATimers)
	return m, clk, logs
}

func (m *Monitor) drain() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return drain(m.st, m.clk.Now())
}

// RAs seen on the wire set the link's flags while their routers' lifetimes
// last; the expiry timer (on the injected clock) clears them; a reconnect
// forgets them.
func TestWireRA(t *testing.T) {
	m, clk, _ := wireMonitor(t, Options{})
	r1, r2 := netip.MustParseAddr("fe80::1"), netip.MustParseAddr("fe80::2")
	m.handleRA(2, r1, 255, raBytes(t, false, true, 30*time.Second))
	m.handleRA(2, r2, 255, raBytes(t, true, false, 60*time.Second))
	m.handleRA(2, r2, 255, raBytes(t, true, false, 60*time.Second))
	evs := m.drain()
	if len(evs) != 1 || evs[0].Kind != RAFlags || !evs[0].Link.Managed || !evs[0].Link.Other || !evs[0].Link.RAReceived {
		t.Fatalf("events %q %v", kinds(evs), evs)
	}
	// Router 1's lifetime runs out: O goes, M stays.
	clk.Advance(29 * time.Second)
	if evs := m.drain(); len(evs) != 0 {
		t.Fatalf("before router 1 expires: %v", evs)
	}
	clk.Advance(time.Second)
	if evs := m.drain(); len(evs) != 1 || evs[0].Kind != RAFlags || !evs[0].Link.Managed || evs[0].Link.Other {
		t.Fatalf("after router 1 expired: %v", evs)
	}
	// Router 2 re-advertises before its lifetime ends: M stays.
	clk.Advance(20 * time.Second)
	m.handleRA(2, r2, 255, raBytes(t, true, false, 60*time.Second))
	clk.Advance(50 * time.Second)
	if evs := m.drain(); len(evs) != 0 {
		t.Fatalf("router 2 refreshed: %v", evs)
	}
	// Then clears M (and stops being a default router): M goes at once;
	// an RA was still received.
	m.handleRA(2, r2, 255, raBytes(t, false, false, 0))
	if evs := m.drain(); len(evs) != 1 || evs[0].Link.Managed || evs[0].Link.Other || !evs[0].Link.RAReceived {
		t.Fatalf("after router 2 withdrew: %v", evs)
	}
	// Carrier down and up: nothing from the wire holds any more.
	m.handleRA(2, r1, 255, raBytes(t, false, true, time.Hour))
	m.drain()
	m.mu.Lock()
	m.st.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", unix.IFF_UP, 0), t0)
	m.st.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	m.mu.Unlock()
	evs = m.drain()
	if len(evs) != 1 || evs[0].Kind != LinkChanged || evs[0].Link.Other || evs[0].Link.RAReceived {
		t.Fatalf("after reconnect: %v", evs)
	}
	if st := m.Stats(); st.Routers != 0 || st.RAsAccepted != 6 {
		t.Errorf("stats after reconnect %+v", st)
	}
	// An RA for an unknown interface is ignored.
	m.handleRA(9, r1, 255, raBytes(t, true, false, time.Hour))
	if evs := m.drain(); len(evs) != 0 {
		t.Fatalf("unknown interface: %q", kinds(evs))
	}
}

// RFC 4861 §6.1.2: an RA from a global source or with a hop limit below 255
// (forwarded from off the link) or malformed cannot satisfy the M/O
// condition; each is counted and logged with its reason.
func TestWireRAForged(t *testing.T) {
	m, _, logs := wireMonitor(t, Options{})
	mo := raBytes(t, true, true, time.Hour)
	m.handleRA(2, netip.MustParseAddr("2001:db8::1"), 255, mo)
	m.handleRA(2, netip.MustParseAddr("fe80::1"), 254, mo)
	m.handleRA(2, netip.MustParseAddr("fe80::1"), -1, mo)
	m.handleRA(2, netip.MustParseAddr("fe80::1"), 255, mo[:12])
	if evs := m.drain(); len(evs) != 0 {
		t.Fatalf("forged RAs changed the link: %v", evs)
	}
	st := m.Stats()
	want := map[string]int{"source not link-local": 1, "hop limit not 255": 2, "malformed RA": 1}
	if diff := cmp.Diff(want, st.RAsIgnored); diff != "" || st.RAsAccepted != 0 || st.Routers != 0 {
		t.Errorf("stats %+v (-want +got):\n%s", st, diff)
	}
	for _, r := range []string{`reason="source not link-local"`, `reason="hop limit not 255"`, `reason="malformed RA"`} {
		if len(logs.lines(r)) == 0 {
			t.Errorf("no log line with %s", r)
		}
	}
	// The real router's RA still counts.
	m.handleRA(2, netip.MustParseAddr("fe80::1"), 255, raBytes(t, false, true, time.Hour))
	if evs := m.drain(); len(evs) != 1 || !evs[0].Link.Other || evs[0].Link.Managed {
		t.Fatalf("valid RA: %v", evs)
	}
}

// A flood of RAs from distinct forged link-local sources: the table holds
// MaxRouters, the routers known before keep counting, memory does not grow
// with the flood, and the log says so once per interval, not per RA.
func TestWireRAFlood(t *testing.T) {
	m, clk, logs := wireMonitor(t, Options{MaxRouters: 4, RALogInterval: 10 * time.Second})
	real := netip.MustParseAddr("fe80::1")
	m.handleRA(2, real, 255, raBytes(t, false, true, 1800*time.Second))
	m.drain()
	flood := raBytes(t, true, false, 9000*time.Second)
	src := func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
	}
	const n = 100000
	for i := range n {
		m.handleRA(2, src(i+2), 255, flood)
		if i%1000 == 999 {
			clk.Advance(100 * time.Millisecond) // 10,000 RAs/s
		}
	}
	st := m.Stats()
	if st.Routers != 4 || st.RAsIgnored["too many routers"] != n-3 || st.RAsAccepted != 4 {
		t.Errorf("stats after the flood %+v", st)
	}
	m.mu.Lock()
	routers := len(m.st.links[2].routers)
	m.mu.Unlock()
	if routers != 4 {
		t.Errorf("%d routers kept, want 4", routers)
	}
	// 10 s of flood: one line at once, one per interval after.
	clk.Advance(10 * time.Second)
	lines := logs.lines(`reason="too many routers"`)
	if len(lines) < 1 || len(lines) > 3 {
		t.Errorf("%d log lines for the flood, want 1 to 3:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, fmt.Sprintf("total=%d", n-3)) || !strings.Contains(last, "max_routers=4") {
		t.Errorf("last line %q does not give the total %d", last, n-3)
	}
	// The real router, known before the flood, still counts; the flood's
	// three routers (M) expire after their 9000 s.
	m.handleRA(2, real, 255, raBytes(t, false, true, 1800*time.Second))
	clk.Advance(9000 * time.Second)
	m.handleRA(2, real, 255, raBytes(t, false, true, 1800*time.Second))
	m.drain()
	m.mu.Lock()
	l := m.st.links[2].Link
	m.mu.Unlock()
	if l.Managed || !l.Other {
		t.Errorf("after the flood expired: M %t O %t, want only O", l.Managed, l.Other)
	}
}

// Stopping the RA timers writes what the log held and arms nothing more.
func TestWireRATimersStop(t *testing.T) {
	m, clk, logs := wireMonitor(t, Options{RALogInterval: time.Minute})
	for range 5 {
		m.handleRA(2, netip.MustParseAddr("2001:db8::1"), 255, raBytes(t, true, true, time.Hour))
	}
	m.handleRA(2, netip.MustParseAddr("fe80::1"), 255, raBytes(t, true, true, time.Hour))
	m.stopRATimers()
	if lines := logs.lines("not link-local"); len(lines) != 2 || !strings.Contains(lines[1], "count=4") {
		t.Errorf("log lines %q, want the first at once and the other 4 summed at stop", lines)
	}
	clk.Advance(2 * time.Hour)
	if st := m.Stats(); st.Routers != 1 {
		t.Errorf("a stopped monitor expired routers: %+v", st)
	}
}

// The kernel's flags are stale after a reconnect until it reports an RA.
func TestKernelFlagsStaleAfterReconnect(t *testing.T) {
	s := newState(ClassifyOptions{}, 4096, time.Second)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_INET6, 2, "eth0", upFlags, ifRAManaged), t0)
	drain(s, t0)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", unix.IFF_UP, 0), t0)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	// A resync's dump still shows the old flags: not evidence of an RA.
	s.resync([]message{
		newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0),
		newLinkMsg(unix.RTM_NEWLINK, unix.AF_INET6, 2, "eth0", upFlags, ifRAManaged),
	}, t0)
	evs := drain(s, t0)
	if len(evs) != 1 || evs[0].Kind != LinkChanged || evs[0].Link.Managed {
		t.Fatalf("after reconnect: %q %v", kinds(evs), evs)
	}
	// The kernel processes an RA with a PIO (RTM_NEWPREFIX): the flags
	// count again.
	const prefixAddress, prefixCacheinfo = 1, 2 // linux/rtnetlink.h
	p := make([]byte, sizeofPrefixmsg)
	p[0] = unix.AF_INET6
	p[4] = 2
	p[9] = 64
	pa := netip.MustParseAddr("2001:db8::").As16()
	p = appendAttr(p, prefixAddress, pa[:])
	p = appendAttr(p, prefixCacheinfo, make([]byte, 8))
	s.apply(message{Type: unix.RTM_NEWPREFIX, Data: p}, t0)
	evs = drain(s, t0)
	if len(evs) != 1 || evs[0].Kind != RAFlags || !evs[0].Link.Managed {
		t.Fatalf("after the RA: %q", kinds(evs))
	}
}

// cmsg builds one control message as recvmsg returns it.
func cmsg(level, typ int, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestParseRACmsgs(t *testing.T) {
	hop := binary.NativeEndian.AppendUint32(nil, 255)
	pktinfo := make([]byte, unix.SizeofInet6Pktinfo)
	binary.NativeEndian.PutUint32(pktinfo[16:], 7)
	both := append(cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pktinfo), cmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, hop)...)
	tests := []struct {
		name          string
		oob           []byte
		index, hopLim int
	}{
		{"both", both, 7, 255},
		{"hop limit only", cmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, hop), -1, 255},
		{"none", nil, -1, -1},
		{"other level", cmsg(unix.SOL_SOCKET, unix.IPV6_HOPLIMIT, hop), -1, -1},
		{"second without its padding", both[:len(both)-4], 7, 255},
		{"truncated second", both[:len(both)-8], 7, -1},
		{"short hop limit", cmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, hop[:2]), -1, -1},
	}
	for _, tt := range tests {
		if i, h := parseRACmsgs(tt.oob); i != tt.index || h != tt.hopLim {
			t.Errorf("%s: parseRACmsgs = %d, %d; want %d, %d", tt.name, i, h, tt.index, tt.hopLim)
		}
	}
	if n := testing.AllocsPerRun(100, func() { parseRACmsgs(both) }); n != 0 {
		t.Errorf("parseRACmsgs allocates %v times", n)
	}
}
