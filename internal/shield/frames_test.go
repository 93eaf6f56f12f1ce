package shield

import "encoding/binary"

// A small builder of crafted Ethernet frames for the tests.

var (
	macHost = []byte{0x02, 0, 0, 0, 0, 0x02}
	macSrv  = []byte{0x02, 0, 0, 0, 0, 0x01}
	ipSrv   = []byte{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	ipAll   = []byte{0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2} // ff02::1:2
)

// layer is one member of an IPv6 header chain. Extension headers have their
// Next Header byte (data[0]) filled in by build.
type layer struct {
	proto uint8
	ext   bool
	data  []byte
}

// opts is a Hop-by-Hop or Destination Options header of n octets (a multiple
// of 8, at least 8) padded with a PadN option.
func opts(proto uint8, n int) layer {
	d := make([]byte, n)
	d[1] = byte(n/8 - 1)
	d[2], d[3] = 1, byte(n-4) // PadN
	return layer{proto, true, d}
}

func hbh(n int) layer     { return opts(0, n) }
func dstOpts(n int) layer { return opts(60, n) }

// routing is a Segment Routing header with segments left 0 and one address.
func routing() layer {
	d := make([]byte, 24)
	d[1], d[2] = 2, 4
	return layer{43, true, d}
}

// frag is a Fragment header; offset in 8-octet units.
func frag(offset uint16, more bool) layer {
	d := make([]byte, 8)
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(d[2:], v)
	binary.BigEndian.PutUint32(d[4:], 0xdeadbeef)
	return layer{44, true, d}
}

// ah is an Authentication Header with a 12-octet ICV (24 octets in all).
func ah() layer {
	d := make([]byte, 24)
	d[1] = 24/4 - 2
	return layer{51, true, d}
}

// ext is an extension header of protocol p with the usual length encoding.
func ext(p uint8, n int) layer {
	d := make([]byte, n)
	d[1] = byte(n/8 - 1)
	return layer{p, true, d}
}

func udp(src, dst uint16, payload []byte) layer {
	d := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(d[0:], src)
	binary.BigEndian.PutUint16(d[2:], dst)
	binary.BigEndian.PutUint16(d[4:], uint16(len(d)))
	copy(d[8:], payload)
	return layer{17, false, d}
}

// dhcp is a DHCPv6 message of type t with a transaction ID and a Server ID.
func dhcp(t byte) []byte {
	return []byte{t, 0x12, 0x34, 0x56, 0, 2, 0, 4, 0, 3, 0, 1}
}

func toClient(t byte) layer { return udp(547, 546, dhcp(t)) }
func toServer(t byte) layer { return udp(546, 547, dhcp(t)) }

func upper(p uint8, n int) layer { return layer{p, false, make([]byte, n)} }

// build makes an Ethernet frame with the given VLAN TPIDs (outermost first)
// carrying an IPv6 packet with the given chain.
func build(tpids []uint16, chain ...layer) []byte {
	f := append([]byte{}, macHost...)
	f = append(f, macSrv...)
	for i, t := range tpids {
		f = binary.BigEndian.AppendUint16(f, t)
		f = binary.BigEndian.AppendUint16(f, uint16(100+i))
	}
	f = binary.BigEndian.AppendUint16(f, 0x86dd)
	ip := len(f)
	f = append(f, 0x60, 0, 0, 0, 0, 0, 59, 64)
	f = append(f, ipSrv...)
	f = append(f, ipAll...)
	nhAt := ip + 6
	for _, l := range chain {
		f[nhAt] = l.proto
		nhAt = len(f)
		f = append(f, l.data...)
		if !l.ext {
			break
		}
	}
	binary.BigEndian.PutUint16(f[ip+4:], uint16(len(f)-ip-40))
	return f
}

// cut keeps n octets of the IPv6 payload and sets Payload Length to match, as
// a fragmenting sender would.
func cut(f []byte, n int) []byte {
	ip := 14
	for binary.BigEndian.Uint16(f[ip-2:]) != 0x86dd {
		ip += 4
	}
	g := append([]byte{}, f[:ip+40+n]...)
	binary.BigEndian.PutUint16(g[ip+4:], uint16(n))
	return g
}

// withEtherType replaces the EtherType of an untagged frame.
func withEtherType(f []byte, et uint16) []byte {
	g := append([]byte{}, f...)
	binary.BigEndian.PutUint16(g[12:], et)
	return g
}

// longChain is 16 Destination Options headers of 64 octets (1 KB) and a
// Hop-by-Hop header before the final upper layer.
func longChain(last layer) []layer {
	c := []layer{hbh(64)}
	for range 16 {
		c = append(c, dstOpts(64))
	}
	return append(c, last)
}
