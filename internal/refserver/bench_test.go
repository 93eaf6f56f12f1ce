package refserver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv6"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/addrreg/addrreg/test/pgtest"
)

func benchAddrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		a := cliAddr.As16()
		a[14], a[15] = byte(i>>8), byte(i)
		out[i] = netip.AddrFrom16(a)
	}
	return out
}

// BenchmarkHandleInform: the pure handler, validation to reply, over 1024
// bindings being refreshed.
func BenchmarkHandleInform(b *testing.B) {
	h := testHandler()
	addrs := benchAddrs(1024)
	pkts := make([]Packet, len(addrs))
	for i, a := range addrs {
		pkts[i] = pkt(a, newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(a, 1800, 3600).bytes())
	}
	now := t0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, _, err := h.Handle(now, pkts[i%len(pkts)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandleInformRelayed: the server's workload in issue 13's
// benchmark: each INFORM relayed, from a new client for a new address,
// the reply built into a reused buffer as the server does.
func BenchmarkHandleInformRelayed(b *testing.B) {
	relay := netip.MustParseAddr("2001:db8:2::1")
	cfg := testHandler(func(c *HandlerConfig) {
		c.Prefixes = map[string][]netip.Prefix{relay.String(): {netip.MustParsePrefix("2001:db8:2::/64")}}
	}).cfg
	h := NewHandler(cfg)
	const n = 1 << 16
	pkts := make([]Packet, n)
	for i := range pkts {
		a := netip.MustParseAddr("2001:db8:2::").As16()
		a[12], a[13], a[14], a[15] = 1, byte(i>>16), byte(i>>8), byte(i)
		duid := []byte{0, 2, 0, 0, 0x7e, 0x99, 0, 1, byte(i >> 8), byte(i)}
		inf := newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, duid).ia(netip.AddrFrom16(a), 1800, 3600).bytes()
		pkts[i] = pkt(relay, relayFwd(0, relay, netip.AddrFrom16(a), nil, inf))
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == n {
			// Start over on a fresh handler: registrations, not refreshes.
			b.StopTimer()
			h, i = NewHandler(cfg), 0
			b.StartTimer()
		}
		if _, _, _, err := h.HandleInto(buf, t0, pkts[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkHandleLeasequery: QUERY_BY_ADDRESS over 1024 bindings.
func BenchmarkHandleLeasequery(b *testing.B) {
	h := testHandler()
	for i, a := range benchAddrs(1024) {
		duid := []byte{0, 3, 0, 1, 2, 0, 0, 0, byte(i >> 8), byte(i)}
		if _, _, _, err := h.Handle(t0, pkt(a, newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, duid).ia(a, 1800, 3600).bytes())); err != nil {
			b.Fatal(err)
		}
	}
	q := Packet{Data: EncodeLeasequery([3]byte{1, 2, 3}, []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 5}, netip.Addr{}, cliAddr, nil),
		Src: netip.MustParseAddrPort("[2001:db8:ff::5]:4000"), Iface: "lo"}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := h.Handle(t0, q); err != nil {
			b.Fatal(err)
		}
	}
}

func registerEvent(a netip.Addr) Event {
	return Event{Kind: EventRefresh, Time: t0, Binding: Binding{DUID: clientDUID, Addr: a, Iface: "eth0",
		First: t0, Last: t0, Expires: t0.Add(time.Hour), Preferred: 30 * time.Minute, Valid: time.Hour}}
}

// BenchmarkStoreCommit: the durable write path (one transaction, WAL,
// synchronous=FULL), batch registrations per transaction, each from a new
// client for a new address (so each writes its binding and its history
// record); ns/op and CPU-µs/op are per registration.
func BenchmarkStoreCommit(b *testing.B) {
	storeCommitBench(b, func(i int) []byte {
		// DUIDs in no order, as real clients' are (the DUID indexes
		// take them at random places).
		h := uint32(i) * 2654435761
		return []byte{0, 2, 0, 0, 0x7e, 0x99, byte(h >> 24), byte(h >> 16), byte(h >> 8), byte(h)}
	})
}

// BenchmarkStoreCommitSeq: BenchmarkStoreCommit with DUIDs counting up as
// the addresses do, as make bench-server's load generator sends them by
// default (BENCH_KEYS=random: as BenchmarkStoreCommit's); each new key
// lands at the end of its index.
func BenchmarkStoreCommitSeq(b *testing.B) {
	storeCommitBench(b, func(i int) []byte {
		return []byte{0, 2, 0, 0, 0x7e, 0x99, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
	})
}

// storeCommitBench commits registrations for addresses counting up, the
// i-th from the client duid(i).
func storeCommitBench(b *testing.B, duid func(i int) []byte) {
	for _, batch := range []int{1, 16, 48, 128, 1024} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			st := openTest(b, benchDB(b), retention{})
			evs := make([]Event, 0, batch)
			start := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				a := cliAddr.As16()
				a[12], a[13], a[14], a[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
				e := registerEvent(netip.AddrFrom16(a))
				e.Binding.DUID = duid(i)
				e.Time = t0.Add(time.Duration(i) * time.Microsecond)
				e.Binding.Last = e.Time
				evs = append(evs, e)
				if len(evs) == batch || i == b.N-1 {
					mustCommit(b, st, evs...)
					evs = evs[:0]
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "CPU-µs/op")
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "regs/s")
		})
	}
}

// BenchmarkGroupCommit: concurrent registrations through the server's writer
// goroutine; each waits until its own write is durable, as a reply does.
func BenchmarkGroupCommit(b *testing.B) {
	for _, clients := range []int{1, 16, 256} {
		b.Run("outstanding="+strconv.Itoa(clients), func(b *testing.B) {
			st := openTest(b, benchDB(b), retention{})
			s := &Server{jobs: make(chan job, 4096), log: slog.New(slog.NewTextHandler(io.Discard, nil)), counter: map[string]uint64{}, hot: newHotCounters()}
			s.st.Store(&storageRef{st})
			done := make(chan struct{})
			go func() { s.writer(context.Background()); close(done) }()
			addrs := benchAddrs(1024)
			var wg sync.WaitGroup
			per := (b.N + clients - 1) / clients
			start := time.Now()
			b.ResetTimer()
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func(c int) {
					defer wg.Done()
					ack := make(chan struct{}, 1)
					for i := 0; i < per; i++ {
						s.enqueue(job{ev: registerEvent(addrs[(c*per+i)%len(addrs)]), done: func() { ack <- struct{}{} }})
						<-ack
					}
				}(c)
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(per*clients)/time.Since(start).Seconds(), "regs/s")
			close(s.jobs)
			<-done
		})
	}
}

