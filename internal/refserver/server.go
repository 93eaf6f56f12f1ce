package refserver

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"runtime"
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
	// hot holds the counters of every packet (received, sent, the events,
	// overloaded): atomic, so the readers and the writer do not contend.
	// Read-only after New.
	hot map[string]*atomic.Uint64

	st      atomic.Pointer[storageRef] // set while Run runs
	pc      *ipv6.PacketConn
	jobs    chan job
	queued  atomic.Int64 // jobs queued or being committed
	shedLog atomic.Int64 // unix seconds of the last "shedding load" log line
	bufs    sync.Pool    // *[]byte reply buffers

	ifmu    sync.Mutex
	ifNames map[int]string
	onLink  map[string]onLinkEntry

	metrics serverMetrics // metrics.go

	tmu     sync.Mutex
	timer   scheduler.Timer
	armedAt time.Time
	wake    chan struct{}
}

// storageRef holds the storage in an atomic.Pointer.
type storageRef struct{ storage }

// store returns the database while Run runs, else nil.
func (s *Server) store() storage {
	if r := s.st.Load(); r != nil {
		return r.storage
	}
	return nil
}

type onLinkEntry struct {
	prefixes []netip.Prefix
	at       time.Time
}

// job is what one message (or one expiry run) gives the writer: events to
// commit, and the reply to send once they are durable.
type job struct {
	ev  Event   // committed unless its Kind is EventNone
	evs []Event // more events to log and count (the expiries a commit made)
	// expire asks the commit to remove the bindings expired by then
	// (the expirer's job).
	expire  time.Time
	reply   []byte // sent after the commit; nil: nothing to send
	to      netip.AddrPort
	zone    string  // for a link-local destination
	ifIndex int     // unrelayed: out the receiving interface (RFC 9686 §4.3)
	log     bool    // log ev after every send of the batch: logging must not delay replies
	buf     *[]byte // the reply's buffer, back to the pool once sent
	done    func()  // called once committed and sent (benchmarks wait on it)
	// rx is when the kernel received the message and read when a reader
	// took it (Unix ns; 0 when unknown): the start of its stages
	// (metrics.go).
	rx, read int64
}

const (
	// readBatch is how many datagrams one recvmmsg takes, and writeBatch
	// how many replies one sendmmsg sends.
	readBatch  = 64
	writeBatch = 64
	// DefaultMaxQueue is how many messages may wait for a commit before
	// the server sheds load (Config.MaxQueue).
	DefaultMaxQueue = 1024
	// DefaultMaxWait is Config.MaxWait's default.
	DefaultMaxWait = 50 * time.Millisecond
)

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
	if cfg.MaxQueue < 0 || cfg.Readers < 0 || cfg.MaxBindingsPerDUID < 0 {
		return nil, errors.New("refserver: queue, readers and bindings per DUID must not be negative")
	}
	if cfg.MaxQueue == 0 {
		cfg.MaxQueue = DefaultMaxQueue
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.Readers == 0 {
		cfg.Readers = min(runtime.GOMAXPROCS(0), 4)
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		clock:   cfg.Clock,
		counter: make(map[string]uint64),
		hot:     newHotCounters(),
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
	s.bufs.New = func() any { b := make([]byte, 0, 256); return &b }
	s.h.Store(NewHandler(s.handlerConfig(nil)))
	return s, nil
}

func (s *Server) handlerConfig(duid []byte) HandlerConfig {
	return HandlerConfig{
		ServerDUID: duid, AddrReg: s.cfg.AddrReg, Interfaces: s.cfg.Interfaces, Prefixes: s.cfg.Prefixes,
		OnLink: s.ifacePrefixes, LeasequeryAllow: s.cfg.LeasequeryAllow,
		RatePerSource: s.cfg.RatePerSource, RatePerDUID: s.cfg.RatePerDUID, Burst: s.cfg.Burst,
		MaxBindingsPerDUID: s.cfg.MaxBindingsPerDUID,
	}
}

// maxPerDUID is the per-DUID limit the database enforces.
func (s *Server) maxPerDUID() int {
	if s.cfg.MaxBindingsPerDUID > 0 {
		return s.cfg.MaxBindingsPerDUID
	}
	return DefaultMaxBindingsPerDUID
}

// Bindings returns the current bindings, ordered by address: from the
// database while Run runs (every server's, when servers share one), else
// what the server last knew.
func (s *Server) Bindings() []Binding {
	if st := s.store(); st != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		bs, err := st.bindings(ctx)
		if err == nil {
			return bs
		}
		s.log.Warn("read bindings", "reason", ErrDatabase.Name, "err", err)
	}
	return s.h.Load().Bindings()
}

