package registrar

import (
	"encoding/hex"
	"math"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/addrreg/addrreg/scheduler"
)

var (
	testDUID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0x10}}
	testAddr = netip.MustParseAddr("2001:db8:1::10")
	testXID  = xid{0xab, 0xcd, 0xef}
)

// unhex decodes hex written with spaces and line breaks for readability.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustFQDN(t testing.TB, name string) []byte {
	t.Helper()
	b, err := encodeFQDN(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAppendInform(t *testing.T) {
	const (
		udp      = "0222 0223"                                            // 546 → 547
		clientID = "0001 000a 0003 0001 020000000010"                     // option 1, DUID-LL
		iaAddr   = "0005 0018 20010db8000100000000000000000010"           // option 5, 24 octets
		fqdn     = "0027 0013 01 04686f7374 076578616d706c65 03636f6d 00" // option 39, flags S
	)
	for _, tc := range []struct {
		name string
		in   inform
		want string
	}{{
		name: "first transmission",
		in:   inform{xid: testXID, clientID: testDUID.ToBytes(), addr: testAddr, preferred: 1800 * time.Second, valid: 3600 * time.Second},
		want: udp + "003c 0000" + "24 abcdef" + clientID + "0008 0002 0000" + iaAddr + "00000708 00000e10",
	}, {
		name: "retransmission: elapsed 1.234 s, lifetimes truncated to seconds",
		in: inform{xid: testXID, clientID: testDUID.ToBytes(), addr: testAddr, elapsed: 1234 * time.Millisecond,
			preferred: 1799*time.Second + 999*time.Millisecond, valid: 3599 * time.Second},
		want: udp + "003c 0000" + "24 abcdef" + clientID + "0008 0002 007b" + iaAddr + "00000707 00000e0f",
	}, {
		name: "infinite lifetimes, elapsed beyond 655.35 s",
		in:   inform{xid: testXID, clientID: testDUID.ToBytes(), addr: testAddr, elapsed: time.Hour, preferred: scheduler.Infinite, valid: scheduler.Infinite},
		want: udp + "003c 0000" + "24 abcdef" + clientID + "0008 0002 ffff" + iaAddr + "ffffffff ffffffff",
	}, {
		name: "deregistration",
		in:   inform{xid: testXID, clientID: testDUID.ToBytes(), addr: testAddr},
		want: udp + "003c 0000" + "24 abcdef" + clientID + "0008 0002 0000" + iaAddr + "00000000 00000000",
	}, {
		name: "with Client FQDN",
		in: inform{xid: testXID, clientID: testDUID.ToBytes(), addr: testAddr, preferred: 1800 * time.Second, valid: 3600 * time.Second,
			fqdn: mustFQDN(t, "host.example.com")},
		want: udp + "0053 0000" + "24 abcdef" + clientID + "0008 0002 0000" + iaAddr + "00000708 00000e10" + fqdn,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := appendInform(nil, &tc.in)
			if diff := cmp.Diff(unhex(t, tc.want), got); diff != "" {
				t.Errorf("appendInform (-want +got):\n%s", diff)
			}
			// An independent decoder reads it as RFC 9686 says it must be.
			m, err := dhcpv6.MessageFromBytes(got[udpHdrLen:])
			if err != nil {
				t.Fatalf("dhcpv6 cannot decode it: %v", err)
			}
			if m.MessageType != dhcpv6.MessageTypeAddrRegInform || len(m.GetOption(dhcpv6.OptionIAAddr)) != 1 ||
				m.GetOneOption(dhcpv6.OptionServerID) != nil || m.GetOneOption(dhcpv6.OptionORO) != nil ||
				!m.Options.ClientID().Equal(testDUID) {
				t.Errorf("decoded: %s", m.Summary())
			}
		})
	}
}

func TestAppendInfoRequest(t *testing.T) {
	got := appendInfoRequest(nil, testXID, testDUID.ToBytes(), 2*time.Second)
	want := unhex(t, "0222 0223 0028 0000"+"0b abcdef"+"0001 000a 0003 0001 020000000010"+
		"0008 0002 00c8"+"0006 0004 0053 0094")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("appendInfoRequest (-want +got):\n%s", diff)
	}
	m, err := dhcpv6.MessageFromBytes(got[udpHdrLen:])
	if err != nil {
		t.Fatal(err)
	}
	if !m.Options.RequestedOptions().Contains(dhcpv6.OptionAddrRegEnable) || m.Options.ElapsedTime() != 2*time.Second {
		t.Errorf("decoded: %s", m.Summary())
	}
}

func TestEncodeFQDN(t *testing.T) {
	for _, tc := range []struct {
		name, want string // want "" = error
	}{
		{"host.example.com", "01 04686f7374 076578616d706c65 03636f6d 00"}, // S=1
		{"host.example.com.", "01 04686f7374 076578616d706c65 03636f6d 00"},
		{"host", "01 04686f7374"}, // partial: no root label
		{"", ""},
		{".", ""},
		{"a..b", ""},
		{strings.Repeat("x", 64) + ".example", ""},
		{strings.Repeat(strings.Repeat("x", 63)+".", 4) + "com", ""}, // 261 octets
	} {
		got, err := encodeFQDN(tc.name)
		if tc.want == "" {
			if err == nil {
				t.Errorf("encodeFQDN(%q) = %x, want an error", tc.name, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("encodeFQDN(%q): %v", tc.name, err)
			continue
		}
		if diff := cmp.Diff(unhex(t, tc.want), got); diff != "" {
			t.Errorf("encodeFQDN(%q) (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestWireLifetime(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want uint32
	}{
		{-time.Second, 0},
		{0, 0},
		{999 * time.Millisecond, 0},
		{time.Second, 1},
		{7199*time.Second + 500*time.Millisecond, 7199},
		{(math.MaxUint32 - 1) * time.Second, math.MaxUint32 - 1},
		{math.MaxUint32 * time.Second, math.MaxUint32},
		{scheduler.Infinite, math.MaxUint32},
	} {
		if got := wireLifetime(tc.in); got != tc.want {
			t.Errorf("wireLifetime(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestElapsedCentis(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want uint16
	}{
		{-time.Second, 0},
		{0, 0},
		{9 * time.Millisecond, 0},
		{10 * time.Millisecond, 1},
		{655340 * time.Millisecond, 65534},
		{655350 * time.Millisecond, 0xffff},
		{time.Hour, 0xffff},
	} {
		if got := elapsedCentis(tc.in); got != tc.want {
			t.Errorf("elapsedCentis(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func BenchmarkBuildInform(b *testing.B) {
	m := inform{xid: testXID, clientID: testDUID.ToBytes(), addr: testAddr, elapsed: time.Second,
		preferred: 1800 * time.Second, valid: 3600 * time.Second, fqdn: mustFQDN(b, "host.example.com")}
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendInform(buf[:0], &m)
	}
}