// BenchmarkServerPipeline: the whole server path for relayed INFORMs from
// distinct clients, without the kernel's receive side: handle (validation,
// bindings), the writer (group commit: one SQLite transaction) and the replies
// sent on a real UDP socket to a sink that counts them. allocs/op is per
// registration, every allocation of the server included.
func BenchmarkServerPipeline(b *testing.B) {
	relay := netip.MustParseAddr("2001:db8:2::1")
	sink, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		b.Skipf("no IPv6 loopback: %v", err)
	}
	defer sink.Close()
	_ = sink.SetReadBuffer(8 << 20)
	conn, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	cfg := DefaultConfig()
	cfg.RatePerSource, cfg.RatePerDUID, cfg.NoLog = 0, 0, true
	cfg.Prefixes = map[string][]netip.Prefix{relay.String(): {netip.MustParsePrefix("2001:db8:2::/64")}}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.DBPath = filepath.Join(b.TempDir(), "b.db")
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	s.st.Store(&storageRef{openTest(b, cfg.DBPath, retention{})})
	s.pc = ipv6.NewPacketConn(conn)
	s.jobs = make(chan job, 4096+64)
	var got atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := sink.Read(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	from := netip.MustParseAddrPort(sink.LocalAddr().String())
	pkts := make([]Packet, b.N)
	for i := range pkts {
		a := netip.MustParseAddr("2001:db8:2::").As16()
		a[11], a[12], a[13], a[14], a[15] = 1, byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		duid := []byte{0, 2, 0, 0, 0x7e, 0x99, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		inf := newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, duid).ia(netip.AddrFrom16(a), 1800, 3600).bytes()
		pkts[i] = Packet{Data: relayFwd(0, relay, netip.AddrFrom16(a), nil, inf), Src: from, Iface: "eth0", IfIndex: 1}
	}
	done := make(chan struct{})
	go func() { s.writer(context.Background()); close(done) }()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := range pkts {
		s.handle(pkts[i], 0, 0)
		for s.queued.Load() >= int64(s.cfg.MaxQueue) {
			time.Sleep(100 * time.Microsecond) // as the kernel would hold them: no shedding here
		}
	}
	for deadline := time.Now().Add(time.Minute); got.Load() < int64(b.N) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "CPU-µs/op")
	close(s.jobs)
	<-done
	if n := got.Load(); n < int64(b.N)*99/100 {
		b.Fatalf("%d replies for %d INFORMs", n, b.N)
	}
}

// benchDB is the database a benchmark uses: SQLite, or PostgreSQL (a
// test/pgtest cluster) with ADDRREG_BENCH_DB=postgres.
func benchDB(b testing.TB) string {
	if os.Getenv("ADDRREG_BENCH_DB") == "postgres" {
		return pgtest.Shared(b).NewDB(b)
	}
	return filepath.Join(b.TempDir(), "b.db")
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
