package refserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// PacketConn is the server's datagram socket as the pipeline uses it:
// batches in (recvmmsg) and out (sendmmsg), one reply out, and a deadline
// to stop the readers. *ipv6.PacketConn on [::]:547 in Run; a test's
// loopback socket in Serve.
type PacketConn interface {
	ReadBatch(ms []ipv6.Message, flags int) (int, error)
	WriteBatch(ms []ipv6.Message, flags int) (int, error)
	WriteTo(b []byte, cm *ipv6.ControlMessage, dst net.Addr) (int, error)
	SetReadDeadline(t time.Time) error
}

func (s *Server) listen() (*ipv6.PacketConn, error) {
	c, err := net.ListenPacket("udp6", "[::]:547")
	if err != nil {
		return nil, fmt.Errorf("listen on [::]:547: %w", err)
	}
	setRcvBuf(c, 4<<20)
	if cfg := s.cfg; cfg.MaxWait > 0 {
		// Receive timestamps (SCM_TIMESTAMPNS) tell how long each
		// datagram waited (Config.MaxWait).
		if err := setSockopt(c, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			c.Close()
			return nil, fmt.Errorf("enable SO_TIMESTAMPNS on [::]:547: %w", err)
		}
	}
	pc := ipv6.NewPacketConn(c)
	if err := pc.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true); err != nil {
		c.Close()
		return nil, fmt.Errorf("enable IPV6_RECVPKTINFO: %w", err)
	}
	group := &net.UDPAddr{IP: net.IP(AllDHCPRelayAgentsAndServers.AsSlice())}
	for _, name := range s.cfg.Interfaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("interface %s: %w", name, err)
		}
		if err := pc.JoinGroup(ifi, group); err != nil {
			c.Close()
			return nil, fmt.Errorf("join ff02::1:2 on %s: %w", name, err)
		}
		s.ifmu.Lock()
		s.ifNames[ifi.Index] = name
		s.ifmu.Unlock()
	}
	return pc, nil
}

// readLoop runs cfg.Readers readers on the socket and returns when the
// first of them ends. The calling goroutine is one of them; the others run
// on threads in the calling thread's network namespace, as the interface
// look-ups they make must (see Run).
func (s *Server) readLoop(ctx context.Context) error {
	n := s.cfg.Readers
	var ns *netnsHandle
	if n > 1 {
		var err error
		if ns, err = currentNetns(); err != nil {
			s.log.Warn("one reader only", "err", err)
			n = 1
		} else {
			defer ns.close()
		}
	}
	ctx, stop := context.WithCancel(ctx) // the first reader to end stops the others
	defer stop()
	errs := make(chan error, n)
	for i := 1; i < n; i++ {
		go func() {
			if !ns.isProcess() {
				// This thread is moved into another namespace: it
				// ends with the goroutine (no UnlockOSThread).
				runtime.LockOSThread()
				if err := ns.enter(); err != nil {
					s.log.Warn("reader not started", "err", err)
					errs <- nil
					return
				}
			}
			errs <- s.reader(ctx)
		}()
	}
	err := s.reader(ctx)
	stop()
	_ = s.pc.SetReadDeadline(time.Now())
	for i := 1; i < n; i++ {
		if e := <-errs; err == nil {
			err = e
		}
	}
	return err
}

// reader takes datagrams off the socket readBatch at a time (recvmmsg)
// and handles them.
func (s *Server) reader(ctx context.Context) error {
	msgs := make([]ipv6.Message, readBatch)
	for i := range msgs {
		// One byte more than accepted, so an oversized datagram shows
		// (it arrives truncated to MaxMessageSize+1).
		msgs[i].Buffers = [][]byte{make([]byte, MaxMessageSize+1)}
		msgs[i].OOB = append(ipv6.NewControlMessage(ipv6.FlagDst|ipv6.FlagInterface), make([]byte, unix.CmsgSpace(16))...)
	}
	maxWait := s.cfg.MaxWait
	for {
		for i := range msgs {
			msgs[i].OOB = msgs[i].OOB[:cap(msgs[i].OOB)]
		}
		n, err := s.pc.ReadBatch(msgs, 0)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("read from [::]:547: %w", err)
		}
		now := time.Now()
		for _, m := range msgs[:n] {
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			sa, _ := netip.AddrFromSlice(ua.IP)
			pkt := Packet{Data: m.Buffers[0][:m.N], Src: netip.AddrPortFrom(sa.WithZone(ua.Zone), uint16(ua.Port))}
			cm := parseCmsgs(m.OOB[:m.NN])
			if cm.ifIndex != 0 {
				pkt.IfIndex = cm.ifIndex
				pkt.Iface = s.ifName(cm.ifIndex)
				pkt.Dst = cm.dst
			}
			if maxWait > 0 && cm.rx != 0 && now.UnixNano()-cm.rx > int64(maxWait) {
				s.count("received")
				s.shed("waited longer than --max-wait in the socket", "max_wait", maxWait)
				continue
			}
			s.handle(pkt, cm.rx, now.UnixNano())
		}
	}
}

