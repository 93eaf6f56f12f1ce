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
	bucketBindings = []byte("bindings") // 16-byte address → JSON Binding
	bucketHistory  = []byte("history")  // 8-byte sequence → JSON HistoryRecord
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
	db        *bbolt.DB
	retention retention // history.go
}

func openStore(path string) (*store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create database directory for %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o640, &bbolt.Options{Timeout: 2 * time.Second, FreelistType: bbolt.FreelistMapType})
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
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

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
			var b Binding
			if err := json.Unmarshal(v, &b); err != nil {
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
	return s.db.Update(func(tx *bbolt.Tx) error {
		bb, hb := tx.Bucket(bucketBindings), tx.Bucket(bucketHistory)
		for _, e := range evs {
			key := e.Binding.Addr.As16()
			switch e.Kind {
			case EventRegister, EventRefresh, EventMove:
				v, err := json.Marshal(&e.Binding)
				if err != nil {
					return fmt.Errorf("encode binding %s: %w", e.Binding.Addr, err)
				}
				if err := bb.Put(key[:], v); err != nil {
					return fmt.Errorf("store binding %s: %w", e.Binding.Addr, err)
				}
			case EventExpire:
				// The expirer and the reader queue events separately: a
				// registration of the same address may have been stored
				// since, and must not be deleted by the older expiry.
				if v := bb.Get(key[:]); v != nil {
					var cur Binding
					if err := json.Unmarshal(v, &cur); err == nil && !cur.Expires.Equal(e.Binding.Expires) {
						break
					}
				}
				if err := bb.Delete(key[:]); err != nil {
					return fmt.Errorf("delete binding %s: %w", e.Binding.Addr, err)
				}
			case EventDeregister:
				if err := bb.Delete(key[:]); err != nil {
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
			v, err := json.Marshal(&r)
			if err != nil {
				return fmt.Errorf("encode history: %w", err)
			}
			if err := hb.Put(binary.BigEndian.AppendUint64(nil, seq), v); err != nil {
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
