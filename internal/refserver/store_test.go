package refserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// smallSegments makes log segments and the compaction threshold small, so a
// test rotates and compacts.
func smallSegments(t testing.TB) {
	ws := walSize
	walSize = 64 << 10
	t.Cleanup(func() { walSize = ws })
}

func mustOpen(t testing.TB, path string, log *slog.Logger) *store {
	t.Helper()
	st, err := openStore(path, retention{}, log)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func bindingAddrs(t testing.TB, st *store) map[netip.Addr]Binding {
	t.Helper()
	bs, err := st.load()
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[netip.Addr]Binding, len(bs))
	for _, b := range bs {
		m[b.Addr] = b
	}
	return m
}

// segments returns the log segment files of the database at path.
func segments(t testing.TB, path string) []string {
	t.Helper()
	names, err := filepath.Glob(path + ".wal.*")
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestStoreReplay: registrations, deregistrations and expiries (one of
// them older than a registration of the same address logged before it)
// across many segments and compactions come back whole after a reopen.
func TestStoreReplay(t *testing.T) {
	smallSegments(t)
	path := filepath.Join(t.TempDir(), "b.db")
	st := mustOpen(t, path, nil)
	if _, err := st.serverDUID(func() []byte { return []byte{0, 4, 1, 2, 3} }); err != nil {
		t.Fatal(err)
	}
	addrs := benchAddrs(3000)
	want := map[netip.Addr]bool{}
	events := 0
	for i := 0; i < len(addrs); i += 100 {
		var evs []Event
		for _, a := range addrs[i : i+100] {
			ev := registerEvent(a)
			ev.Kind = EventRegister
			evs = append(evs, ev)
			want[a] = true
		}
		if err := st.apply(evs); err != nil {
			t.Fatal(err)
		}
		events += len(evs)
	}
	// Deregister the first 10; expire the next 10; an expiry of an older
	// binding of addrs[20] must not remove its newer registration.
	var evs []Event
	for _, a := range addrs[:10] {
		evs = append(evs, Event{Kind: EventDeregister, Time: t0, Binding: Binding{Addr: a, DUID: clientDUID}})
		delete(want, a)
	}
	for _, a := range addrs[10:20] {
		ev := registerEvent(a)
		ev.Kind = EventExpire
		evs = append(evs, ev)
		delete(want, a)
	}
	newer := registerEvent(addrs[20])
	newer.Binding.Expires = t0.Add(2 * time.Hour)
	stale := registerEvent(addrs[20])
	stale.Kind = EventExpire
	evs = append(evs, newer, stale)
	if err := st.apply(evs); err != nil {
		t.Fatal(err)
	}
	events += len(evs)
	// Segments are made ahead at their full size: appends never grow them.
	if fi, err := st.f.Stat(); err != nil || fi.Size() != walSize {
		t.Errorf("current segment: %v bytes (%v), want %d", fi.Size(), err, walSize)
	}
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(path); err != nil {
		t.Fatal(err)
	} else if _, gen, err := parseHeader(data); err != nil || gen == 0 {
		t.Errorf("snapshot of generation %d (%v) after %d segments: never compacted", gen, err, len(segments(t, path)))
	}

	st = mustOpen(t, path, nil)
	defer st.close()
	got := bindingAddrs(t, st)
	if len(got) != len(want) {
		t.Errorf("reopened: %d bindings, want %d", len(got), len(want))
	}
	for a := range want {
		if _, ok := got[a]; !ok {
			t.Errorf("binding %s lost", a)
		}
	}
	if b := got[addrs[20]]; !b.Expires.Equal(newer.Binding.Expires) {
		t.Errorf("binding %s expires %v, want the newer registration's %v", addrs[20], b.Expires, newer.Binding.Expires)
	}
	if d, _ := st.serverDUID(func() []byte { return []byte{9} }); !bytes.Equal(d, []byte{0, 4, 1, 2, 3}) {
		t.Errorf("server DUID %x after reopen", d)
	}
	h, err := st.history()
	if err != nil || len(h) != events {
		t.Fatalf("reopened: %d history records, %v; want %d", len(h), err, events)
	}
	for i, r := range h {
		if r.Seq != uint64(i+1) {
			t.Fatalf("history record %d has seq %d", i, r.Seq)
		}
	}
}

// lastSegment returns the newest segment of path and where its records end.
func lastSegment(t *testing.T, path string) (string, int) {
	t.Helper()
	segs := segments(t, path)
	if len(segs) == 0 {
		t.Fatal("no log segment")
	}
	last := segs[0]
	for _, s := range segs {
		if len(s) > len(last) || (len(s) == len(last) && s > last) {
			last = s
		}
	}
	data, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	end, err := parseRecords(data[headerLen:], func(byte, []byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return last, headerLen + end
}

// TestStoreTornTail: a crash in the middle of a commit leaves a record cut
// off, or one whose bytes are partly written. The server starts, says so,
// truncates the segment there, and keeps every earlier record.
func TestStoreTornTail(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lostLast bool // the last commit is the torn one
		corrupt  func(t *testing.T, seg string, end int)
	}{
		{"cut off", true, func(t *testing.T, seg string, end int) {
			// The last commit's last record loses its last 5 bytes.
			if err := os.Truncate(seg, int64(end-5)); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage after the records", false, func(t *testing.T, seg string, end int) {
			f, err := os.OpenFile(seg, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			rec := binary.BigEndian.AppendUint32(nil, 40)
			rec = append(rec, bytes.Repeat([]byte{0xab}, 30)...)
			if _, err := f.WriteAt(rec, int64(end)); err != nil {
				t.Fatal(err)
			}
		}},
		{"a flipped bit in the last record", true, func(t *testing.T, seg string, end int) {
			data, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			data[end-3] ^= 0x10
			if err := os.WriteFile(seg, data, 0o640); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.db")
			st := mustOpen(t, path, nil)
			addrs := benchAddrs(50)
			for _, a := range addrs {
				ev := registerEvent(a)
				ev.Kind = EventRegister
				if err := st.apply([]Event{ev}); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.close(); err != nil {
				t.Fatal(err)
			}
			seg, end := lastSegment(t, path)
			tc.corrupt(t, seg, end)

			var logs bytes.Buffer
			st = mustOpen(t, path, slog.New(slog.NewTextHandler(&logs, nil)))
			got := bindingAddrs(t, st)
			h, _ := st.history()
			st.close()
			if !strings.Contains(logs.String(), "torn record") || !strings.Contains(logs.String(), filepath.Base(seg)) {
				t.Errorf("no warning naming %s about the torn record; log:\n%s", seg, logs.String())
			}
			// A torn last commit (a binding and its history record) loses
			// its history record; its binding record may have made it.
			wantH := len(addrs)
			if tc.lostLast {
				wantH--
			}
			if len(got) < wantH || len(h) != wantH {
				t.Errorf("after the torn tail: %d bindings, %d history records; want at least %d and %d", len(got), len(h), wantH, wantH)
			}
			for _, a := range addrs[:len(addrs)-1] {
				if _, ok := got[a]; !ok {
					t.Errorf("binding %s of an earlier commit lost", a)
				}
			}
			// (The segment is folded into a snapshot and removed at once.)
			if fi, err := os.Stat(seg); err == nil && fi.Size() >= int64(end) {
				t.Errorf("segment %s not truncated below %d: %d bytes", seg, end, fi.Size())
			}
			// And it starts again without a warning.
			logs.Reset()
			st = mustOpen(t, path, slog.New(slog.NewTextHandler(&logs, nil)))
			st.close()
			if strings.Contains(logs.String(), "torn") {
				t.Errorf("second start warns again:\n%s", logs.String())
			}
		})
	}
}

// TestStoreCorrupt: damage that a crash cannot cause (a snapshot that
// does not check out; a record that checks out but cannot be read) stops
// the server with an error naming the file, and changes nothing.
func TestStoreCorrupt(t *testing.T) {
	setup := func(t *testing.T) string {
		path := filepath.Join(t.TempDir(), "b.db")
		st := mustOpen(t, path, nil)
		ev := registerEvent(cliAddr)
		ev.Kind = EventRegister
		if err := st.apply([]Event{ev}); err != nil {
			t.Fatal(err)
		}
		st.close()
		st = mustOpen(t, path, nil) // folds the segment into the snapshot
		st.close()
		return path
	}
	t.Run("snapshot", func(t *testing.T) {
		path := setup(t)
		data, _ := os.ReadFile(path)
		data[len(data)-2] ^= 1
		os.WriteFile(path, data, 0o640)
		_, err := openStore(path, retention{}, nil)
		if err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), path) {
			t.Fatalf("open with a corrupt snapshot: %v", err)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(after, data) {
			t.Error("the corrupt snapshot was changed")
		}
	})
	t.Run("unknown record", func(t *testing.T) {
		path := setup(t)
		st := mustOpen(t, path, nil)
		if err := st.write(endRecord(append(beginRecord(nil, 'Z'), 1, 2, 3), 0)); err != nil {
			t.Fatal(err)
		}
		st.close()
		_, err := openStore(path, retention{}, nil)
		if err == nil || !strings.Contains(err.Error(), "record type") {
			t.Fatalf("open with an unknown record: %v", err)
		}
	})
	t.Run("not a database", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "b.db")
		os.WriteFile(path, []byte("hello, this is not a database at all"), 0o640)
		if _, err := openStore(path, retention{}, nil); !errors.Is(err, errNotLog) {
			t.Fatalf("open a text file: %v", err)
		}
	})
}

// TestStoreLock: a second server on the same database is refused.
func TestStoreLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	st := mustOpen(t, path, nil)
	defer st.close()
	if _, err := openStore(path, retention{}, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v", err)
	}
	if _, err := ReadHistory(path); err == nil || !strings.Contains(err.Error(), "server running") {
		t.Fatalf("offline read of a running server's database: %v", err)
	}
}

// TestStoreMigrateBbolt: a bbolt database of an older server (binary and
// JSON records) is migrated on open; the old file stays as path.bbolt.
func TestStoreMigrateBbolt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	db, err := bbolt.Open(path, 0o640, nil)
	if err != nil {
		t.Fatal(err)
	}
	b1 := registerEvent(benchAddrs(2)[0]).Binding
	b2 := registerEvent(benchAddrs(2)[1]).Binding
	err = db.Update(func(tx *bbolt.Tx) error {
		m, _ := tx.CreateBucketIfNotExists(bucketMeta)
		bb, _ := tx.CreateBucketIfNotExists(bucketBindings)
		hb, _ := tx.CreateBucketIfNotExists(bucketHistory)
		m.Put(keyServerDUID, []byte{0, 4, 7})
		k1, k2 := b1.Addr.As16(), b2.Addr.As16()
		bb.Put(k1[:], appendBinding(nil, &b1))
		bb.Put(k2[:], []byte(`{"duid":"AAQH","addr":"`+b2.Addr.String()+`","iface":"eth0","valid":3600000000000}`))
		for i := range 3 {
			seq, _ := hb.NextSequence()
			hb.Put(binary.BigEndian.AppendUint64(nil, seq), appendHistory(nil, &HistoryRecord{Seq: seq, Time: t0.Add(time.Duration(i) * time.Second), Event: "register", Addr: b1.Addr}))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if h, err := ReadHistory(path); err != nil || len(h) != 3 {
		t.Fatalf("offline read of the old database: %d records, %v", len(h), err)
	}

	var logs bytes.Buffer
	st := mustOpen(t, path, slog.New(slog.NewTextHandler(&logs, nil)))
	got := bindingAddrs(t, st)
	if len(got) != 2 || !bytes.Equal(got[b1.Addr].DUID, b1.DUID) || got[b2.Addr].Iface != "eth0" {
		t.Errorf("migrated bindings: %+v", got)
	}
	if d, _ := st.serverDUID(nil); !bytes.Equal(d, []byte{0, 4, 7}) {
		t.Errorf("migrated server DUID %x", d)
	}
	ev := registerEvent(cliAddr)
	if err := st.apply([]Event{ev}); err != nil {
		t.Fatal(err)
	}
	st.close()
	if !strings.Contains(logs.String(), "migrated") {
		t.Errorf("no log line about the migration:\n%s", logs.String())
	}
	if _, err := os.Stat(path + ".bbolt"); err != nil {
		t.Errorf("old file not kept: %v", err)
	}
	h, err := ReadHistory(path)
	if err != nil || len(h) != 4 || h[3].Seq != 4 {
		t.Fatalf("history after migration and one more record: %+v, %v", h, err)
	}
}

// FuzzLogRecords: whatever a segment holds, replaying it never panics,
// stops inside the data, and replays every whole record before damage.
func FuzzLogRecords(f *testing.F) {
	b := registerEvent(cliAddr).Binding
	valid := appendMeta(nil, "server-duid", []byte{0, 4, 1})
	valid = appendBindingRec(valid, cliAddr.As16(), unixNano(b.Expires), appendBinding(nil, &b))
	valid = appendHistoryRec(valid, 1, unixNano(t0), appendHistory(nil, &HistoryRecord{Seq: 1, Time: t0, Event: "register"}))
	a16 := cliAddr.As16()
	valid = endRecord(append(append(beginRecord(valid, recDelete), a16[:]...), 0), len(valid))
	f.Add(valid, []byte{})
	f.Add(valid[:len(valid)-3], []byte{0xff})
	f.Add([]byte{}, []byte{0, 0, 0, 1, 0, 0, 0, 0, 'B'})
	f.Add(valid, make([]byte, 20))
	f.Fuzz(func(t *testing.T, good, tail []byte) {
		// good is taken as records as far as they go; tail as what a
		// torn write left after them.
		n := 0
		end0, _ := parseRecords(good, func(typ byte, p []byte) error { n++; return nil })
		data := append(good[:end0:end0], tail...)
		st := newLogState(retention{})
		m := 0
		end, err := parseRecords(data, func(typ byte, p []byte) error { m++; return st.apply(typ, p) })
		if end < 0 || end > len(data) {
			t.Fatalf("end %d outside %d bytes", end, len(data))
		}
		if err == nil && end < end0 {
			t.Fatalf("stopped at %d without an error, before the whole records ending at %d", end, end0)
		}
		if m < n && end >= end0 && !errors.Is(err, errRecord) {
			t.Fatalf("replayed %d of %d whole records: %v", m, n, err)
		}
	})
}

// TestStoreQueryDuringCommits: history queries running beside commits see
// a consistent prefix, and once the commits are done, every record.
func TestStoreQueryDuringCommits(t *testing.T) {
	st := mustOpen(t, filepath.Join(t.TempDir(), "b.db"), nil)
	defer st.close()
	stop := make(chan struct{})
	done := make(chan error)
	go func() {
		for {
			select {
			case <-stop:
				close(done)
				return
			default:
			}
			h, err := st.history()
			for i, r := range h {
				if err == nil && r.Seq != uint64(i+1) {
					err = errors.New("records out of order or missing")
				}
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	addrs := benchAddrs(2000)
	for i := 0; i < len(addrs); i += 40 {
		var evs []Event
		for _, a := range addrs[i : i+40] {
			evs = append(evs, registerEvent(a))
		}
		if err := st.apply(evs); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if h, err := st.history(); err != nil || len(h) != len(addrs) {
		t.Fatalf("after the commits: %d records, %v; want %d", len(h), err, len(addrs))
	}
}
