package refserver

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// HistoryCap is how many history records the database keeps unless
// Config.HistoryMax says otherwise; older ones are pruned as new ones are
// written (history.go).
const HistoryCap = 100000

// HistoryRecord is one registration event as stored in the database.
type HistoryRecord struct {
	Seq       uint64           `json:"seq"`
	Time      time.Time        `json:"time"`
	Event     string           `json:"event"`
	DUID      []byte           `json:"duid,omitempty"`
	PrevDUID  []byte           `json:"prev_duid,omitempty"`
	Addr      netip.Addr       `json:"addr,omitzero"`
	Iface     string           `json:"iface,omitempty"`
	LinkAddr  netip.Addr       `json:"link_addr,omitzero"`
	LinkLayer net.HardwareAddr `json:"link_layer,omitzero"`
	FQDN      string           `json:"fqdn,omitempty"`
	Preferred time.Duration    `json:"preferred,omitempty"`
	Valid     time.Duration    `json:"valid,omitempty"`
	Reason    string           `json:"reason,omitempty"`
}

// store keeps the bindings and history durable in an append-only
// write-ahead log (logfile.go has the format): a snapshot file at the
// database path and log segments beside it (path.wal.GENERATION). One
// goroutine (the server's writer) appends each group of events as records
// with one write and one fdatasync; segments are made ahead of use, filled
// with zeros and synced, so an append never changes the file's size and
// its fdatasync flushes data only. Once full segments outgrow the
// snapshot, a new snapshot is written in the background (from the bindings
// in memory when the server has set a source, else by replaying the files;
// written beside, synced, renamed, directory synced), after which they are
// removed. The history is kept in memory as
// well, for queries that never touch the disk.
type store struct {
	path string
	log  *slog.Logger
	ret  retention
	lock *os.File // flock on path.lock: one server per database

	// Writer-owned.
	f        *os.File // the segment being appended to
	gen      uint64   // its generation
	off      int64    // where its records end
	closed   int64    // bytes in full segments not yet in a snapshot
	buf      []byte
	histOffs []int
	seq      uint64 // the last history sequence number
	duid     []byte
	// retryRotate is when to try a new segment again after making one failed.
	retryRotate time.Time

	spare    chan spareSegment // made ahead by the maker goroutine
	makeNext chan uint64
	makerWG  sync.WaitGroup

	segSize    int64 // a log segment's size (walSize unless configured)
	compacting atomic.Bool
	urgent     atomic.Bool // the writer waits for the spare segment
	stopping   atomic.Bool // close: the maker gives up the segment it makes
	// snapGen is the generation the snapshot holds: set at open, then by
	// each compaction (one at a time).
	snapGen uint64
	// source gives the bindings in memory for a compaction (Handler's
	// snapshotBindings); without it a compaction replays the files.
	source    atomic.Pointer[bindingSource]
	compactWG sync.WaitGroup
	snapSize  atomic.Int64

	// The history in memory: hist under hmu; the writer adds a commit's
	// records to pending (under pmu, never held long) and moves them into
	// hist only when hmu is free, so a query never holds up a commit.
	hmu     sync.RWMutex
	hist    histRing
	pmu     sync.Mutex
	pending []histEntry
	arena   []byte // writer-owned: the pending records' bytes

	loaded *logState // its bindings, from startup until load
}

type spareSegment struct {
	f   *os.File
	gen uint64
	err error
}

// walSize is the default size of a log segment (Config.SegmentMB); a
// group of records larger than what is left in one starts a new one (and
// a larger one still is written past the zeros). Two full segments make a
// new snapshot worth writing, at least: also at least the last snapshot's
// size, so compaction costs O(1) per record.
var walSize int64 = DefaultSegmentMB << 20

// DefaultSegmentMB is Config.SegmentMB's default.
const DefaultSegmentMB = 32

func (s *store) segName(gen uint64) string { return fmt.Sprintf("%s.wal.%d", s.path, gen) }

// openStore opens (or creates) the database at path and replays it:
// snapshot, then log segments in order. A torn record at the end of a
// segment (a crash during a commit, never acknowledged) is cut off with a
// warning. An old bbolt database at path is migrated (migrate.go).
func openStore(path string, ret retention, log *slog.Logger) (*store, error) {
	return openStoreSize(path, ret, log, walSize)
}

