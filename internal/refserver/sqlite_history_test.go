package refserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// histEvent is a registration of client i (address and DUID from i) at t.
func histEvent(i int, at time.Time) Event {
	return Event{Kind: EventRegister, Time: at, Binding: Binding{
		DUID: []byte{0, 4, byte(i >> 8), byte(i)}, Iface: "eth0", Valid: time.Hour,
		Addr: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})}}
}

// physicalHistory is the rows the partitions hold, visible or not.
func physicalHistory(t *testing.T, db string) int {
	t.Helper()
	raw := rawDB(t, db)
	n := 0
	for p := range histParts {
		var k int
		if err := raw.QueryRow(`SELECT COUNT(*) FROM ` + histPart(p)).Scan(&k); err != nil {
			t.Fatal(err)
		}
		n += k
	}
	return n
}

// checkSeqs checks that the history shows exactly the records of seq
// first..last, in order.
func checkSeqs(t *testing.T, st storage, first, last int64) {
	t.Helper()
	all := mustHistory(t, st, HistoryQuery{})
	if int64(len(all)) != last-first+1 {
		t.Fatalf("%d records visible, want %d (seq %d..%d)", len(all), last-first+1, first, last)
	}
	for i, h := range all {
		if h.Seq != uint64(first)+uint64(i) {
			t.Fatalf("record %d has seq %d, want %d", i, h.Seq, first+int64(i))
		}
	}
}

// TestSQLiteHistoryRotation: through many partitions' worth of records,
// one at a time and in batches larger than a partition, the history
// shows exactly the newest max, and the partitions hold a bounded number
// of rows (emptied whole).
func TestSQLiteHistoryRotation(t *testing.T) {
	db := filepath.Join(t.TempDir(), "bindings.db")
	const max = 10
	st := openTest(t, db, retention{max: max})
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	for ; n < 100; n++ {
		mustCommit(t, st, histEvent(n, t0.Add(time.Duration(n)*time.Second)))
		checkSeqs(t, st, int64(max1(n+2-max)), int64(n+1))
		if p := physicalHistory(t, db); p > histParts*3 {
			t.Fatalf("after %d records: %d rows in the partitions, want at most %d", n+1, p, histParts*3)
		}
	}
	for range 20 {
		evs := make([]Event, 7)
		for j := range evs {
			evs[j] = histEvent(n, t0.Add(time.Duration(n)*time.Second))
			n++
		}
		mustCommit(t, st, evs...)
		checkSeqs(t, st, int64(n+1-max), int64(n))
		if p := physicalHistory(t, db); p > histParts*7 {
			t.Fatalf("after %d records: %d rows in the partitions, want at most %d", n, p, histParts*7)
		}
	}
	// The seq goes on from where it was after a restart.
	st.close()
	st = openTest(t, db, retention{max: max})
	mustCommit(t, st, histEvent(n, t0.Add(time.Duration(n)*time.Second)))
	n++
	checkSeqs(t, st, int64(n+1-max), int64(n))
	// A larger limit: nothing visible is emptied, and the newly allowed
	// rows are not shown again (they were pruned).
	st.close()
	st = openTest(t, db, retention{max: 1000})
	for range 50 {
		mustCommit(t, st, histEvent(n, t0.Add(time.Duration(n)*time.Second)))
		n++
	}
	checkSeqs(t, st, int64(n+1-50-max), int64(n))
}

func max1(n int) int { return max(n, 1) }

// TestSQLiteHistoryAge: with an age limit only, exactly the records of
// the last maxAge (from the newest) are visible, and partitions are
// emptied by age.
func TestSQLiteHistoryAge(t *testing.T) {
	db := filepath.Join(t.TempDir(), "bindings.db")
	st := openTest(t, db, retention{max: 1 << 20, maxAge: time.Hour})
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const step = time.Minute
	for i := range 300 { // 5 hours
		at := t0.Add(time.Duration(i) * step)
		mustCommit(t, st, histEvent(i, at))
		all := mustHistory(t, st, HistoryQuery{})
		want := min(i+1, int(time.Hour/step)+1) // at - 1h itself is kept
		if len(all) != want || !all[len(all)-1].Time.Equal(at) || all[0].Time.Before(at.Add(-time.Hour)) {
			t.Fatalf("at %v: %d records (%v..%v), want %d", at, len(all), all[0].Time, all[len(all)-1].Time, want)
		}
		if p := physicalHistory(t, db); p > 2*want {
			t.Fatalf("at %v: %d rows in the partitions, want at most %d", at, p, 2*want)
		}
	}
}