// Counters returns how many messages were received ("received") and sent
// ("sent"), how many of each event happened (keys "register", "refresh",
// "move", "deregister", "expire", "info-reply", "leasequery", "reject") and
// how many were dropped for each Reason (its Name).
func (s *Server) Counters() map[string]uint64 {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	m := make(map[string]uint64, len(s.counter)+len(s.hot))
	for k, v := range s.counter {
		m[k] = v
	}
	for k, v := range s.hot {
		if n := v.Load(); n > 0 {
			m[k] += n
		}
	}
	return m
}

func newHotCounters() map[string]*atomic.Uint64 {
	m := map[string]*atomic.Uint64{"received": {}, "sent": {}, ErrOverloaded.Name: {}}
	for k := EventRegister; k <= EventLeasequery; k++ {
		m[k.String()] = new(atomic.Uint64)
	}
	return m
}

func (s *Server) count(keys ...string) {
	for _, k := range keys {
		s.countN(k, 1)
	}
}

func (s *Server) countN(key string, n int) {
	if c := s.hot[key]; c != nil {
		c.Add(uint64(n))
		return
	}
	s.cmu.Lock()
	s.counter[key] += uint64(n)
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
	st, err := openStorage(ctx, s.cfg.DBPath, storeOptions{
		passwordFile: s.cfg.DBPasswordFile, log: s.log,
		ret: retention{max: s.cfg.HistoryMax, maxAge: s.cfg.HistoryMaxAge},
	})
	if err != nil {
		return err
	}
	defer func() {
		s.st.Store(nil)
		if cerr := st.close(); cerr != nil && err == nil {
			err = fmt.Errorf("close database: %w", cerr)
		}
	}()
	duid, err := st.serverDUID(ctx, s.newDUID)
	if err != nil {
		return fmt.Errorf("database %s: %w", RedactDB(s.cfg.DBPath), err)
	}
	bs, err := st.bindings(ctx)
	if err != nil {
		return fmt.Errorf("database %s: %w", RedactDB(s.cfg.DBPath), err)
	}
	hc := s.handlerConfig(duid)
	hc.Source = st
	// The database enforces the per-DUID limit (in the commit, across
	// servers); the Handler's table only caches what this server saw.
	hc.MaxBindingsPerDUID = math.MaxInt32
	h := NewHandler(hc)
	// Expired ones stay in the database until the first expiry run, at once.
	h.Load(s.clock.Now(), bs)
	s.h.Store(h)
	s.st.Store(&storageRef{st})

	pc, err := s.listen()
	if err != nil {
		return err
	}
	s.pc = pc
	defer pc.Close()
	bulk, err := s.listenBulk()
	if err != nil {
		return err
	}
	bulkDone := make(chan struct{})
	go func() {
		defer close(bulkDone)
		bulk.serve()
	}()
	defer func() {
		bulk.close()
		<-bulkDone
	}()

	// Room for every message admitted (MaxQueue), and the expirer's runs.
	s.jobs = make(chan job, s.cfg.MaxQueue+64)
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
	s.wake <- struct{}{} // expire what expired while the server was down
	s.log.Info("listening", "addr", "[::]:547", "interfaces", s.cfg.Interfaces, "db", RedactDB(s.cfg.DBPath),
		"bindings", h.Len(), "server_duid", hex.EncodeToString(duid), "addr_reg", s.cfg.AddrReg)
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
	s.log.Info("stopped")
	return rerr
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

// sendNow sends a reply that waits for no commit.
func (s *Server) sendNow(j job) {
	var cm *ipv6.ControlMessage
	if j.ifIndex != 0 {
		cm = &ipv6.ControlMessage{IfIndex: j.ifIndex}
	}
	ua := &net.UDPAddr{IP: j.to.Addr().AsSlice(), Port: int(j.to.Port()), Zone: j.zone}
	if _, err := s.pc.WriteTo(j.reply, cm, ua); err != nil {
		s.sendFailed(j, err)
		return
	}
	s.count("sent")
}

func (s *Server) sendFailed(j job, err error) {
	s.count(ErrSend.Name)
	s.log.Warn("send failed", "iface", j.ev.Binding.Iface, "addr", j.ev.Binding.Addr, "dst", j.to, "reason", ErrSend.Name, "err", err)
}

// enqueue hands j to the writer. The readers admit at most MaxQueue
// messages (handle sheds the rest), so this waits only for the expirer.
func (s *Server) enqueue(j job) {
	s.queued.Add(1)
	s.jobs <- j
}

// writer commits whatever is queued in one transaction (group commit: the
// batch is what queued up during the previous commit, not what a timer
// allowed), and hands the batch to the sender, which releases the replies
// that waited for it, writeBatch per sendmmsg, while the writer commits the
// next batch. It returns when jobs is closed and drained and the sender is
// done.
func (s *Server) writer() {
	const maxBatch = 4096
	// Three batches: one filling and committing, one being sent, one spare.
	free := make(chan []job, 3)
	for range cap(free) {
		free <- make([]job, 0, maxBatch)
	}
	sendq := make(chan sendBatch, cap(free))
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		s.sender(sendq, free)
	}()
	defer func() {
		close(sendq)
		<-senderDone
	}()
	var evs []Event
	var idx []int // evs[i] is batch[idx[i]].ev
	down := false
	backoff := time.Duration(0)
	for j := range s.jobs {
		batch := append(<-free, j)
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
		evs, idx = evs[:0], idx[:0]
		var expireAt time.Time
		for i, j := range batch {
			if j.ev.Kind != EventNone {
				evs = append(evs, j.ev)
				idx = append(idx, i)
			}
			if j.expire.After(expireAt) {
				expireAt = j.expire
			}
		}
		t0 := time.Now()
		expired, err := s.commit(evs, expireAt)
		t1 := time.Now()
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("commit", "jobs", len(batch), "events", len(evs), "took", t1.Sub(t0))
		}
		if err != nil {
			// Nothing is acknowledged that is not committed: the
			// batch's replies are dropped (its clients retransmit),
			// and the writer waits before trying the next batch, while
			// the readers shed what the queue cannot hold.
			s.count(ErrDatabase.Name)
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			if !down {
				s.log.Error("database commit failed: not acknowledging until it works again", "db", RedactDB(s.cfg.DBPath),
					"events", len(evs), "reason", ErrDatabase.Name, "err", err)
			} else {
				s.log.Debug("database commit failed again", "events", len(evs), "retry_in", backoff, "err", err)
			}
			down = true
		} else {
			for k, i := range idx {
				batch[i].ev = evs[k]
				if evs[k].Kind == EventReject {
					batch[i].reply = nil // over the limit: the database said no
				}
			}
			if len(expired) > 0 {
				batch = append(batch, job{evs: expired})
				s.queued.Add(1) // released with the batch
			}
			if down {
				s.log.Info("database commits work again: acknowledging", "db", RedactDB(s.cfg.DBPath))
				down, backoff = false, 0
				s.poke() // an expiry run may have failed meanwhile
			}
			if !expireAt.IsZero() {
				s.armFromDB()
			}
		}
		clear(evs)
		sendq <- sendBatch{jobs: batch, failed: err != nil, start: t0.UnixNano(), end: t1.UnixNano()}
		if err != nil {
			time.Sleep(backoff)
		}
	}
}

