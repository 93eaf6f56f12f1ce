package netmon

import (
	"context"
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/scheduler"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func drain(s *state, now time.Time) []Event {
	var out []Event
	for {
		ev, ok := s.next(now)
		if !ok {
			return out
		}
		out = append(out, ev)
	}
}

func kinds(evs []Event) []string {
	var out []string
	for _, e := range evs {
		s := e.Kind.String()
		switch e.Kind {
		case AddrAdded, AddrUpdated, AddrRemoved:
			s += " " + e.Addr.IP.String() + " " + e.Addr.Class.String() + " " + e.Addr.State.String()
			if e.Addr.Registrable {
				s += " reg"
			}
		case ClockJump:
		default:
			s += " " + e.Link.Name
		}
		out = append(out, s)
	}
	return out
}

// Replaying the recorded host session with a consumer that keeps up.
func TestReplayHost(t *testing.T) {
	rec := loadRecording(t, "host")
	s := newState(ClassifyOptions{}, 4096, 1500*time.Millisecond)
	now := t0
	s.resync(messagesOf(t, rec.dump), now)
	evs := drain(s, now)
	for _, d := range rec.stream {
		now = now.Add(100 * time.Millisecond)
		s.applyMessages(messagesOf(t, [][]byte{d}), now)
		evs = append(evs, drain(s, now)...)
	}
	got := kinds(evs)
	t.Logf("events:\n%s", strings.Join(got, "\n"))

	// The events the recorded scenario must produce, in order.
	want := []string{
		"link-added lo",
		"link-added eth0",
		"addr-added ::1 loopback preferred",
		"addr-added fe80::",
		"ra-flags eth0",
		"addr-added 2001:db8:5::10 static tentative",
		"addr-added 2001:db8:6::20 dhcpv6 tentative",
		"addr-added 2001:db8:9::1 static tentative",
		"addr-updated 2001:db8:9::1 static dad-failed",
		"addr-updated 2001:db8:5::10 static preferred reg",
		"addr-updated 2001:db8:6::20 dhcpv6 preferred",
		"ra-flags eth0",
		"link-updated eth0",
		"link-changed eth0",
		"addr-removed 2001:db8:5::10 static preferred reg",
	}
	i := 0
	for _, g := range got {
		if i < len(want) && strings.HasPrefix(g, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("missing (in order) from the replay: %q", want[i])
	}
	for _, g := range got {
		if strings.Contains(g, "2001:db8:9::1") && strings.HasSuffix(g, " reg") {
			t.Errorf("duplicate address registrable: %s", g)
		}
	}
	// Stable, temporary and ULA SLAAC addresses all seen registrable.
	for _, c := range []string{" global preferred reg", " temporary preferred reg", " ula preferred reg"} {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.HasSuffix(g, c) }) {
			t.Errorf("no%s address in the replay", c)
		}
	}
}

// A slow consumer sees one event per object with its latest state, and
// nothing for what came and went.
func TestReplayCoalesced(t *testing.T) {
	rec := loadRecording(t, "host")
	s := newState(ClassifyOptions{}, 4096, 1500*time.Millisecond)
	now := t0
	s.resync(messagesOf(t, rec.dump), now)
	for _, d := range rec.stream {
		now = now.Add(100 * time.Millisecond)
		s.applyMessages(messagesOf(t, [][]byte{d}), now)
	}
	evs := drain(s, now)
	t.Logf("events:\n%s", strings.Join(kinds(evs), "\n"))
	seen := map[string]bool{}
	for _, e := range evs {
		k := e.Kind.String() + e.Link.Name + e.Addr.IP.String()
		if e.Kind != LinkChanged && seen[k] {
			t.Errorf("two %s events for one object", k)
		}
		seen[k] = true
		if e.Addr.IP == netip.MustParseAddr("2001:db8:5::10") {
			t.Errorf("address that came and went reported: %s", e)
		}
		if e.Kind == AddrRemoved {
			t.Errorf("removal of an address the consumer never saw: %s", e)
		}
	}
	// The consumer's view is now the state.
	_, addrs := s.snapshot()
	var fromEvents []Addr
	for _, e := range evs {
		if e.Kind == AddrAdded {
			fromEvents = append(fromEvents, e.Addr)
		}
	}
	slices.SortFunc(fromEvents, func(a, b Addr) int {
		if a.Index != b.Index {
			return a.Index - b.Index
		}
		return a.IP.Compare(b.IP)
	})
	if diff := cmp.Diff(addrs, fromEvents, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("addresses from events differ from the state (-state +events):\n%s", diff)
	}
}

