package refserver

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/scheduler"
)

// AllDHCPRelayAgentsAndServers is ff02::1:2 (RFC 8415 §7.1).
var AllDHCPRelayAgentsAndServers = netip.MustParseAddr("ff02::1:2")

// Server is the reference registration server.
type Server struct {
	cfg   Config
	log   *slog.Logger
	clock scheduler.Clock

	h       atomic.Pointer[Handler]
	cmu     sync.Mutex
	counter map[string]uint64

	st   *store
	pc   *ipv6.PacketConn
	jobs chan job

	ifmu    sync.Mutex
	ifNames map[int]string
	onLink  map[string]onLinkEntry

	cancelRun context.CancelFunc
	dbOnce    sync.Once
	dbErr     error // set by the writer before it ends; read after

	running atomic.Pointer[store] // set while Run runs (history.go)
	metrics serverMetrics         // metrics.go

	tmu     sync.Mutex
	timer   scheduler.Timer
	armedAt time.Time
	wake    chan struct{}
}

type onLinkEntry struct {
	prefixes []netip.Prefix
	at       time.Time
}

// job is a group of events to commit, and what to send once they are durable.
type job struct {
	evs  []Event
	send func() // after the commit
	log  func() // after every send of the batch: logging must not delay replies
}

// New checks cfg and returns a Server; Run starts it.
func New(cfg Config) (*Server, error) {
	if cfg.DBPath == "" {
		return nil, errors.New("refserver: no database path")
	}
	for k, ps := range cfg.Prefixes {
		for _, p := range ps {
			if !p.IsValid() || !p.Addr().Is6() {
				return nil, fmt.Errorf("refserver: prefix %v for %s: not an IPv6 prefix", p, k)
			}
		}
	}
	if cfg.RatePerSource < 0 || cfg.RatePerDUID < 0 || cfg.Burst < 0 {
		return nil, errors.New("refserver: rate and burst must not be negative")
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		clock:   cfg.Clock,
		counter: make(map[string]uint64),
		ifNames: make(map[int]string),
		onLink:  make(map[string]onLinkEntry),
		wake:    make(chan struct{}, 1),
		metrics: newServerMetrics(),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.clock == nil {
		s.clock = scheduler.RealClock()
	}
	s.h.Store(NewHandler(s.handlerConfig(nil)))
	return s, nil
}

func (s *Server) handlerConfig(duid []byte) HandlerConfig {
	return HandlerConfig{
		ServerDUID: duid, AddrReg: s.cfg.AddrReg, Interfaces: s.cfg.Interfaces, Prefixes: s.cfg.Prefixes,
		OnLink: s.ifacePrefixes, LeasequeryAllow: s.cfg.LeasequeryAllow,
		RatePerSource: s.cfg.RatePerSource, RatePerDUID: s.cfg.RatePerDUID, Burst: s.cfg.Burst,
	}
}

// Bindings returns a snapshot of the current bindings, ordered by address.
func (s *Server) Bindings() []Binding { return s.h.Load().Bindings() }

// Counters returns how many messages were received ("received") and sent
// ("sent"), how many of each event happened (keys "register", "refresh",
// "move", "deregister", "expire", "info-reply", "leasequery", "reject") and
// how many were dropped for each Reason (its Name).
func (s *Server) Counters() map[string]uint64 {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	m := make(map[string]uint64, len(s.counter))
	for k, v := range s.counter {
		m[k] = v
	}
	return m
}

func (s *Server) count(keys ...string) {
	s.cmu.Lock()
	for _, k := range keys {
		s.counter[k]++
	}
	s.cmu.Unlock()
}

// Run opens the database, loads the bindings, listens on [::]:547 joined to
// ff02::1:2 on every configured interface, and serves until ctx is done. It
// then stops reading, commits what is queued, sends the replies that were
// waiting for it, and closes the database and socket.
//
// Run is called once per Server. For an in-process server in a network
// namespace, call it inside topo's Node.Do: the socket and the interface
// look-ups of the read loop happen on the calling thread.
func (s *Server) Run(ctx context.Context) (err error) {
	// Cancelled also when the read loop fails, so the expirer stops.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.cancelRun = cancel
	st, err := openStore(s.cfg.DBPath)
	if err != nil {
		return err
	}
	s.st = st
	st.retention = retention{max: s.cfg.HistoryMax, maxAge: s.cfg.HistoryMaxAge}
	s.running.Store(st)
	defer func() {
		if cerr := st.close(); cerr != nil && err == nil {
			err = fmt.Errorf("close database: %w", cerr)
		}
	}()
	duid, err := st.serverDUID(s.newDUID)
	if err != nil {
		return err
	}
	h := NewHandler(s.handlerConfig(duid))
	bs, err := st.load()
	if err != nil {
		return err
	}
	now := s.clock.Now()
	if evs := h.Load(now, bs); len(evs) > 0 {
		for _, e := range evs {
			s.logEvent(e)
		}
		if err := st.apply(evs); err != nil {
			return fmt.Errorf("drop expired bindings: %w", err)
		}
	}
	s.h.Store(h)

	pc, err := s.listen()
	if err != nil {
		return err
	}
	s.pc = pc
	defer pc.Close()

	s.jobs = make(chan job, 4096)
	var writerDone sync.WaitGroup
	writerDone.Add(1)
	go func() {
		defer writerDone.Done()
		s.writer()
	}()

	var producers sync.WaitGroup
	producers.Add(1)
	go func() {
		defer producers.Done()
		s.expirer(ctx)
	}()
	s.arm()

	stop := context.AfterFunc(ctx, func() { _ = pc.SetReadDeadline(time.Now()) })
	defer stop()
	s.log.Info("listening", "addr", "[::]:547", "interfaces", s.cfg.Interfaces, "db", s.cfg.DBPath,
		"bindings", len(h.Bindings()), "server_duid", hex.EncodeToString(duid), "addr_reg", s.cfg.AddrReg)
	rerr := s.readLoop(ctx)
	cancel()

	producers.Wait()
	s.tmu.Lock()
	if s.timer != nil {
		s.timer.Stop()
	}
	s.tmu.Unlock()
	close(s.jobs)
	writerDone.Wait()
	s.log.Info("stopped", "bindings", len(h.Bindings()))
	if s.dbErr != nil {
		return fmt.Errorf("database: %w", s.dbErr)
	}
	return rerr
}

func (s *Server) listen() (*ipv6.PacketConn, error) {
	c, err := net.ListenPacket("udp6", "[::]:547")
	if err != nil {
		return nil, fmt.Errorf("listen on [::]:547: %w", err)
	}
	setRcvBuf(c, 4<<20)
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

func (s *Server) readLoop(ctx context.Context) error {
	buf := make([]byte, 65536)
	for {
		n, cm, src, err := s.pc.ReadFrom(buf)
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
		ua, ok := src.(*net.UDPAddr)
		if !ok {
			continue
		}
		sa, _ := netip.AddrFromSlice(ua.IP)
		pkt := Packet{Data: buf[:n], Src: netip.AddrPortFrom(sa.WithZone(ua.Zone), uint16(ua.Port))}
		if cm != nil {
			pkt.IfIndex = cm.IfIndex
			pkt.Iface = s.ifName(cm.IfIndex)
			pkt.Dst, _ = netip.AddrFromSlice(cm.Dst)
		}
		s.handle(pkt)
	}
}

// handle runs one packet through the Handler and queues or sends the result.
func (s *Server) handle(pkt Packet) {
	h := s.h.Load()
	s.count("received")
	defer func() {
		// A parser bug must cost one packet, not the server. The fuzz
		// targets run the Handler without this net.
		if r := recover(); r != nil {
			s.count(ErrMalformed.Name)
			s.log.Error("panic handling packet", "iface", pkt.Iface, "addr", pkt.Src.Addr(), "reason", ErrMalformed.Name, "panic", fmt.Sprint(r))
		}
	}()
	reply, dst, ev, reason := h.Handle(s.clock.Now(), pkt)
	if reason != nil {
		s.count("reject", ev.Reason)
		s.logReject(ev, reason)
		switch ev.Reason {
		case ErrRateSource.Name, ErrRateDUID.Name, ErrTruncated.Name, ErrOversized.Name, ErrMalformed.Name,
			ErrUnsupported.Name, ErrWrongType.Name, ErrUnknownInterface.Name:
			// Counted only: a flood, or the ordinary DHCPv6 traffic of a
			// LAN (Solicit, Renew …), must not fill the history.
		default:
			s.enqueue(job{evs: []Event{ev}})
		}
		return
	}
	s.count(ev.Kind.String())
	send := func() {}
	if reply != nil {
		var cm *ipv6.ControlMessage
		if !ev.Relayed && pkt.IfIndex != 0 {
			// Unrelayed: out the receiving interface (RFC 9686 §4.3).
			cm = &ipv6.ControlMessage{IfIndex: pkt.IfIndex}
		}
		ua := &net.UDPAddr{IP: dst.Addr().AsSlice(), Port: int(dst.Port())}
		if dst.Addr().Is6() && dst.Addr().IsLinkLocalUnicast() {
			ua.Zone = pkt.Iface
		}
		send = func() {
			if _, err := s.pc.WriteTo(reply, cm, ua); err != nil {
				s.count(ErrSend.Name)
				s.log.Warn("send failed", "iface", pkt.Iface, "addr", ev.Binding.Addr, "dst", ua, "reason", ErrSend.Name, "err", err)
				return
			}
			s.count("sent")
		}
	}
	if !ev.Durable() {
		s.logEvent(ev)
		send()
		return
	}
	s.enqueue(job{evs: []Event{ev}, send: send, log: func() { s.logEvent(ev) }})
	if !ev.Binding.Expires.IsZero() {
		s.tmu.Lock()
		early := s.armedAt.IsZero() || ev.Binding.Expires.Before(s.armedAt)
		s.tmu.Unlock()
		if early {
			s.arm()
		}
	}
}

func (s *Server) enqueue(j job) { s.jobs <- j }

// writer commits whatever is queued in one transaction (group commit), then
// releases the replies that waited for it. It returns when jobs is closed
// and drained.
func (s *Server) writer() {
	const maxBatch = 4096
	batch := make([]job, 0, maxBatch)
	var evs []Event
	for j := range s.jobs {
		batch = append(batch[:0], j)
	drain:
		for len(batch) < maxBatch {
			select {
			case j, ok := <-s.jobs:
				if !ok {
					break drain
				}
				batch = append(batch, j)
			default:
				break drain
			}
		}
		evs = evs[:0]
		for _, j := range batch {
			evs = append(evs, j.evs...)
		}
		if err := s.commit(evs); err != nil {
			// Nothing is acknowledged that is not on disk, and memory
			// now holds what the disk does not: stop, so that a restart
			// reloads the truth from the database.
			s.count(ErrDatabase.Name)
			s.log.Error("database commit failed: stopping", "events", len(evs), "reason", ErrDatabase.Name, "err", err)
			s.dbOnce.Do(func() {
				s.dbErr = err
				s.cancelRun()
			})
			continue
		}
		for _, j := range batch {
			if j.send != nil {
				j.send()
			}
		}
		for _, j := range batch {
			if j.log != nil {
				j.log()
			}
		}
	}
}

// commit applies evs, retrying a failed transaction a few times (a full
// disk may free up; bbolt leaves nothing half-written).
func (s *Server) commit(evs []Event) error {
	defer s.metrics.observeCommit(time.Now())
	var err error
	for i, wait := 0, 50*time.Millisecond; i < 3; i, wait = i+1, wait*4 {
		if err = s.st.apply(evs); err == nil {
			return nil
		}
		time.Sleep(wait)
	}
	return err
}

// expirer removes expired bindings when the timer says so.
func (s *Server) expirer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		evs := s.h.Load().Expire(s.clock.Now())
		for _, e := range evs {
			s.count(e.Kind.String())
			s.logEvent(e)
		}
		if len(evs) > 0 {
			s.enqueue(job{evs: evs})
		}
		s.tmu.Lock()
		s.armedAt = time.Time{}
		s.tmu.Unlock()
		s.arm()
	}
}