// openStoreSize is openStore with log segments of segSize bytes.
func openStoreSize(path string, ret retention, log *slog.Logger, segSize int64) (*store, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create database directory for %s: %w", path, err)
	}
	lock, err := lockDB(path, unix.LOCK_EX, 0)
	if err != nil {
		return nil, err
	}
	s := &store{path: path, log: log, ret: ret, lock: lock, segSize: segSize}
	ok := false
	defer func() {
		if !ok {
			s.unlock()
		}
	}()
	if err := s.prepare(); err != nil {
		return nil, err
	}
	r, err := replay(path, ret, log, true)
	if err != nil {
		return nil, err
	}
	s.duid, s.seq, s.hist, s.loaded = r.st.duid, r.st.seq, r.st.hist, r.st
	s.hist.reserve(ret)
	s.snapSize.Store(r.snapSize)
	s.gen = max(r.snapGen, r.lastGen) + 1
	s.snapGen = r.snapGen
	seg := makeSegment(s.segName(s.gen), s.gen, s.segSize, 0, nil, nil)
	if seg.err != nil {
		return nil, seg.err
	}
	s.f, s.off = seg.f, headerLen
	s.spare, s.makeNext = make(chan spareSegment, 1), make(chan uint64, 1)
	s.makerWG.Add(1)
	go s.maker()
	s.makeNext <- s.gen + 1
	if r.lastGen > r.snapGen {
		// Fold what the last run logged into a snapshot.
		s.startCompaction(r.lastGen, s.seq)
	}
	ok = true
	return s, nil
}

// prepare creates an empty snapshot when there is no database, and
// migrates a bbolt one.
func (s *store) prepare() error {
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		_, err := writeSnapshot(s.path, 0, newLogState(s.ret).content(), nil)
		return err
	}
	if err != nil {
		return fmt.Errorf("open database %s: %w", s.path, err)
	}
	head := make([]byte, 64)
	n, _ := io.ReadFull(f, head)
	f.Close()
	if isBbolt(head[:n]) {
		return migrateBbolt(s.path, s.ret, s.log)
	}
	return nil
}

// lockDB takes an flock (how: unix.LOCK_EX or LOCK_SH) on path.lock,
// trying for up to wait.
func lockDB(path string, how int, wait time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open lock file of database %s: %w", path, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("database %s is in use (another server running?): lock %s: %w", path, f.Name(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *store) unlock() {
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
}

// replayed is what replay found on disk.
type replayed struct {
	st       *logState
	snapGen  uint64
	snapSize int64
	lastGen  uint64 // the highest segment generation replayed (≤ snapGen: none)
}