// TestSQLiteHistoryMigration: a version-2 database's history moves into
// the partitions with its seq and columns, and answers the same.
func TestSQLiteHistoryMigration(t *testing.T) {
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "bindings.db")
	ms, err := migrationList("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite3", sqliteDSN(db, true))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	qs := []string{`CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ns BIGINT NOT NULL)`}
	for _, m := range ms[:2] {
		qs = append(qs, m.sql, `INSERT INTO schema_version VALUES (`+strconv.Itoa(m.version)+`, '`+m.name+`', 0)`)
	}
	qs = append(qs,
		`INSERT INTO history VALUES (7, 1000, 'register', '0004aa', '', '2001:db8::1', 'eth0', '', '02:00:00:00:00:01', 'a.example', 60, 120, '')`,
		`INSERT INTO history VALUES (9, 2000, 'move', '0004bb', '0004aa', '2001:db8::1', 'eth0', 'fe80::1', '', '', 30, 4294967295, '')`,
		`INSERT INTO history VALUES (12, 3000, 'dns', '0004bb', '', '2001:db8::1', '', '', '', 'b.example', 0, 0, 'AAAA added')`)
	for _, q := range qs {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()
	st := openTest(t, db, retention{})
	a := netip.MustParseAddr("2001:db8::1")
	want := []HistoryRecord{
		{Seq: 7, Time: time.Unix(0, 1000), Event: "register", DUID: []byte{0, 4, 0xaa}, Addr: a, Iface: "eth0",
			LinkLayer: []byte{2, 0, 0, 0, 0, 1}, FQDN: "a.example", Preferred: time.Minute, Valid: 2 * time.Minute},
		{Seq: 9, Time: time.Unix(0, 2000), Event: "move", DUID: []byte{0, 4, 0xbb}, PrevDUID: []byte{0, 4, 0xaa}, Addr: a,
			Iface: "eth0", LinkAddr: netip.MustParseAddr("fe80::1"), Preferred: 30 * time.Second, Valid: infiniteLifetime * time.Second},
		{Seq: 12, Time: time.Unix(0, 3000), Event: "dns", DUID: []byte{0, 4, 0xbb}, Addr: a, FQDN: "b.example", Reason: "AAAA added"},
	}
	got := mustHistory(t, st, HistoryQuery{Address: a})
	js := func(rs []HistoryRecord) string {
		for i := range rs {
			rs[i].Time = rs[i].Time.UTC()
		}
		b, err := json.MarshalIndent(rs, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if w, g := js(want), js(got); w != g {
		t.Errorf("history after the migration:\n%s\nwant\n%s", g, w)
	}
	if got := mustHistory(t, st, HistoryQuery{ClientID: []byte{0, 4, 0xaa}}); len(got) != 2 {
		t.Errorf("by client: %d records, want 2", len(got))
	}
	e := histEvent(1, time.Unix(4, 0))
	mustCommit(t, st, e)
	got = mustHistory(t, st, HistoryQuery{})
	if len(got) != 4 || got[3].Seq != 13 {
		t.Errorf("after a commit: %d records, last seq %d; want 4, 13", len(got), got[len(got)-1].Seq)
	}
}

// BenchmarkSQLiteHistoryRotation: commits of 48 registrations of
// scattered clients with the history at its cap (HistoryCap), through
// three rotations: how long the commits that empty a partition
// (HistoryCap/(histParts-1) records and their index entries) take,
// beside the others. rotate-ms/op: the slowest of them; other-ms/op: the
// median of the commits that did not rotate (wall times: run it on an
// idle machine).
func BenchmarkSQLiteHistoryRotation(b *testing.B) {
	const batch = 48
	ev := func(i int, at time.Time) Event {
		k := uint32(i) * 2654435761 // scattered, as real clients' addresses and DUIDs
		return loadgenEvent(k, int(k), at)
	}
	var rot time.Duration
	var other []time.Duration
	for b.Loop() {
		st := openTest(b, benchDB(b), retention{}).(*sqliteStore)
		evs := make([]Event, 0, 1024)
		i := 0
		for ; i < HistoryCap; i++ {
			evs = append(evs, ev(i, t0.Add(time.Duration(i)*time.Microsecond)))
			if len(evs) == 1024 || i == HistoryCap-1 {
				mustCommit(b, st, evs...)
				evs = evs[:0]
			}
		}
		for rotations := 0; rotations < 3; {
			evs = evs[:0]
			for range batch {
				evs = append(evs, ev(i, t0.Add(time.Duration(i)*time.Microsecond)))
				i++
			}
			cur := st.raw.hs.cur
			w0 := time.Now()
			mustCommit(b, st, evs...)
			w := time.Since(w0)
			if st.raw.hs.cur != cur {
				rotations++
				rot = max(rot, w)
			} else {
				other = append(other, w)
			}
		}
	}
	slices.Sort(other)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(rot), "rotate-ms/op")
	b.ReportMetric(ms(other[len(other)/2]), "other-ms/op")
}
