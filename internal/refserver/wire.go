package refserver

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// Protocol constants.
const (
	// HopCountLimit is RFC 8415 §7.6 HOP_COUNT_LIMIT: the deepest relay nesting accepted.
	HopCountLimit = 8
	// MaxMessageSize bounds what the server accepts; larger datagrams are dropped as oversized.
	MaxMessageSize = 16384

	relayHeaderLen = 34 // msg-type, hop-count, link-address, peer-address
	msgHeaderLen   = 4  // msg-type, transaction-id

	// RFC 5007 status codes, as published (the draft had them as TBD).
	StatusSuccess             uint16 = 0
	StatusUnknownQueryType    uint16 = 7
	StatusMalformedQuery      uint16 = 8
	StatusNotConfigured       uint16 = 9
	StatusNotAllowed          uint16 = 10
	QueryByAddress            uint8  = 1 // RFC 5007 §4.1.2.1 (swapped in the draft)
	QueryByClientID           uint8  = 2
	QueryByRelayID            uint8  = 3   // RFC 5460 §5.3 (not served: no relay IDs are kept)
	QueryByLinkAddress        uint8  = 4   // RFC 5460 §5.3: Bulk Leasequery only
	QueryByRemoteID           uint8  = 5   // RFC 5460 §5.3 (not served)
	StatusUnspecFail          uint16 = 1   // RFC 8415 §21.13
	StatusQueryTerminated     uint16 = 11  // RFC 5460 §5.5
	optionRelaySourcePort            = 135 // RFC 8357
	infiniteLifetime                 = 0xffffffff
	optionCodeClientLinkLayer        = 79
)

// rawOption is one option as found on the wire: its code and its data, which
// aliases the packet buffer.
type rawOption struct {
	Code uint16
	Data []byte
}

// parseOptions walks a DHCPv6 option area. It fails with ErrTruncated when an
// option's length runs past the end.
func parseOptions(b []byte) ([]rawOption, error) { return appendOptions(nil, b) }

// appendOptions is parseOptions appending to opts, so that a caller can
// parse into an array on its stack.
func appendOptions(opts []rawOption, b []byte) ([]rawOption, error) {
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("%w: %d trailing bytes in option area", ErrTruncated, len(b))
		}
		code := binary.BigEndian.Uint16(b)
		n := int(binary.BigEndian.Uint16(b[2:]))
		if len(b) < 4+n {
			return nil, fmt.Errorf("%w: option %d length %d, %d bytes left", ErrTruncated, code, n, len(b)-4)
		}
		opts = append(opts, rawOption{Code: code, Data: b[4 : 4+n : 4+n]})
		b = b[4+n:]
	}
	return opts, nil
}

// countOptions returns how many options have the given code.
func countOptions(opts []rawOption, code uint16) int {
	n := 0
	for _, o := range opts {
		if o.Code == code {
			n++
		}
	}
	return n
}

// findOne returns the first option with the given code.
func findOne(opts []rawOption, code uint16) (rawOption, bool) {
	for _, o := range opts {
		if o.Code == code {
			return o, true
		}
	}
	return rawOption{}, false
}