// cmsgs is what a datagram's control messages say: the destination
// address and receiving interface (IPV6_PKTINFO, RFC 3542 §6.1) and when
// the kernel received it (SCM_TIMESTAMPNS, Unix ns; 0 when absent).
type cmsgs struct {
	dst     netip.Addr
	ifIndex int
	rx      int64
}

func parseCmsgs(oob []byte) cmsgs {
	var c cmsgs
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return c
		}
		switch {
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= 20:
			c.dst, c.ifIndex = netip.AddrFrom16([16]byte(data[:16])), int(binary.NativeEndian.Uint32(data[16:20]))
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= 16:
			c.rx = int64(binary.NativeEndian.Uint64(data))*1e9 + int64(binary.NativeEndian.Uint64(data[8:]))
		}
		oob = rest
	}
	return c
}

// handle runs one packet through the Handler and queues or sends the result.
// rx and read are when the kernel received it and a reader took it (Unix ns).
func (s *Server) handle(pkt Packet, rx, read int64) {
	s.count("received")
	// Shed load before doing any work when the writer is behind: a
	// bounded wait instead of a queue that grows for hundreds of ms.
	if s.queued.Load() >= int64(s.cfg.MaxQueue) {
		s.shed("commit queue full", "queue", s.cfg.MaxQueue)
		return
	}
	h := s.h.Load()
	bp := s.bufs.Get().(*[]byte)
	queued := false
	defer func() {
		if !queued {
			s.bufs.Put(bp)
		}
		// A parser bug must cost one packet, not the server. The fuzz
		// targets run the Handler without this net.
		if r := recover(); r != nil {
			s.count(ErrMalformed.Name)
			s.log.Error("panic handling packet", "iface", pkt.Iface, "addr", pkt.Src.Addr(), "reason", ErrMalformed.Name, "panic", fmt.Sprint(r))
		}
	}()
	reply, dst, ev, reason := h.HandleInto(*bp, s.clock.Now(), pkt)
	if reason != nil {
		s.count("reject", ev.Reason)
		s.logReject(ev, reason)
		switch ev.Reason {
		case ErrRateSource.Name, ErrRateDUID.Name, ErrTruncated.Name, ErrOversized.Name, ErrMalformed.Name,
			ErrUnsupported.Name, ErrWrongType.Name, ErrUnknownInterface.Name:
			// Counted only: a flood, or the ordinary DHCPv6 traffic of a
			// LAN (Solicit, Renew …), must not fill the history.
		default:
			s.enqueue(job{ev: ev})
		}
		return
	}
	if !ev.Durable() {
		s.count(ev.Kind.String())
	}
	j := job{ev: ev, reply: reply, to: dst}
	if reply != nil {
		if !ev.Relayed {
			j.ifIndex = pkt.IfIndex
		}
		if dst.Addr().IsLinkLocalUnicast() {
			j.zone = pkt.Iface
		}
	}
	if !ev.Durable() {
		s.logEvent(ev)
		if reply != nil {
			s.sendNow(j)
		}
		return
	}
	j.log, j.buf, queued = true, bp, true
	j.rx, j.read = rx, read
	s.enqueue(j)
	if !ev.Binding.Expires.IsZero() {
		s.tmu.Lock()
		early := s.armedAt.IsZero() || ev.Binding.Expires.Before(s.armedAt)
		s.tmu.Unlock()
		if early {
			s.arm()
		}
	}
}

// shed counts a message dropped for overload, and says so at most once a second.
func (s *Server) shed(why string, attrs ...any) {
	s.count(ErrOverloaded.Name)
	if now := time.Now().Unix(); s.shedLog.Swap(now) != now {
		s.log.Warn("shedding load: "+why, append(attrs, "reason", ErrOverloaded.Name)...)
	}
}

// enqueue hands j to the writer. The readers admit at most MaxQueue
// messages (handle sheds the rest), so this waits only for the expirer.
func (s *Server) enqueue(j job) {
	s.queued.Add(1)
	s.jobs <- j
}

func setSockopt(c net.PacketConn, level, opt, v int) error {
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return errors.New("not a UDP socket")
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, v) }); err != nil {
		return err
	}
	return serr
}

// setRcvBuf makes the socket's receive buffer n bytes, above rmem_max when
// allowed (SO_RCVBUFFORCE needs CAP_NET_ADMIN), so a burst of registrations
// waits in the kernel instead of being dropped while a commit is running.
func setRcvBuf(c net.PacketConn, n int) {
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return
	}
	_ = uc.SetReadBuffer(n)
	if rc, err := uc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
		})
	}
}
