package refserver

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// TestCompactFromMemory: with the Handler as the source, compactions write
// snapshots from memory while registrations, refreshes, moves and
// deregistrations go on; reopening the database then gives exactly the
// committed bindings. Changes made in memory but never committed (a
// registration, a deregistration: what a crash catches in the queue) may
// or may not be in the snapshot, and nothing committed is lost for them.
func TestCompactFromMemory(t *testing.T) {
	smallSegments(t)
	path := filepath.Join(t.TempDir(), "db")
	st := mustOpen(t, path, nil)
	h := NewHandler(HandlerConfig{})
	st.setSource(h.snapshotBindings)
	now := time.Unix(1_700_000_000, 0)
	committed := map[netip.Addr]Binding{}
	addr := func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 14: byte(i >> 8), 15: byte(i)})
	}
	mk := func(i, client int) Binding {
		return Binding{DUID: []byte(fmt.Sprintf("client-%d", client)), Addr: addr(i), Iface: "eth0",
			LinkAddr: netip.MustParseAddr("2001:db8:2::1"), First: now, Last: now, Expires: now.Add(time.Hour),
			Preferred: 30 * time.Minute, Valid: time.Hour}
	}
	// register (or refresh or move: the same record) in memory, then commit.
	register := func(b Binding) {
		h.Load(now, []Binding{b})
		if err := st.apply([]Event{{Kind: EventRegister, Binding: b, Time: now}}); err != nil {
			t.Fatal(err)
		}
		committed[b.Addr] = b
	}
	deregister := func(a netip.Addr) {
		h.mu.Lock()
		h.tab.remove(h.tab.lookup(a))
		h.mu.Unlock()
		if err := st.apply([]Event{{Kind: EventDeregister, Binding: Binding{Addr: a}, Time: now}}); err != nil {
			t.Fatal(err)
		}
		delete(committed, a)
	}
	for i := range 3000 {
		now = now.Add(time.Millisecond)
		switch {
		case i%7 == 3 && i > 100 && committed[addr(i-100)].Addr.IsValid():
			deregister(addr(i - 100))
		case i%5 == 1 && i > 50:
			register(mk(i-50, i)) // a move: another client takes the address
		default:
			register(mk(i%2000, i%300)) // new, or a refresh after 2000
		}
	}
	st.compactWG.Wait()
	if st.snapGen == 0 {
		t.Fatal("no compaction ran")
	}
	// In memory only: a registration and a deregistration the writer had
	// not committed. Then enough committed to rotate and compact again.
	ghost := mk(4000, 1)
	h.Load(now, []Binding{ghost})
	var gone netip.Addr
	for a := range committed {
		gone = a
		break
	}
	h.mu.Lock()
	h.tab.remove(h.tab.lookup(gone))
	h.mu.Unlock()
	gen := st.snapGen
	for i := range 1500 {
		register(mk(5000+i, 7))
	}
	st.compactWG.Wait()
	if st.snapGen == gen {
		t.Fatal("no compaction after the uncommitted changes")
	}
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	st = mustOpen(t, path, nil)
	defer st.close()
	got := bindingAddrs(t, st)
	delete(got, ghost.Addr) // may or may not be there: never committed
	if _, ok := got[gone]; !ok {
		// Its deregistration was in memory only: the snapshot may miss it.
		delete(committed, gone)
	}
	if len(got) != len(committed) {
		t.Errorf("after reopening: %d bindings, want %d", len(got), len(committed))
	}
	for a, want := range committed {
		if g, ok := got[a]; !ok || !reflect.DeepEqual(normalize(g), normalize(want)) {
			t.Errorf("%v: got %+v (%v), want %+v", a, g, ok, want)
		}
	}
}