func appendOption(b []byte, code uint16, data []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// relayLevel is one Relay-Forward layer, outermost first in a relayChain.
type relayLevel struct {
	HopCount    uint8
	LinkAddr    netip.Addr
	PeerAddr    netip.Addr
	InterfaceID []byte // nil when absent; echoed in the Relay-Reply (RFC 8415 §19.3)
	HasIfaceID  bool
	LinkLayer   []byte // option 79 data (hw type + address), nil when absent
}

// unwrapRelaysInto peels Relay-Forward layers (RFC 8415 §9) off b into chain
// (no allocation) and returns them outermost first together with the inner
// client message.
func unwrapRelaysInto(chain *[HopCountLimit]relayLevel, b []byte) ([]relayLevel, []byte, error) {
	n := 0
	var optBuf [8]rawOption
	for {
		if len(b) == 0 {
			return nil, nil, fmt.Errorf("%w: empty message", ErrTruncated)
		}
		mt := dhcpv6.MessageType(b[0])
		if mt == dhcpv6.MessageTypeRelayReply {
			return nil, nil, fmt.Errorf("%w: %s", ErrWrongType, mt)
		}
		if mt != dhcpv6.MessageTypeRelayForward {
			if len(b) < msgHeaderLen {
				return nil, nil, fmt.Errorf("%w: %d-byte message", ErrTruncated, len(b))
			}
			return chain[:n], b, nil
		}
		if n == HopCountLimit {
			return nil, nil, fmt.Errorf("%w: more than %d Relay-Forward levels", ErrRelayTooDeep, HopCountLimit)
		}
		if len(b) < relayHeaderLen {
			return nil, nil, fmt.Errorf("%w: %d-byte Relay-Forward", ErrTruncated, len(b))
		}
		lvl := relayLevel{
			HopCount: b[1],
			LinkAddr: netip.AddrFrom16([16]byte(b[2:18])),
			PeerAddr: netip.AddrFrom16([16]byte(b[18:34])),
		}
		opts, err := appendOptions(optBuf[:0], b[relayHeaderLen:])
		if err != nil {
			return nil, nil, fmt.Errorf("relay level %d: %w", n, err)
		}
		if o, ok := findOne(opts, uint16(dhcpv6.OptionInterfaceID)); ok {
			lvl.InterfaceID, lvl.HasIfaceID = o.Data, true
		}
		if o, ok := findOne(opts, optionCodeClientLinkLayer); ok {
			lvl.LinkLayer = o.Data
		}
		if k := countOptions(opts, uint16(dhcpv6.OptionRelayMsg)); k != 1 {
			return nil, nil, fmt.Errorf("%w: relay level %d has %d Relay Message options", ErrMalformed, n, k)
		}
		rm, _ := findOne(opts, uint16(dhcpv6.OptionRelayMsg))
		chain[n] = lvl
		n++
		b = rm.Data
	}
}

// relayHeadroom is how many bytes the Relay-Reply levels for chain take in
// front of the client message (RFC 8415 §19.3).
func relayHeadroom(chain []relayLevel) int {
	n := 0
	for _, l := range chain {
		n += relayHeaderLen + 4 // header and the Relay Message option's code and length
		if l.HasIfaceID {
			n += 4 + len(l.InterfaceID)
		}
	}
	return n
}

// fillRelayReply writes the Relay-Reply levels for chain into the first
// relayHeadroom(chain) bytes of b, whose rest is the client message: each
// level copies hop-count, link-address and peer-address from the matching
// Relay-Forward and echoes its Interface-ID (RFC 8415 §19.3).
func fillRelayReply(b []byte, chain []relayLevel) {
	w := b[:0]
	for _, l := range chain {
		w = append(w, byte(dhcpv6.MessageTypeRelayReply), l.HopCount)
		la, pa := l.LinkAddr.As16(), l.PeerAddr.As16()
		w = append(w, la[:]...)
		w = append(w, pa[:]...)
		if l.HasIfaceID {
			w = appendOption(w, uint16(dhcpv6.OptionInterfaceID), l.InterfaceID)
		}
		rest := len(b) - len(w) - 4 // everything after this Relay Message option's header
		w = binary.BigEndian.AppendUint16(w, uint16(dhcpv6.OptionRelayMsg))
		w = binary.BigEndian.AppendUint16(w, uint16(rest))
	}
}

// iaAddress is the content of an IA Address option (RFC 8415 §21.6).
type iaAddress struct {
	Addr      netip.Addr
	Preferred uint32
	Valid     uint32
}

func parseIAAddress(b []byte) (iaAddress, error) {
	if len(b) < 24 {
		return iaAddress{}, fmt.Errorf("%w: IA Address option of %d bytes", ErrMalformed, len(b))
	}
	if _, err := parseOptions(b[24:]); err != nil {
		return iaAddress{}, fmt.Errorf("IA Address options: %w", err)
	}
	return iaAddress{
		Addr:      netip.AddrFrom16([16]byte(b[:16])),
		Preferred: binary.BigEndian.Uint32(b[16:]),
		Valid:     binary.BigEndian.Uint32(b[20:]),
	}, nil
}

func appendIAAddress(b []byte, a iaAddress) []byte {
	var d [24]byte
	a16 := a.Addr.As16()
	copy(d[:], a16[:])
	binary.BigEndian.PutUint32(d[16:], a.Preferred)
	binary.BigEndian.PutUint32(d[20:], a.Valid)
	return appendOption(b, uint16(dhcpv6.OptionIAAddr), d[:])
}

func appendStatus(b []byte, code uint16, msg string) []byte {
	d := binary.BigEndian.AppendUint16(nil, code)
	return appendOption(b, uint16(dhcpv6.OptionStatusCode), append(d, msg...))
}

func msgHeader(mt dhcpv6.MessageType, xid [3]byte) []byte {
	return appendMsgHeader(make([]byte, 0, 128), mt, xid)
}

func appendMsgHeader(b []byte, mt dhcpv6.MessageType, xid [3]byte) []byte {
	return append(b, byte(mt), xid[0], xid[1], xid[2])
}

// lqQuery is the content of OPTION_LQ_QUERY (RFC 5007 §4.1.2.1).
type lqQuery struct {
	Type     uint8
	LinkAddr netip.Addr
	Options  []rawOption
	err      error // the option did not parse: MalformedQuery
}

func parseLQQuery(b []byte) (lqQuery, error) {
	if len(b) < 17 {
		return lqQuery{}, fmt.Errorf("%w: OPTION_LQ_QUERY of %d bytes", ErrMalformed, len(b))
	}
	opts, err := parseOptions(b[17:])
	if err != nil {
		return lqQuery{}, fmt.Errorf("query-options: %w", err)
	}
	return lqQuery{Type: b[0], LinkAddr: netip.AddrFrom16([16]byte(b[1:17])), Options: opts}, nil
}

// EncodeLeasequery builds a LEASEQUERY message (RFC 5007 §4.3.1). Exactly one
// of addr (QUERY_BY_ADDRESS) or clientID (QUERY_BY_CLIENTID) is used.
func EncodeLeasequery(xid [3]byte, requestor []byte, link netip.Addr, addr netip.Addr, clientID []byte) []byte {
	if addr.IsValid() {
		return encodeLeasequery(xid, requestor, QueryByAddress, link, appendIAAddress(nil, iaAddress{Addr: addr}))
	}
	return encodeLeasequery(xid, requestor, QueryByClientID, link, appendOption(nil, uint16(dhcpv6.OptionClientID), clientID))
}

// encodeLeasequery builds a LEASEQUERY of any query type with the given
// query-options.
func encodeLeasequery(xid [3]byte, requestor []byte, qtype uint8, link netip.Addr, queryOpts []byte) []byte {
	b := msgHeader(dhcpv6.MessageTypeLeaseQuery, xid)
	b = appendOption(b, uint16(dhcpv6.OptionClientID), requestor)
	if !link.IsValid() {
		link = netip.IPv6Unspecified()
	}
	l16 := link.As16()
	q := append([]byte{qtype}, l16[:]...)
	return appendOption(b, uint16(dhcpv6.OptionLQQuery), append(q, queryOpts...))
}

// LeaseAddr is one address in a leasequery answer, with remaining lifetimes.
type LeaseAddr struct {
	Addr      netip.Addr `json:"addr"`
	Preferred uint32     `json:"preferred_lifetime"`
	Valid     uint32     `json:"valid_lifetime"`
}

// ClientData is one OPTION_CLIENT_DATA (RFC 5007 §4.1.2.2).
type ClientData struct {
	DUID    []byte      `json:"duid"`
	Addrs   []LeaseAddr `json:"addrs"`
	CLTTime uint32      `json:"clt_time"` // seconds since the server last heard from the client
}

// LeasequeryReply is a decoded LEASEQUERY-REPLY.
type LeasequeryReply struct {
	XID      [3]byte      `json:"-"`
	ServerID []byte       `json:"server_id"`
	ClientID []byte       `json:"client_id"`
	Status   uint16       `json:"status"`
	Message  string       `json:"status_message,omitempty"`
	Clients  []ClientData `json:"clients"`
	// ClientLinks is OPTION_LQ_CLIENT_LINK: the client has bindings on
	// these links; query each with its link-address.
	ClientLinks []netip.Addr `json:"client_links,omitempty"`
}

// DecodeLeasequeryReply parses a LEASEQUERY-REPLY (RFC 5007 §4.1.1).
func DecodeLeasequeryReply(b []byte) (*LeasequeryReply, error) {
	if len(b) < msgHeaderLen {
		return nil, fmt.Errorf("%w: %d-byte message", ErrTruncated, len(b))
	}
	if dhcpv6.MessageType(b[0]) != dhcpv6.MessageTypeLeaseQueryReply {
		return nil, fmt.Errorf("%w: %s", ErrWrongType, dhcpv6.MessageType(b[0]))
	}
	opts, err := parseOptions(b[msgHeaderLen:])
	if err != nil {
		return nil, err
	}
	r := &LeasequeryReply{XID: [3]byte(b[1:4])}
	for _, o := range opts {
		switch dhcpv6.OptionCode(o.Code) {
		case dhcpv6.OptionServerID:
			r.ServerID = o.Data
		case dhcpv6.OptionClientID:
			r.ClientID = o.Data
		case dhcpv6.OptionStatusCode:
			if len(o.Data) < 2 {
				return nil, fmt.Errorf("%w: status code option of %d bytes", ErrMalformed, len(o.Data))
			}
			r.Status = binary.BigEndian.Uint16(o.Data)
			r.Message = string(o.Data[2:])
		case dhcpv6.OptionLQClientLink:
			if len(o.Data)%16 != 0 {
				return nil, fmt.Errorf("%w: OPTION_LQ_CLIENT_LINK of %d bytes", ErrMalformed, len(o.Data))
			}
			for d := o.Data; len(d) > 0; d = d[16:] {
				r.ClientLinks = append(r.ClientLinks, netip.AddrFrom16([16]byte(d[:16])))
			}
		case dhcpv6.OptionClientData:
			cd, err := decodeClientData(o.Data)
			if err != nil {
				return nil, err
			}
			r.Clients = append(r.Clients, cd)
		}
	}
	return r, nil
}

func decodeClientData(b []byte) (ClientData, error) {
	opts, err := parseOptions(b)
	if err != nil {
		return ClientData{}, fmt.Errorf("client data: %w", err)
	}
	var cd ClientData
	for _, o := range opts {
		switch dhcpv6.OptionCode(o.Code) {
		case dhcpv6.OptionClientID:
			cd.DUID = o.Data
		case dhcpv6.OptionIAAddr:
			ia, err := parseIAAddress(o.Data)
			if err != nil {
				return ClientData{}, err
			}
			cd.Addrs = append(cd.Addrs, LeaseAddr(ia))
		case dhcpv6.OptionCLTTime:
			if len(o.Data) != 4 {
				return ClientData{}, fmt.Errorf("%w: OPTION_CLT_TIME of %d bytes", ErrMalformed, len(o.Data))
			}
			cd.CLTTime = binary.BigEndian.Uint32(o.Data)
		}
	}
	return cd, nil
}
