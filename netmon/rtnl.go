package netmon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// This file is the pure half of the rtnetlink code: building requests and
// decoding the messages the kernel sends. vishvananda/netlink v1.3.1 exposes
// neither IFA_PROTO, RTM_NEWPREFIX nor IFLA_INET6_FLAGS, and its subscription
// hides ENOBUFS, so netmon speaks rtnetlink itself.

// message is one netlink message without its header.
type message struct {
	Type  uint16
	Flags uint16
	Seq   uint32
	Data  []byte
}

// Constants not (all) in x/sys/unix.
const (
	ifaProto = 11 // IFA_PROTO, linux/if_addr.h

	// IFLA_INET6_FLAGS bits, include/net/if_inet6.h.
	ifRARcvd     = 0x20
	ifRAManaged  = 0x40
	ifRAOtherCnf = 0x80

	sizeofPrefixmsg = 12
)

var errMalformed = errors.New("malformed netlink message")

// parseDatagram splits one datagram read from a netlink socket into messages.
func parseDatagram(b []byte) ([]message, error) {
	var out []message
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return out, fmt.Errorf("netlink header length %d of %d bytes: %w", l, len(b), errMalformed)
		}
		out = append(out, message{
			Type:  binary.NativeEndian.Uint16(b[4:6]),
			Flags: binary.NativeEndian.Uint16(b[6:8]),
			Seq:   binary.NativeEndian.Uint32(b[8:12]),
			Data:  b[unix.SizeofNlMsghdr:l],
		})
		if nlAlign(l) >= len(b) {
			break
		}
		b = b[nlAlign(l):]
	}
	return out, nil
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

// attrs walks rtattrs: fn is called for each one with its type (nested and
// byte-order bits masked off) and payload.
func attrs(b []byte, fn func(typ uint16, val []byte)) error {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & 0x3fff
		if l < 4 || l > len(b) {
			return fmt.Errorf("attribute %d length %d of %d bytes: %w", typ, l, len(b), errMalformed)
		}
		fn(typ, b[4:l])
		if nlAlign(l) >= len(b) {
			return nil
		}
		b = b[nlAlign(l):]
	}
	return nil
}

// rawLink is a decoded RTM_NEWLINK/RTM_DELLINK.
type rawLink struct {
	Family   uint8
	Index    int
	Flags    uint32 // IFF_*
	Name     string
	HW       net.HardwareAddr
	INet6    uint32 // IFLA_INET6_FLAGS, family AF_INET6 only
	HasINet6 bool
	// CarrierUps is IFLA_CARRIER_UP_COUNT (Linux 4.16+): it tells a
	// carrier flap that happened entirely between two looks.
	CarrierUps    uint32
	HasCarrierUps bool
}

func parseLink(m message) (rawLink, error) {
	if len(m.Data) < unix.SizeofIfInfomsg {
		return rawLink{}, fmt.Errorf("ifinfomsg of %d bytes: %w", len(m.Data), errMalformed)
	}
	l := rawLink{
		Family: m.Data[0],
		Index:  int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))),
		Flags:  binary.NativeEndian.Uint32(m.Data[8:12]),
	}
	err := attrs(m.Data[unix.SizeofIfInfomsg:], func(typ uint16, v []byte) {
		switch typ {
		case unix.IFLA_IFNAME:
			l.Name = cstring(v)
		case unix.IFLA_ADDRESS:
			l.HW = append(net.HardwareAddr(nil), v...)
		case unix.IFLA_CARRIER_UP_COUNT:
			if len(v) >= 4 {
				l.CarrierUps, l.HasCarrierUps = binary.NativeEndian.Uint32(v), true
			}
		case unix.IFLA_PROTINFO:
			_ = attrs(v, func(typ uint16, v []byte) {
				if typ == unix.IFLA_INET6_FLAGS && len(v) >= 4 {
					l.INet6 = binary.NativeEndian.Uint32(v)
					l.HasINet6 = true
				}
			})
		}
	})
	return l, err
}

// parsedAddr is a decoded RTM_NEWADDR/RTM_DELADDR.
type parsedAddr struct {
	Index int
	Raw   RawAddr
	Scope uint8
}

