package dhcp6test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"golang.org/x/sys/unix"
)

// Packet is one DHCPv6 message received by a Responder or seen by a
// Sniffer. A relayed message (Relay-Forward, or Relay-Reply) is recorded by
// its innermost message, with Relay set to the outermost relay message.
type Packet struct {
	At       time.Time // the kernel's receive time (SO_TIMESTAMPNS)
	Src, Dst netip.Addr
	// SrcPort and DstPort are the UDP ports (the Sniffer's; a Responder's
	// DstPort is 547).
	SrcPort, DstPort uint16
	Ifindex          int // the receiving interface
	Raw              []byte
	Relay            *dhcpv6.RelayMessage // nil unless relayed
	Msg              *dhcpv6.Message      // the (innermost) message

	Type dhcpv6.MessageType
	XID  dhcpv6.TransactionID
	// IAAddr and its lifetimes (seconds) are the first IA Address option's,
	// if the message has one.
	IAAddr           netip.Addr
	Preferred, Valid uint32
}

func (p Packet) String() string {
	relayed := ""
	if p.Relay != nil {
		relayed = " relayed"
	}
	ia := ""
	if p.IAAddr.IsValid() {
		ia = fmt.Sprintf(" ia=%s %d/%d", p.IAAddr, p.Preferred, p.Valid)
	}
	return fmt.Sprintf("%s %s%s %s→%s xid=%s%s", p.At.Format("15:04:05.000"), p.Type, relayed, p.Src, p.Dst, p.XID, ia)
}

// IA returns the message's IA Address options.
func (p Packet) IA() []*dhcpv6.OptIAAddress {
	var out []*dhcpv6.OptIAAddress
	for _, o := range p.Msg.Options.Get(dhcpv6.OptionIAAddr) {
		if ia, ok := o.(*dhcpv6.OptIAAddress); ok {
			out = append(out, ia)
		}
	}
	return out
}

// decode parses a DHCPv6 payload into p, unwrapping relay messages.
func (p *Packet) decode(raw []byte) error {
	d, err := dhcpv6.FromBytes(raw)
	if err != nil {
		return err
	}
	p.Raw = raw
	switch m := d.(type) {
	case *dhcpv6.Message:
		p.Msg = m
	case *dhcpv6.RelayMessage:
		p.Relay = m
		if p.Msg, err = m.GetInnerMessage(); err != nil {
			return fmt.Errorf("%s without a message inside: %w", m.MessageType, err)
		}
	}
	p.Type, p.XID = p.Msg.MessageType, p.Msg.TransactionID
	if ias := p.IA(); len(ias) > 0 {
		p.IAAddr, _ = netip.AddrFromSlice(ias[0].IPv6Addr)
		p.IAAddr = p.IAAddr.Unmap()
		p.Preferred, p.Valid = uint32(ias[0].PreferredLifetime/time.Second), uint32(ias[0].ValidLifetime/time.Second)
	}
	return nil
}

// enableRecvInfo asks the kernel for the destination address, interface
// (IPV6_RECVPKTINFO) and receive time (SO_TIMESTAMPNS) of every datagram.
func enableRecvInfo(c syscall.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_RECVPKTINFO, 1); serr != nil {
			serr = fmt.Errorf("IPV6_RECVPKTINFO: %w", serr)
			return
		}
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); serr != nil {
			serr = fmt.Errorf("SO_TIMESTAMPNS: %w", serr)
		}
	}); err != nil {
		return err
	}
	return serr
}

// parseRecvInfo returns the kernel's receive time, the destination address
// and the interface index of a datagram from its control messages; ok is
// false without IPV6_PKTINFO. Without a timestamp, at is now.
func parseRecvInfo(oob []byte) (at time.Time, dst netip.Addr, ifindex int, ok bool) {
	at = time.Now()
	cms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return at, dst, 0, false
	}
	for _, cm := range cms {
		switch {
		case cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SCM_TIMESTAMPNS && len(cm.Data) >= 16:
			// struct timespec on 64-bit Linux: tv_sec, tv_nsec.
			at = time.Unix(int64(binary.NativeEndian.Uint64(cm.Data)), int64(binary.NativeEndian.Uint64(cm.Data[8:])))
		case cm.Header.Level == unix.SOL_IPV6 && cm.Header.Type == unix.IPV6_PKTINFO && len(cm.Data) >= 20:
			// struct in6_pktinfo: the address, then the interface index.
			dst, ifindex, ok = netip.AddrFrom16([16]byte(cm.Data[:16])), int(binary.NativeEndian.Uint32(cm.Data[16:])), true
		}
	}
	return at, dst, ifindex, ok
}

// udpAddr is dst:port, with the numeric zone for a link-local dst: a zone
// name would be looked up in the test process's namespace, not the node's.
func udpAddr(dst netip.Addr, port int, zone int) *net.UDPAddr {
	a := &net.UDPAddr{IP: dst.AsSlice(), Port: port}
	if dst.IsLinkLocalUnicast() || dst.IsLinkLocalMulticast() {
		a.Zone = fmt.Sprint(zone)
	}
	return a
}
