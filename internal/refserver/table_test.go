package refserver

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"
)

// TestTableModel runs random inserts, in-place updates and removals on the
// table and checks every read against a plain map after each step: short
// and long DUIDs (inline and beside), FQDNs and long link-layer addresses
// (beside), link-addresses present or not, slots and DUID records freed and
// reused, and DUID hash chains (a hash that collides all the time).
func TestTableModel(t *testing.T) {
	for _, collide := range []bool{false, true} {
		t.Run(fmt.Sprintf("collide=%v", collide), func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, 11))
			tab := newTable()
			if collide {
				tab.hash = func(_ maphash.Seed, b []byte) uint64 { return uint64(len(b) % 3) }
			}
			model := map[netip.Addr]Binding{}
			duids := make([][]byte, 12)
			for i := range duids {
				n := []int{10, 14, 18, 22, 23, 40, 130}[i%7]
				duids[i] = bytes.Repeat([]byte{byte(i + 1)}, n)
			}
			addr := func() netip.Addr { return netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 15: byte(r.IntN(200))}) }
			for step := range 4000 {
				a := addr()
				b := Binding{
					DUID: duids[r.IntN(len(duids))], Addr: a, Iface: []string{"eth0", "eth1", "br-lan"}[r.IntN(3)],
					First: time.Unix(0, r.Int64N(1<<50)), Last: time.Unix(0, r.Int64N(1<<50)),
					Preferred: time.Duration(r.Int64N(1 << 40)), Valid: time.Duration(r.Int64N(1 << 40)),
				}
				if r.IntN(3) > 0 {
					b.Expires = time.Unix(0, r.Int64N(1<<50))
				}
				if r.IntN(2) == 0 {
					b.LinkAddr = netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 1, 15: byte(r.IntN(4))})
				}
				switch r.IntN(4) {
				case 1:
					b.LinkLayer = net.HardwareAddr{2, 0, 0, 0, 0, byte(step)}
				case 2:
					b.LinkLayer = bytes.Repeat([]byte{byte(step)}, 20) // IPoIB: beside
				}
				if r.IntN(5) == 0 {
					b.FQDN = fmt.Sprintf("host%d.example.", step)
				}
				old, held := model[a]
				switch op := r.IntN(3); {
				case held && op == 0:
					tab.remove(tab.lookup(a))
					delete(model, a)
				case held && bytes.Equal(old.DUID, b.DUID):
					tab.set(tab.lookup(a), &b)
					model[a] = b
				case held:
					tab.remove(tab.lookup(a))
					tab.insert(&b)
					model[a] = b
				default:
					tab.insert(&b)
					model[a] = b
				}
				checkTable(t, step, tab, model, duids)
			}
		})
	}
}

func checkTable(t *testing.T, step int, tab *table, model map[netip.Addr]Binding, duids [][]byte) {
	t.Helper()
	if tab.len() != len(model) || len(tab.byAddr) != len(model) {
		t.Fatalf("step %d: len %d, byAddr %d, want %d", step, tab.len(), len(tab.byAddr), len(model))
	}
	for a, want := range model {
		r := tab.lookup(a)
		if r == 0 {
			t.Fatalf("step %d: %v not found", step, a)
		}
		got := tab.get(r)
		if want.LinkLayer != nil && len(want.LinkLayer) == 0 {
			want.LinkLayer = nil
		}
		if !reflect.DeepEqual(got, normalize(want)) {
			t.Fatalf("step %d: get(%v) =\n%+v, want\n%+v", step, a, got, normalize(want))
		}
		if !tab.sameDUID(r, want.DUID) || tab.expires(r) != unixNano(want.Expires) {
			t.Fatalf("step %d: %v: DUID or expiry differ", step, a)
		}
	}
	var all []netip.Addr
	for r := range tab.all {
		all = append(all, tab.addr(r))
	}
	if len(all) != len(model) {
		t.Fatalf("step %d: all gives %d, want %d", step, len(all), len(model))
	}
	for _, d := range duids {
		var want, got []netip.Addr
		for a, b := range model {
			if bytes.Equal(b.DUID, d) {
				want = append(want, a)
			}
		}
		for r := range tab.ofDUID(d) {
			got = append(got, tab.addr(r))
		}
		slices.SortFunc(want, netip.Addr.Compare)
		slices.SortFunc(got, netip.Addr.Compare)
		if !slices.Equal(got, want) || tab.count(d) != len(want) {
			t.Fatalf("step %d: DUID %x: holds %v (count %d), want %v", step, d[:2], got, tab.count(d), want)
		}
	}
}

// normalize is b as the table gives it back: times from Unix ns.
func normalize(b Binding) Binding {
	b.First, b.Last, b.Expires = fromUnixNano(unixNano(b.First)), fromUnixNano(unixNano(b.Last)), fromUnixNano(unixNano(b.Expires))
	b.DUID = bytes.Clone(b.DUID)
	return b
}

// BenchmarkTableInsert is the memory a registration costs in the table,
// one new client and address each (B/op is the table's growth; the maps'
// share is included).
func BenchmarkTableInsert(b *testing.B) {
	tab := newTable()
	duid := make([]byte, 14)
	var i uint32
	for b.Loop() {
		if i++; tab.len() == 1<<20 {
			tab = newTable() // a million at most
		}
		duid[10], duid[11], duid[12], duid[13] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		tab.insert(&Binding{DUID: duid, Addr: a, Iface: "eth0", First: time.Unix(1, 0), Last: time.Unix(1, 0), Expires: time.Unix(2, 0)})
	}
}

// BenchmarkHandlerHeap reports what 200,000 bindings (each a client of its
// own, as under the relay load benchmark) cost the process: live heap per
// binding, and how long a full garbage collection takes with them held
// (the mark work a collection does while the server runs).
func BenchmarkHandlerHeap(b *testing.B) {
	const n = 200000
	now := time.Now()
	// Loaded 10,000 at a time, so that the input is not what the
	// collection measures.
	load := func(h *Handler) {
		bs := make([]Binding, 10000)
		for i := 0; i < n; i += len(bs) {
			for k := range bs {
				j := i + k
				duid := []byte{0, 3, 0, 1, 2, 0, byte(j >> 24), byte(j >> 16), byte(j >> 8), byte(j)}
				a := netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 0, 2, 12: byte(j >> 24), 13: byte(j >> 16), 14: byte(j >> 8), 15: byte(j)})
				bs[k] = Binding{DUID: duid, Addr: a, Iface: "eth0", LinkAddr: netip.MustParseAddr("2001:db8:2::1"),
					First: now, Last: now, Expires: now.Add(time.Hour), Preferred: 30 * time.Minute, Valid: time.Hour}
			}
			h.Load(now, bs)
		}
	}
	for b.Loop() {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		h := NewHandler(HandlerConfig{})
		load(h)
		runtime.GC()
		runtime.ReadMemStats(&m1)
		t0 := time.Now()
		runtime.GC()
		gc := time.Since(t0)
		b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/n, "live-B/binding")
		b.ReportMetric(float64(gc.Microseconds())/1000, "gc-ms")
		runtime.KeepAlive(h)
	}
}
