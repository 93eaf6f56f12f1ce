package refserver

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func fullBinding() Binding {
	return Binding{DUID: clientDUID, Addr: cliAddr, Iface: "eth0", LinkAddr: netip.MustParseAddr("2001:db8:2::1"),
		LinkLayer: net.HardwareAddr{2, 0, 0, 0, 0, 1}, FQDN: "host.example", First: t0, Last: t0.Add(time.Second),
		Expires: t0.Add(time.Hour + 5), Preferred: 30 * time.Minute, Valid: time.Hour}
}

// TestCodecRoundTrip: what the binary codec writes reads back equal, for
// full and empty records, and the JSON an older server wrote still reads.
func TestCodecRoundTrip(t *testing.T) {
	for _, b := range []Binding{fullBinding(), {Addr: cliAddr, DUID: clientDUID}} {
		got, err := readBinding(appendBinding(nil, &b))
		if err != nil || !reflect.DeepEqual(got, b) {
			t.Errorf("binding round trip: %+v, %v; want %+v", got, err, b)
		}
		old, _ := json.Marshal(&b)
		got, err = readBinding(old)
		if err != nil || !got.Expires.Equal(b.Expires) || got.Addr != b.Addr || string(got.DUID) != string(b.DUID) {
			t.Errorf("JSON binding: %+v, %v; want %+v", got, err, b)
		}
	}
	b := fullBinding()
	for _, h := range []HistoryRecord{
		{Seq: 7, Time: t0, Event: "move", DUID: b.DUID, PrevDUID: otherDUID, Addr: b.Addr, Iface: "eth0", LinkAddr: b.LinkAddr,
			LinkLayer: b.LinkLayer, FQDN: "h", Preferred: time.Second, Valid: 2 * time.Second},
		{Seq: 1 << 40, Time: t0, Event: "reject", Addr: netip.MustParseAddr("192.0.2.1"), Reason: "no_client_id"},
		{Seq: 2, Time: t0, Event: "reject"},
	} {
		got, err := readHistory(appendHistory(nil, &h))
		if err != nil || !reflect.DeepEqual(got, h) {
			t.Errorf("history round trip: %+v, %v; want %+v", got, err, h)
		}
	}
	full := appendBinding(nil, &b)
	for n := range len(full) {
		if _, err := readBinding(full[:n]); !errors.Is(err, errRecord) && n > 0 {
			t.Errorf("binding cut to %d bytes: %v, want errRecord", n, err)
		}
	}
	if _, err := readBinding(append(full, 0)); !errors.Is(err, errRecord) {
		t.Errorf("trailing byte: %v", err)
	}
}

// FuzzDecodeRecord: stored records of any content decode or fail, never
// panic; what decodes encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	b := fullBinding()
	f.Add(appendBinding(nil, &b))
	f.Add(appendHistory(nil, &HistoryRecord{Seq: 3, Time: t0, Event: "register", DUID: clientDUID, Addr: cliAddr}))
	f.Fuzz(func(t *testing.T, v []byte) {
		if b, err := decodeBinding(v); err == nil {
			if again, err := decodeBinding(appendBinding(nil, &b)); err != nil || !reflect.DeepEqual(again, b) {
				t.Fatalf("binding %+v does not round-trip: %+v, %v", b, again, err)
			}
		}
		if h, err := decodeHistory(v); err == nil {
			if again, err := decodeHistory(appendHistory(nil, &h)); err != nil || !reflect.DeepEqual(again, h) {
				t.Fatalf("history %+v does not round-trip: %+v, %v", h, again, err)
			}
		}
	})
}