// sendBatch is a committed batch (or, failed, one that is not) for the sender.
type sendBatch struct {
	jobs   []job
	failed bool
	// start and end are when its commit started and ended (Unix ns).
	start, end int64
}

// sender sends the replies of committed batches, counts and logs their
// events, releases their jobs and gives the batch back to the writer.
func (s *Server) sender(sendq <-chan sendBatch, free chan<- []job) {
	w := newReplyWriter()
	for b := range sendq {
		if !b.failed {
			for _, j := range b.jobs {
				if j.reply != nil {
					w.add(s, j)
				}
			}
			w.flush(s)
			s.metrics.observeStages(b)
			for _, j := range b.jobs {
				if j.log {
					s.countEvent(j.ev)
					if j.ev.Kind == EventReject {
						s.logReject(j.ev, ErrTooManyBindings)
					} else {
						s.logEvent(j.ev)
					}
				}
				for _, e := range j.evs {
					s.countEvent(e)
					s.logEvent(e)
				}
			}
		}
		s.release(b.jobs)
		free <- b.jobs[:0]
	}
}

// countEvent counts a committed event.
func (s *Server) countEvent(e Event) {
	if e.Kind == EventReject {
		s.count("reject", e.Reason)
		return
	}
	s.count(e.Kind.String())
}

