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
	pc      PacketConn
	jobs    chan job
	queued  atomic.Int64 // jobs queued or being committed
	shedLog atomic.Int64 // unix seconds of the last "shedding load" log line
	bufs    sync.Pool    // *[]byte reply buffers

	ifmu    sync.Mutex
	ifNames map[int]string
	onLink  map[string]onLinkEntry

	metrics serverMetrics // metrics.go
	// dbDown is set while commits fail: leasequeries then answer at once
	// that the database is unavailable instead of holding up a reader.
	dbDown atomic.Bool

	tmu     sync.Mutex
	timer   scheduler.Timer
	armedAt time.Time
	wake    chan struct{}
}

// errDBDown: the writer's last commit failed.
var errDBDown = errors.New("database unavailable (commits failing)")

// downSource is the database for leasequeries, failing fast while down.
type downSource struct {
	bindingSource
	down *atomic.Bool
}

func (d downSource) byAddr(ctx context.Context, a netip.Addr) (Binding, bool, error) {
	if d.down.Load() {
		return Binding{}, false, errDBDown
	}
	return d.bindingSource.byAddr(ctx, a)
}

func (d downSource) byDUID(ctx context.Context, duid []byte) ([]Binding, error) {
	if d.down.Load() {
		return nil, errDBDown
	}
	return d.bindingSource.byDUID(ctx, duid)
}

func (d downSource) all(ctx context.Context) ([]Binding, error) {
	if d.down.Load() {
		return nil, errDBDown
	}
	return d.bindingSource.all(ctx)
}

func (d downSource) linkKnown(ctx context.Context, la netip.Addr) (bool, error) {
	if d.down.Load() {
		return false, errDBDown
	}
	return d.bindingSource.linkKnown(ctx, la)
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
func (s *Server) Run(ctx context.Context) error { return s.run(ctx, nil) }

// Serve is Run on pc instead of [::]:547: no multicast membership and no
// Bulk Leasequery listener (TCP). Tests run the whole pipeline on a
// loopback socket with it, without root.
func (s *Server) Serve(ctx context.Context, pc PacketConn) error {
	if pc == nil {
		return errors.New("refserver: Serve without a socket")
	}
	return s.run(ctx, pc)
}

// run opens the database, then (pc nil) the sockets, and serves.
func (s *Server) run(ctx context.Context, pc PacketConn) (err error) {
	// Cancelled also when the read loop fails, so the expirer stops.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	o := storeOptions{
		passwordFile: s.cfg.DBPasswordFile, log: s.log,
		ret: retention{max: s.cfg.HistoryMax, maxAge: s.cfg.HistoryMaxAge},
	}
	if j := s.cfg.DNSJournal; j != nil {
		o.dnsInstance = &j.instance
	}
	st, err := openStorage(ctx, s.cfg.DBPath, o)
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
	hc.Source = downSource{st, &s.dbDown}
	// The database enforces the per-DUID limit (in the commit, across
	// servers); the Handler's table only caches what this server saw.
	hc.MaxBindingsPerDUID = math.MaxInt32
	h := NewHandler(hc)
	// Expired ones stay in the database until the first expiry run, at once.
	h.Load(s.clock.Now(), bs)
	s.h.Store(h)
	s.st.Store(&storageRef{st})

	if pc == nil {
		upc, err := s.listen()
		if err != nil {
			return err
		}
		defer upc.Close()
		pc = upc
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
	}
	s.pc = pc

	// Room for every message admitted (MaxQueue), and the expirer's runs.
	s.jobs = make(chan job, s.cfg.MaxQueue+64)
	var writerDone sync.WaitGroup
	writerDone.Add(1)
	go func() {
		defer writerDone.Done()
		s.writer(ctx)
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
	s.poke() // expire what expired while the server was down
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
	s.log.Info("stopped", "bindings", h.Len())
	return rerr
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
