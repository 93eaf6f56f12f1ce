package refserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv6"
)

var (
	t0         = time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	serverDUID = []byte{0, 1, 0, 1, 0x30, 0x00, 0x00, 0x00, 2, 0, 0, 0, 0, 0xaa}
	clientDUID = []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}
	otherDUID  = []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 2}
	lan1       = netip.MustParsePrefix("2001:db8:1::/64")
	cliAddr    = netip.MustParseAddr("2001:db8:1::10")
)

// cmpAddr compares netip.Addr values with ==.
var cmpAddr = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func testHandler(mod ...func(*HandlerConfig)) *Handler {
	cfg := HandlerConfig{
		ServerDUID: serverDUID, AddrReg: true, Interfaces: []string{"eth0"},
		Prefixes:        map[string][]netip.Prefix{"eth0": {lan1}},
		LeasequeryAllow: []netip.Prefix{netip.MustParsePrefix("2001:db8:ff::/64")},
	}
	for _, m := range mod {
		m(&cfg)
	}
	return NewHandler(cfg)
}

// msgBuilder assembles a client message option by option.
type msgBuilder struct {
	mt   dhcpv6.MessageType
	xid  [3]byte
	opts []byte
}

func newMsg(mt dhcpv6.MessageType) *msgBuilder {
	return &msgBuilder{mt: mt, xid: [3]byte{0xab, 0xcd, 0xef}}
}

func (m *msgBuilder) opt(code dhcpv6.OptionCode, data []byte) *msgBuilder {
	m.opts = appendOption(m.opts, uint16(code), data)
	return m
}

func (m *msgBuilder) ia(a netip.Addr, pref, valid uint32) *msgBuilder {
	m.opts = appendIAAddress(m.opts, iaAddress{Addr: a, Preferred: pref, Valid: valid})
	return m
}

func (m *msgBuilder) bytes() []byte {
	return append([]byte{byte(m.mt), m.xid[0], m.xid[1], m.xid[2]}, m.opts...)
}

func validInform() *msgBuilder {
	return newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(cliAddr, 1800, 3600)
}

func pkt(src netip.Addr, data []byte) Packet {
	return Packet{Data: data, Src: netip.AddrPortFrom(src, 546), Dst: AllDHCPRelayAgentsAndServers, Iface: "eth0", IfIndex: 2}
}

// relayFwd wraps msg in one Relay-Forward.
func relayFwd(hop uint8, link, peer netip.Addr, ifaceID []byte, msg []byte) []byte {
	b := []byte{byte(dhcpv6.MessageTypeRelayForward), hop}
	l, p := link.As16(), peer.As16()
	b = append(append(b, l[:]...), p[:]...)
	if ifaceID != nil {
		b = appendOption(b, uint16(dhcpv6.OptionInterfaceID), ifaceID)
	}
	b = appendOption(b, optionCodeClientLinkLayer, []byte{0, 1, 2, 0, 0, 0, 0, 1})
	return appendOption(b, uint16(dhcpv6.OptionRelayMsg), msg)
}

