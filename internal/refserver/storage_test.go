package refserver

import (
	"context"
	"database/sql"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/addrreg/addrreg/test/pgtest"
)

var (
	st0   = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	duidA = []byte{0, 4, 0xaa}
	duidB = []byte{0, 4, 0xbb}
)

var bindingCmp = cmp.Options{cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}

func regEvent(duid []byte, a string, at time.Time, valid time.Duration) Event {
	b := Binding{DUID: duid, Addr: netip.MustParseAddr(a), Iface: "eth0", First: at, Last: at, Preferred: valid / 2, Valid: valid}
	if valid > 0 {
		b.Expires = at.Add(valid)
	}
	k := EventRegister
	if valid == 0 {
		k = EventDeregister
	}
	return Event{Kind: k, Time: at, Binding: b}
}

func kinds(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Kind.String())
	}
	return out
}

// TestStorageDecides: the commit decides each event from the database,
// whatever the caller thought: register, refresh (first time kept), move
// (previous holder named), deregister, and a deregistration of nothing.
func TestStorageDecides(t *testing.T) {
	forBackends(t, func(t *testing.T, db string) {
		st := openTest(t, db, retention{})
		a := "2001:db8::1"
		evs := mustCommit(t, st,
			regEvent(duidA, a, st0, time.Hour),
			regEvent(duidA, a, st0.Add(time.Minute), time.Hour),
			regEvent(duidB, a, st0.Add(2*time.Minute), time.Hour),
		)
		if diff := cmp.Diff([]string{"register", "refresh", "move"}, kinds(evs)); diff != "" {
			t.Errorf("kinds (-want +got):\n%s", diff)
		}
		if !evs[1].Binding.First.Equal(st0) || string(evs[2].PrevDUID) != string(duidA) {
			t.Errorf("refresh first %v, move prev %x", evs[1].Binding.First, evs[2].PrevDUID)
		}
		// A second batch: the refresh is told by the database, not the caller.
		ev := regEvent(duidB, a, st0.Add(3*time.Minute), 2*time.Hour)
		evs = mustCommit(t, st, ev, regEvent(duidB, a, st0.Add(4*time.Minute), 0), regEvent(duidB, "2001:db8::2", st0.Add(5*time.Minute), 0))
		if diff := cmp.Diff([]string{"refresh", "deregister", "deregister"}, kinds(evs)); diff != "" {
			t.Errorf("kinds (-want +got):\n%s", diff)
		}
		bs, err := st.bindings(context.Background())
		if err != nil || len(bs) != 0 {
			t.Errorf("bindings after deregistration: %v, %v", bs, err)
		}
		h := mustHistory(t, st, HistoryQuery{Address: netip.MustParseAddr(a)})
		var got []string
		for _, r := range h {
			got = append(got, r.Event)
		}
		if diff := cmp.Diff([]string{"register", "refresh", "move", "refresh", "deregister"}, got); diff != "" {
			t.Errorf("history (-want +got):\n%s", diff)
		}
		if h[2].Seq <= h[1].Seq || string(h[2].PrevDUID) != string(duidA) {
			t.Errorf("move record: %+v", h[2])
		}
	})
}

// TestStorageRoundTrip: a binding comes back as written, every field.
func TestStorageRoundTrip(t *testing.T) {
	forBackends(t, func(t *testing.T, db string) {
		st := openTest(t, db, retention{})
		ev := regEvent(duidA, "2001:db8:2::9", st0, time.Hour)
		ev.Binding.LinkAddr = netip.MustParseAddr("2001:db8:2::1")
		ev.Binding.LinkLayer = []byte{2, 0, 0, 0, 0, 9}
		ev.Binding.FQDN = "host,example"
		mustCommit(t, st, ev)
		inf := regEvent(duidB, "2001:db8::5", st0, time.Duration(infiniteLifetime)*time.Second)
		inf.Binding.Expires = time.Time{}
		mustCommit(t, st, inf)
		got, ok, err := st.byAddr(context.Background(), ev.Binding.Addr)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if diff := cmp.Diff(ev.Binding, got, bindingCmp); diff != "" {
			t.Errorf("binding (-want +got):\n%s", diff)
		}
		if got, _, _ := st.byAddr(context.Background(), inf.Binding.Addr); !got.Expires.IsZero() {
			t.Errorf("infinite binding expires %v", got.Expires)
		}
		if at, ok, err := st.nextExpiry(context.Background()); err != nil || !ok || !at.Equal(ev.Binding.Expires) {
			t.Errorf("next expiry %v %v %v, want %v", at, ok, err, ev.Binding.Expires)
		}
		for _, la := range []string{"2001:db8:2::1", "2001:db8::77"} {
			if ok, err := st.linkKnown(context.Background(), netip.MustParseAddr(la)); !ok || err != nil {
				t.Errorf("link %s not known: %v", la, err)
			}
		}
		if ok, _ := st.linkKnown(context.Background(), netip.MustParseAddr("2001:db8:9::1")); ok {
			t.Error("an unknown link is known")
		}
	})
}

