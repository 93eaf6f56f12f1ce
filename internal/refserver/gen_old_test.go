package refserver

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestGenOldFormat(t *testing.T) {
	dir := "testdata/oldformat"
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o755)
	ws := walSize
	walSize = 8 << 10
	defer func() { walSize = ws }()
	path := filepath.Join(dir, "bindings.db")
	st, err := openStoreSize(path, retention{}, nil, 8<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.serverDUID(func() []byte { return []byte{0, 4, 0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12} }); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	far := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	d1 := []byte{0, 1, 0, 1, 0x2c, 0x3d, 0x4e, 0x5f, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	d2 := []byte{0, 1, 0, 1, 0x2c, 0x3d, 0x4e, 0x5f, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	la := netip.MustParseAddr("2001:db8:2::1")
	mac, _ := net.ParseMAC("02:00:00:00:00:02")
	var evs []Event
	// 60 registrations of d1 on eth0, rotating segments.
	for i := 1; i <= 60; i++ {
		a := netip.MustParseAddr("2001:db8:1::" + itoaHex(i))
		at := t0.Add(time.Duration(i) * time.Second)
		evs = append(evs, Event{Kind: EventRegister, Time: at, Binding: Binding{DUID: d1, Addr: a, Iface: "eth0", First: at, Last: at, Expires: far, Preferred: 1800 * time.Second, Valid: far.Sub(at).Truncate(time.Second)}})
		if i%10 == 0 {
			if err := st.apply(evs); err != nil {
				t.Fatal(err)
			}
			evs = nil
		}
	}
	at := t0.Add(2 * time.Minute)
	// relayed registration of d2 with link-layer and FQDN, infinite lifetime
	evs = append(evs, Event{Kind: EventRegister, Time: at, Relayed: true, Binding: Binding{DUID: d2, Addr: netip.MustParseAddr("2001:db8:2::20"), Iface: "eth1", LinkAddr: la, LinkLayer: mac, FQDN: "host2,example,com", First: at, Last: at, Preferred: time.Duration(0xffffffff) * time.Second, Valid: time.Duration(0xffffffff) * time.Second}})
	// move of 2001:db8:1::5 from d1 to d2
	at = at.Add(time.Second)
	evs = append(evs, Event{Kind: EventMove, Time: at, PrevDUID: d1, Binding: Binding{DUID: d2, Addr: netip.MustParseAddr("2001:db8:1::5"), Iface: "eth0", First: at, Last: at, Expires: far, Preferred: 1800 * time.Second, Valid: far.Sub(at).Truncate(time.Second)}})
	// deregister 2001:db8:1::6
	at = at.Add(time.Second)
	evs = append(evs, Event{Kind: EventDeregister, Time: at, Binding: Binding{DUID: d1, Addr: netip.MustParseAddr("2001:db8:1::6"), Iface: "eth0", First: t0, Last: at, Expires: at}})
	// expire 2001:db8:1::7 (its expiry as stored)
	at = at.Add(time.Second)
	evs = append(evs, Event{Kind: EventExpire, Time: at, Binding: Binding{DUID: d1, Addr: netip.MustParseAddr("2001:db8:1::7"), Iface: "eth0", First: t0, Last: t0, Expires: far, Valid: far.Sub(t0.Add(7 * time.Second)).Truncate(time.Second), Preferred: 1800 * time.Second}})
	// a reject, which is history only
	evs = append(evs, Event{Kind: EventReject, Time: at, Reason: "not-on-link", Binding: Binding{DUID: d2, Addr: netip.MustParseAddr("2001:db8:9::1"), Iface: "eth0"}})
	if err := st.apply(evs); err != nil {
		t.Fatal(err)
	}
	// refresh of ::1
	at = at.Add(time.Second)
	if err := st.apply([]Event{{Kind: EventRefresh, Time: at, Binding: Binding{DUID: d1, Addr: netip.MustParseAddr("2001:db8:1::1"), Iface: "eth0", First: t0.Add(time.Second), Last: at, Expires: far, Preferred: 1800 * time.Second, Valid: far.Sub(at).Truncate(time.Second)}}}); err != nil {
		t.Fatal(err)
	}
	st.compactWG.Wait()
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	hs, err := ReadHistory(path)
	if err != nil {
		t.Fatal(err)
	}
	st2, err := openStore(path, retention{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	bs, _ := st2.load()
	st2.close()
	t.Logf("history %d, bindings %d", len(hs), len(bs))
}

func itoaHex(i int) string {
	const h = "0123456789abcdef"
	s := ""
	for ; i > 0; i /= 16 {
		s = string(h[i%16]) + s
	}
	return s
}