func TestHandleInformValidation(t *testing.T) {
	relayAddr := netip.MustParseAddr("2001:db8:1::2")
	nine := validInform().bytes()
	for i := 0; i < 9; i++ {
		nine = relayFwd(uint8(8-i), relayAddr, cliAddr, nil, nine)
	}
	for _, tc := range []struct {
		name string
		mod  func(*HandlerConfig)
		pkt  Packet
		want *Reason
	}{
		{"valid", nil, pkt(cliAddr, validInform().bytes()), nil},
		{"empty", nil, pkt(cliAddr, nil), ErrTruncated},
		{"short header", nil, pkt(cliAddr, []byte{36, 1, 2}), ErrTruncated},
		{"option overruns", nil, pkt(cliAddr, append(validInform().bytes(), 0, 39, 0, 10, 1)), ErrTruncated},
		{"trailing byte", nil, pkt(cliAddr, append(validInform().bytes(), 0)), ErrTruncated},
		{"oversized", nil, pkt(cliAddr, validInform().opt(dhcpv6.OptionUserClass, make([]byte, MaxMessageSize)).bytes()), ErrOversized},
		{"malformed IA Address", nil, pkt(cliAddr, newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).opt(dhcpv6.OptionIAAddr, make([]byte, 10)).bytes()), ErrMalformed},
		{"ADDR-REG-REPLY received", nil, pkt(cliAddr, newMsg(dhcpv6.MessageTypeAddrRegReply).opt(dhcpv6.OptionClientID, clientDUID).ia(cliAddr, 1, 1).bytes()), ErrWrongType},
		{"Relay-Reply received", nil, pkt(cliAddr, append([]byte{13, 0}, make([]byte, 32)...)), ErrWrongType},
		{"Solicit", nil, pkt(cliAddr, newMsg(dhcpv6.MessageTypeSolicit).opt(dhcpv6.OptionClientID, clientDUID).bytes()), ErrUnsupported},
		{"unknown interface", nil, func() Packet { p := pkt(cliAddr, validInform().bytes()); p.Iface = "eth9"; return p }(), ErrUnknownInterface},
		{"no Client ID", nil, pkt(cliAddr, newMsg(dhcpv6.MessageTypeAddrRegInform).ia(cliAddr, 1800, 3600).bytes()), ErrNoClientID},
		{"Server ID", nil, pkt(cliAddr, validInform().opt(dhcpv6.OptionServerID, serverDUID).bytes()), ErrHasServerID},
		{"no IA Address", nil, pkt(cliAddr, newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).bytes()), ErrNoIAAddress},
		{"two IA Addresses", nil, pkt(cliAddr, validInform().ia(cliAddr, 1800, 3600).bytes()), ErrMultipleIAAddress},
		{"IA Address is not the source", nil, pkt(netip.MustParseAddr("2001:db8:1::11"), validInform().bytes()), ErrAddressMismatch},
		{"ORO", nil, pkt(cliAddr, validInform().opt(dhcpv6.OptionORO, []byte{0, 23}).bytes()), ErrHasORO},
		{"preferred > valid", nil, pkt(cliAddr, newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(cliAddr, 3601, 3600).bytes()), ErrBadLifetimes},
		{"link-local", nil, pkt(netip.MustParseAddr("fe80::10"), newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(netip.MustParseAddr("fe80::10"), 1, 1).bytes()), ErrNotGlobal},
		{"not appropriate to the link", nil, pkt(netip.MustParseAddr("2001:db8:9::10"), newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(netip.MustParseAddr("2001:db8:9::10"), 1, 1).bytes()), ErrNotOnLink},
		{"relay without Relay Message", nil, pkt(relayAddr, append([]byte{12, 0}, make([]byte, 32)...)), ErrMalformed},
		{"nine relay levels", nil, pkt(relayAddr, nine), ErrRelayTooDeep},
		{"relayed IA Address is not the peer-address", nil, pkt(relayAddr, relayFwd(0, relayAddr, netip.MustParseAddr("2001:db8:1::11"), nil, validInform().bytes())), ErrAddressMismatch},
		{"rate limited per DUID", func(c *HandlerConfig) { c.RatePerDUID, c.Burst = 1, 1 }, pkt(cliAddr, validInform().bytes()), ErrRateDUID},
		{"rate limited per source", func(c *HandlerConfig) { c.RatePerSource, c.Burst = 1, 1 }, pkt(cliAddr, validInform().bytes()), ErrRateSource},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := testHandler()
			if tc.mod != nil {
				h = testHandler(tc.mod)
				// Use up the one token with another packet of the same
				// source (or DUID, from another source).
				first := tc.pkt
				if tc.want == ErrRateDUID {
					a := netip.MustParseAddr("2001:db8:1::99")
					first = pkt(a, newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(a, 1, 1).bytes())
				}
				if _, _, _, err := h.Handle(t0, first); err != nil {
					t.Fatalf("first packet: %v", err)
				}
			}
			reply, _, ev, err := h.Handle(t0, tc.pkt)
			if tc.want == nil {
				if err != nil || reply == nil {
					t.Fatalf("Handle: reply %x, err %v; want a reply", reply, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Handle: err %v, want %v", err, tc.want)
			}
			if reply != nil || ev.Kind != EventReject || ev.Reason != tc.want.Name {
				t.Errorf("Handle: reply %x, event %v %q; want none, reject %q", reply, ev.Kind, ev.Reason, tc.want.Name)
			}
			if len(h.Bindings()) != 0 && tc.mod == nil {
				t.Errorf("binding made: %v", h.Bindings())
			}
		})
	}
}