// TestStorageSeveralServers: two stores on one database, as two servers of
// a site: the per-DUID limit holds across them, a binding expires exactly
// once however many run the expiry, and each sees the other's bindings.
func TestStorageSeveralServers(t *testing.T) {
	forBackends(t, func(t *testing.T, db string) {
		s1, s2 := openTest(t, db, retention{}), openTest(t, db, retention{})
		ctx := context.Background()
		const limit = 10
		var wg sync.WaitGroup
		var mu sync.Mutex
		accepted := 0
		for i, st := range []storage{s1, s2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range 20 {
					a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i), 15: byte(k)})
					evs := []Event{regEvent(duidA, a.String(), st0, time.Minute)}
					if _, err := st.commit(ctx, evs, time.Time{}, limit); err != nil {
						t.Error(err)
						return
					}
					if evs[0].Kind != EventReject {
						mu.Lock()
						accepted++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		bs, err := s2.byDUID(ctx, duidA)
		if err != nil || len(bs) != limit || accepted != limit {
			t.Fatalf("%d bindings of the client, %d accepted, want %d (%v)", len(bs), accepted, limit, err)
		}
		// Both expire, concurrently: every binding once.
		var expired [2][]Event
		for i, st := range []storage{s1, s2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				if expired[i], err = st.commit(ctx, nil, st0.Add(time.Hour), limit); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if n := len(expired[0]) + len(expired[1]); n != limit {
			t.Errorf("%d + %d expire events, want %d in all", len(expired[0]), len(expired[1]), limit)
		}
		n := 0
		for _, h := range mustHistory(t, s1, HistoryQuery{}) {
			if h.Event == "expire" {
				n++
			}
		}
		if n != limit {
			t.Errorf("%d expire records in the history, want %d", n, limit)
		}
	})
}

// TestStorageExpiredNotRemovedYet: a registration of an address whose
// binding expired (and was not removed yet) follows its expiry.
func TestStorageExpiredNotRemovedYet(t *testing.T) {
	forBackends(t, func(t *testing.T, db string) {
		st := openTest(t, db, retention{})
		mustCommit(t, st, regEvent(duidA, "2001:db8::1", st0, time.Minute))
		evs := []Event{regEvent(duidB, "2001:db8::1", st0.Add(2*time.Minute), time.Hour)}
		exp, err := st.commit(context.Background(), evs, time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(exp) != 1 || evs[0].Kind != EventRegister || evs[0].PrevDUID != nil {
			t.Errorf("expired %v, event %v prev %x; want the expiry, then a register", exp, evs[0].Kind, evs[0].PrevDUID)
		}
	})
}

// TestMigrations: each migration applies to the one before it (here, to
// an empty database), a second start applies nothing, and a database from
// a newer server is refused with ErrSchemaNewer.
func TestMigrations(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		ms, err := migrationList(dialect)
		if err != nil || len(ms) != SchemaVersion {
			t.Fatalf("%s: %d migrations, want %d: %v", dialect, len(ms), SchemaVersion, err)
		}
	}
	forBackends(t, func(t *testing.T, db string) {
		st := openTest(t, db, retention{})
		raw := rawDB(t, db)
		var v int
		if err := raw.QueryRow(`SELECT MAX(version) FROM schema_version`).Scan(&v); err != nil || v != SchemaVersion {
			t.Fatalf("schema version %d, %v; want %d", v, err, SchemaVersion)
		}
		st.close()
		openTest(t, db, retention{}).close() // nothing to apply
		if _, err := raw.Exec(`INSERT INTO schema_version (version, name, applied_ns) VALUES ($1, 'future', 0)`, SchemaVersion+1); err != nil {
			t.Fatal(err)
		}
		_, err := openStorage(context.Background(), db, storeOptions{log: discardLogger{}})
		if !errors.Is(err, ErrSchemaNewer) || strings.Contains(err.Error(), pgtest.Password) {
			t.Errorf("newer schema: err = %v, want ErrSchemaNewer", err)
		}
	})
}

// rawDB opens db with its driver, for a test to look inside.
func rawDB(t testing.TB, db string) *sql.DB {
	t.Helper()
	drv, dsn := "sqlite3", sqliteDSN(db, true)
	if isPostgres(db) {
		drv, dsn = "pgx", db
	}
	d, err := sql.Open(drv, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestSQLiteRefused: a file that is not an SQLite database, or an SQLite
// database of another program, is refused with a message naming it.
func TestSQLiteRefused(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, []byte(strings.Repeat("not a database\n", 400)), 0o600); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.db")
	d := rawDB(t, foreign)
	if _, err := d.Exec(`CREATE TABLE users (name TEXT)`); err != nil {
		t.Fatal(err)
	}
	d.Close()
	for _, tc := range []struct{ path, want string }{
		{junk, "not an SQLite database"},
		{foreign, "database of something else (tables users)"},
	} {
		_, err := openStorage(context.Background(), tc.path, storeOptions{log: discardLogger{}})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s: err = %v, want %q and the path", tc.path, err, tc.want)
		}
	}
}

// TestImportLegacy: a database written by the release before the SQL store
// (testdata/oldformat: a snapshot and a log segment) is imported at the
// first start, bindings, history and server DUID, and kept aside; the
// second start finds the SQLite database.
func TestImportLegacy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bindings.db")
	for _, f := range []string{"bindings.db", "bindings.db.wal.3"} {
		b, err := os.ReadFile(filepath.Join("testdata/oldformat", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	old, err := readLegacy(path)
	if err != nil {
		t.Fatal(err)
	}
	st := openTest(t, path, retention{})
	ctx := context.Background()
	bs, err := st.bindings(ctx)
	if err != nil || len(bs) != 59 || len(old.bindings) != 59 {
		t.Fatalf("%d bindings imported (%d in the old file), want 59: %v", len(bs), len(old.bindings), err)
	}
	for _, b := range bs {
		ob := old.bindings[b.Addr]
		if diff := cmp.Diff(ob, b, bindingCmp); diff != "" {
			t.Errorf("binding %s (-old +imported):\n%s", b.Addr, diff)
			break
		}
	}
	hist := mustHistory(t, st, HistoryQuery{})
	if len(hist) != 66 {
		t.Errorf("%d history records, want 66", len(hist))
	}
	count := map[string]int{}
	for i, h := range hist {
		count[h.Event]++
		if o := old.history[i]; o.Event != h.Event || o.Addr != h.Addr || !o.Time.Equal(h.Time) || string(o.PrevDUID) != string(h.PrevDUID) {
			t.Errorf("history %d: %+v, old %+v", i, h, o)
		}
	}
	if diff := cmp.Diff(map[string]int{"register": 61, "move": 1, "deregister": 1, "expire": 1, "reject": 1, "refresh": 1}, count); diff != "" {
		t.Errorf("history events (-want +got):\n%s", diff)
	}
	duid, err := st.serverDUID(ctx, func() []byte { t.Error("a new server DUID was made"); return nil })
	if err != nil || string(duid) != string(old.duid) {
		t.Errorf("server DUID %x, want %x (%v)", duid, old.duid, err)
	}
	st.close()
	for _, f := range []string{"bindings.db", "bindings.db.wal.3"} {
		if _, err := os.Stat(filepath.Join(path+OldFormatSuffix, f)); err != nil {
			t.Errorf("old file not kept: %v", err)
		}
	}
	if _, err := os.Stat(path + ".wal.3"); err == nil {
		t.Error("old segment left beside the new database")
	}
	if isLegacy(path) {
		t.Fatal("the database path still holds the old format")
	}
	st = openTest(t, path, retention{})
	if bs, _ := st.bindings(ctx); len(bs) != 59 {
		t.Errorf("second start: %d bindings", len(bs))
	}
}

// TestPostgresUnreachable: a server that cannot reach its database says
// which (without the password) and fails.
func TestPostgresUnreachable(t *testing.T) {
	pg := pgtest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := "postgres://addrreg:" + pgtest.Password + "@127.0.0.1:1/nodb?sslmode=disable&connect_timeout=2"
	_, err := openStorage(ctx, url, storeOptions{log: discardLogger{}})
	if err == nil || strings.Contains(err.Error(), pgtest.Password) || !strings.Contains(err.Error(), "127.0.0.1:1/nodb") {
		t.Errorf("err = %v, want the URL without the password", err)
	}
	// The password from a file, over TCP where the cluster asks for one.
	db := pg.NewDB(t)
	name, _, _ := strings.Cut(strings.TrimPrefix(db, "postgres://postgres@/"), "?")
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(pgtest.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := openStorage(ctx, pg.TCPURL(name), storeOptions{passwordFile: pw, log: discardLogger{}})
	if err != nil {
		t.Fatalf("with --db-password-file: %v", err)
	}
	st.close()
	if _, err := openStorage(ctx, pg.TCPURL(name), storeOptions{log: discardLogger{}}); err == nil {
		t.Error("no password: connected anyway")
	}
}

func TestRedactDB(t *testing.T) {
	for in, want := range map[string]string{
		"/var/lib/x.db":                         "/var/lib/x.db",
		"postgres://u:pw@h/db?sslmode=require":  "postgres://u:xxxxx@h/db?sslmode=require",
		"postgresql://u@h/db?password=pw":       "postgresql://u@h/db?password=xxxxx",
		"postgres://u@h:5432/db?sslmode=verify": "postgres://u@h:5432/db?sslmode=verify",
	} {
		if got := RedactDB(in); got != want {
			t.Errorf("RedactDB(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestStorageLargeBatch: a batch of 200 registrations of one DUID (chunks + remainder), then
// their refreshes, then moves: everything round-trips.
func TestStorageLargeBatch(t *testing.T) {
	forBackends(t, func(t *testing.T, db string) {
		st := openTest(t, db, retention{})
		var evs []Event
		for i := range 200 {
			a := netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 14: byte(i >> 8), 15: byte(i)})
			e := regEvent(duidA, a.String(), st0, time.Hour)
			if i%2 == 0 {
				e.Binding.Expires = time.Time{}
			}
			evs = append(evs, e)
		}
		mustCommit(t, st, evs...)
		n, _, _ := st.nextExpiry(context.Background())
		bs, _ := st.byDUID(context.Background(), duidA)
		if len(bs) != 200 || !n.Equal(st0.Add(time.Hour)) {
			t.Fatal(len(bs), n)
		}
		evs2 := make([]Event, len(evs))
		copy(evs2, evs)
		for i := range evs2 {
			evs2[i].Binding.DUID = duidB
		}
		if _, err := st.commit(context.Background(), evs2, time.Time{}, 150); err != nil {
			t.Fatal(err)
		}
		moved := 0
		for _, e := range evs2 {
			if e.Kind == EventMove {
				moved++
			}
		}
		bs, _ = st.byDUID(context.Background(), duidB)
		if moved != 150 || len(bs) != 150 {
			t.Fatal(moved, len(bs))
		}
	})
}

// TestStorageSameInformOnce: the same INFORM committed by two servers of a
// link (or retransmitted) within a second is recorded once; a refresh a
// second later is a refresh.
func TestStorageSameInformOnce(t *testing.T) {
	forBackends(t, func(t *testing.T, db string) {
		s1, s2 := openTest(t, db, retention{}), openTest(t, db, retention{})
		a := "2001:db8::1"
		mustCommit(t, s1, regEvent(duidA, a, st0, time.Hour))
		mustCommit(t, s2, regEvent(duidA, a, st0.Add(300*time.Millisecond), time.Hour))
		mustCommit(t, s2, regEvent(duidA, a, st0.Add(2*time.Second), time.Hour))
		var got []string
		for _, h := range mustHistory(t, s1, HistoryQuery{}) {
			got = append(got, h.Event)
		}
		if diff := cmp.Diff([]string{"register", "refresh"}, got); diff != "" {
			t.Errorf("history (-want +got):\n%s", diff)
		}
	})
}

// TestStorageRenameWithinASecond: a host renamed registers its addresses
// again at once; within a second of the last registration that is a
// refresh with the new name (and the old one as PrevFQDN, for DNS), not
// the same INFORM again.
func TestStorageRenameWithinASecond(t *testing.T) {
	forBackends(t, func(t *testing.T, db string) {
		st := openTest(t, db, retention{})
		a := "2001:db8::1"
		e := regEvent(duidA, a, st0, time.Hour)
		e.Binding.FQDN = "h1"
		mustCommit(t, st, e)
		e = regEvent(duidA, a, st0.Add(300*time.Millisecond), time.Hour)
		e.Binding.FQDN = "h2"
		evs := mustCommit(t, st, e)
		if evs[0].Kind != EventRefresh || evs[0].Binding.FQDN != "h2" || evs[0].PrevFQDN != "h1" {
			t.Errorf("renamed: %v fqdn %q prev %q; want refresh h2, prev h1", evs[0].Kind, evs[0].Binding.FQDN, evs[0].PrevFQDN)
		}
		if b, ok, err := st.byAddr(context.Background(), netip.MustParseAddr(a)); err != nil || !ok || b.FQDN != "h2" {
			t.Errorf("binding %+v, %v, %v; want FQDN h2", b, ok, err)
		}
	})
}

// TestSQLiteOddPath: a database path with the characters an SQLite URI
// gives a meaning ("%", "?", "#") is the file of that name: a benchmark's
// directory "loss=10%1255…" failed to open before.
func TestSQLiteOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "loss=10%12 a?b#c")
	path := filepath.Join(dir, "bindings.db")
	st := openTest(t, path, retention{})
	mustCommit(t, st, regEvent(duidA, "2001:db8::1", st0, time.Hour))
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("no database at %q: %v", path, err)
	}
	st = openTest(t, path, retention{})
	bs, err := st.bindings(context.Background())
	if err != nil || len(bs) != 1 {
		t.Errorf("bindings read back: %v, %v", bs, err)
	}
}
