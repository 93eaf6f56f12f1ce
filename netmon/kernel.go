package netmon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// kernel is the narrow waist between the monitor and rtnetlink. The real one
// is nlKernel; unit tests replay recorded datagrams through it instead.
type kernel interface {
	// subscribe opens a socket joined to the monitor's multicast groups.
	subscribe(rcvbuf int) (stream, error)
	// dump returns, in this order, every link (AF_UNSPEC), every link's
	// IPv6 state (AF_INET6) and every IPv6 address.
	dump() ([]message, error)
	// getAddr asks for one address on one interface; ENOENT-like errors
	// (EADDRNOTAVAIL, ENODEV) mean it is not there.
	getAddr(index int, ip netip.Addr) ([]message, error)
	// closeIdle closes the request sockets kept for getAddr; close does
	// so for good: later getAddr calls keep none.
	closeIdle()
	close() error
}

// stream is a subscribed socket.
type stream interface {
	// recv blocks until a datagram arrives, the deadline passes
	// (os.ErrDeadlineExceeded) or close is called.
	recv(deadline time.Time) ([]message, error)
	close() error
}

// Multicast groups (linux/rtnetlink.h) the monitor joins.
var groups = []int{
	unix.RTNLGRP_LINK,        // RTM_NEWLINK/DELLINK: links, flags, renames
	unix.RTNLGRP_IPV6_IFADDR, // RTM_NEWADDR/DELADDR
	unix.RTNLGRP_IPV6_IFINFO, // RTM_NEWLINK AF_INET6: RA M/O flags
	unix.RTNLGRP_IPV6_PREFIX, // RTM_NEWPREFIX: PIOs
}

// nlKernel talks to the kernel of one network namespace.
type nlKernel struct {
	ns  netns.NsHandle
	seq atomic.Uint32
	// idle request sockets for getAddr, which the registrar calls at every
	// transmission: opening one (in the namespace) costs more than the
	// request itself. At most maxIdle are kept.
	poolMu sync.Mutex
	idle   []*nlSocket
	closed bool
	// tap, when set, sees every datagram (tests record testdata with it).
	tap func(section string, datagram []byte)
}

// inNetns runs fn on a thread inside ns (the current namespace for ns <= 0).
// Sockets keep the namespace they were created in, so only their creation
// needs it.
func inNetns(ns netns.NsHandle, fn func() error) error {
	if ns <= 0 {
		return fn()
	}
	errc := make(chan error, 1)
	// A fresh goroutine whose thread is thrown away if it cannot be
	// switched back: no other goroutine ever runs in the wrong namespace.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		err = fn()
		if rerr := netns.Set(orig); rerr == nil {
			runtime.UnlockOSThread()
		} // else: exit with the thread locked, so the runtime discards it.
		errc <- err
	}()
	return <-errc
}

// nlSocket is a non-blocking netlink socket driven by the runtime poller, so
// that deadlines and Close interrupt a blocked read.
type nlSocket struct {
	f   *os.File
	rc  syscall.RawConn
	buf []byte
}

// socketIn opens a non-blocking socket in ns; what names it in errors.
func socketIn(ns netns.NsHandle, domain, typ, proto int, what string) (int, error) {
	fd := -1
	err := inNetns(ns, func() error {
		var err error
		fd, err = unix.Socket(domain, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto)
		if err != nil {
			return fmt.Errorf("open %s socket: %w", what, err)
		}
		return nil
	})
	return fd, err
}

func openSocket(ns netns.NsHandle, rcvbuf int, groups []int, bufSize int) (*nlSocket, error) {
	fd, err := socketIn(ns, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE, "rtnetlink")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*nlSocket, error) {
		unix.Close(fd)
		return nil, err
	}
	if rcvbuf > 0 {
		// SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped by rmem_max.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
				return fail(fmt.Errorf("set netlink receive buffer to %d: %w", rcvbuf, err))
			}
		}
	}
	// Ask for full error messages; not fatal on old kernels.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(fmt.Errorf("bind rtnetlink socket: %w", err))
	}
	for _, g := range groups {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, g); err != nil {
			return fail(fmt.Errorf("join rtnetlink group %d: %w", g, err))
		}
	}
	f := os.NewFile(uintptr(fd), "rtnetlink")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("rtnetlink raw conn: %w", err)
	}
	return &nlSocket{f: f, rc: rc, buf: make([]byte, bufSize)}, nil
}

// read returns one datagram (a slice of the socket's buffer, valid until the
// next read).
func (s *nlSocket) read(deadline time.Time) ([]byte, error) {
	if err := s.f.SetReadDeadline(deadline); err != nil {
		return nil, fmt.Errorf("set rtnetlink read deadline: %w", err)
	}
	var n int
	var rerr error
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			n, _, rerr = unix.Recvfrom(int(fd), s.buf, unix.MSG_TRUNC)
			if rerr == unix.EINTR {
				continue
			}
			return rerr != unix.EAGAIN
		}
	})
	if err != nil {
		return nil, err // closed or deadline
	}
	if rerr != nil {
		return nil, fmt.Errorf("receive from rtnetlink: %w", rerr)
	}
	if n > len(s.buf) {
		// Cannot happen with 64 KiB and the kernel's page-sized skbs; if it
		// does, a message is lost: resync.
		s.buf = make([]byte, n)
		return nil, fmt.Errorf("rtnetlink datagram of %d bytes truncated: %w", n, unix.ENOBUFS)
	}
	return s.buf[:n], nil
}