func TestHandleInformReply(t *testing.T) {
	h := testHandler()
	// An IA Address with a sub-option (status code) must come back byte for byte.
	ia := []byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0x07, 0x08, 0, 0, 0x0e, 0x10, 0, 13, 0, 2, 0, 0}
	in := newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).opt(dhcpv6.OptionIAAddr, ia).bytes()
	reply, dst, ev, err := h.Handle(t0, pkt(cliAddr, in))
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{37, 0xab, 0xcd, 0xef}
	want = append(want, 0, 1, 0, byte(len(clientDUID)))
	want = append(want, clientDUID...)
	want = append(want, 0, 2, 0, byte(len(serverDUID)))
	want = append(want, serverDUID...)
	want = append(want, 0, 5, 0, byte(len(ia)))
	want = append(want, ia...)
	if diff := cmp.Diff(want, reply); diff != "" {
		t.Errorf("reply (-want +got):\n%s", diff)
	}
	if dst != netip.MustParseAddrPort("[2001:db8:1::10]:546") {
		t.Errorf("dst %v, want [2001:db8:1::10]:546", dst)
	}
	wantB := Binding{DUID: clientDUID, Addr: cliAddr, Iface: "eth0", First: t0, Last: t0, Expires: t0.Add(3600 * time.Second), Preferred: 1800 * time.Second, Valid: 3600 * time.Second}
	if ev.Kind != EventRegister {
		t.Errorf("event %v, want register", ev.Kind)
	}
	if diff := cmp.Diff(wantB, ev.Binding, cmpAddr); diff != "" {
		t.Errorf("event binding (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Binding{wantB}, h.Bindings(), cmpAddr); diff != "" {
		t.Errorf("bindings (-want +got):\n%s", diff)
	}
}

func TestBindingLifecycle(t *testing.T) {
	h := testHandler()
	step := func(at time.Time, duid []byte, valid uint32, want EventKind) Event {
		t.Helper()
		in := newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, duid).ia(cliAddr, valid/2, valid).bytes()
		_, _, ev, err := h.Handle(at, pkt(cliAddr, in))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind != want {
			t.Fatalf("event %v, want %v", ev.Kind, want)
		}
		return ev
	}
	step(t0, clientDUID, 100, EventRegister)
	ev := step(t0.Add(10*time.Second), clientDUID, 100, EventRefresh)
	if !ev.Binding.First.Equal(t0) || !ev.Binding.Expires.Equal(t0.Add(110*time.Second)) {
		t.Errorf("refresh: first %v expires %v", ev.Binding.First, ev.Binding.Expires)
	}
	ev = step(t0.Add(20*time.Second), otherDUID, 100, EventMove)
	if !bytes.Equal(ev.PrevDUID, clientDUID) || !bytes.Equal(h.Bindings()[0].DUID, otherDUID) {
		t.Errorf("move: prev %x, bindings %v", ev.PrevDUID, h.Bindings())
	}
	step(t0.Add(30*time.Second), otherDUID, 0, EventDeregister)
	if len(h.Bindings()) != 0 {
		t.Errorf("deregister left %v", h.Bindings())
	}

	// Expiry: one due at +50 s, one refreshed to +200 s.
	a2 := netip.MustParseAddr("2001:db8:1::20")
	step(t0, clientDUID, 50, EventRegister)
	in := newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(a2, 10, 20).bytes()
	if _, _, _, err := h.Handle(t0, pkt(a2, in)); err != nil {
		t.Fatal(err)
	}
	in = newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(a2, 100, 200).bytes()
	if _, _, _, err := h.Handle(t0, pkt(a2, in)); err != nil {
		t.Fatal(err)
	}
	if at, ok := h.NextExpiry(); !ok || !at.Equal(t0.Add(50*time.Second)) {
		t.Errorf("NextExpiry %v %v, want +50s", at, ok)
	}
	if evs := h.Expire(t0.Add(49 * time.Second)); len(evs) != 0 {
		t.Errorf("expired early: %v", evs)
	}
	evs := h.Expire(t0.Add(50 * time.Second))
	if len(evs) != 1 || evs[0].Kind != EventExpire || evs[0].Binding.Addr != cliAddr {
		t.Errorf("Expire at +50s: %+v", evs)
	}
	if at, ok := h.NextExpiry(); !ok || !at.Equal(t0.Add(200*time.Second)) {
		t.Errorf("NextExpiry %v %v, want +200s (the stale +20s entry skipped)", at, ok)
	}
	// Load drops what has expired meanwhile.
	h2 := testHandler()
	evs = h2.Load(t0.Add(300*time.Second), h.Bindings())
	if len(evs) != 1 || len(h2.Bindings()) != 0 {
		t.Errorf("Load: %d expire events, %d bindings; want 1, 0", len(evs), len(h2.Bindings()))
	}
}

