package registrar

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
)

// conn carries UDP datagrams (header included) between the registrar and
// the link. rawConn is the real one; tests use a fake.
type conn interface {
	// send transmits datagram to ff02::1:2 from src on interface ifindex.
	send(datagram []byte, ifindex int, src netip.Addr) error
	// recv reads one datagram and the destination address and interface
	// it arrived with, and its source.
	recv(b []byte) (n int, dst netip.Addr, ifindex int, src netip.Addr, err error)
	close() error
}

// rawConn is a raw IPv6 socket for protocol UDP. It binds no UDP port, so a
// DHCPv6 client holding [fe80::…%if]:546 (dhclient -6, with SO_REUSEADDR)
// keeps all its replies: a raw socket gets a copy of every UDP datagram the
// host receives and takes none away (SPEC §5 "Port 546 sharing").
//
// Because nothing listens on UDP 546 at a registered (global) address, the
// kernel answers each unicast ADDR-REG-REPLY with an ICMPv6 port-unreachable
// to the server (rate limited by net.ipv6.icmp.ratelimit). The registrar has
// already read its copy by then; servers ignore the error.
type rawConn struct {
	pc *ipv6.PacketConn
	c  net.PacketConn
}

// udpFilter accepts only UDP datagrams from port 547 to port 546. On an IPv6
// raw socket the filter sees the packet from the transport header on (the
// IPv6 header and extension headers are already pulled), as does read(2).
var udpFilter = mustAssemble([]bpf.Instruction{
	bpf.LoadAbsolute{Off: 0, Size: 2}, // source port
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: serverPort, SkipTrue: 3},
	bpf.LoadAbsolute{Off: 2, Size: 2}, // destination port
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: clientPort, SkipTrue: 1},
	bpf.RetConstant{Val: 0xffff},
	bpf.RetConstant{Val: 0},
})

func mustAssemble(p []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(p)
	if err != nil {
		panic(err)
	}
	return raw
}

// listenRaw opens the raw socket in the calling thread's network namespace.
func listenRaw() (*rawConn, error) {
	c, err := net.ListenPacket("ip6:17", "::")
	if err != nil {
		return nil, fmt.Errorf("open raw IPv6/UDP socket: %w", err)
	}
	pc := ipv6.NewPacketConn(c)
	setup := []struct {
		what string
		do   func() error
	}{
		// Filter first, so little else is queued before it applies;
		// parseDatagram checks the ports again anyway.
		{"attach BPF filter", func() error { return pc.SetBPF(udpFilter) }},
		// Thousands of exchanges in flight can be answered in one burst:
		// the default buffer (~208 KB, ~256 small datagrams) would drop
		// replies silently and turn them into retransmissions.
		{"set receive buffer", func() error { return setRcvBuf(c, rcvBuf) }},
		// The kernel computes the UDP checksum (offset 6 in the UDP
		// header) over the pseudo-header with the source it picks from
		// IPV6_PKTINFO, and verifies it on received datagrams.
		{"set IPV6_CHECKSUM", func() error { return pc.SetChecksum(true, 6) }},
		{"set IPV6_RECVPKTINFO", func() error { return pc.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true) }},
		{"set IPV6_MULTICAST_HOPS", func() error { return pc.SetMulticastHopLimit(1) }},
		// Our own multicast need not come back if this host also runs
		// a server that joined ff02::1:2.
		{"clear IPV6_MULTICAST_LOOP", func() error { return pc.SetMulticastLoopback(false) }},
		// A deregistration (RFC 9686 §4.7) is sent from the address just
		// removed from the interface: without IPV6_FREEBIND the kernel
		// refuses a source it no longer holds (EINVAL).
		{"set IPV6_FREEBIND", func() error { return setFreebind(c) }},
	}
	for _, s := range setup {
		if err := s.do(); err != nil {
			c.Close()
			return nil, fmt.Errorf("raw IPv6/UDP socket: %s: %w", s.what, err)
		}
	}
	return &rawConn{pc: pc, c: c}, nil
}

var allDHCPAddr = &net.IPAddr{IP: net.IP(allDHCP.AsSlice())}

func (r *rawConn) send(datagram []byte, ifindex int, src netip.Addr) error {
	cm := &ipv6.ControlMessage{
		Src:      src.AsSlice(),
		IfIndex:  ifindex,
		HopLimit: 1, // link-scope multicast (RFC 8415 §7.1)
	}
	if _, err := r.pc.WriteTo(datagram, cm, allDHCPAddr); err != nil {
		return fmt.Errorf("send to %s from %s on ifindex %d: %w", allDHCP, src, ifindex, err)
	}
	return nil
}

func (r *rawConn) recv(b []byte) (int, netip.Addr, int, netip.Addr, error) {
	n, cm, from, err := r.pc.ReadFrom(b)
	if err != nil {
		return 0, netip.Addr{}, 0, netip.Addr{}, err
	}
	var src netip.Addr
	if ia, ok := from.(*net.IPAddr); ok {
		src, _ = netip.AddrFromSlice(ia.IP)
		src = src.Unmap().WithZone(ia.Zone)
	}
	var dst netip.Addr
	ifindex := 0
	if cm != nil {
		dst, _ = netip.AddrFromSlice(cm.Dst)
		dst = dst.Unmap()
		ifindex = cm.IfIndex
	}
	return n, dst, ifindex, src, nil
}

func (r *rawConn) close() error { return r.pc.Close() }

func setFreebind(c net.PacketConn) error {
	return control(c, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
	})
}

// control runs fn on c's file descriptor.
func control(c net.PacketConn, fn func(fd int) error) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return fmt.Errorf("%T has no file descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// rcvBuf is the raw socket's receive buffer: room for a reply burst to
// several thousand exchanges in flight.
const rcvBuf = 4 << 20

// setRcvBuf sets SO_RCVBUFFORCE (root/CAP_NET_ADMIN may exceed
// net.core.rmem_max), falling back to SO_RCVBUF within the limit.
func setRcvBuf(c net.PacketConn, n int) error {
	return control(c, func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n); err == nil {
			return nil
		}
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n)
	})
}
