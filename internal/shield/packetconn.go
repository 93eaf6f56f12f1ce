package shield

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// packetConn is the frameConn of a real port: a non-blocking AF_PACKET
// socket bound to the interface, in promiscuous mode, with PACKET_AUXDATA
// and PACKET_VNET_HDR.
type packetConn struct {
	fd int
	r  *rx // used only by the port's receive loop
}

func (c *packetConn) ReadFrame() ([]byte, error) { return c.r.recv(c.fd, true) }

func (c *packetConn) Wait(timeout time.Duration) error {
	c.r.pfd[0] = unix.PollFd{Fd: int32(c.fd), Events: unix.POLLIN}
	_, err := unix.Poll(c.r.pfd[:], int(timeout.Milliseconds()))
	return err
}

func (c *packetConn) WriteFrame(out []byte) error {
	_, err := unix.Write(c.fd, out)
	return err
}

func (c *packetConn) Close() error { return unix.Close(c.fd) }

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// open turns off the port's offloads, opens its AF_PACKET socket and puts
// it in promiscuous mode. It is the Switch's dial.
func (s *Switch) open(p Port) (frameConn, error) {
	ifi, err := net.InterfaceByName(p.Name)
	if err != nil {
		return nil, fmt.Errorf("port %s: look up interface: %w", p.Name, err)
	}
	if ifi.Flags&net.FlagUp == 0 {
		s.log.Warn("port is down; frames flow once it is up", "iface", p.Name)
	}
	if !s.cfg.KeepOffloads {
		s.disableOffloads(p.Name)
	}
	// Protocol 0 at creation: the socket receives nothing until bind names
	// the interface, so no frame of another interface slips in.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("port %s: AF_PACKET socket: %w", p.Name, err)
	}
	if err := setupPacketSocket(fd, ifi.Index); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("port %s: %w", p.Name, err)
	}
	return &packetConn{fd: fd, r: new(rx)}, nil
}

// setupPacketSocket sets the options of a port's socket and binds it.
func setupPacketSocket(fd, ifindex int) error {
	// The kernel strips the outer VLAN tag before packet taps see a frame
	// (in software even without rx-vlan offload); PACKET_AUXDATA returns it
	// so recv can put it back: a tag must not hide a message (SPEC §3).
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return fmt.Errorf("PACKET_AUXDATA: %w", err)
	}
	// Our own transmissions come back as PACKET_OUTGOING; recv skips
	// them too, this only saves the work on kernels ≥ 4.20.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	// See rx: offloaded checksums travel with the frame.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fmt.Errorf("PACKET_VNET_HDR: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return fmt.Errorf("bind AF_PACKET: %w", err)
	}
	// Promiscuous while the socket is open; the kernel undoes it on close.
	mreq := unix.PacketMreq{Ifindex: int32(ifindex), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		return fmt.Errorf("promiscuous mode: %w", err)
	}
	return nil
}

// rx is one port's receive buffer and recvmsg arguments, reused for every
// frame so the receive path does not allocate.
//
// The socket has PACKET_VNET_HDR: every frame comes with a virtio-net header
// that the switch hands back to the kernel when it sends the frame on. A frame
// from a veth peer or a local socket may carry a checksum the sender left for
// offload (CHECKSUM_PARTIAL); without the header its copy would leave with a
// wrong UDP checksum and be dropped by the receiver.
type rx struct {
	// buf is vlanLen octets of headroom to re-insert a stripped tag, the
	// virtio-net header, then the frame.
	buf [vlanLen + vnetLen + 65536]byte
	oob [64]byte
	sa  unix.RawSockaddrLinklayer
	iov unix.Iovec
	msg unix.Msghdr
	pfd [1]unix.PollFd
}

const (
	// vnetLen is the size of struct virtio_net_hdr.
	vnetLen = 10
	// virtio-net header fields.
	vnetFlagNeedsCsum = 1
	vnetCsumStart     = 6
)

// recv reads one frame. It returns the virtio-net header followed by the
// frame (with any stripped outer VLAN tag re-inserted), ready to be written
// to another port, or nil for a frame to ignore. withVnet says whether the
// socket has PACKET_VNET_HDR; without it the result is the bare frame.
func (r *rx) recv(fd int, withVnet bool) ([]byte, error) {
	hl := 0
	if withVnet {
		hl = vnetLen
	}
	r.iov.Base = &r.buf[vlanLen]
	r.iov.SetLen(len(r.buf) - vlanLen)
	r.msg.Name = (*byte)(unsafe.Pointer(&r.sa))
	r.msg.Namelen = unix.SizeofSockaddrLinklayer
	r.msg.Iov = &r.iov
	r.msg.Iovlen = 1
	r.msg.Control = &r.oob[0]
	r.msg.SetControllen(len(r.oob))
	r.msg.Flags = 0
	n, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.msg)), 0)
	if e != 0 {
		return nil, e
	}
	if r.sa.Pkttype == unix.PACKET_OUTGOING {
		return nil, nil
	}
	if r.msg.Flags&unix.MSG_TRUNC != 0 || int(n) < hl {
		return nil, errOversize
	}
	out := r.buf[vlanLen : vlanLen+int(n)]
	if aux, ok := r.auxdata(); ok && len(out) >= hl+12 {
		if tpid, tci, ok := strippedTag(aux); ok {
			out = insertTag(r.buf[:vlanLen+int(n)], hl, tpid, tci)
		}
	}
	return out, nil
}

var errOversize = errors.New("frame larger than the receive buffer")

// auxdata finds the PACKET_AUXDATA control message.
func (r *rx) auxdata() (*unix.TpacketAuxdata, bool) {
	oob := r.oob[:r.msg.Controllen]
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || int(h.Len) > len(oob) {
			return nil, false
		}
		if h.Level == unix.SOL_PACKET && h.Type == unix.PACKET_AUXDATA && int(h.Len) >= unix.CmsgLen(int(unsafe.Sizeof(unix.TpacketAuxdata{}))) {
			return (*unix.TpacketAuxdata)(unsafe.Pointer(&oob[unix.CmsgLen(0)])), true
		}
		next := unix.CmsgSpace(int(h.Len) - unix.CmsgLen(0))
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return nil, false
}
