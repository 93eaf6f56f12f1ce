// The RFC 7610 classifier: one pure function from a frame to an Action and
// a Reason (see the package doc for its decisions on malformed input).

package shield

import "encoding/binary"

// Action is what to do with a frame.
type Action uint8

const (
	// Drop discards the frame. It is the zero value, so a zero Config drops
	// unknown Next Header values as RFC 7610 §5 rule 3 requires by default.
	Drop Action = iota
	// Pass forwards the frame.
	Pass
)

func (a Action) String() string {
	switch a {
	case Drop:
		return "drop"
	case Pass:
		return "pass"
	}
	return "action(" + itoa(int(a)) + ")"
}

// Reason says why Classify reached its verdict. On a trusted port the Action
// is always Pass but the Reason still says what the frame was, so a caller can
// count server messages seen on trusted ports.
type Reason uint8

const (
	// ReasonPass: an IPv6 packet that is not a DHCPv6-server message
	// (RFC 7610 §5 rule 5).
	ReasonPass Reason = iota
	// ReasonNotIPv6: not an IPv6 frame.
	ReasonNotIPv6
	// ReasonNonFirstFragment: a fragment with a non-zero offset; it passes
	// because it cannot reassemble without its dropped first fragment
	// (RFC 7610 §5 rule 2, NOTE).
	ReasonNonFirstFragment
	// ReasonClientBoundDHCPv6: UDP to port 546, any DHCPv6 message meant for
	// a client (RFC 7610 §5 rule 4).
	ReasonClientBoundDHCPv6
	// ReasonRelayReply: UDP to port 547 with msg-type 13, Relay-Reply, meant
	// for a relay agent (RFC 7610 §5 rule 4; RFC 8415 §7.3).
	ReasonRelayReply
	// ReasonIncompleteFirstFragment: a first fragment that does not hold the
	// whole header chain through the upper-layer header (RFC 7610 §5 rule 2).
	ReasonIncompleteFirstFragment
	// ReasonUnknownNextHeader: a Next Header value the classifier does not
	// recognise (RFC 7610 §5 rule 3).
	ReasonUnknownNextHeader
	// ReasonTruncated: an IPv6 frame cut short inside the header chain.
	ReasonTruncated

	numReasons
)

// NumReasons is the number of Reason values, for arrays of counters indexed
// by Reason.
const NumReasons = int(numReasons)

var reasonNames = [numReasons]string{
	ReasonPass:                    "pass",
	ReasonNotIPv6:                 "not_ipv6",
	ReasonNonFirstFragment:        "non_first_fragment",
	ReasonClientBoundDHCPv6:       "client_bound_dhcpv6",
	ReasonRelayReply:              "relay_reply",
	ReasonIncompleteFirstFragment: "incomplete_first_fragment",
	ReasonUnknownNextHeader:       "unknown_next_header",
	ReasonTruncated:               "truncated",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "reason(" + itoa(int(r)) + ")"
}

// Alert reports whether a drop for this reason is a security alert (a
// DHCPv6-server message, RFC 7610 §5 rule 4) rather than a security fault
// (a packet that could not be parsed, rules 2 and 3).
func (r Reason) Alert() bool { return r == ReasonClientBoundDHCPv6 || r == ReasonRelayReply }

// Config holds the configuration knobs of RFC 7610.
type Config struct {
	// UnknownNextHeader is the action for a packet whose header chain holds
	// an unrecognised Next Header value. RFC 7610 §5 rule 3: the knob MUST
	// exist and MUST default to drop; Drop is the zero value.
	UnknownNextHeader Action
}

// Verdict is the result of Classify.
type Verdict struct {
	Action Action
	Reason Reason
}

// EtherTypes.
const (
	etherTypeIPv6   = 0x86dd
	etherType8021Q  = 0x8100 // C-tag
	etherType8021AD = 0x88a8 // S-tag (QinQ)
	etherTypeQinQ   = 0x9100 // pre-standard QinQ S-tag
	etherTypeQinQ2  = 0x9200
)

// DHCPv6 (RFC 8415 §7.2, §7.3).
const (
	portClient      = 546
	portServer      = 547
	msgTypeRelayRep = 13
)

// Kinds of Next Header value.
const (
	nhUnknown   uint8 = iota
	nhExtension       // (hdr ext len + 1) * 8 octets
	nhFragment        // 8 octets
	nhAH              // (payload len + 2) * 4 octets
	nhUDP             // upper layer, inspected
	nhUpper           // other recognised upper layer, or No Next Header
)

