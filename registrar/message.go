package registrar

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// UDP ports of RFC 8415 §7.2.
const (
	clientPort = 546
	serverPort = 547
	udpHdrLen  = 8
)

// allDHCP is All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
var allDHCP = netip.MustParseAddr("ff02::1:2")

// Option codes used on the wire. dhcpv6 names them; they are repeated as
// uint16 so building and parsing need no conversions or allocations.
const (
	optClientID      = uint16(dhcpv6.OptionClientID)               // 1
	optServerID      = uint16(dhcpv6.OptionServerID)               // 2
	optIAAddr        = uint16(dhcpv6.OptionIAAddr)                 // 5
	optORO           = uint16(dhcpv6.OptionORO)                    // 6
	optElapsedTime   = uint16(dhcpv6.OptionElapsedTime)            // 8
	optFQDN          = uint16(dhcpv6.OptionFQDN)                   // 39
	optInfMaxRT      = uint16(dhcpv6.OptionInfMaxRT)               // 83
	optAddrRegEnable = uint16(dhcpv6.OptionAddrRegEnable)          // 148
	iaAddrLen        = 16 + 4 + 4                                  // RFC 8415 §21.6, without IAaddr-options
	msgInfoRequest   = uint8(dhcpv6.MessageTypeInformationRequest) // 11
	msgReply         = uint8(dhcpv6.MessageTypeReply)              // 7
	msgAddrRegInform = uint8(dhcpv6.MessageTypeAddrRegInform)      // 36
	msgAddrRegReply  = uint8(dhcpv6.MessageTypeAddrRegReply)       // 37
)

// probeORO is the Option Request option of an Information-Request:
// INF_MAX_RT because RFC 8415 §18.2.6 says a client MUST request it, and
// OPTION_ADDR_REG_ENABLE (RFC 9686 §4.1) because that is the question asked.
var probeORO = []uint16{optInfMaxRT, optAddrRegEnable}

// fqdnFlags is the flags octet of the Client FQDN option (RFC 4704 §4.1):
// S=1, O=0, N=0, as systemd-networkd and NetworkManager send it in DHCPv6
// (their default): the client does no DNS update itself and asks the
// server to do the AAAA one (and, N=0, leaves it the PTR). What the server
// does is its policy (RFC 4704 §5: it may override S, saying so with O):
// registration is not authentication (RFC 9686 §7), so a server that
// publishes names must decide which it trusts.
const fqdnFlags = fqdnFlagS

// fqdnFlagS is the Client FQDN's S bit: the server should do the AAAA
// update (RFC 4704 §4.1; O is 0x02, N 0x04).
const fqdnFlagS = 0x01

// xid is a DHCPv6 transaction ID.
type xid [3]byte

func (x xid) String() string { return hex.EncodeToString(x[:]) }

// LogValue logs it as hex with any handler (JSON would show an array).
func (x xid) LogValue() slog.Value { return slog.StringValue(x.String()) }

// inform is one ADDR-REG-INFORM transmission (RFC 9686 §4.2).
type inform struct {
	xid       xid
	clientID  []byte // DUID
	elapsed   time.Duration
	addr      netip.Addr
	preferred time.Duration
	valid     time.Duration
	fqdn      []byte // encoded Client FQDN option data (flags + name), or nil
}

// appendInform appends the UDP datagram (header + DHCPv6 message) of m to b.
// Options, in order: Client Identifier; Elapsed Time (RFC 8415 §21.9: a
// client MUST include it, and RFC 9686 §4.2 allows other options); exactly
// one IA Address carrying the address's lifetimes; Client FQDN if set. No
// Server Identifier, no ORO (RFC 9686 §4.2). The UDP checksum is left zero
// for the kernel to fill in (IPV6_CHECKSUM).
func appendInform(b []byte, m *inform) []byte {
	start := len(b)
	b = appendUDPHeader(b)
	b = append(b, msgAddrRegInform, m.xid[0], m.xid[1], m.xid[2])
	b = appendOption(b, optClientID, m.clientID)
	b = appendElapsed(b, m.elapsed)
	b = binary.BigEndian.AppendUint16(b, optIAAddr)
	b = binary.BigEndian.AppendUint16(b, iaAddrLen)
	a := m.addr.As16()
	b = append(b, a[:]...)
	b = binary.BigEndian.AppendUint32(b, wireLifetime(m.preferred))
	b = binary.BigEndian.AppendUint32(b, wireLifetime(m.valid))
	if m.fqdn != nil {
		b = appendOption(b, optFQDN, m.fqdn)
	}
	return finishUDP(b, start)
}

