package refserver

import (
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// FuzzHandleInform feeds arbitrary datagrams, direct and as if from a relay,
// to a Handler holding one binding. It must never panic, and any reply it
// makes must parse.
func FuzzHandleInform(f *testing.F) {
	relay := netip.MustParseAddr("2001:db8:1::2")
	f.Add(validInform().bytes(), false)
	f.Add(relayFwd(0, relay, cliAddr, []byte("eth1"), validInform().bytes()), true)
	f.Add(relayFwd(1, relay, relay, nil, relayFwd(0, relay, cliAddr, nil, validInform().bytes())), true)
	f.Add(newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(cliAddr, 0, 0).bytes(), false)
	f.Add(newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, otherDUID).ia(cliAddr, 1, 0xffffffff).opt(dhcpv6.OptionFQDN, []byte{0, 1, 'h', 0}).bytes(), false)
	f.Add(newMsg(dhcpv6.MessageTypeInformationRequest).opt(dhcpv6.OptionClientID, clientDUID).opt(dhcpv6.OptionORO, []byte{0, 148}).bytes(), false)
	f.Fuzz(func(t *testing.T, data []byte, relayed bool) {
		h := testHandler()
		seed := validInform().bytes()
		if _, _, _, err := h.Handle(t0, pkt(cliAddr, seed)); err != nil {
			t.Fatal(err)
		}
		src := cliAddr
		if relayed {
			src = relay
		}
		reply, _, ev, err := h.Handle(t0, pkt(src, data))
		if err != nil {
			if reply != nil || ev.Kind != EventReject {
				t.Fatalf("rejected (%v) but reply %x, event %v", err, reply, ev.Kind)
			}
			return
		}
		if reply == nil {
			t.Fatalf("accepted (%v) without a reply", ev.Kind)
		}
		if _, err := dhcpv6.FromBytes(reply); err != nil {
			t.Fatalf("reply %x does not parse: %v", reply, err)
		}
		h.Expire(t0.Add(1 << 62))
		_ = h.Bindings()
	})
}

// FuzzLeasequery feeds arbitrary datagrams to the leasequery path (from an
// allowed requestor) and to the reply decoder.
func FuzzLeasequery(f *testing.F) {
	req := []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 5}
	xid := [3]byte{1, 2, 3}
	f.Add(EncodeLeasequery(xid, req, netip.Addr{}, cliAddr, nil))
	f.Add(EncodeLeasequery(xid, req, netip.Addr{}, netip.Addr{}, clientDUID))
	f.Add(EncodeLeasequery(xid, req, netip.MustParseAddr("2001:db8:1::1"), cliAddr, nil))
	requestor := netip.MustParseAddr("2001:db8:ff::5")
	f.Fuzz(func(t *testing.T, data []byte) {
		h := testHandler()
		if _, _, _, err := h.Handle(t0, pkt(cliAddr, validInform().bytes())); err != nil {
			t.Fatal(err)
		}
		reply, _, _, err := h.Handle(t0, Packet{Data: data, Src: netip.AddrPortFrom(requestor, 4000), Iface: "lo"})
		if err == nil && len(data) > 0 && dhcpv6.MessageType(data[0]) == dhcpv6.MessageTypeLeaseQuery {
			if _, err := DecodeLeasequeryReply(reply); err != nil {
				t.Fatalf("reply %x does not decode: %v", reply, err)
			}
		}
		_, _ = DecodeLeasequeryReply(data)
	})
}

// FuzzPlainInform: the allocation-free check of a plain INFORM accepts
// nothing the full decode (dhcpv6.MessageFromBytes) would reject, so the
// fast path drops the same malformed messages as before.
func FuzzPlainInform(f *testing.F) {
	f.Add(validInform().bytes())
	f.Add(newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, []byte{0, 4, 1}).ia(cliAddr, 1, 2).bytes())
	f.Add(newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, []byte{0, 1, 0, 1, 0, 0, 0, 0}).bytes())
	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) < msgHeaderLen {
			return
		}
		msg = append([]byte{byte(dhcpv6.MessageTypeAddrRegInform)}, msg[1:]...) // the fast path is for INFORMs
		opts, err := parseOptions(msg[msgHeaderLen:])
		if err != nil || !plainInform(opts) {
			return
		}
		if _, err := dhcpv6.MessageFromBytes(msg); err != nil {
			t.Fatalf("plainInform accepts %x, which the full decode rejects: %v", msg, err)
		}
	})
}
