package dhcp6test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/sys/unix"
)

var (
	clientDUID dhcpv6.DUID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0x10}}
	hostAddr               = netip.MustParseAddr("2001:db8:1::10")
)

func inform(xid dhcpv6.TransactionID) *dhcpv6.Message {
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeAddrRegInform, TransactionID: xid}
	m.AddOption(dhcpv6.OptClientID(clientDUID))
	m.AddOption(&dhcpv6.OptIAAddress{IPv6Addr: hostAddr.AsSlice(), PreferredLifetime: time.Hour, ValidLifetime: 2 * time.Hour})
	return m
}

func infoRequest(xid dhcpv6.TransactionID) *dhcpv6.Message {
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeInformationRequest, TransactionID: xid}
	m.AddOption(dhcpv6.OptClientID(clientDUID))
	m.AddOption(dhcpv6.OptRequestedOption(dhcpv6.OptionAddrRegEnable))
	return m
}

func packet(t *testing.T, d dhcpv6.DHCPv6) Packet {
	t.Helper()
	var p Packet
	if err := p.decode(d.ToBytes()); err != nil {
		t.Fatalf("decode %s: %v", d.Summary(), err)
	}
	return p
}

func codes(m *dhcpv6.Message) []dhcpv6.OptionCode {
	var out []dhcpv6.OptionCode
	for _, o := range m.Options.Options {
		out = append(out, o.Code())
	}
	return out
}

func TestAnswer(t *testing.T) {
	xid := dhcpv6.TransactionID{1, 2, 3}
	extra := &dhcpv6.OptionGeneric{OptionCode: 65000, OptionData: []byte{1}}
	for _, tc := range []struct {
		name     string
		a        Answer
		in       *dhcpv6.Message
		wantType dhcpv6.MessageType
		want     []dhcpv6.OptionCode
	}{
		{"Reply without 148", Answer{}, infoRequest(xid), dhcpv6.MessageTypeReply,
			[]dhcpv6.OptionCode{dhcpv6.OptionServerID, dhcpv6.OptionClientID, dhcpv6.OptionDNSRecursiveNameServer}},
		{"Reply with 148", Answer{Offer148: true}, infoRequest(xid), dhcpv6.MessageTypeReply,
			[]dhcpv6.OptionCode{dhcpv6.OptionServerID, dhcpv6.OptionClientID, dhcpv6.OptionDNSRecursiveNameServer, dhcpv6.OptionAddrRegEnable}},
		{"Kea-like ADDR-REG-REPLY", Answer{Offer148: true}, inform(xid), dhcpv6.MessageTypeAddrRegReply,
			[]dhcpv6.OptionCode{dhcpv6.OptionServerID, dhcpv6.OptionClientID, dhcpv6.OptionIAAddr}},
		{"bare ADDR-REG-REPLY", Answer{Bare: true}, inform(xid), dhcpv6.MessageTypeAddrRegReply,
			[]dhcpv6.OptionCode{dhcpv6.OptionIAAddr}},
		{"extra options", Answer{Bare: true, Extra: []dhcpv6.Option{extra}}, inform(xid), dhcpv6.MessageTypeAddrRegReply,
			[]dhcpv6.OptionCode{dhcpv6.OptionIAAddr, 65000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := packet(t, tc.in)
			s := tc.a.To(p)
			if s.Msg.MessageType != tc.wantType || s.Msg.TransactionID != xid {
				t.Errorf("answer %s xid %s, want %s xid %s", s.Msg.MessageType, s.Msg.TransactionID, tc.wantType, xid)
			}
			if diff := cmp.Diff(tc.want, codes(s.Msg)); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
			if s.Dst.IsValid() {
				t.Errorf("Dst %s, want unset (back to the source)", s.Dst)
			}
			if ia := s.Msg.GetOneOption(dhcpv6.OptionIAAddr); ia != nil && string(ia.ToBytes()) != string(tc.in.GetOneOption(dhcpv6.OptionIAAddr).ToBytes()) {
				t.Errorf("IA Address %v, want the INFORM's echoed", ia)
			}
			if sid := s.Msg.Options.ServerID(); sid != nil && !sid.Equal(ServerDUID) {
				t.Errorf("Server ID %v, want ServerDUID", sid)
			}
		})
	}
}

func TestPacketDecode(t *testing.T) {
	xid := dhcpv6.TransactionID{4, 5, 6}
	direct := packet(t, inform(xid))
	if direct.Relay != nil || direct.Type != dhcpv6.MessageTypeAddrRegInform || direct.XID != xid ||
		direct.IAAddr != hostAddr || direct.Preferred != 3600 || direct.Valid != 7200 {
		t.Errorf("direct INFORM decoded as %+v", direct)
	}
	// Two relays deep: the script sees the client's message.
	r1, err := dhcpv6.EncapsulateRelay(inform(xid), dhcpv6.MessageTypeRelayForward, net.ParseIP("2001:db8:2::1"), net.ParseIP("fe80::10"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := dhcpv6.EncapsulateRelay(r1, dhcpv6.MessageTypeRelayForward, net.ParseIP("2001:db8:3::1"), net.ParseIP("2001:db8:2::1"))
	if err != nil {
		t.Fatal(err)
	}
	relayed := packet(t, r2)
	if relayed.Relay == nil || relayed.Type != dhcpv6.MessageTypeAddrRegInform || relayed.IAAddr != hostAddr || relayed.XID != xid {
		t.Errorf("relayed INFORM decoded as %+v", relayed)
	}
	var p Packet
	for _, bad := range [][]byte{nil, {1}, {byte(dhcpv6.MessageTypeRelayForward), 0}} {
		if err := p.decode(bad); err == nil {
			t.Errorf("decode(%x) = nil error", bad)
		}
	}
}

func TestParseRecvInfo(t *testing.T) {
	ts := make([]byte, 16)
	binary.NativeEndian.PutUint64(ts, 1700000000)
	binary.NativeEndian.PutUint64(ts[8:], 123456789)
	pi := make([]byte, 20)
	dst := netip.MustParseAddr("ff02::1:2").As16()
	copy(pi, dst[:])
	binary.NativeEndian.PutUint32(pi[16:], 7)
	oob := append(cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, ts), cmsg(unix.SOL_IPV6, unix.IPV6_PKTINFO, pi)...)
	at, gotDst, ifindex, ok := parseRecvInfo(oob)
	if !ok || !at.Equal(time.Unix(1700000000, 123456789)) || gotDst != netip.AddrFrom16(dst) || ifindex != 7 {
		t.Errorf("parseRecvInfo = %v %s %d %v", at, gotDst, ifindex, ok)
	}
	if _, _, _, ok := parseRecvInfo(cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, ts)); ok {
		t.Error("parseRecvInfo without IPV6_PKTINFO: ok")
	}
	if _, _, _, ok := parseRecvInfo([]byte{1, 2, 3}); ok {
		t.Error("parseRecvInfo of garbage: ok")
	}
}

func cmsg(level, typ int, data []byte) []byte {
	// struct cmsghdr on 64-bit Linux: size_t len, int level, int type.
	b := make([]byte, unix.CmsgSpace(len(data)))
	binary.NativeEndian.PutUint64(b, uint64(unix.CmsgLen(len(data))))
	binary.NativeEndian.PutUint32(b[8:], uint32(level))
	binary.NativeEndian.PutUint32(b[12:], uint32(typ))
	copy(b[unix.CmsgLen(0):], data)
	return b
}