// appendInfoRequest appends the UDP datagram of an Information-Request
// (RFC 8415 §18.2.6) asking for OPTION_ADDR_REG_ENABLE (RFC 9686 §4.1).
func appendInfoRequest(b []byte, x xid, clientID []byte, elapsed time.Duration) []byte {
	start := len(b)
	b = appendUDPHeader(b)
	b = append(b, msgInfoRequest, x[0], x[1], x[2])
	b = appendOption(b, optClientID, clientID)
	b = appendElapsed(b, elapsed)
	b = binary.BigEndian.AppendUint16(b, optORO)
	b = binary.BigEndian.AppendUint16(b, uint16(2*len(probeORO)))
	for _, c := range probeORO {
		b = binary.BigEndian.AppendUint16(b, c)
	}
	return finishUDP(b, start)
}

func appendUDPHeader(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, clientPort)
	b = binary.BigEndian.AppendUint16(b, serverPort)
	return append(b, 0, 0, 0, 0) // length, checksum
}

// finishUDP writes the UDP length of the datagram that starts at start.
func finishUDP(b []byte, start int) []byte {
	binary.BigEndian.PutUint16(b[start+4:], uint16(len(b)-start))
	return b
}

func appendOption(b []byte, code uint16, data []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// appendElapsed appends an Elapsed Time option: hundredths of a second since
// the exchange's first transmission, 0 in the first, 0xffff for anything
// longer than 655.35 s (RFC 8415 §21.9).
func appendElapsed(b []byte, d time.Duration) []byte {
	b = binary.BigEndian.AppendUint16(b, optElapsedTime)
	b = binary.BigEndian.AppendUint16(b, 2)
	return binary.BigEndian.AppendUint16(b, elapsedCentis(d))
}

func elapsedCentis(d time.Duration) uint16 {
	switch cs := d / (10 * time.Millisecond); {
	case cs <= 0:
		return 0
	case cs >= 0xffff:
		return 0xffff
	default:
		return uint16(cs)
	}
}

// wireLifetime converts a lifetime to the wire's whole seconds, truncating;
// anything from 0xffffffff s up is infinity (RFC 8415 §21.6, §7.7), so
// scheduler.Infinite maps there whatever its Duration value. Negative is 0.
func wireLifetime(d time.Duration) uint32 {
	switch s := d / time.Second; {
	case d <= 0:
		return 0
	case s >= math.MaxUint32:
		return math.MaxUint32
	default:
		return uint32(s)
	}
}

// encodeFQDN returns the Client FQDN option data (RFC 4704 §4): the flags
// octet and the name in DNS wire format (RFC 1035 §3.1). A name with a dot
// in it ("host.example.com", "host.example.com.") is fully qualified and
// ends with the root label; a single label ("host") is a partial name, sent
// without it (RFC 4704 §4.2) for the server to complete.
func encodeFQDN(name string) ([]byte, error) {
	full := strings.Contains(name, ".")
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return nil, errors.New("empty name")
	}
	b := []byte{fqdnFlags}
	for _, l := range strings.Split(name, ".") {
		if len(l) == 0 || len(l) > 63 {
			return nil, fmt.Errorf("label %q: must be 1 to 63 octets", l)
		}
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	if full {
		b = append(b, 0)
	}
	if len(b)-1 > 255 {
		return nil, fmt.Errorf("name is %d octets encoded, more than 255", len(b)-1)
	}
	return b, nil
}
