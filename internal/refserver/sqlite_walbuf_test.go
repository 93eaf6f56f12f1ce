package refserver

import (
	"bytes"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/ncruces/go-sqlite3/vfs"
)

// memFile is a vfs.File in memory that counts the writes reaching it.
type memFile struct {
	vfs.File // nil: only what walBufFile calls is implemented
	data     []byte
	writes   int
	syncs    int
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.writes++
	if end := int(off) + len(p); end > len(m.data) {
		m.data = append(m.data, make([]byte, end-len(m.data))...)
	}
	return copy(m.data[off:], p), nil
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) { return copy(p, m.data[off:]), nil }
func (m *memFile) Sync(vfs.SyncFlag) error                 { m.syncs++; return nil }
func (m *memFile) Size() (int64, error)                    { return int64(len(m.data)), nil }
func (m *memFile) Close() error                            { return nil }

// TestWALBufFile: contiguous writes reach the file as one, before a sync,
// a read or a size; a write elsewhere (SQLite rewriting a frame) sends
// what was gathered first, so the later bytes win.
func TestWALBufFile(t *testing.T) {
	m := &memFile{}
	f := &walBufFile{File: m}
	for i := range 10 {
		if _, err := f.WriteAt(bytes.Repeat([]byte{byte(i)}, 24), int64(i*24)); err != nil {
			t.Fatal(err)
		}
	}
	if m.writes != 0 {
		t.Fatalf("%d writes before the sync, want them gathered", m.writes)
	}
	if err := f.Sync(vfs.SYNC_FULL); err != nil {
		t.Fatal(err)
	}
	if m.writes != 1 || m.syncs != 1 || len(m.data) != 240 || m.data[239] != 9 {
		t.Fatalf("after sync: %d writes, %d syncs, %d bytes", m.writes, m.syncs, len(m.data))
	}
	// Overwrite inside what is gathered: written in order.
	f.WriteAt([]byte{0xaa, 0xaa}, 240)
	f.WriteAt([]byte{0xbb}, 241)
	if n, _ := f.Size(); n != 242 {
		t.Fatalf("size %d, want 242", n)
	}
	f.WriteAt([]byte{0xcc}, 10)
	got := make([]byte, 2)
	f.ReadAt(got, 240)
	if !bytes.Equal(got, []byte{0xaa, 0xbb}) || m.data[10] != 0xcc {
		t.Fatalf("read %x, byte 10 %x", got, m.data[10])
	}
}

// TestWALBufVFS: the writer opens its WAL through walBufVFS, and what it
// commits is in the WAL file for another connection (the "os" VFS).
func TestWALBufVFS(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.db")
	w, err := sql.Open("sqlite3", sqliteDSN(path, true))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	if _, err := w.Exec(`CREATE TABLE t (x TEXT)`); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := w.Exec(`INSERT INTO t VALUES ($1)`, filepath.Join("x", string(rune('a'+i%26)))); err != nil {
			t.Fatal(err)
		}
	}
	r, err := sql.Open("sqlite3", sqliteDSN(path, false))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var n int
	if err := r.QueryRow(`SELECT COUNT(*) FROM t`).Scan(&n); err != nil || n != 50 {
		t.Fatalf("reader sees %d rows (%v), want 50", n, err)
	}
	var mode string
	if err := w.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q (%v)", mode, err)
	}
}