// replay reads the snapshot at path and the segments after it. With fix,
// a torn tail is truncated (with a warning) and stray segments older than
// the snapshot are removed; without, files are only read.
func replay(path string, ret retention, log *slog.Logger, fix bool) (replayed, error) {
	r := replayed{st: newLogState(ret)}
	data, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("read database %s: %w", path, err)
	}
	if !fix && isBbolt(data) {
		st, err := readBbolt(path, ret)
		r.st = st
		return r, err
	}
	kind, gen, err := parseHeader(data)
	if err != nil {
		return r, fmt.Errorf("database %s: %w", path, err)
	}
	if kind != kindSnapshot {
		return r, fmt.Errorf("database %s: file kind %q, want a snapshot", path, kind)
	}
	if _, err := parseRecords(data[headerLen:], r.st.apply); err != nil {
		// A snapshot is renamed into place only once synced whole.
		return r, fmt.Errorf("database %s is corrupt (restore it from a backup): %w", path, err)
	}
	r.snapGen, r.snapSize, r.lastGen = gen, int64(len(data)), gen
	segs, err := filepath.Glob(globEscape(path) + ".wal.*")
	if err != nil {
		return r, fmt.Errorf("list log segments of %s: %w", path, err)
	}
	type seg struct {
		name string
		gen  uint64
	}
	var list []seg
	for _, name := range segs {
		g, err := strconv.ParseUint(strings.TrimPrefix(name, path+".wal."), 10, 64)
		if err != nil {
			continue
		}
		if g <= r.snapGen {
			if fix {
				_ = os.Remove(name) // already in the snapshot: a crash came before its removal
			}
			continue
		}
		list = append(list, seg{name, g})
	}
	slices.SortFunc(list, func(a, b seg) int { return cmp.Compare(a.gen, b.gen) })
	for _, sg := range list {
		data, err := os.ReadFile(sg.name)
		if err != nil {
			return r, fmt.Errorf("read log segment %s: %w", sg.name, err)
		}
		kind, gen, err := parseHeader(data)
		if err != nil {
			if allZero(data) {
				// Made ahead and never written: a crash before its
				// header was synced.
				log.Warn("database: skipping an unwritten log segment", "file", sg.name)
				if fix {
					_ = os.Remove(sg.name)
				}
				continue
			}
			return r, fmt.Errorf("log segment %s: %w", sg.name, err)
		}
		if kind != kindWAL || gen != sg.gen {
			return r, fmt.Errorf("log segment %s: kind %q generation %d, want a segment of generation %d", sg.name, kind, gen, sg.gen)
		}
		end, err := parseRecords(data[headerLen:], r.st.apply)
		end += headerLen
		if err == nil && !allZero(data[end:]) {
			err = fmt.Errorf("%w at %d: data after the end mark", errTorn, end-headerLen)
		}
		if err != nil {
			if !errors.Is(err, errTorn) {
				return r, fmt.Errorf("log segment %s: %w", sg.name, err)
			}
			// Every acknowledged commit was synced before the next
			// write began: only the last, unacknowledged one can be torn.
			log.Warn("database: torn record at the end of a log segment (a crash during a commit that was never acknowledged): truncating",
				"file", sg.name, "offset", end, "discarded_bytes", len(data)-end, "err", err)
			if fix {
				if err := truncateFile(sg.name, int64(end)); err != nil {
					return r, err
				}
			}
		}
		r.lastGen = sg.gen
	}
	return r, nil
}

func truncateFile(name string, size int64) error {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("truncate torn log segment: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate torn log segment %s at %d: %w", name, size, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("truncate torn log segment %s: %w", name, err)
	}
	return nil
}