// Helpers to build messages by hand.

func newAddrMsg(typ uint16, index int, ip string, plen int, flags uint32, proto uint8, pref, valid uint32) message {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = unix.AF_INET6
	b[1] = byte(plen)
	b[2] = byte(flags)
	binary.NativeEndian.PutUint32(b[4:8], uint32(index))
	a := netip.MustParseAddr(ip).As16()
	b = appendAttr(b, unix.IFA_ADDRESS, a[:])
	fl := make([]byte, 4)
	binary.NativeEndian.PutUint32(fl, flags)
	b = appendAttr(b, unix.IFA_FLAGS, fl)
	b = appendAttr(b, ifaProto, []byte{proto})
	ci := make([]byte, 16)
	binary.NativeEndian.PutUint32(ci[0:4], pref)
	binary.NativeEndian.PutUint32(ci[4:8], valid)
	b = appendAttr(b, unix.IFA_CACHEINFO, ci)
	return message{Type: typ, Data: b}
}

func newLinkMsg(typ uint16, family uint8, index int, name string, flags uint32, inet6 uint32) message {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = family
	binary.NativeEndian.PutUint32(b[4:8], uint32(index))
	binary.NativeEndian.PutUint32(b[8:12], flags)
	b = appendAttr(b, unix.IFLA_IFNAME, append([]byte(name), 0))
	if family == unix.AF_INET6 {
		v := make([]byte, 4)
		binary.NativeEndian.PutUint32(v, inet6)
		b = appendAttr(b, unix.IFLA_PROTINFO, appendAttr(nil, unix.IFLA_INET6_FLAGS, v))
	}
	return message{Type: typ, Data: b}
}