func TestInformationRequest(t *testing.T) {
	ir := newMsg(dhcpv6.MessageTypeInformationRequest).opt(dhcpv6.OptionClientID, clientDUID).opt(dhcpv6.OptionORO, []byte{0, 23, 0, 148}).bytes()
	ll := netip.MustParseAddr("fe80::10")
	wantBase := []byte{7, 0xab, 0xcd, 0xef, 0, 2, 0, byte(len(serverDUID))}
	wantBase = append(wantBase, serverDUID...)
	wantBase = append(wantBase, 0, 1, 0, byte(len(clientDUID)))
	wantBase = append(wantBase, clientDUID...)
	for _, tc := range []struct {
		name    string
		addrReg bool
		in      []byte
		want    []byte
		err     *Reason
	}{
		{"148 offered", true, ir, append(append([]byte(nil), wantBase...), 0, 148, 0, 0), nil},
		{"148 disabled", false, ir, wantBase, nil},
		{"148 not asked", true, newMsg(dhcpv6.MessageTypeInformationRequest).opt(dhcpv6.OptionClientID, clientDUID).opt(dhcpv6.OptionORO, []byte{0, 23}).bytes(), wantBase, nil},
		{"other server", true, newMsg(dhcpv6.MessageTypeInformationRequest).opt(dhcpv6.OptionServerID, otherDUID).bytes(), nil, ErrWrongServerID},
		{"IA_NA", true, newMsg(dhcpv6.MessageTypeInformationRequest).opt(dhcpv6.OptionIANA, make([]byte, 12)).bytes(), nil, ErrHasIA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := testHandler(func(c *HandlerConfig) { c.AddrReg = tc.addrReg })
			p := pkt(ll, tc.in)
			reply, dst, _, err := h.Handle(t0, p)
			if !errors.Is(err, tc.err) && !(err == nil && tc.err == nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if diff := cmp.Diff(tc.want, reply); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			if tc.err == nil && dst != p.Src {
				t.Errorf("dst %v, want the source %v", dst, p.Src)
			}
		})
	}
}