// arm sets the one expiry timer to the earliest expiry.
func (s *Server) arm() {
	at, ok := s.h.Load().NextExpiry()
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if !ok || (!s.armedAt.IsZero() && !at.Before(s.armedAt)) {
		return
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.armedAt = at
	s.timer = s.clock.AfterFunc(at.Sub(s.clock.Now()), func() {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	})
}

func (s *Server) ifName(idx int) string {
	s.ifmu.Lock()
	defer s.ifmu.Unlock()
	if n, ok := s.ifNames[idx]; ok {
		return n
	}
	name := ""
	if ifi, err := net.InterfaceByIndex(idx); err == nil {
		name = ifi.Name
	}
	s.ifNames[idx] = name
	return name
}

// ifacePrefixes returns the global prefixes of an interface's own
// addresses, cached for a second.
func (s *Server) ifacePrefixes(name string) []netip.Prefix {
	now := time.Now()
	s.ifmu.Lock()
	e, ok := s.onLink[name]
	s.ifmu.Unlock()
	if ok && now.Sub(e.at) < time.Second {
		return e.prefixes
	}
	var ps []netip.Prefix
	if ifi, err := net.InterfaceByName(name); err == nil {
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, _ := netip.AddrFromSlice(ipn.IP)
			ones, bits := ipn.Mask.Size()
			if bits != 128 || !ip.Is6() || ip.Is4In6() || !ip.IsGlobalUnicast() {
				continue
			}
			if ones == 128 {
				ones = 64 // a /128 (nodad host address) stands for its /64 link
			}
			p, _ := ip.Prefix(ones)
			ps = append(ps, p)
		}
	}
	s.ifmu.Lock()
	s.onLink[name] = onLinkEntry{prefixes: ps, at: now}
	s.ifmu.Unlock()
	return ps
}