func appendAttr(b []byte, typ uint16, v []byte) []byte {
	h := make([]byte, 4)
	binary.NativeEndian.PutUint16(h[0:2], uint16(4+len(v)))
	binary.NativeEndian.PutUint16(h[2:4], typ)
	b = append(b, h...)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

const upFlags = unix.IFF_UP | unix.IFF_LOWER_UP

// A burst of identical RTM_NEWADDRs (the kernel sends several per RA and per
// DAD completion) is one event; the countdown of lifetimes is none.
func TestIdenticalBurstFolded(t *testing.T) {
	s := newState(ClassifyOptions{}, 4096, 1500*time.Millisecond)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	drain(s, t0)
	now := t0
	var evs []Event
	for i := range 100 {
		now = t0.Add(time.Duration(i) * 100 * time.Millisecond)
		// Remaining lifetimes count down with time, as the kernel reports.
		el := uint32(now.Sub(t0) / time.Second)
		s.apply(newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::1", 64, 0, ProtoKernelRA, 1800-el, 3600-el), now)
		if i%10 == 0 {
			evs = append(evs, drain(s, now)...)
		}
	}
	evs = append(evs, drain(s, now)...)
	if diff := cmp.Diff([]string{"addr-added 2001:db8::1 global preferred reg"}, kinds(evs)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	// An RA that extends the lifetime is an update.
	s.apply(newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::1", 64, 0, ProtoKernelRA, 1800, 3600), now)
	if got := kinds(drain(s, now)); !slices.Equal(got, []string{"addr-updated 2001:db8::1 global preferred reg"}) {
		t.Errorf("after a 10 s extension: %q", got)
	}
}

// A resync emits only the differences between the state and the dump.
func TestResyncDiff(t *testing.T) {
	s := newState(ClassifyOptions{}, 4096, 1500*time.Millisecond)
	link := newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0)
	inet6 := newLinkMsg(unix.RTM_NEWLINK, unix.AF_INET6, 2, "eth0", upFlags, ifRAManaged)
	a1 := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::1", 64, 0, ProtoKernelRA, 1800, 3600)
	a2 := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::2", 64, unix.IFA_F_PERMANENT, 0, 0xffffffff, 0xffffffff)
	a3 := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::3", 64, unix.IFA_F_PERMANENT, 0, 0xffffffff, 0xffffffff)
	s.resync([]message{link, inet6, a1, a2, a3}, t0)
	if got := len(drain(s, t0)); got != 4 {
		t.Fatalf("initial dump gave %d events, want 4 (link, 3 addresses; M in link-added)", got)
	}
	// The same dump a minute later (lifetimes counted down): nothing.
	now := t0.Add(time.Minute)
	a1later := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::1", 64, 0, ProtoKernelRA, 1740, 3540)
	s.resync([]message{link, inet6, a1later, a2, a3}, now)
	if evs := drain(s, now); len(evs) != 0 {
		t.Errorf("identical resync gave %q", kinds(evs))
	}
	// Messages lost while overflowing: ::2 went away, ::4 came, ::1 was cut
	// to two hours and deprecated, M was cleared.
	a1cut := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::1", 64, unix.IFA_F_DEPRECATED, ProtoKernelRA, 0, 7199)
	a4 := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::4", 128, 0, 0, 100, 200)
	inet6b := newLinkMsg(unix.RTM_NEWLINK, unix.AF_INET6, 2, "eth0", upFlags, 0)
	s.resync([]message{link, inet6b, a1cut, a3, a4}, now)
	got := kinds(drain(s, now))
	want := []string{
		"ra-flags eth0",
		"addr-removed 2001:db8::2 static preferred reg",
		"addr-updated 2001:db8::1 global deprecated reg",
		"addr-added 2001:db8::4 dhcpv6 preferred",
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resync events (-want +got):\n%s", diff)
	}
	// The link vanished during the overflow: its removal and its addresses'.
	s.resync(nil, now)
	got = kinds(drain(s, now))
	slices.Sort(got)
	want = []string{
		"addr-removed 2001:db8::1 global deprecated reg",
		"addr-removed 2001:db8::3 static preferred reg",
		"addr-removed 2001:db8::4 dhcpv6 preferred",
		"link-removed eth0",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("link gone (-want +got):\n%s", diff)
	}
}

// Beyond the queue limit the queue is dropped and one full diff brings the
// consumer up to date.
func TestQueueOverflow(t *testing.T) {
	s := newState(ClassifyOptions{}, 16, 1500*time.Millisecond)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	drain(s, t0)
	for i := range 100 {
		ip := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
		s.apply(newAddrMsg(unix.RTM_NEWADDR, 2, ip.String(), 64, unix.IFA_F_PERMANENT, 0, 0xffffffff, 0xffffffff), t0)
	}
	for i := range 50 {
		ip := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
		s.apply(newAddrMsg(unix.RTM_DELADDR, 2, ip.String(), 64, unix.IFA_F_PERMANENT, 0, 0xffffffff, 0xffffffff), t0)
	}
	if s.q.Len() > 16 {
		t.Errorf("queue holds %d keys, limit 16", s.q.Len())
	}
	evs := drain(s, t0)
	if s.overflows != 1 || len(evs) != 50 {
		t.Errorf("overflows %d, events %d; want 1 and 50", s.overflows, len(evs))
	}
	for _, e := range evs {
		if e.Kind != AddrAdded || e.Addr.IP.As16()[15] < 50 {
			t.Errorf("unexpected %s", e)
		}
	}
}

// After an overflow the rebuilt queue may be long; new changes arriving
// while the consumer works through it do not overflow it again (each
// overflow costs a full diff under the lock).
func TestNoOverflowStormAfterRebuild(t *testing.T) {
	s := newState(ClassifyOptions{}, 16, 1500*time.Millisecond)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	drain(s, t0)
	addr := func(i int) string {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}).String()
	}
	for i := range 1000 {
		s.apply(newAddrMsg(unix.RTM_NEWADDR, 2, addr(i), 64, unix.IFA_F_PERMANENT, 0, 0xffffffff, 0xffffffff), t0)
	}
	got := 0
	for i := 1000; ; i++ {
		if _, ok := s.next(t0); !ok {
			break
		}
		got++
		if i < 1500 { // one new change per event consumed
			s.apply(newAddrMsg(unix.RTM_NEWADDR, 2, addr(i), 64, unix.IFA_F_PERMANENT, 0, 0xffffffff, 0xffffffff), t0)
		}
	}
	if s.overflows != 1 || got != 1500 {
		t.Errorf("overflows %d, events %d; want 1 and 1500", s.overflows, got)
	}
}

// Link generations: a down/up between two Next calls is still a link change;
// an address removed and re-added is a removal then an addition.
func TestCoalescedTransitions(t *testing.T) {
	s := newState(ClassifyOptions{}, 4096, 1500*time.Millisecond)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	a := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::1", 64, unix.IFA_F_PERMANENT, 0, 0xffffffff, 0xffffffff)
	s.apply(a, t0)
	drain(s, t0)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", unix.IFF_UP, 0), t0)
	s.apply(newAddrMsg(unix.RTM_DELADDR, 2, "2001:db8::1", 64, unix.IFA_F_PERMANENT, 0, 0xffffffff, 0xffffffff), t0)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth1", upFlags, 0), t0)
	s.apply(a, t0)
	got := kinds(drain(s, t0))
	want := []string{
		"link-renamed eth1",
		"link-changed eth1",
		"addr-removed 2001:db8::1 static preferred reg",
		"addr-added 2001:db8::1 static preferred reg",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// Ifname follows the rename.
	_, addrs := s.snapshot()
	if len(addrs) != 1 || addrs[0].Ifname != "eth1" {
		t.Errorf("snapshot %v", addrs)
	}
}

// Run: dump, stream, ENOBUFS, re-subscribe, re-dump; only differences reach
// the consumer; all goroutines stop with the context.
func TestRunResync(t *testing.T) {
	link := newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0)
	a1 := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::1", 64, unix.IFA_F_PERMANENT, 0, 0xffffffff, 0xffffffff)
	a2 := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::2", 64, unix.IFA_F_PERMANENT, 0, 0xffffffff, 0xffffffff)
	a3 := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::3", 64, unix.IFA_F_PERMANENT, 0, 0xffffffff, 0xffffffff)
	k := &fakeKernel{
		dumps: [][]message{{link, a1}, {link, a1, a3}},
		scripts: []script{
			{batches: [][]message{{a2}}, err: unix.ENOBUFS}, // ::2 added, then messages lost
			{},
		},
	}
	ignore := goleak.IgnoreCurrent()
	m := newMonitor(Options{Logger: testLogger(t)}, k)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var got []string
	for !slices.Contains(got, "addr-added 2001:db8::3 static preferred reg") {
		c, cc := context.WithTimeout(ctx, 5*time.Second)
		ev, err := m.Next(c)
		cc()
		if err != nil {
			t.Fatalf("Next: %v after %q", err, got)
		}
		got = append(got, kinds([]Event{ev})...)
	}
	want := []string{
		"link-added eth0",
		"addr-added 2001:db8::1 static preferred reg",
		"addr-added 2001:db8::2 static preferred reg",
		"addr-removed 2001:db8::2 static preferred reg",
		"addr-added 2001:db8::3 static preferred reg",
	}
	// A consumer slower than the resync never hears of ::2: also right.
	alt := []string{want[0], want[1], want[4]}
	if cmp.Diff(want, got) != "" && cmp.Diff(alt, got) != "" {
		t.Errorf("events %q, want %q or %q", got, want, alt)
	}
	if err := m.Run(ctx); err != ErrRunning {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if st := m.Stats(); st.Resyncs != 1 {
		t.Errorf("stats %+v, want 1 resync", st)
	}
	goleak.VerifyNone(t, ignore)
}

// A wall-clock jump is reported and every lifetime is re-read.
func TestClockJump(t *testing.T) {
	link := newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0)
	a1 := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::1", 64, 0, ProtoKernelRA, 1800, 3600)
	// After "resume" the kernel's remaining lifetime is 600 s less than
	// our monotonic clock expects.
	a1after := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::1", 64, 0, ProtoKernelRA, 1200, 3000)
	k := &fakeKernel{dumps: [][]message{{link, a1}, {link, a1after}}}
	m := newMonitor(Options{Logger: testLogger(t), ClockCheckInterval: 20 * time.Millisecond}, k)
	var skew atomic64
	m.wallNow = func() time.Time { return time.Now().Round(0).Add(time.Duration(skew.load())) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	next := func() Event {
		c, cc := context.WithTimeout(ctx, 5*time.Second)
		defer cc()
		ev, err := m.Next(c)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	next()
	next()
	skew.store(int64(10 * time.Minute))
	if ev := next(); ev.Kind != ClockJump {
		t.Fatalf("got %s, want clock-jump", ev)
	}
	if ev := next(); ev.Kind != AddrUpdated || ev.Addr.Valid != 3000*time.Second {
		t.Fatalf("got %s, want the address with its re-read lifetime", ev)
	}
	cancel()
	<-done
	if st := m.Stats(); st.ClockJumps != 1 {
		t.Errorf("stats %+v", st)
	}
}

// Lookup parses the kernel's answer and reports absence without error.
func TestLookup(t *testing.T) {
	a1 := newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::1", 64, 0, ProtoKernelRA, 1800, 3600)
	k := &fakeKernel{get: func(i int, ip netip.Addr) ([]message, error) {
		if ip == netip.MustParseAddr("2001:db8::1") && i == 2 {
			return []message{a1}, nil
		}
		return nil, unix.EADDRNOTAVAIL
	}}
	m := newMonitor(Options{Clock: scheduler.NewFakeClock(t0)}, k)
	a, ok, err := m.Lookup(2, netip.MustParseAddr("2001:db8::1"))
	want := Addr{Index: 2, IP: netip.MustParseAddr("2001:db8::1"), PrefixLen: 64, Proto: 2,
		Preferred: 1800 * time.Second, Valid: 3600 * time.Second, Observed: t0, Class: ClassGlobal, State: StatePreferred, Registrable: true}
	if diff := cmp.Diff(want, a, cmpopts.EquateComparable(netip.Addr{})); diff != "" || !ok || err != nil {
		t.Errorf("Lookup: %t %v (-want +got):\n%s", ok, err, diff)
	}
	if _, ok, err := m.Lookup(2, netip.MustParseAddr("2001:db8::2")); ok || err != nil {
		t.Errorf("Lookup(absent) = %t, %v", ok, err)
	}
}

// A carrier flap entirely inside a resync gap (down and up never seen) is
// still a link change: the kernel's carrier-up counter moved.
func TestCarrierFlapBetweenLooks(t *testing.T) {
	s := newState(ClassifyOptions{}, 4096, 1500*time.Millisecond)
	link := func(ups uint32) message {
		m := newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0)
		v := make([]byte, 4)
		binary.NativeEndian.PutUint32(v, ups)
		m.Data = appendAttr(m.Data, unix.IFLA_CARRIER_UP_COUNT, v)
		return m
	}
	s.apply(link(1), t0)
	drain(s, t0)
	s.resync([]message{link(1)}, t0)
	if evs := drain(s, t0); len(evs) != 0 {
		t.Fatalf("unchanged dump gave %v", evs)
	}
	s.resync([]message{link(2)}, t0)
	evs := drain(s, t0)
	if len(evs) == 0 || evs[0].Kind != LinkChanged {
		t.Fatalf("events %v after the counter moved, want LinkChanged", evs)
	}
}
