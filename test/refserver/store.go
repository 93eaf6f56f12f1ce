package refserver

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
)

var (
	bucketBindings = []byte("bindings") // 16-byte address → Binding (codec.go; JSON in older databases)
	bucketHistory  = []byte("history")  // 8-byte sequence → HistoryRecord (likewise)
	bucketMeta     = []byte("meta")
	keyServerDUID  = []byte("server-duid")
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

// store is the bbolt database of bindings and history.
type store struct {
	db *bbolt.DB
	// f writes zeros ahead of bbolt's pages (see prewrite); written is
	// where the blocks known to be written end.
	f         *os.File
	written   int64
	retention retention // history.go
}

// Zeros are written ahead of the database's last page in chunks of half
// its size, from 1 to 16 MiB, once less than half a chunk is left.
const (
	prewriteMin = 1 << 20
	prewriteMax = 16 << 20
)

func openStore(path string) (*store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create database directory for %s: %w", path, err)
	}
	// A large initial mapping (address space, not memory): a growing
	// database is not remapped inside a commit, which blocks everything.
	db, err := bbolt.Open(path, 0o640, &bbolt.Options{Timeout: 2 * time.Second, FreelistType: bbolt.FreelistMapType,
		InitialMmapSize: 1 << 30})
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketBindings, bucketHistory, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise database %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return &store{db: db, f: f}, nil
}

func (s *store) close() error {
	if s.f != nil {
		s.f.Close()
	}
	return s.db.Close()
}

// prewrite keeps written-out zero blocks ahead of the database's pages.
// A commit that writes into blocks the file already has only flushes data
// on fdatasync; one that extends the file (or fills a hole bbolt's
// truncate left) changes file-system metadata, and on ext4 that fdatasync
// waits for a journal commit, which also writes out every other process's
// dirty data: tens of milliseconds on a busy machine. Call it between
// commits, from the one goroutine that commits.
func (s *store) prewrite() error {
	if s.f == nil {
		return nil
	}
	var used int64
	if err := s.db.View(func(tx *bbolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		return err
	}
	// Every page below the high-water mark was written by bbolt.
	s.written = max(s.written, used)
	chunk := min(max(used/2, prewriteMin), prewriteMax)
	if used+chunk/2 <= s.written {
		return nil
	}
	zeros := make([]byte, prewriteMin)
	end := s.written + chunk
	for off := s.written; off < end; off += int64(len(zeros)) {
		if _, err := s.f.WriteAt(zeros, off); err != nil {
			return fmt.Errorf("write ahead of the database at %d: %w", off, err)
		}
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("write ahead of the database: %w", err)
	}
	s.written = end
	return nil
}

// serverDUID returns the stored server DUID, storing gen() on first use so the
// server keeps its identity across restarts.
func (s *store) serverDUID(gen func() []byte) ([]byte, error) {
	var duid []byte
	err := s.db.Update(func(tx *bbolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if v := m.Get(keyServerDUID); len(v) > 0 {
			duid = append([]byte(nil), v...)
			return nil
		}
		duid = gen()
		return m.Put(keyServerDUID, duid)
	})
	if err != nil {
		return nil, fmt.Errorf("server DUID: %w", err)
	}
	return duid, nil
}

// load returns every stored binding.
func (s *store) load() ([]Binding, error) {
	var bs []Binding
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketBindings).ForEach(func(k, v []byte) error {
			b, err := readBinding(v)
			if err != nil {
				return fmt.Errorf("binding %x: %w", k, err)
			}
			bs = append(bs, b)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load bindings: %w", err)
	}
	return bs, nil
}

// apply writes evs in one transaction: binding changes and history records.
// It returns once the transaction is durable (bbolt fsyncs on commit).
func (s *store) apply(evs []Event) error {
	if len(evs) == 0 {
		return nil
	}
	// Keys and values are encoded into one arena: bbolt needs them valid
	// until the commit, and a slice of an arena that grew still is.
	arena := make([]byte, 0, len(evs)*160)
	return s.db.Update(func(tx *bbolt.Tx) error {
		bb, hb := tx.Bucket(bucketBindings), tx.Bucket(bucketHistory)
		// History keys only grow: full pages, not bbolt's half-full
		// splits, halve what each commit writes for it.
		hb.FillPercent = 0.95
		for i := range evs {
			e := &evs[i]
			a16 := e.Binding.Addr.As16()
			start := len(arena)
			arena = append(arena, a16[:]...)
			key := arena[start:len(arena):len(arena)]
			switch e.Kind {
			case EventRegister, EventRefresh, EventMove:
				start = len(arena)
				arena = appendBinding(arena, &e.Binding)
				v := arena[start:len(arena):len(arena)]
				if err := bb.Put(key, v); err != nil {
					return fmt.Errorf("store binding %s: %w", e.Binding.Addr, err)
				}
			case EventExpire:
				// The expirer and the reader queue events separately: a
				// registration of the same address may have been stored
				// since, and must not be deleted by the older expiry.
				if v := bb.Get(key); v != nil {
					if cur, err := readBinding(v); err == nil && !cur.Expires.Equal(e.Binding.Expires) {
						break
					}
				}
				if err := bb.Delete(key); err != nil {
					return fmt.Errorf("delete binding %s: %w", e.Binding.Addr, err)
				}
			case EventDeregister:
				if err := bb.Delete(key); err != nil {
					return fmt.Errorf("delete binding %s: %w", e.Binding.Addr, err)
				}
			}
			seq, err := hb.NextSequence()
			if err != nil {
				return fmt.Errorf("history sequence: %w", err)
			}
			r := HistoryRecord{
				Seq: seq, Time: e.Time, Event: e.Kind.String(), DUID: e.Binding.DUID, PrevDUID: e.PrevDUID,
				Addr: e.Binding.Addr, Iface: e.Binding.Iface, LinkAddr: e.Binding.LinkAddr, LinkLayer: e.Binding.LinkLayer,
				FQDN: e.Binding.FQDN, Preferred: e.Binding.Preferred, Valid: e.Binding.Valid, Reason: e.Reason,
			}
			start = len(arena)
			arena = binary.BigEndian.AppendUint64(arena, seq)
			hk := arena[start:len(arena):len(arena)]
			start = len(arena)
			arena = appendHistory(arena, &r)
			if err := hb.Put(hk, arena[start:len(arena):len(arena)]); err != nil {
				return fmt.Errorf("store history: %w", err)
			}
			if err := s.retention.prune(hb, seq, e.Time); err != nil {
				return err
			}
		}
		return nil
	})
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
