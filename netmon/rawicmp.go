package netmon

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// raSocket is a raw ICMPv6 socket that lets only RAs through and reads
// them without allocating: a flood of RAs costs CPU, not memory (the Go
// heap does not grow with it).
type raSocket struct {
	f  *os.File
	rc syscall.RawConn
	// One recvmsg's buffers and results, reused; read is not concurrent.
	buf  []byte
	oob  []byte
	from unix.RawSockaddrInet6
	iov  unix.Iovec
	msg  unix.Msghdr
	n    int
	err  error
	fn   func(fd uintptr) bool
}

func openRASocket(ns netns.NsHandle) (*raSocket, error) {
	fd, err := socketIn(ns, unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6, "raw ICMPv6")
	if err != nil {
		return nil, err
	}
	// RFC 3542 §3.2: pass only type 134.
	var filt unix.ICMPv6Filter
	for i := range filt.Data {
		filt.Data[i] = 0xffffffff
	}
	filt.Data[icmpRouterAdvertisement>>5] &^= 1 << (icmpRouterAdvertisement & 31)
	for _, o := range []struct {
		name string
		set  func() error
	}{
		{"ICMP6_FILTER", func() error { return unix.SetsockoptICMPv6Filter(fd, unix.SOL_ICMPV6, unix.ICMPV6_FILTER, &filt) }},
		{"IPV6_RECVHOPLIMIT", func() error { return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1) }},
		{"IPV6_RECVPKTINFO", func() error { return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1) }},
	} {
		if err := o.set(); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("raw ICMPv6 socket: set %s: %w", o.name, err)
		}
	}
	f := os.NewFile(uintptr(fd), "icmpv6")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raw ICMPv6 raw conn: %w", err)
	}
	s := &raSocket{f: f, rc: rc, buf: make([]byte, 1<<16), oob: make([]byte, 128)}
	s.fn = s.recvmsg
	return s, nil
}

func (s *raSocket) recvmsg(fd uintptr) bool {
	s.iov.Base = &s.buf[0]
	s.iov.SetLen(len(s.buf))
	s.msg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&s.from)), Namelen: unix.SizeofSockaddrInet6,
		Iov: &s.iov, Iovlen: 1, Control: &s.oob[0]}
	s.msg.SetControllen(len(s.oob))
	for {
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&s.msg)), 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case 0:
			s.n, s.err = int(n), nil
		default:
			s.n, s.err = 0, errno
		}
		return true
	}
}

// read returns the next ICMPv6 message (aliasing the socket's buffer, valid
// until the next read), its source, and its control data (see parseRACmsgs).
func (s *raSocket) read() (b []byte, src netip.Addr, oob []byte, err error) {
	if err := s.rc.Read(s.fn); err != nil {
		return nil, src, nil, err // closed
	}
	if s.err != nil {
		return nil, src, nil, fmt.Errorf("receive from raw ICMPv6 socket: %w", s.err)
	}
	src = netip.AddrFrom16(s.from.Addr)
	return s.buf[:s.n], src, s.oob[:s.msg.Controllen], nil
}

func (s *raSocket) close() error { return s.f.Close() }

// parseRACmsgs reads the interface index (IPV6_PKTINFO) and hop limit
// (IPV6_HOPLIMIT) from a recvmsg's control data; -1 for one that is
// missing. It does not allocate.
func parseRACmsgs(oob []byte) (ifindex, hopLimit int) {
	ifindex, hopLimit = -1, -1
	for len(oob) >= unix.SizeofCmsghdr {
		// struct cmsghdr: cmsg_len (size_t), cmsg_level, cmsg_type (int).
		var l int
		if unix.SizeofCmsghdr == 16 {
			l = int(min(binary.NativeEndian.Uint64(oob[0:8]), uint64(len(oob)+1)))
		} else {
			l = int(binary.NativeEndian.Uint32(oob[0:4]))
		}
		level := int32(binary.NativeEndian.Uint32(oob[unix.SizeofCmsghdr-8:]))
		typ := int32(binary.NativeEndian.Uint32(oob[unix.SizeofCmsghdr-4:]))
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		data := oob[unix.CmsgLen(0):l]
		if level == unix.IPPROTO_IPV6 {
			switch {
			case typ == unix.IPV6_HOPLIMIT && len(data) >= 4:
				hopLimit = int(int32(binary.NativeEndian.Uint32(data)))
			case typ == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
				ifindex = int(binary.NativeEndian.Uint32(data[16:20]))
			}
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return ifindex, hopLimit
}
