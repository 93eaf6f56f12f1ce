package registrar

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
)

// errMalformed is what parseDatagram returns for anything it cannot walk.
var errMalformed = errors.New("malformed DHCPv6 datagram")

// message is what the receive path needs of a datagram from a server. It
// holds slices of the buffer it was parsed from.
type message struct {
	typ           uint8
	xid           xid
	clientID      []byte // nil when absent
	hasClientID   bool
	hasServerID   bool
	serverID      []byte
	addrRegEnable bool // OPTION_ADDR_REG_ENABLE present (RFC 9686 §4.1)
	iaAddrs       int  // top-level IA Address options
	iaAddr        netip.Addr
	iaPreferred   uint32
	iaValid       uint32
}

// parseDatagram parses a UDP datagram (header included, as a raw IPv6
// socket delivers it) from a DHCPv6 server to a client: source port 547,
// destination port 546. It walks the top-level options only; it never
// panics and does not allocate.
func parseDatagram(b []byte) (message, error) {
	if len(b) < udpHdrLen {
		return message{}, errMalformed
	}
	if binary.BigEndian.Uint16(b[0:]) != serverPort || binary.BigEndian.Uint16(b[2:]) != clientPort {
		return message{}, errMalformed
	}
	// The UDP length bounds the payload; bytes after it are not the datagram's.
	n := int(binary.BigEndian.Uint16(b[4:]))
	if n < udpHdrLen || n > len(b) {
		return message{}, errMalformed
	}
	return parseMessage(b[udpHdrLen:n])
}

// parseMessage parses a DHCPv6 client/server message (RFC 8415 §8).
func parseMessage(b []byte) (message, error) {
	var m message
	if len(b) < 4 {
		return m, errMalformed
	}
	m.typ = b[0]
	copy(m.xid[:], b[1:4])
	for o := b[4:]; len(o) > 0; {
		if len(o) < 4 {
			return message{}, errMalformed
		}
		code := binary.BigEndian.Uint16(o)
		l := int(binary.BigEndian.Uint16(o[2:]))
		if len(o)-4 < l {
			return message{}, errMalformed
		}
		data := o[4 : 4+l]
		o = o[4+l:]
		switch code {
		case optClientID:
			if m.hasClientID {
				return message{}, errMalformed // RFC 8415 §21.2: at most one
			}
			m.hasClientID, m.clientID = true, data
		case optServerID:
			m.hasServerID, m.serverID = true, data
		case optAddrRegEnable:
			m.addrRegEnable = true
		case optIAAddr:
			if l < iaAddrLen {
				return message{}, errMalformed
			}
			m.iaAddrs++
			if m.iaAddrs == 1 {
				m.iaAddr = netip.AddrFrom16([16]byte(data[:16]))
				m.iaPreferred = binary.BigEndian.Uint32(data[16:])
				m.iaValid = binary.BigEndian.Uint32(data[20:])
			}
		}
	}
	return m, nil
}

// DropReason says why a received datagram was discarded.
type DropReason string

// Reasons for discarding a datagram, one per check.
const (
	DropMalformed   DropReason = "malformed"       // not a parsable DHCPv6 datagram 547 → 546
	DropInform      DropReason = "addr-reg-inform" // an ADDR-REG-INFORM: clients discard them (RFC 9686 §4.2)
	DropTransaction DropReason = "transaction-id"  // no outstanding exchange has this transaction ID
	DropType        DropReason = "message-type"    // not the reply type the exchange waits for
	DropDestination DropReason = "destination"     // IPv6 destination is not the registered (or probing) address
	DropInterface   DropReason = "interface"       // arrived on another interface than the exchange's
	DropIAAddress   DropReason = "ia-address"      // not exactly one IA Address, or not for the registered address
	DropClientID    DropReason = "client-id"       // carries a Client Identifier that is not ours (RFC 8415 §16.10)
	DropServerID    DropReason = "no-server-id"    // a Reply without Server Identifier, or without Client Identifier (RFC 8415 §16.10)
	DropAddressGone DropReason = "address-gone"    // the address is no longer on the receiving interface
	DropBacklog     DropReason = "backlog"         // the exchange had too many replies queued
)

// expect is what an outstanding exchange accepts.
type expect struct {
	typ      uint8      // msgAddrRegReply or msgReply
	xid      xid        // the exchange's transaction ID
	ifindex  int        // the interface the exchange sends on
	dst      netip.Addr // the address it sends from, and so the reply's destination
	iaAddr   bool       // whether an IA Address for dst is required (ADDR-REG-REPLY)
	clientID []byte     // our DUID
}

// validate applies the reply rules to m, received for destination dst on
// interface ifindex, and returns "" to accept it or why it is dropped.
// For an ADDR-REG-REPLY these are RFC 9686 §4.3's four rules: destination
// is the registered address; IA Address matches it; the address is still on
// the receiving interface (assigned is called last, only when everything else
// holds, as it may read the kernel); transaction ID matches. Extra options
// (Server ID, Client ID, as ISC Kea 3.x sends) are accepted, but a Client ID
// other than ours is not (RFC 8415 §16.10). assigned may be nil.
func validate(m *message, dst netip.Addr, ifindex int, e *expect, assigned func() bool) DropReason {
	switch {
	case m.typ == msgAddrRegInform:
		return DropInform
	case m.xid != e.xid:
		return DropTransaction
	case m.typ != e.typ:
		return DropType
	case dst.WithZone("") != e.dst.WithZone(""):
		return DropDestination
	case ifindex != e.ifindex:
		return DropInterface
	case e.iaAddr && (m.iaAddrs != 1 || m.iaAddr != e.dst.WithZone("")):
		return DropIAAddress
	case m.hasClientID && !bytes.Equal(m.clientID, e.clientID):
		return DropClientID
	case m.typ == msgReply && (!m.hasServerID || !m.hasClientID):
		// RFC 8415 §16.10: a Reply to an Information-Request must name
		// the server and echo our Client ID; anything else could mark
		// the link as supporting registration. (ADDR-REG-REPLY need
		// not: RFC 9686 §4.3 asks only for the IA Address.)
		return DropServerID
	case assigned != nil && !assigned():
		return DropAddressGone
	}
	return ""
}
