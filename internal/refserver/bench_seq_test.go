package refserver

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// loadgenEvent is the i-th registration of make bench-server's load
// generator run with --offset offset: a relayed INFORM from the i-th
// client (DUID-EN 32473 with i) for the address offset+i of
// 2001:db8:2::/64, both counting up.
func loadgenEvent(offset uint32, i int, at time.Time) Event {
	a := netip.MustParseAddr("2001:db8:2::").As16()
	binary.BigEndian.PutUint32(a[12:], offset+uint32(i))
	duid := binary.BigEndian.AppendUint32([]byte{0, 2, 0, 0, 0x7e, 0xd9}, uint32(i))
	return Event{Kind: EventRegister, Time: at, Binding: Binding{DUID: duid, Addr: netip.AddrFrom16(a), Iface: "eth0",
		LinkAddr: netip.MustParseAddr("2001:db8:2::1"), First: at, Last: at, Expires: at.Add(time.Hour),
		Preferred: 30 * time.Minute, Valid: time.Hour}}
}

// BenchmarkStoreCommitSequential: the commits of make bench-server at a
// measured rate, as the server makes them: keys counting up as the load
// generator's (loadgenEvent), the per-DUID limit checked
// (DefaultMaxBindingsPerDUID), after a warm-up that registered
// HistoryCap clients with the same DUIDs for other addresses (so every
// client holds a binding already, and each commit prunes the history at
// its cap). CPU-µs/op is per registration.
func BenchmarkStoreCommitSequential(b *testing.B) {
	for _, batch := range []int{16, 48} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			st := openTest(b, benchDB(b), retention{})
			evs := make([]Event, 0, max(batch, 1024))
			for i := range HistoryCap {
				evs = append(evs, loadgenEvent(0, i, t0.Add(time.Duration(i)*time.Microsecond)))
				if len(evs) == 1024 || i == HistoryCap-1 {
					mustCommitLimit(b, st, DefaultMaxBindingsPerDUID, evs)
					evs = evs[:0]
				}
			}
			t1 := t0.Add(time.Minute)
			start := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				evs = append(evs, loadgenEvent(0x1000000, i, t1.Add(time.Duration(i)*time.Microsecond)))
				if len(evs) == batch || i == b.N-1 {
					mustCommitLimit(b, st, DefaultMaxBindingsPerDUID, evs)
					evs = evs[:0]
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "CPU-µs/op")
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "regs/s")
		})
	}
}

func mustCommitLimit(b testing.TB, st storage, limit int, evs []Event) {
	b.Helper()
	if _, err := st.commit(b.Context(), evs, time.Time{}, limit); err != nil {
		b.Fatal(err)
	}
	for i := range evs {
		if evs[i].Kind == EventReject {
			b.Fatalf("%v rejected: %s", evs[i].Binding.Addr, evs[i].Reason)
		}
	}
}