// TestRelayWrap: 1 to 8 levels of Relay-Forward come back as the same number
// of Relay-Reply levels with hop-count, link- and peer-address copied and
// Interface-ID echoed (RFC 8415 §19.3); the innermost peer-address is the source.
func TestRelayWrap(t *testing.T) {
	for depth := 1; depth <= HopCountLimit; depth++ {
		h := testHandler()
		msg := validInform().bytes()
		var levels []relayLevel // innermost first while building
		for i := 0; i < depth; i++ {
			peer := netip.MustParseAddr("2001:db8:77::1")
			if i == 0 {
				peer = cliAddr
			}
			link := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: byte(i + 1)})
			var ifid []byte
			if i%2 == 0 {
				ifid = []byte{'p', byte('0' + i)}
			}
			msg = relayFwd(uint8(i), link, peer, ifid, msg)
			levels = append(levels, relayLevel{HopCount: uint8(i), LinkAddr: link, PeerAddr: peer, InterfaceID: ifid})
		}
		src := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:1::2"), 547)
		reply, dst, ev, err := h.Handle(t0, Packet{Data: msg, Src: src, Iface: "eth0"})
		if err != nil {
			t.Fatalf("depth %d: %v", depth, err)
		}
		if dst != src || !ev.Relayed {
			t.Errorf("depth %d: dst %v relayed %v, want %v true", depth, dst, ev.Relayed, src)
		}
		b := reply
		for i := depth - 1; i >= 0; i-- {
			if b[0] != byte(dhcpv6.MessageTypeRelayReply) {
				t.Fatalf("depth %d level %d: type %d", depth, i, b[0])
			}
			want := levels[i]
			got := relayLevel{HopCount: b[1], LinkAddr: netip.AddrFrom16([16]byte(b[2:18])), PeerAddr: netip.AddrFrom16([16]byte(b[18:34]))}
			opts, err := parseOptions(b[34:])
			if err != nil {
				t.Fatal(err)
			}
			if o, ok := findOne(opts, uint16(dhcpv6.OptionInterfaceID)); ok {
				got.InterfaceID = o.Data
			}
			if diff := cmp.Diff(want, got, cmpAddr); diff != "" {
				t.Errorf("depth %d level %d (-want +got):\n%s", depth, i, diff)
			}
			rm, _ := findOne(opts, uint16(dhcpv6.OptionRelayMsg))
			b = rm.Data
		}
		if b[0] != byte(dhcpv6.MessageTypeAddrRegReply) {
			t.Errorf("depth %d: inner type %d", depth, b[0])
		}
		bs := h.Bindings()
		if len(bs) != 1 || bs[0].LinkAddr != levels[0].LinkAddr || bs[0].LinkLayer.String() != "02:00:00:00:00:01" {
			t.Errorf("depth %d: bindings %+v; want link-address %v and link-layer from option 79", depth, bs, levels[0].LinkAddr)
		}
	}
}

func TestEncodeLeasequery(t *testing.T) {
	xid := [3]byte{1, 2, 3}
	req := []byte{0, 4, 9, 9}
	got := EncodeLeasequery(xid, req, netip.Addr{}, cliAddr, nil)
	want := []byte{
		14, 1, 2, 3,
		0, 1, 0, 4, 0, 4, 9, 9, // Client ID
		0, 44, 0, 45, // OPTION_LQ_QUERY, 1+16+28
		1,                                              // QUERY_BY_ADDRESS
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // link-address ::
		0, 5, 0, 24, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("QUERY_BY_ADDRESS (-want +got):\n%s", diff)
	}
	got = EncodeLeasequery(xid, req, netip.MustParseAddr("2001:db8:1::1"), netip.Addr{}, []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1})
	want = []byte{
		14, 1, 2, 3,
		0, 1, 0, 4, 0, 4, 9, 9,
		0, 44, 0, 31, // 1+16+14
		2,
		0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
		0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("QUERY_BY_CLIENTID (-want +got):\n%s", diff)
	}
}

func TestDecodeLeasequeryReply(t *testing.T) {
	in := []byte{
		15, 1, 2, 3,
		0, 2, 0, 2, 0xaa, 0xbb, // Server ID
		0, 1, 0, 2, 0xcc, 0xdd, // Client ID
		0, 45, 0, 48, // OPTION_CLIENT_DATA: 14 + 28 + 8 − 2 … computed below
	}
	cd := []byte{0, 1, 0, 2, 0x11, 0x22}
	cd = append(cd, 0, 5, 0, 24, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 100, 0, 0, 0, 200)
	cd = append(cd, 0, 46, 0, 4, 0, 0, 0, 7)
	binary.BigEndian.PutUint16(in[len(in)-2:], uint16(len(cd)))
	in = append(in, cd...)
	got, err := DecodeLeasequeryReply(in)
	if err != nil {
		t.Fatal(err)
	}
	want := &LeasequeryReply{XID: [3]byte{1, 2, 3}, ServerID: []byte{0xaa, 0xbb}, ClientID: []byte{0xcc, 0xdd},
		Clients: []ClientData{{DUID: []byte{0x11, 0x22}, Addrs: []LeaseAddr{{Addr: cliAddr, Preferred: 100, Valid: 200}}, CLTTime: 7}}}
	if diff := cmp.Diff(want, got, cmpAddr); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := DecodeLeasequeryReply(in[:len(in)-1]); !errors.Is(err, ErrTruncated) {
		t.Errorf("truncated: err %v", err)
	}
}

