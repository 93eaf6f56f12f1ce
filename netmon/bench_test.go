package netmon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/addrreg/addrreg/scheduler"
	"github.com/addrreg/addrreg/test/topo"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BenchmarkReplay1000Addrs is the CPU cost of 1,000 address events: one op
// parses and applies the recorded burst of 1,000 addresses being added
// (testdata/burst.nlrec: 2,000 RTM_NEWADDR datagrams, add then DAD
// completion) and consumes every event with a consumer that keeps up.
//
//	go test -run '^$' -bench Replay1000 -benchmem ./netmon
func BenchmarkReplay1000Addrs(b *testing.B) {
	rec := loadRecording(b, "burst")
	dump := messagesOf(b, rec.dump)
	events := 0
	b.ReportAllocs()
	for b.Loop() {
		s := newState(ClassifyOptions{}, 4096, 1500*time.Millisecond)
		now := t0
		s.resync(dump, now)
		for _, d := range rec.stream {
			ms, err := parseDatagram(slices.Clone(d))
			if err != nil {
				b.Fatal(err)
			}
			s.applyMessages(ms, now)
			for {
				if _, ok := s.next(now); !ok {
					break
				}
				events++
			}
		}
	}
	b.ReportMetric(float64(events)/float64(b.N), "events/op")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events)*1000, "ns/1000events")
}

// chanKernel streams whatever the benchmark sends.
type chanKernel struct{ c chan []message }

func (k *chanKernel) subscribe(int) (stream, error) {
	return &chanStream{k.c, make(chan struct{})}, nil
}
func (k *chanKernel) dump() ([]message, error) { return nil, nil }
func (k *chanKernel) getAddr(int, netip.Addr) ([]message, error) {
	return nil, nil
}
func (k *chanKernel) closeIdle()   {}
func (k *chanKernel) close() error { return nil }

type chanStream struct {
	c      chan []message
	closed chan struct{}
}

func (s *chanStream) recv(deadline time.Time) ([]message, error) {
	tm := time.NewTimer(time.Until(deadline))
	defer tm.Stop()
	select {
	case m := <-s.c:
		return m, nil
	case <-s.closed:
		return nil, os.ErrClosed
	case <-tm.C:
		return nil, os.ErrDeadlineExceeded
	}
}

func (s *chanStream) close() error {
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
	return nil
}

// BenchmarkReplayLatency is the in-process latency from a netlink message
// reaching the reader to Next returning its event (no kernel): one op is one
// recorded RTM_NEWADDR through Run's reader, the state and Next.
//
//	go test -run '^$' -bench ReplayLatency ./netmon
func BenchmarkReplayLatency(b *testing.B) {
	rec := loadRecording(b, "burst")
	var msgs [][]message
	for _, d := range rec.stream {
		msgs = append(msgs, messagesOf(b, [][]byte{d}))
	}
	k := &chanKernel{c: make(chan []message)}
	m := newMonitor(Options{}, k)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	del := messagesOf(b, rec.dump) // links only: resets nothing, just keeps the link
	_ = del
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		batch := msgs[i%len(msgs)]
		i++
		if i%len(msgs) == 0 {
			// Start over: the recorded adds must be new again.
			m.mu.Lock()
			m.st = newState(ClassifyOptions{}, 4096, 1500*time.Millisecond)
			m.st.signal = m.signal
			m.mu.Unlock()
		}
		k.c <- batch
		if _, err := m.Next(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cancel()
	<-done
}

// BenchmarkNetnsLatency is the end-to-end latency on a real kernel: one op
// adds an address in a namespace (RTM_NEWADDR from a netlink handle) and
// waits until Next returns its AddrAdded, then removes it and waits for
// AddrRemoved; reported per event (ns/event), with percentiles.
//
//	sudo go test -run '^$' -bench NetnsLatency ./netmon
func BenchmarkNetnsLatency(b *testing.B) {
	topo.RequireRoot(b)
	n := topo.New(b)
	nd := n.Node("host")
	nd.MustExec(b, "ip", "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1")
	nd.MustExec(b, "ip", "link", "set", "dummy0", "up")
	ns, err := nd.Handle()
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	link, err := h.LinkByName("dummy0")
	if err != nil {
		b.Fatal(err)
	}
	m := New(Options{Netns: ns})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	waitFor := func(kind EventKind, ip netip.Addr) {
		for {
			c, cc := context.WithTimeout(ctx, 5*time.Second)
			ev, err := m.Next(c)
			cc()
			if err != nil {
				b.Fatalf("waiting for %s %s: %v", kind, ip, err)
			}
			if ev.Kind == kind && ev.Addr.IP == ip {
				return
			}
		}
	}
	// Let the initial dump pass.
	waitForLink := func() {
		for {
			ev, err := m.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if ev.Kind == LinkAdded && ev.Link.Name == "dummy0" {
				return
			}
		}
	}
	waitForLink()
	// lat: from before the syscall; after: from its return (the kernel has
	// queued the notification by then), a bound on the monitor's own part.
	var lat, after []time.Duration
	i := 0
	for b.Loop() {
		i++
		ip := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x42, 14: byte(i >> 8), 15: byte(i)})
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: 0x2 /* IFA_F_NODAD */}
		start := time.Now()
		if err := h.AddrAdd(link, a); err != nil {
			b.Fatal(err)
		}
		ret := time.Now()
		waitFor(AddrAdded, ip)
		lat = append(lat, time.Since(start))
		after = append(after, time.Since(ret))
		start = time.Now()
		if err := h.AddrDel(link, a); err != nil {
			b.Fatal(err)
		}
		ret = time.Now()
		waitFor(AddrRemoved, ip)
		lat = append(lat, time.Since(start))
		after = append(after, time.Since(ret))
	}
	b.StopTimer()
	slices.Sort(lat)
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	b.ReportMetric(float64(sum.Nanoseconds())/float64(len(lat)), "ns/event")
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	slices.Sort(after)
	b.ReportMetric(float64(after[len(after)/2].Nanoseconds()), "after-syscall-p50-ns")
}