func parseAddr(m message) (parsedAddr, error) {
	if len(m.Data) < unix.SizeofIfAddrmsg {
		return parsedAddr{}, fmt.Errorf("ifaddrmsg of %d bytes: %w", len(m.Data), errMalformed)
	}
	var a parsedAddr
	if m.Data[0] != unix.AF_INET6 {
		return a, errNotIPv6
	}
	a.Raw.PrefixLen = int(m.Data[1])
	a.Raw.Flags = uint32(m.Data[2])
	a.Scope = m.Data[3]
	a.Index = int(binary.NativeEndian.Uint32(m.Data[4:8]))
	a.Raw.Preferred, a.Raw.Valid = Infinite, Infinite
	var local, address netip.Addr
	err := attrs(m.Data[unix.SizeofIfAddrmsg:], func(typ uint16, v []byte) {
		switch typ {
		case unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(v)
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(v)
		case unix.IFA_FLAGS:
			if len(v) >= 4 {
				a.Raw.Flags = binary.NativeEndian.Uint32(v)
			}
		case ifaProto:
			if len(v) >= 1 {
				a.Raw.Proto = v[0]
			}
		case unix.IFA_CACHEINFO:
			if len(v) >= 8 {
				a.Raw.Preferred = lifetime(binary.NativeEndian.Uint32(v[0:4]))
				a.Raw.Valid = lifetime(binary.NativeEndian.Uint32(v[4:8]))
			}
		}
	})
	if err != nil {
		return a, err
	}
	// For point-to-point addresses IFA_ADDRESS is the peer and IFA_LOCAL ours.
	a.Raw.IP = address
	if local.IsValid() {
		a.Raw.IP = local
	}
	if !a.Raw.IP.Is6() {
		return a, fmt.Errorf("address without IFA_ADDRESS on ifindex %d: %w", a.Index, errMalformed)
	}
	return a, nil
}

var errNotIPv6 = errors.New("not an IPv6 address")

func lifetime(s uint32) time.Duration {
	if s == 0xffffffff {
		return Infinite
	}
	return time.Duration(s) * time.Second
}

// prefixIndex returns the interface index of an RTM_NEWPREFIX (struct
// prefixmsg: family, pad, pad, then the ifindex).
func prefixIndex(m message) (int, error) {
	if len(m.Data) < sizeofPrefixmsg {
		return 0, fmt.Errorf("prefixmsg of %d bytes: %w", len(m.Data), errMalformed)
	}
	return int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))), nil
}

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Requests.

func nlHeader(b []byte, typ, flags uint16, seq uint32) {
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], seq)
}

// linkDumpRequest asks for every link, in family AF_UNSPEC (the link itself)
// or AF_INET6 (its IPv6 state, IFLA_INET6_FLAGS included).
func linkDumpRequest(family uint8, seq uint32) []byte {
	b := make([]byte, unix.SizeofNlMsghdr+unix.SizeofIfInfomsg)
	nlHeader(b, unix.RTM_GETLINK, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq)
	b[unix.SizeofNlMsghdr] = family
	return b
}

func addrDumpRequest(seq uint32) []byte {
	b := make([]byte, unix.SizeofNlMsghdr+unix.SizeofIfAddrmsg)
	nlHeader(b, unix.RTM_GETADDR, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq)
	b[unix.SizeofNlMsghdr] = unix.AF_INET6
	return b
}

// addrGetRequest asks for one address on one interface (inet6_rtm_getaddr).
func addrGetRequest(index int, ip netip.Addr, seq uint32) []byte {
	b := make([]byte, unix.SizeofNlMsghdr+unix.SizeofIfAddrmsg+4+16)
	nlHeader(b, unix.RTM_GETADDR, unix.NLM_F_REQUEST, seq)
	h := b[unix.SizeofNlMsghdr:]
	h[0] = unix.AF_INET6
	binary.NativeEndian.PutUint32(h[4:8], uint32(index))
	at := h[unix.SizeofIfAddrmsg:]
	binary.NativeEndian.PutUint16(at[0:2], 4+16)
	binary.NativeEndian.PutUint16(at[2:4], unix.IFA_ADDRESS)
	a16 := ip.As16()
	copy(at[4:], a16[:])
	return b
}

// nlError decodes an NLMSG_ERROR payload; nil for an ACK.
func nlError(m message) error {
	if len(m.Data) < 4 {
		return fmt.Errorf("NLMSG_ERROR of %d bytes: %w", len(m.Data), errMalformed)
	}
	code := int32(binary.NativeEndian.Uint32(m.Data[0:4]))
	if code == 0 {
		return nil
	}
	return unix.Errno(-code)
}