func TestLeasequery(t *testing.T) {
	requestor := netip.MustParseAddr("2001:db8:ff::5")
	h := testHandler()
	// Two addresses for clientDUID, one for otherDUID.
	a2, a3 := netip.MustParseAddr("2001:db8:1::11"), netip.MustParseAddr("2001:db8:1::12")
	for _, r := range []struct {
		a    netip.Addr
		duid []byte
	}{{cliAddr, clientDUID}, {a2, clientDUID}, {a3, otherDUID}} {
		in := newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, r.duid).ia(r.a, 1000, 2000).bytes()
		if _, _, _, err := h.Handle(t0, pkt(r.a, in)); err != nil {
			t.Fatal(err)
		}
	}
	now := t0.Add(100 * time.Second)
	lq := func(src netip.Addr, b []byte) (*LeasequeryReply, error) {
		reply, _, ev, err := h.Handle(now, Packet{Data: b, Src: netip.AddrPortFrom(src, 40000), Iface: "lo"})
		if err != nil {
			return nil, err
		}
		r, err := DecodeLeasequeryReply(reply)
		if err == nil && r.Status != ev.Status {
			t.Errorf("event status %d, reply %d", ev.Status, r.Status)
		}
		return r, err
	}
	req := []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 5}
	xid := [3]byte{9, 9, 9}
	byAddr := func(a netip.Addr) []byte { return EncodeLeasequery(xid, req, netip.Addr{}, a, nil) }
	addrs := func(r *LeasequeryReply) []LeaseAddr {
		var out []LeaseAddr
		for _, c := range r.Clients {
			out = append(out, c.Addrs...)
		}
		return out
	}

	r, err := lq(requestor, byAddr(cliAddr))
	if err != nil {
		t.Fatal(err)
	}
	want := []LeaseAddr{{Addr: cliAddr, Preferred: 900, Valid: 1900}, {Addr: a2, Preferred: 900, Valid: 1900}}
	if diff := cmp.Diff(want, addrs(r), cmpAddr); diff != "" || r.Status != 0 || r.Clients[0].CLTTime != 100 || !bytes.Equal(r.Clients[0].DUID, clientDUID) {
		t.Errorf("by address: status %d clients %+v (-want +got addrs):\n%s", r.Status, r.Clients, diff)
	}
	r, _ = lq(requestor, EncodeLeasequery(xid, req, netip.Addr{}, netip.Addr{}, otherDUID))
	if diff := cmp.Diff([]LeaseAddr{{Addr: a3, Preferred: 900, Valid: 1900}}, addrs(r), cmpAddr); diff != "" {
		t.Errorf("by client ID (-want +got):\n%s", diff)
	}
	r, _ = lq(requestor, byAddr(netip.MustParseAddr("2001:db8:1::99")))
	if r.Status != 0 || len(r.Clients) != 0 {
		t.Errorf("unknown address: %+v, want success with no client data", r)
	}

	// Status codes.
	withQuery := func(q []byte) []byte {
		return appendOption(appendOption(msgHeader(dhcpv6.MessageTypeLeaseQuery, xid), 1, req), uint16(dhcpv6.OptionLQQuery), q)
	}
	zero16 := make([]byte, 16)
	for _, tc := range []struct {
		name string
		src  netip.Addr
		in   []byte
		want uint16
	}{
		{"not allowed", netip.MustParseAddr("2001:db8:1::50"), byAddr(cliAddr), StatusNotAllowed},
		{"unknown query type", requestor, withQuery(append([]byte{3}, zero16...)), StatusUnknownQueryType},
		{"by address without IA Address", requestor, withQuery(append([]byte{1}, zero16...)), StatusMalformedQuery},
		{"by client ID without Client ID", requestor, withQuery(append([]byte{2}, zero16...)), StatusMalformedQuery},
		{"short query", requestor, withQuery([]byte{1, 0}), StatusMalformedQuery},
		{"unknown link", requestor, EncodeLeasequery(xid, req, netip.MustParseAddr("2001:db8:99::1"), cliAddr, nil), StatusNotConfigured},
	} {
		r, err := lq(tc.src, tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if r.Status != tc.want || len(r.Clients) != 0 {
			t.Errorf("%s: status %d (%d clients), want %d", tc.name, r.Status, len(r.Clients), tc.want)
		}
	}
	// Discarded (RFC 5007 §4.2.1).
	for _, tc := range []struct {
		name string
		in   []byte
		want *Reason
	}{
		{"no Client ID", appendOption(msgHeader(dhcpv6.MessageTypeLeaseQuery, xid), uint16(dhcpv6.OptionLQQuery), append([]byte{1}, zero16...)), ErrNoClientID},
		{"no query", appendOption(msgHeader(dhcpv6.MessageTypeLeaseQuery, xid), 1, req), ErrNoQuery},
		{"other server", appendOption(byAddr(cliAddr), 2, otherDUID), ErrWrongServerID},
	} {
		if _, err := lq(requestor, tc.in); !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestLeasequeryClientLink: a client with bindings on two links, queried by
// client ID on all links, gets OPTION_LQ_CLIENT_LINK; queried per link, the
// client data of that link.
func TestLeasequeryClientLink(t *testing.T) {
	h := testHandler(func(c *HandlerConfig) {
		c.Prefixes["2001:db8:2::1"] = []netip.Prefix{netip.MustParsePrefix("2001:db8:2::/64")}
	})
	relay, link2 := netip.MustParseAddr("2001:db8:1::2"), netip.MustParseAddr("2001:db8:2::1")
	a2 := netip.MustParseAddr("2001:db8:2::10")
	if _, _, _, err := h.Handle(t0, pkt(cliAddr, validInform().bytes())); err != nil {
		t.Fatal(err)
	}
	in := newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(a2, 10, 20).bytes()
	if _, _, _, err := h.Handle(t0, Packet{Data: relayFwd(0, link2, a2, nil, in), Src: netip.AddrPortFrom(relay, 547), Iface: "eth0"}); err != nil {
		t.Fatal(err)
	}
	req := []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 5}
	lq := func(link netip.Addr) *LeasequeryReply {
		t.Helper()
		b := EncodeLeasequery([3]byte{1, 2, 3}, req, link, netip.Addr{}, clientDUID)
		reply, _, _, err := h.Handle(t0, Packet{Data: b, Src: netip.MustParseAddrPort("[2001:db8:ff::5]:4000"), Iface: "lo"})
		if err != nil {
			t.Fatal(err)
		}
		r, err := DecodeLeasequeryReply(reply)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := lq(netip.Addr{})
	wantLinks := []netip.Addr{netip.MustParseAddr("2001:db8:1::"), link2}
	if diff := cmp.Diff(wantLinks, r.ClientLinks, cmpAddr); diff != "" || len(r.Clients) != 0 {
		t.Errorf("all links: %d client data; links (-want +got):\n%s", len(r.Clients), diff)
	}
	for i, want := range []netip.Addr{cliAddr, a2} {
		r := lq(wantLinks[i])
		if len(r.Clients) != 1 || len(r.Clients[0].Addrs) != 1 || r.Clients[0].Addrs[0].Addr != want {
			t.Errorf("link %s: %+v, want only %s", wantLinks[i], r.Clients, want)
		}
	}
}

// With registration off (--no-addr-reg) the server acts as one that does
// not support it: a valid ADDR-REG-INFORM is dropped and nothing is bound.
func TestInformDroppedWhenRegistrationOff(t *testing.T) {
	h := testHandler(func(c *HandlerConfig) { c.AddrReg = false })
	reply, _, ev, reason := h.Handle(time.Unix(1e9, 0), pkt(cliAddr, validInform().bytes()))
	if reply != nil || !errors.Is(reason, ErrRegistrationOff) || ev.Reason != "registration_disabled" {
		t.Fatalf("Handle = reply %x, event %+v, reason %v; want a drop as registration_disabled", reply, ev, reason)
	}
	if n := len(h.Bindings()); n != 0 {
		t.Errorf("%d bindings after a dropped INFORM", n)
	}
}

// Relayed messages are trusted no further than the configuration: they must
// arrive on a served interface, for a link-address the server knows; the
// leasequery allow list is checked against the packet's real source, not a
// peer-address the sender wrote.
func TestRelaySpoofing(t *testing.T) {
	h := testHandler(func(c *HandlerConfig) {
		c.Prefixes["2001:db8:2::1"] = []netip.Prefix{netip.MustParsePrefix("2001:db8:2::/64")}
	})
	a2 := netip.MustParseAddr("2001:db8:2::10")
	in := newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(a2, 10, 20).bytes()
	relay := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:1::2"), 547)
	for _, tc := range []struct {
		name string
		pkt  Packet
		want *Reason
	}{
		{"unserved interface", Packet{Data: relayFwd(0, netip.MustParseAddr("2001:db8:2::1"), a2, nil, in), Src: relay, Iface: "eth9"}, ErrUnknownInterface},
		{"unknown link", Packet{Data: relayFwd(0, netip.MustParseAddr("2001:db8:99::1"), netip.MustParseAddr("2001:db8:99::10"),
			nil, newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(netip.MustParseAddr("2001:db8:99::10"), 10, 20).bytes()), Src: relay, Iface: "eth0"}, ErrNotOnLink},
	} {
		if _, _, _, err := h.Handle(t0, tc.pkt); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	// A leasequery wrapped in a Relay-Forward whose peer-address is an
	// allowed requestor, sent from a host that is not allowed.
	q := EncodeLeasequery([3]byte{9, 9, 9}, clientDUID, netip.Addr{}, cliAddr, nil)
	allowed := netip.MustParseAddr("2001:db8:ff::5")
	spoof := Packet{Data: relayFwd(0, netip.MustParseAddr("2001:db8:1::1"), allowed, nil, q),
		Src: netip.AddrPortFrom(netip.MustParseAddr("2001:db8:bad::1"), 547), Iface: "eth0"}
	_, _, ev, err := h.Handle(t0, spoof)
	if err != nil || ev.Status != StatusNotAllowed {
		t.Errorf("relayed leasequery from a disallowed host: status %d, err %v; want NotAllowed", ev.Status, err)
	}
}

// The event (stored, logged later) owns its link-layer address: reusing
// the read buffer does not change it.
func TestEventOwnsLinkLayer(t *testing.T) {
	h := testHandler()
	msg := relayFwd(0, netip.MustParseAddr("2001:db8:1::1"), cliAddr, nil, validInform().bytes())
	_, _, ev, err := h.Handle(t0, Packet{Data: msg, Src: netip.AddrPortFrom(netip.MustParseAddr("2001:db8:1::2"), 547), Iface: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	want := ev.Binding.LinkLayer.String()
	for i := range msg {
		msg[i] = 0xee
	}
	if got := ev.Binding.LinkLayer.String(); got != want || got == "" {
		t.Fatalf("link-layer address %q after the buffer was reused, want %q", got, want)
	}
}

// RFC 8415 §11.1 bounds a DUID at 130 octets; one client holds at most
// DefaultMaxBindingsPerDUID addresses.
func TestClientLimits(t *testing.T) {
	h := testHandler(func(c *HandlerConfig) {
		c.Prefixes["eth0"] = []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}
	})
	long := newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, make([]byte, 131)).ia(cliAddr, 10, 20).bytes()
	if _, _, _, err := h.Handle(t0, pkt(cliAddr, long)); !errors.Is(err, ErrMalformed) {
		t.Errorf("131-octet DUID: err = %v, want malformed", err)
	}
	for i := range DefaultMaxBindingsPerDUID + 1 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, byte(i >> 8), 15: byte(i)})
		m := newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(a, 10, 20).bytes()
		_, _, _, err := h.Handle(t0.Add(time.Duration(i)*time.Second), pkt(a, m))
		if i < DefaultMaxBindingsPerDUID && err != nil {
			t.Fatalf("binding %d: %v", i, err)
		}
		if i == DefaultMaxBindingsPerDUID && !errors.Is(err, ErrTooManyBindings) {
			t.Fatalf("binding %d: err = %v, want too_many_bindings", i, err)
		}
	}
}