// globEscape quotes the glob metacharacters in a path.
func globEscape(p string) string {
	var b strings.Builder
	for _, c := range p {
		if strings.ContainsRune(`*?[\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// makeSegment creates a log segment: header, zeros to walSize, synced
// with its directory entry.
func makeSegment(name string, gen uint64, size int64, pace time.Duration, urgent, stop *atomic.Bool) spareSegment {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return spareSegment{err: fmt.Errorf("create log segment: %w", err)}
	}
	chunk := 1 << 20
	if pace > 0 {
		chunk = segChunk
	}
	// Paced, the zeros are written out a chunk at a time, not 32 MB at
	// once by the closing sync: the commits' fdatasyncs wait behind a
	// chunk, never behind the whole segment.
	w := &pacedWriter{f: f, pace: pace, urgent: urgent}
	zeros := make([]byte, chunk)
	copy(zeros, appendHeader(nil, kindWAL, gen))
	for off := int64(0); off < size && err == nil; off += int64(len(zeros)) {
		if stop != nil && stop.Load() {
			err = errors.New("the server is stopping")
			break
		}
		_, err = w.Write(zeros[:min(int64(len(zeros)), size-off)])
		clear(zeros[:headerLen])
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(filepath.Dir(name))
	}
	if err != nil {
		f.Close()
		os.Remove(name)
		return spareSegment{err: fmt.Errorf("make log segment %s: %w", name, err)}
	}
	return spareSegment{f: f, gen: gen}
}

// segChunk and segPace are how the server writes in the background (a
// spare segment, a compaction's snapshot): 128 KiB at a time, each written
// out (sync_file_range) and followed by a pause, about 16 MB/s. A commit's
// fdatasync is a cache flush that waits for everything written before it:
// behind 32 MB of zeros written at once it took 20-40 ms on the test VM,
// behind one chunk it takes a fraction of a millisecond more. A segment
// then takes 2 s to make (it lasts 2.7 s at 48,000 registrations a second);
// when the writer needs the spare before it is done, the maker stops
// pausing (store.urgent).
const (
	segChunk = 128 << 10
	segPace  = 8 * time.Millisecond
)

// maker makes the next segment whenever the writer takes the spare.
func (s *store) maker() {
	defer s.makerWG.Done()
	for gen := range s.makeNext {
		s.spare <- makeSegment(s.segName(gen), gen, s.segSize, segPace, &s.urgent, &s.stopping)
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

func (s *store) close() error {
	s.stopping.Store(true)
	s.compactWG.Wait()
	var err error
	if s.makeNext != nil {
		close(s.makeNext)
		s.makerWG.Wait()
		select {
		case sp := <-s.spare:
			if sp.f != nil {
				sp.f.Close()
				os.Remove(sp.f.Name()) // never written
			}
		default:
		}
	}
	if s.f != nil {
		err = s.f.Close()
	}
	s.unlock()
	return err
}

// serverDUID returns the stored server DUID, storing gen() on first use so the
// server keeps its identity across restarts.
func (s *store) serverDUID(gen func() []byte) ([]byte, error) {
	if len(s.duid) > 0 {
		return s.duid, nil
	}
	d := gen()
	if err := s.write(appendMeta(nil, "server-duid", d)); err != nil {
		return nil, fmt.Errorf("server DUID: %w", err)
	}
	s.duid = d
	return d, nil
}

// load returns the bindings replayed at open (once).
func (s *store) load() ([]Binding, error) {
	if s.loaded == nil {
		return nil, nil
	}
	bs := make([]Binding, 0, len(s.loaded.bindings))
	for k, v := range s.loaded.bindings {
		b, err := decodeBinding(s.loaded.arena.get(v.rec))
		if err != nil {
			return nil, fmt.Errorf("load binding %s: %w", netip.AddrFrom16(k), err)
		}
		bs = append(bs, b)
	}
	s.loaded = nil
	return bs, nil
}

// apply appends evs, binding changes and history records, as one group and
// returns once they are on disk (fdatasync).
func (s *store) apply(evs []Event) error {
	if len(evs) == 0 {
		return nil
	}
	buf, offs, seq := s.buf[:0], s.histOffs[:0], s.seq
	for i := range evs {
		e := &evs[i]
		a16 := e.Binding.Addr.As16()
		switch e.Kind {
		case EventRegister, EventRefresh, EventMove:
			start := len(buf)
			buf = endRecord(appendBinding(beginBindingRec(buf, a16, unixNano(e.Binding.Expires)), &e.Binding), start)
		case EventExpire:
			// The expirer and the readers queue events separately: a
			// registration of the same address may have been logged
			// since, and must not be deleted by the older expiry.
			start := len(buf)
			buf = append(append(beginRecord(buf, recDelete), a16[:]...), 1)
			buf = endRecord(binary.BigEndian.AppendUint64(buf, uint64(unixNano(e.Binding.Expires))), start)
		case EventDeregister:
			start := len(buf)
			buf = endRecord(append(append(beginRecord(buf, recDelete), a16[:]...), 0), start)
		}
		seq++
		r := HistoryRecord{
			Seq: seq, Time: e.Time, Event: e.Kind.String(), DUID: e.Binding.DUID, PrevDUID: e.PrevDUID,
			Addr: e.Binding.Addr, Iface: e.Binding.Iface, LinkAddr: e.Binding.LinkAddr, LinkLayer: e.Binding.LinkLayer,
			FQDN: e.Binding.FQDN, Preferred: e.Binding.Preferred, Valid: e.Binding.Valid, Reason: e.Reason,
		}
		start := len(buf)
		offs = append(offs, start+recHdrLen+1)
		buf = endRecord(appendHistory(beginHistoryRec(buf, seq, unixNano(e.Time)), &r), start)
		offs = append(offs, len(buf))
	}
	s.buf, s.histOffs = buf, offs
	if err := s.write(buf); err != nil {
		return err
	}
	s.seq = seq
	// In memory for queries, after the commit.
	s.pmu.Lock()
	for i := 0; i < len(offs); i += 2 {
		p := buf[offs[i]:offs[i+1]] // seq, time, record
		if len(s.arena)+len(p) > cap(s.arena) {
			s.arena = make([]byte, 0, max(64<<10, len(p)))
		}
		at := len(s.arena)
		s.arena = append(s.arena, p[16:]...)
		s.pending = append(s.pending, histEntry{seq: binary.BigEndian.Uint64(p), t: int64(binary.BigEndian.Uint64(p[8:])),
			rec: s.arena[at:len(s.arena):len(s.arena)]})
	}
	s.pmu.Unlock()
	if s.hmu.TryLock() {
		s.absorb()
		s.hmu.Unlock()
	}
	return nil
}

// absorb moves the pending history records into hist; the caller holds
// hmu for writing.
func (s *store) absorb() {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	for _, h := range s.pending {
		s.hist.push(h)
		s.hist.prune(s.ret, h.seq, h.t)
	}
	clear(s.pending)
	s.pending = s.pending[:0]
}

// write appends records to the current segment (the next one when they do
// not fit) and syncs them.
func (s *store) write(b []byte) error {
	if s.off+int64(len(b)) > s.segSize && s.off > headerLen && time.Now().After(s.retryRotate) {
		if err := s.rotate(); err != nil {
			s.retryRotate = time.Now().Add(10 * time.Second)
			// Appending past the zeros works too, only its syncs
			// write the inode as well; the next group tries again.
			s.log.Warn("database: no new log segment: appending to the full one", "file", s.f.Name(), "err", err)
		}
	}
	if _, err := s.f.WriteAt(b, s.off); err != nil {
		return fmt.Errorf("append to log segment %s: %w", s.f.Name(), err)
	}
	if err := fdatasync(s.f); err != nil {
		return fmt.Errorf("sync log segment %s: %w", s.f.Name(), err)
	}
	s.off += int64(len(b))
	return nil
}

// fdatasync flushes f's data without the Go scheduler's system-call
// bookkeeping (a raw system call): a 1-ms sync inside entersyscall makes
// the runtime's monitor hand the writer's P to another thread and poll
// every 20 µs, which on a busy two-core machine costs more CPU than the
// whole registration. The P stays blocked for the sync: the writer has
// nothing else to do meanwhile, and readers and the sender run on the
// others (a stop-the-world waits for the sync to end).
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	err = rc.Control(func(fd uintptr) {
		for {
			_, _, errno = unix.RawSyscall(unix.SYS_FDATASYNC, fd, 0, 0)
			if errno != unix.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// rotate switches to the spare segment and, when enough is logged, folds
// the full segments into a new snapshot in the background.
func (s *store) rotate() error {
	var sp spareSegment
	select {
	case sp = <-s.spare:
	default:
		// Not made yet: the maker stops pausing until it is.
		s.urgent.Store(true)
		sp = <-s.spare
		s.urgent.Store(false)
	}
	if sp.err != nil {
		// Try again now, on this goroutine.
		if sp = makeSegment(s.segName(sp.gen), sp.gen, s.segSize, 0, nil, nil); sp.err != nil {
			s.spare <- sp
			return sp.err
		}
	}
	full := s.gen
	if err := s.f.Close(); err != nil {
		s.log.Warn("database: close full log segment", "file", s.f.Name(), "err", err)
	}
	s.closed += s.off
	s.f, s.gen, s.off = sp.f, sp.gen, headerLen
	s.makeNext <- s.gen + 1
	if s.closed >= max(2*s.segSize, s.snapSize.Load()) && s.startCompaction(full, s.seq) {
		s.closed = 0
	}
	return nil
}

// startCompaction writes a snapshot holding the segments up to gen, in the
// background, unless one is being written.
// seq is the last history record in those segments.
func (s *store) startCompaction(gen, seq uint64) bool {
	if !s.compacting.CompareAndSwap(false, true) {
		return false
	}
	s.compactWG.Add(1)
	go func() {
		defer s.compactWG.Done()
		defer s.compacting.Store(false)
		t0 := time.Now()
		var size int64
		var err error
		if src := s.source.Load(); src != nil {
			size, err = s.compactMemory(gen, seq, *src)
		} else {
			size, err = s.compact(gen)
		}
		if err != nil {
			s.log.Warn("database: compaction failed (the log segments stay and are replayed)", "err", err)
			return
		}
		s.snapSize.Store(size)
		s.log.Info("database: compacted", "generation", gen, "bytes", size, "took", time.Since(t0))
	}()
	return true
}

// bindingSource yields the bindings as snapshot records (Handler.snapshotBindings).
type bindingSource func(yield func(addr [16]byte, exp int64, rec []byte) bool)

// setSource has compactions take the bindings from src, in memory, instead
// of replaying the files.
func (s *store) setSource(src bindingSource) { s.source.Store(&src) }

// compactMemory writes a snapshot of generation gen from memory: the
// bindings as src gives them now, and the history records up to seq; then
// it removes the segments up to gen. Nothing is read back from the disk
// and nothing is parsed, so it costs a fraction of compact (on the test
// VM, 600,000 bindings: compact 2.3 s and 200 MB of heap beside a server
// whose p99 went from 3 ms to 12 ms while it ran).
//
// The bindings are not a point-in-time view, and need not be: the
// snapshot stands for the segments up to gen, and replay applies the
// later segments on top of it, record by record. Every change committed
// to those segments was made in memory before it was queued, so before
// the writer moved past gen and so before this runs: each binding src
// gives is as new as gen or newer. A newer state (a change after gen) is
// either committed later, in a segment replay applies after the snapshot
// (binding records carry the whole state, and deletions of an expiry
// check the expiry, so applying them again is harmless), or never
// committed and never acknowledged: its client is still retransmitting
// that very change. So an acknowledged binding is never lost by
// compaction; at worst a crash keeps a change its client had not yet
// been told about.
func (s *store) compactMemory(gen, seq uint64, src bindingSource) (int64, error) {
	// The ring is in sequence order; copied, as pruning moves its entries.
	s.hmu.Lock()
	s.absorb()
	all := s.hist.all()
	hist := slices.Clone(all[:sort.Search(len(all), func(i int) bool { return all[i].seq > seq })])
	s.hmu.Unlock()
	pace := s.backgroundPacer()
	size, err := writeSnapshot(s.path, gen, snapContent{duid: s.duid, seq: seq, bindings: src, history: hist}, pace)
	if err != nil {
		return 0, err
	}
	s.removeSegments(s.snapGen, gen)
	s.snapGen = gen
	return size, nil
}

// removeSegments removes the log segments after from up to to, now in a snapshot.
func (s *store) removeSegments(from, to uint64) {
	for g := from + 1; g <= to; g++ {
		if err := os.Remove(s.segName(g)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("database: remove compacted log segment", "err", err)
		}
	}
}

// compact replays the snapshot and the segments up to gen, writes them as
// the new snapshot, and removes those segments.
func (s *store) compact(gen uint64) (int64, error) {
	r := replayed{st: newLogState(s.ret)}
	// A quarter of a core at most: the readers and the writer come first.
	pace := s.backgroundPacer()
	apply := func(typ byte, p []byte) error {
		pace.tick()
		return r.st.apply(typ, p)
	}
	// The files are mapped, not read into the heap: reading tens of MB
	// would grow the heap by as much (faulting in and zeroing fresh pages,
	// then a collection) while the server runs beside.
	err := withMapped(s.path, func(data []byte) error {
		var err error
		if _, r.snapGen, err = parseHeader(data); err != nil {
			return err
		}
		_, err = parseRecords(data[headerLen:], apply)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("snapshot %s: %w", s.path, err)
	}
	for g := r.snapGen + 1; g <= gen; g++ {
		err := withMapped(s.segName(g), func(data []byte) error {
			if len(data) < headerLen {
				return nil
			}
			_, err := parseRecords(data[headerLen:], apply)
			return err
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, errTorn) {
			return 0, fmt.Errorf("log segment %s: %w", s.segName(g), err)
		}
	}
	size, err := writeSnapshot(s.path, gen, r.st.content(), pace)
	if err != nil {
		return 0, err
	}
	s.removeSegments(r.snapGen, gen)
	s.snapGen = gen
	return size, nil
}

// writeSnapshot writes st as the snapshot of generation gen: beside path,
// synced, renamed over it, directory synced. It returns the file's size.
// With pace (a compaction while the server runs) it keeps to pace's share
// of a core and writes the file out segChunk at a time with a pause after
// each, like a spare segment, so that the commits' fdatasyncs never queue
// behind the whole snapshot.
func writeSnapshot(path string, gen uint64, c snapContent, pace *cpuPacer) (int64, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return 0, fmt.Errorf("write snapshot: %w", err)
	}
	defer os.Remove(tmp) // after a failure; gone by rename otherwise
	defer f.Close()
	var w *bufio.Writer
	if pace != nil {
		w = bufio.NewWriterSize(&pacedWriter{f: f, pace: segPace, urgent: pace.urgent}, segChunk)
	} else {
		w = bufio.NewWriterSize(f, 1<<20)
	}
	b := appendHeader(make([]byte, 0, 4096), kindSnapshot, gen)
	if len(c.duid) > 0 {
		b = appendMeta(b, "server-duid", c.duid)
	}
	b = appendMeta(b, "seq", binary.BigEndian.AppendUint64(nil, c.seq))
	size := int64(0)
	flush := func() {
		if len(b) >= 64<<10 {
			n, _ := w.Write(b)
			size += int64(n)
			b = b[:0]
		}
	}
	c.bindings(func(k [16]byte, exp int64, rec []byte) bool {
		b = appendBindingRec(b, k, exp, rec)
		flush()
		pace.tick()
		return true
	})
	for _, h := range c.history {
		b = appendHistoryRec(b, h.seq, h.t, h.rec)
		flush()
		pace.tick()
	}
	n, _ := w.Write(b)
	size += int64(n)
	if err := w.Flush(); err != nil {
		return 0, fmt.Errorf("write snapshot %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("sync snapshot %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, fmt.Errorf("install snapshot: %w", err)
	}
	return size, syncDir(filepath.Dir(path))
}

// withMapped calls fn with the contents of the file name, mapped read-only
// (valid only during the call).
func withMapped(name string, fn func([]byte) error) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return fn(nil)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map %s: %w", name, err)
	}
	defer unix.Munmap(data)
	_ = unix.Madvise(data, unix.MADV_SEQUENTIAL)
	return fn(data)
}

// backgroundPacer keeps a compaction to a quarter of a core, until the
// store closes.
func (s *store) backgroundPacer() *cpuPacer {
	return &cpuPacer{work: time.Millisecond, pause: 3 * time.Millisecond, start: time.Now(), urgent: &s.stopping}
}

// cpuPacer keeps a background loop to a share of a core: tick is called
// per item, and after each stretch of work as long as work it sleeps for
// pause, unless urgent. A nil one never pauses.
type cpuPacer struct {
	work, pause time.Duration
	start       time.Time
	n           int
	urgent      *atomic.Bool // nil: never
}

func (p *cpuPacer) tick() {
	if p == nil {
		return
	}
	if p.n++; p.pause == 0 || p.n%256 != 0 || time.Since(p.start) < p.work || (p.urgent != nil && p.urgent.Load()) {
		return
	}
	time.Sleep(p.pause)
	p.start = time.Now()
}

// pacedWriter writes to f and, with pace > 0, has each write written out
// to the disk (sync_file_range) before a pause of pace, unless urgent.
type pacedWriter struct {
	f      *os.File
	off    int64
	pace   time.Duration
	urgent *atomic.Bool // nil: never
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	n, err := p.f.Write(b)
	if err != nil || p.pace == 0 {
		return n, err
	}
	err = unix.SyncFileRange(int(p.f.Fd()), p.off, int64(n),
		unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	p.off += int64(n)
	if p.urgent == nil || !p.urgent.Load() {
		time.Sleep(p.pace)
	}
	return n, err
}

// history returns the stored history records, oldest first.
func (s *store) history() ([]HistoryRecord, error) { return s.query(HistoryQuery{}) }

// ReadHistory opens the database at path read-only (the server must not be
// running) and returns its history, oldest first.
func ReadHistory(path string) ([]HistoryRecord, error) { return ReadHistoryQuery(path, HistoryQuery{}) }

// readBinding decodes a stored binding: binary, or JSON from an older server.
func readBinding(v []byte) (Binding, error) { return readRecord(v, decodeBinding) }

// readHistory decodes a stored history record, binary or JSON.
func readHistory(v []byte) (HistoryRecord, error) { return readRecord(v, decodeHistory) }

func readRecord[T any](v []byte, decode func([]byte) (T, error)) (T, error) {
	if len(v) > 0 && v[0] == '{' {
		var r T
		err := json.Unmarshal(v, &r)
		return r, err
	}
	return decode(v)
}