// BenchmarkNetnsLookup is the cost of one Lookup (a fresh RTM_GETADDR in
// another namespace: socket, setns, request, answer), which the registrar
// pays per transmission.
//
//	sudo go test -run '^$' -bench NetnsLookup ./netmon
func BenchmarkNetnsLookup(b *testing.B) {
	topo.RequireRoot(b)
	n := topo.New(b)
	nd := n.Node("host")
	nd.MustExec(b, "ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad")
	ns, err := nd.Handle()
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	m := New(Options{Netns: ns})
	ifi := 0
	out := nd.MustExec(b, "cat", "/sys/class/net/eth0/ifindex")
	if _, err := fmt.Sscan(out, &ifi); err != nil {
		b.Fatal(err)
	}
	ip := netip.MustParseAddr("2001:db8::1")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := m.Lookup(ifi, ip); !ok || err != nil {
			b.Fatalf("Lookup: %t %v", ok, err)
		}
	}
}

// BenchmarkHandleRAFlood: one RA of a flood from distinct forged link-local
// sources, the table already full (the steady state of a flood).
//
//	go test -run '^$' -bench HandleRAFlood -benchmem ./netmon
func BenchmarkHandleRAFlood(b *testing.B) {
	m := newMonitor(Options{Clock: scheduler.NewFakeClock(t0)}, &fakeKernel{})
	m.st.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	ra := raBytes(b, false, false, time.Hour)
	src := func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
	}
	for i := range DefaultMaxRouters {
		m.handleRA(2, src(i), 255, ra)
	}
	b.ReportAllocs()
	i := DefaultMaxRouters
	for b.Loop() {
		m.handleRA(2, src(i), 255, ra)
		i++
	}
	if st := m.Stats(); st.Routers != DefaultMaxRouters {
		b.Fatalf("%d routers kept", st.Routers)
	}
}

// BenchmarkStateMemory10k is what the monitor keeps for 10,000 addresses
// on one link once the consumer has been told of them all: heap-B/addr,
// the live heap after a collection over the addresses (addrregd idles
// with 10,000 static addresses: BenchmarkE2EIdle10k).
//
//	go test -run '^$' -bench StateMemory ./netmon
func BenchmarkStateMemory10k(b *testing.B) {
	const n = 10000
	msgs := []message{newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", unix.IFF_UP|unix.IFF_LOWER_UP, 0)}
	for i := range n {
		msgs = append(msgs, newAddrMsg(unix.RTM_NEWADDR, 2, fmt.Sprintf("2001:db8::%x:1", i+1), 64, unix.IFA_F_PERMANENT|unix.IFA_F_NODAD, 0, 0xffffffff, 0xffffffff))
	}
	var perAddr float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := newState(ClassifyOptions{}, 4096, 1500*time.Millisecond)
		s.resync(msgs, t0)
		for {
			if _, ok := s.next(t0); !ok {
				break
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if len(s.addrs) != n || len(s.vaddrs) != n {
			b.Fatalf("%d addresses, %d told, want %d", len(s.addrs), len(s.vaddrs), n)
		}
		perAddr = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(s)
	}
	b.ReportMetric(perAddr, "heap-B/addr")
	b.ReportMetric(0, "ns/op")
}