func (s *nlSocket) write(b []byte) error {
	var werr error
	err := s.rc.Write(func(fd uintptr) bool {
		werr = unix.Sendto(int(fd), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return werr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return werr
}

func (s *nlSocket) close() error { return s.f.Close() }

type nlStream struct {
	s   *nlSocket
	tap func(string, []byte)
}

func (k *nlKernel) subscribe(rcvbuf int) (stream, error) {
	s, err := openSocket(k.ns, rcvbuf, groups, 1<<16)
	if err != nil {
		return nil, err
	}
	return &nlStream{s: s, tap: k.tap}, nil
}

func (st *nlStream) recv(deadline time.Time) ([]message, error) {
	b, err := st.s.read(deadline)
	if err != nil {
		return nil, err
	}
	if st.tap != nil {
		st.tap("stream", b)
	}
	// The messages alias the socket buffer; copy so callers may keep them.
	return parseDatagram(append([]byte(nil), b...))
}

func (st *nlStream) close() error { return st.s.close() }

// requestTimeout bounds one request/dump: the kernel answers at once, so
// hitting it means something is badly wrong.
const requestTimeout = 10 * time.Second

func (k *nlKernel) dump() ([]message, error) {
	s, err := openSocket(k.ns, 0, nil, 1<<16)
	if err != nil {
		return nil, err
	}
	defer s.close()
	var out []message
	for _, q := range []struct {
		name string
		req  func(seq uint32) []byte
	}{
		{"dump-links", func(seq uint32) []byte { return linkDumpRequest(unix.AF_UNSPEC, seq) }},
		{"dump-inet6", func(seq uint32) []byte { return linkDumpRequest(unix.AF_INET6, seq) }},
		{"dump-addrs", addrDumpRequest},
	} {
		msgs, err := k.request(s, q.name, q.req(k.seq.Add(1)), true)
		if err != nil {
			return nil, fmt.Errorf("rtnetlink %s: %w", q.name, err)
		}
		out = append(out, msgs...)
	}
	return out, nil
}

// maxIdle bounds the request sockets a kernel keeps open between lookups.
const maxIdle = 4

func (k *nlKernel) getAddr(index int, ip netip.Addr) ([]message, error) {
	k.poolMu.Lock()
	var s *nlSocket
	if n := len(k.idle); n > 0 {
		s, k.idle = k.idle[n-1], k.idle[:n-1]
	}
	k.poolMu.Unlock()
	if s == nil {
		// One RTM_NEWADDR (about 100 bytes) or an error with the request echoed.
		var err error
		if s, err = openSocket(k.ns, 0, nil, 4096); err != nil {
			return nil, err
		}
	}
	msgs, err := k.request(s, "get-addr", addrGetRequest(index, ip, k.seq.Add(1)), false)
	// A socket goes back only after a clean answer ("not there" is one):
	// after a timeout a late reply could still be queued on it (request
	// skips other sequence numbers, but there is no need to keep it).
	if err == nil || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) {
		k.poolMu.Lock()
		if len(k.idle) < maxIdle && !k.closed {
			k.idle, s = append(k.idle, s), nil
		}
		k.poolMu.Unlock()
	}
	if s != nil {
		s.close()
	}
	return msgs, err
}

func (k *nlKernel) closeIdle() {
	k.poolMu.Lock()
	idle := k.idle
	k.idle = nil
	k.poolMu.Unlock()
	for _, s := range idle {
		s.close()
	}
}

func (k *nlKernel) close() error {
	k.poolMu.Lock()
	k.closed = true
	k.poolMu.Unlock()
	k.closeIdle()
	return nil
}

// request sends req and collects the answer: until NLMSG_DONE for a dump,
// the first message for a get.
func (k *nlKernel) request(s *nlSocket, name string, req []byte, dump bool) ([]message, error) {
	if err := s.write(req); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	seq := binary.NativeEndian.Uint32(req[8:12])
	deadline := time.Now().Add(requestTimeout)
	var out []message
	for {
		b, err := s.read(deadline)
		if err != nil {
			return nil, err
		}
		if k.tap != nil {
			k.tap(name, b)
		}
		msgs, err := parseDatagram(append([]byte(nil), b...))
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if m.Seq != seq {
				continue
			}
			switch m.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if err := nlError(m); err != nil {
					return nil, err
				}
				return out, nil
			}
			out = append(out, m)
			if !dump {
				return out, nil
			}
			if m.Flags&unix.NLM_F_DUMP_INTR != 0 {
				// The dump raced with a change; the caller retries.
				return nil, errDumpInterrupted
			}
		}
	}
}

var errDumpInterrupted = errors.New("dump interrupted by a concurrent change")
