package registrar

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// replyDatagram builds an ADDR-REG-REPLY as ISC Kea 3.x sends it: Server ID,
// Client ID, IA Address.
func replyDatagram(t testing.TB, typ uint8, x xid, ia netip.Addr, extra ...string) []byte {
	t.Helper()
	a := ia.As16()
	b := []byte{0x02, 0x23, 0x02, 0x22, 0, 0, 0, 0, typ, x[0], x[1], x[2]}
	b = appendOption(b, optServerID, unhex(t, "0003 0001 020000000001"))
	b = appendOption(b, optClientID, testDUID.ToBytes())
	b = appendOption(b, optIAAddr, append(a[:], unhex(t, "00000708 00000e10")...))
	for _, e := range extra {
		b = append(b, unhex(t, e)...)
	}
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	return b
}

func TestParseDatagram(t *testing.T) {
	good := replyDatagram(t, msgAddrRegReply, testXID, testAddr)
	withLen := func(b []byte, n int) []byte {
		b = append([]byte(nil), b...)
		binary.BigEndian.PutUint16(b[4:], uint16(n))
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want *message // nil: malformed
	}{
		{"Kea-style ADDR-REG-REPLY", good, &message{
			typ: msgAddrRegReply, xid: testXID, hasServerID: true, serverID: testServerID, hasClientID: true, clientID: testDUID.ToBytes(),
			iaAddrs: 1, iaAddr: testAddr, iaPreferred: 1800, iaValid: 3600,
		}},
		{"Reply with 148 and trailing bytes past the UDP length",
			append(replyDatagram(t, msgReply, testXID, testAddr, "0094 0000"), 0xde, 0xad),
			&message{typ: msgReply, xid: testXID, hasServerID: true, serverID: testServerID, hasClientID: true, clientID: testDUID.ToBytes(),
				addrRegEnable: true, iaAddrs: 1, iaAddr: testAddr, iaPreferred: 1800, iaValid: 3600}},
		{"two IA Address options: the first is kept, both counted",
			replyDatagram(t, msgAddrRegReply, testXID, testAddr, "0005 0018 20010db8000100000000000000000011 00000000 00000000"),
			&message{typ: msgAddrRegReply, xid: testXID, hasServerID: true, serverID: testServerID, hasClientID: true, clientID: testDUID.ToBytes(),
				iaAddrs: 2, iaAddr: testAddr, iaPreferred: 1800, iaValid: 3600}},
		{"header only", unhex(t, "0223 0222 000c 0000 25 abcdef"), &message{typ: msgAddrRegReply, xid: testXID}},
		{"empty", nil, nil},
		{"short UDP header", good[:7], nil},
		{"from port 546", append([]byte{0x02, 0x22}, good[2:]...), nil},
		{"to port 547", append([]byte{0x02, 0x23, 0x02, 0x23}, good[4:]...), nil},
		{"UDP length beyond the datagram", withLen(good, len(good)+1), nil},
		{"UDP length below the header", withLen(good, 7), nil},
		{"DHCPv6 header cut", withLen(good, 11), nil},
		{"option header cut", withLen(good, 14), nil},
		{"option data cut", withLen(good, len(good)-1), nil},
		{"IA Address too short", replyDatagram(t, msgAddrRegReply, testXID, testAddr, "0005 0017 20010db8000100000000000000000011 00000000 000000"), nil},
		{"two Client IDs", replyDatagram(t, msgAddrRegReply, testXID, testAddr, "0001 0002 abcd"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDatagram(tc.in)
			if tc.want == nil {
				if err == nil {
					t.Errorf("parseDatagram = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseDatagram: %v", err)
			}
			if diff := cmp.Diff(*tc.want, got, cmp.AllowUnexported(message{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("parseDatagram (-want +got):\n%s", diff)
			}
		})
	}
}

// TestValidate has one case per rule (RFC 9686 §4.3 and the client-side
// discards), each breaking only that rule.
func TestValidate(t *testing.T) {
	const ifindex = 2
	other := netip.MustParseAddr("2001:db8:1::11")
	reg := expect{typ: msgAddrRegReply, xid: testXID, ifindex: ifindex, dst: testAddr, iaAddr: true, clientID: testDUID.ToBytes()}
	ll := netip.MustParseAddr("fe80::10")
	probe := expect{typ: msgReply, xid: testXID, ifindex: ifindex, dst: ll, clientID: testDUID.ToBytes()}
	parse := func(b []byte) message {
		m, err := parseDatagram(b)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	good := parse(replyDatagram(t, msgAddrRegReply, testXID, testAddr))
	mod := func(f func(*message)) message { m := good; f(&m); return m }
	yes := func() bool { return true }
	for _, tc := range []struct {
		name     string
		m        message
		dst      netip.Addr
		ifindex  int
		e        expect
		assigned func() bool
		want     DropReason
	}{
		{"valid ADDR-REG-REPLY", good, testAddr, ifindex, reg, yes, ""},
		{"valid without Client ID or Server ID", mod(func(m *message) { m.hasClientID, m.clientID, m.hasServerID = false, nil, false }),
			testAddr, ifindex, reg, yes, ""},
		{"destination zone ignored", good, testAddr.WithZone("eth0"), ifindex, reg, yes, ""},
		{"ADDR-REG-INFORM received", mod(func(m *message) { m.typ = msgAddrRegInform }), testAddr, ifindex, reg, yes, DropInform},
		{"transaction ID differs", mod(func(m *message) { m.xid[2]++ }), testAddr, ifindex, reg, yes, DropTransaction},
		{"Reply where ADDR-REG-REPLY expected", mod(func(m *message) { m.typ = msgReply }), testAddr, ifindex, reg, yes, DropType},
		{"destination is not the registered address", good, other, ifindex, reg, yes, DropDestination},
		{"received on another interface", good, testAddr, ifindex + 1, reg, yes, DropInterface},
		{"IA Address for another address", mod(func(m *message) { m.iaAddr = other }), testAddr, ifindex, reg, yes, DropIAAddress},
		{"no IA Address", mod(func(m *message) { m.iaAddrs, m.iaAddr = 0, netip.Addr{} }), testAddr, ifindex, reg, yes, DropIAAddress},
		{"two IA Addresses", mod(func(m *message) { m.iaAddrs = 2 }), testAddr, ifindex, reg, yes, DropIAAddress},
		{"someone else's Client ID", mod(func(m *message) { m.clientID = []byte{0, 4, 1} }), testAddr, ifindex, reg, yes, DropClientID},
		{"address no longer on the interface", good, testAddr, ifindex, reg, func() bool { return false }, DropAddressGone},
		{"probe: valid Reply", mod(func(m *message) { m.typ = msgReply; m.iaAddrs = 0 }), ll, ifindex, probe, nil, ""},
		{"probe: Reply to another address", mod(func(m *message) { m.typ = msgReply }), other, ifindex, probe, nil, DropDestination},
		{"probe: Reply without Server ID", mod(func(m *message) { m.typ = msgReply; m.hasServerID = false }), ll, ifindex, probe, nil, DropServerID},
		{"probe: Reply without Client ID", mod(func(m *message) { m.typ = msgReply; m.hasClientID, m.clientID = false, nil }), ll, ifindex, probe, nil, DropServerID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			assigned := tc.assigned
			if assigned != nil {
				assigned = func() bool { called = true; return tc.assigned() }
			}
			if got := validate(&tc.m, tc.dst, tc.ifindex, &tc.e, assigned); got != tc.want {
				t.Errorf("validate = %q, want %q", got, tc.want)
			}
			// The kernel is asked only when everything else holds.
			if wantCall := tc.assigned != nil && (tc.want == "" || tc.want == DropAddressGone); called != wantCall {
				t.Errorf("assigned called: %v, want %v", called, wantCall)
			}
		})
	}
}

func FuzzParseReply(f *testing.F) {
	f.Add(replyDatagram(f, msgAddrRegReply, testXID, testAddr))
	f.Add(replyDatagram(f, msgReply, testXID, testAddr, "0094 0000"))
	f.Add(appendInform(nil, &inform{xid: testXID, clientID: testDUID.ToBytes(), addr: testAddr, fqdn: []byte{0, 1, 'a', 0}}))
	f.Add(unhex(f, "0223 0222 000c 0000 25 abcdef"))
	f.Add(unhex(f, "0223 0222 0010 0000 25 abcdef 0005 ffff"))
	e := expect{typ: msgAddrRegReply, xid: testXID, ifindex: 1, dst: testAddr, iaAddr: true, clientID: testDUID.ToBytes()}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseDatagram(b)
		if err != nil {
			return
		}
		if len(b) < udpHdrLen+4 {
			t.Fatalf("accepted a %d-octet datagram", len(b))
		}
		if m.iaAddrs > 0 && !m.iaAddr.Is6() {
			t.Fatalf("IA Address counted but %v", m.iaAddr)
		}
		if m.hasClientID != (m.clientID != nil) {
			t.Fatalf("Client ID presence %v but %x", m.hasClientID, m.clientID)
		}
		_ = validate(&m, testAddr, 1, &e, func() bool { return true })
	})
}

func BenchmarkValidateReply(b *testing.B) {
	d := replyDatagram(b, msgAddrRegReply, testXID, testAddr)
	e := expect{typ: msgAddrRegReply, xid: testXID, ifindex: 2, dst: testAddr, iaAddr: true, clientID: testDUID.ToBytes()}
	assigned := func() bool { return true }
	b.ReportAllocs()
	for b.Loop() {
		m, err := parseDatagram(d)
		if err != nil {
			b.Fatal(err)
		}
		if why := validate(&m, testAddr, 2, &e, assigned); why != "" {
			b.Fatal(why)
		}
	}
}

// testServerID is the Server Identifier replyDatagram writes.
var testServerID = []byte{0x00, 0x03, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