// newDUID makes a DUID-LLT (RFC 8415 §11.2) from the first interface with a
// hardware address, else a DUID-UUID (RFC 6355) from random bytes.
func (s *Server) newDUID() []byte {
	for _, name := range s.cfg.Interfaces {
		if ifi, err := net.InterfaceByName(name); err == nil && len(ifi.HardwareAddr) == 6 {
			d := binary.BigEndian.AppendUint16(nil, 1)
			d = binary.BigEndian.AppendUint16(d, 1) // Ethernet
			d = binary.BigEndian.AppendUint32(d, uint32(s.clock.Now().Unix()-946684800))
			return append(d, ifi.HardwareAddr...)
		}
	}
	d := binary.BigEndian.AppendUint16(nil, 4)
	var u [16]byte
	_, _ = rand.Read(u[:])
	return append(d, u[:]...)
}

func (s *Server) logEvent(e Event) {
	if e.Kind == EventInfoReply {
		s.log.Debug(e.Kind.String(), "iface", e.Binding.Iface, "addr", e.Binding.Addr, "duid", hex.EncodeToString(e.Binding.DUID), "relayed", e.Relayed)
		return
	}
	if e.Kind == EventLeasequery {
		s.log.Info(e.Kind.String(), "iface", e.Binding.Iface, "addr", e.Binding.Addr, "duid", hex.EncodeToString(e.Binding.DUID), "status", e.Status)
		return
	}
	if s.cfg.NoLog {
		return
	}
	b := e.Binding
	attrs := []any{"iface", b.Iface, "addr", b.Addr, "duid", hex.EncodeToString(b.DUID),
		"preferred", int64(b.Preferred / time.Second), "valid", int64(b.Valid / time.Second), "relayed", e.Relayed}
	if b.LinkAddr.IsValid() {
		attrs = append(attrs, "link_addr", b.LinkAddr)
	}
	if len(b.LinkLayer) > 0 {
		attrs = append(attrs, "link_layer", b.LinkLayer.String())
	}
	if b.FQDN != "" {
		attrs = append(attrs, "fqdn", b.FQDN)
	}
	if e.PrevDUID != nil {
		attrs = append(attrs, "prev_duid", hex.EncodeToString(e.PrevDUID))
	}
	if !b.Expires.IsZero() {
		attrs = append(attrs, "expires", b.Expires.UTC().Format(time.RFC3339))
	}
	s.log.Info(e.Kind.String(), attrs...)
}

func (s *Server) logReject(e Event, reason error) {
	lvl := slog.LevelInfo
	if e.Reason == ErrRateSource.Name || e.Reason == ErrRateDUID.Name {
		lvl = slog.LevelDebug
	}
	s.log.Log(context.Background(), lvl, "reject", "reason", e.Reason, "iface", e.Binding.Iface,
		"addr", e.Binding.Addr, "duid", hex.EncodeToString(e.Binding.DUID), "relayed", e.Relayed, "err", reason.Error())
}

// History returns the database's history records, oldest first. It is for
// tests and only valid while Run is running.
func (s *Server) History() ([]HistoryRecord, error) {
	if s.st == nil {
		return nil, errors.New("refserver: not running")
	}
	return s.st.history()
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