// nextHeader classifies each IPv6 Next Header value; minUpper gives the
// minimum header size of recognised upper layers that must be present
// (RFC 7610 §5 rule 2: "up to, and including, the Upper-Layer Header").
var nextHeader, minUpper = func() (k [256]uint8, m [256]uint8) {
	// IPv6 Extension Headers (RFC 7045, IANA "IPv6 Extension Header Types").
	for _, p := range []int{
		0,   // Hop-by-Hop Options
		43,  // Routing
		60,  // Destination Options
		135, // Mobility (RFC 6275)
		139, // HIP (RFC 7401)
		140, // Shim6 (RFC 5533)
	} {
		k[p] = nhExtension
	}
	k[44] = nhFragment
	k[51] = nhAH // parse past AH (RFC 4302 §2.2)
	k[17] = nhUDP
	m[17] = 8
	// Upper layers that end the chain. ESP (50) and a second IPv6 header (41)
	// are upper-layer headers (RFC 7610 §3, §5 NOTE).
	for _, p := range []struct{ proto, min uint8 }{
		{4, 20},   // IPv4 in IPv6
		{6, 20},   // TCP
		{33, 12},  // DCCP
		{41, 40},  // IPv6 in IPv6
		{47, 4},   // GRE
		{50, 8},   // ESP
		{58, 4},   // ICMPv6
		{59, 0},   // No Next Header
		{88, 0},   // EIGRP
		{89, 0},   // OSPF
		{97, 2},   // EtherIP
		{103, 0},  // PIM
		{112, 0},  // VRRP
		{115, 0},  // L2TP
		{132, 12}, // SCTP
		{136, 8},  // UDP-Lite
		{137, 4},  // MPLS in IP
	} {
		k[p.proto] = nhUpper
		m[p.proto] = p.min
	}
	return k, m
}()

// Classify decides what a DHCPv6-Shield device does with frame received on a
// port; trusted ports are those allowed to receive DHCPv6-server messages
// (RFC 7610 §4). It does not allocate and does not retain frame.
func Classify(cfg Config, frame []byte, trusted bool) Verdict {
	v := classify(cfg, frame)
	if trusted {
		v.Action = Pass // RFC 7610 §4: the rules apply to untrusted ports only.
	}
	return v
}

func classify(cfg Config, frame []byte) Verdict {
	// Ethernet and any stack of VLAN tags.
	off := 12
	var et uint16
	for {
		if len(frame) < off+2 {
			return Verdict{Pass, ReasonNotIPv6}
		}
		et = binary.BigEndian.Uint16(frame[off:])
		if et != etherType8021Q && et != etherType8021AD && et != etherTypeQinQ && et != etherTypeQinQ2 {
			break
		}
		off += 4
	}
	if et != etherTypeIPv6 {
		return Verdict{Pass, ReasonNotIPv6}
	}
	pkt := frame[off+2:]
	if len(pkt) < 40 || pkt[0]>>4 != 6 {
		// Too short for an IPv6 header, or the wrong version: the IPv6 EtherType
		// with a header we cannot read could hide a DHCPv6 message.
		return Verdict{Drop, ReasonTruncated}
	}
	if pl := int(binary.BigEndian.Uint16(pkt[4:])); pl != 0 && 40+pl < len(pkt) {
		pkt = pkt[:40+pl] // ignore Ethernet padding
	}

	// RFC 7610 §5 rule 1: walk the entire header chain, no byte limit. Each
	// extension header is at least 8 octets, so the loop ends.
	short := ReasonTruncated
	nh := pkt[6]
	off = 40
	for {
		switch nextHeader[nh] {
		case nhExtension, nhAH:
			if len(pkt) < off+2 {
				return Verdict{Drop, short}
			}
			// Hdr Ext Len counts 8-octet units beyond the first (RFC 8200
			// §4), except AH's: 4-octet units minus 2 (RFC 4302 §2.2).
			n := (int(pkt[off+1]) + 1) * 8
			if nextHeader[nh] == nhAH {
				n = (int(pkt[off+1]) + 2) * 4
			}
			if len(pkt) < off+n {
				return Verdict{Drop, short}
			}
			nh, off = pkt[off], off+n
		case nhFragment:
			if len(pkt) < off+8 {
				return Verdict{Drop, short}
			}
			if binary.BigEndian.Uint16(pkt[off+2:])>>3 != 0 {
				// RFC 7610 §5 rule 2 NOTE: non-first fragments pass.
				return Verdict{Pass, ReasonNonFirstFragment}
			}
			// A first fragment, or an atomic fragment (RFC 6946), which holds
			// the whole packet: either way the chain must be complete here.
			short = ReasonIncompleteFirstFragment
			nh, off = pkt[off], off+8
		case nhUDP:
			if len(pkt) < off+8 {
				return Verdict{Drop, short}
			}
			switch binary.BigEndian.Uint16(pkt[off+2:]) {
			case portClient:
				// RFC 7610 §5 rule 4: any DHCPv6 message to a client.
				return Verdict{Drop, ReasonClientBoundDHCPv6}
			case portServer:
				if len(pkt) < off+9 {
					if short == ReasonIncompleteFirstFragment {
						// The msg-type byte is in a later fragment: the
						// packet cannot be shown not to be a Relay-Reply.
						return Verdict{Drop, short}
					}
					return Verdict{Pass, ReasonPass} // empty datagram
				}
				if pkt[off+8] == msgTypeRelayRep {
					return Verdict{Drop, ReasonRelayReply}
				}
			}
			return Verdict{Pass, ReasonPass}
		case nhUpper:
			if len(pkt) < off+int(minUpper[nh]) {
				return Verdict{Drop, short}
			}
			return Verdict{Pass, ReasonPass}
		default:
			// RFC 7610 §5 rule 3.
			return Verdict{cfg.UnknownNextHeader, ReasonUnknownNextHeader}
		}
	}
}

// itoa formats small non-negative numbers without fmt.
func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