// release returns the batch's reply buffers and queue places.
func (s *Server) release(batch []job) {
	for i, j := range batch {
		if j.done != nil {
			j.done()
		}
		if j.buf != nil {
			*j.buf = j.reply[:0]
			s.bufs.Put(j.buf)
		}
		batch[i] = job{}
	}
	s.queued.Add(-int64(len(batch)))
}

// replyWriter sends replies writeBatch at a time through sendmmsg, reusing
// its message headers and addresses.
type replyWriter struct {
	msgs  []ipv6.Message
	jobs  []job
	addrs [writeBatch]net.UDPAddr
	ips   [writeBatch][16]byte
	bufs  [writeBatch][1][]byte
}

func newReplyWriter() *replyWriter {
	return &replyWriter{msgs: make([]ipv6.Message, 0, writeBatch), jobs: make([]job, 0, writeBatch)}
}

func (w *replyWriter) add(s *Server, j job) {
	k := len(w.msgs)
	w.ips[k] = j.to.Addr().As16()
	w.addrs[k] = net.UDPAddr{IP: w.ips[k][:], Port: int(j.to.Port()), Zone: j.zone}
	w.bufs[k][0] = j.reply
	m := ipv6.Message{Buffers: w.bufs[k][:], Addr: &w.addrs[k]}
	if j.ifIndex != 0 {
		m.OOB = (&ipv6.ControlMessage{IfIndex: j.ifIndex}).Marshal()
	}
	w.msgs = append(w.msgs, m)
	w.jobs = append(w.jobs, j)
	if len(w.msgs) == writeBatch {
		w.flush(s)
	}
}

func (w *replyWriter) flush(s *Server) {
	for sent := 0; sent < len(w.msgs); {
		n, err := s.pc.WriteBatch(w.msgs[sent:], 0)
		if err != nil || n == 0 {
			// The first datagram of the rest failed: report it, go on.
			s.sendFailed(w.jobs[sent], err)
			n = 1
		} else {
			s.countN("sent", n)
		}
		sent += n
	}
	clear(w.jobs)
	clear(w.bufs[:])
	w.msgs, w.jobs = w.msgs[:0], w.jobs[:0]
}

// commitTimeout bounds one commit: a database that hangs counts as down.
const commitTimeout = 10 * time.Second

// commit applies evs (and the expiry run asked for) in one transaction.
func (s *Server) commit(evs []Event, expireAt time.Time) ([]Event, error) {
	defer s.metrics.observeCommit(time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	return s.store().commit(ctx, evs, expireAt, s.maxPerDUID())
}

// ExpiryPoll is how often the server looks for expired bindings even when
// it registered none that expire sooner: with a shared database, another
// server's bindings (and those of a server that stopped) expire too.
var ExpiryPoll = 10 * time.Second

// expirer asks the writer for an expiry run when the timer says so.
func (s *Server) expirer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		now := s.clock.Now()
		s.h.Load().Expire(now) // the table's copy; the database's run is the truth
		s.enqueue(job{expire: now})
		s.tmu.Lock()
		s.armedAt = time.Time{}
		s.tmu.Unlock()
		s.arm()
		s.armAt(now.Add(ExpiryPoll))
	}
}

// poke wakes the expirer now.
func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// armFromDB sets the timer to the database's earliest expiry.
func (s *Server) armFromDB() {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	if at, ok, err := s.store().nextExpiry(ctx); err == nil && ok {
		s.armAt(at)
	}
}

// arm sets the one expiry timer to the earliest expiry the table knows.
func (s *Server) arm() {
	if at, ok := s.h.Load().NextExpiry(); ok {
		s.armAt(at)
	}
}

// armAt sets the timer to at unless it is set earlier.
func (s *Server) armAt(at time.Time) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if !s.armedAt.IsZero() && !at.Before(s.armedAt) {
		return
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.armedAt = at
	s.timer = s.clock.AfterFunc(at.Sub(s.clock.Now()), s.poke)
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
func (s *Server) History() ([]HistoryRecord, error) { return s.QueryHistory(HistoryQuery{}) }

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
