package refserver

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
)

// Servers before the write-ahead log kept everything in a bbolt database
// at the same path. openStore migrates one on first start: it reads it,
// writes its bindings, history and server DUID as a snapshot, keeps the old
// file as path.bbolt, and renames the snapshot into place. A crash in
// between leaves the bbolt file at path, and the next start migrates again.

var (
	bucketBindings = []byte("bindings") // 16-byte address → Binding (codec.go; JSON in older databases)
	bucketHistory  = []byte("history")  // 8-byte sequence → HistoryRecord (likewise)
	bucketMeta     = []byte("meta")
	keyServerDUID  = []byte("server-duid")
)

// isBbolt reports whether b starts like a bbolt database: the meta page's
// magic after the 16-byte page header.
func isBbolt(b []byte) bool {
	return len(b) >= 20 && binary.LittleEndian.Uint32(b[16:20]) == 0xED0CDAED
}

// readBbolt reads a bbolt database's bindings, history and server DUID,
// re-encoding JSON records as codecV1.
func readBbolt(path string, ret retention) (*logState, error) {
	db, err := bbolt.Open(path, 0o640, &bbolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open old bbolt database %s: %w", path, err)
	}
	defer db.Close()
	st := newLogState(ret)
	err = db.View(func(tx *bbolt.Tx) error {
		if m := tx.Bucket(bucketMeta); m != nil {
			st.duid = append([]byte(nil), m.Get(keyServerDUID)...)
		}
		if bb := tx.Bucket(bucketBindings); bb != nil {
			err := bb.ForEach(func(k, v []byte) error {
				b, err := readBinding(v)
				if err != nil {
					return fmt.Errorf("binding %x: %w", k, err)
				}
				st.bindings[b.Addr.As16()] = stBinding{exp: unixNano(b.Expires), rec: st.arena.add(appendBinding(nil, &b))}
				return nil
			})
			if err != nil {
				return err
			}
		}
		hb := tx.Bucket(bucketHistory)
		if hb == nil {
			return nil
		}
		st.seq = hb.Sequence()
		return hb.ForEach(func(k, v []byte) error {
			h, err := readHistory(v)
			if err != nil {
				return fmt.Errorf("history record %x: %w", k, err)
			}
			if len(k) == 8 {
				h.Seq = binary.BigEndian.Uint64(k)
			}
			st.seq = max(st.seq, h.Seq)
			st.hist.push(histEntry{seq: h.Seq, t: unixNano(h.Time), rec: appendHistory(nil, &h)})
			st.hist.prune(st.ret, h.Seq, unixNano(h.Time))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read old bbolt database %s: %w", path, err)
	}
	return st, nil
}

// migrateBbolt replaces the bbolt database at path by a snapshot of it.
func migrateBbolt(path string, ret retention, log *slog.Logger) error {
	st, err := readBbolt(path, ret)
	if err != nil {
		return err
	}
	old := path + ".bbolt"
	_ = os.Remove(old) // from a migration that did not finish
	if err := os.Link(path, old); err != nil {
		return fmt.Errorf("migrate bbolt database %s: keep the old file: %w", path, err)
	}
	if _, err := writeSnapshot(path, 0, st.content(), nil); err != nil {
		return fmt.Errorf("migrate bbolt database %s: %w", path, err)
	}
	log.Warn("database: migrated the bbolt database to the write-ahead log format; the old file is kept",
		"db", path, "old", old, "bindings", len(st.bindings), "history", st.hist.len(), "dir", filepath.Dir(path))
	return nil
}
