package refserver

import (
	"context"
	"database/sql"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/addrreg/addrreg/internal/ddns"
)

func openJournal(t *testing.T, db, instance string) *DNSJournal {
	t.Helper()
	j, err := OpenDNSJournal(context.Background(), Config{DBPath: db}, instance)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// TestDNSJournal: the pending DNS work survives a reopening, each
// instance sees only its own, and outcomes are history records (event
// "dns") that do not disturb who held an address.
func TestDNSJournal(t *testing.T) {
	forBackends(t, func(t *testing.T, db string) {
		a1, a2 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
		p1 := ddns.Pending{Addr: a1, Want: &ddns.Owner{Name: "h1.example.net.", DUID: duidA, TTL: 1200},
			Drop: []ddns.Owner{{Name: "h0.example.net.", DUID: duidB}}, Since: st0}
		p2 := ddns.Pending{Addr: a2, Drop: []ddns.Owner{{Name: "h2.example.net.", DUID: duidA}}, Since: st0.Add(time.Second)}
		j := openJournal(t, db, "a")
		if err := j.Apply([]ddns.Pending{p2, p1}, nil, nil); err != nil {
			t.Fatal(err)
		}
		p1.Want.TTL = 600 // a later change of a1's work
		if err := j.Apply([]ddns.Pending{p1}, nil, nil); err != nil {
			t.Fatal(err)
		}
		// Another server of the site has its own rows.
		jb := openJournal(t, db, "b")
		if err := jb.Apply([]ddns.Pending{{Addr: a1, Since: st0}}, nil, nil); err != nil {
			t.Fatal(err)
		}
		j.Close()

		j = openJournal(t, db, "a")
		got, err := j.Load()
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]ddns.Pending{p1, p2}, got, bindingCmp); d != "" {
			t.Errorf("loaded (-want +got):\n%s", d)
		}
		done := []ddns.Outcome{
			{Time: st0.Add(2 * time.Second), Addr: a1, Record: "AAAA", Name: "h1.example.net.", DUID: duidA, Result: ddns.OutcomeAdded},
			{Time: st0.Add(3 * time.Second), Addr: a1, Record: "PTR", Name: "h1.example.net.", DUID: duidA, Result: ddns.OutcomeFailed, Err: "add PTR: REFUSED"},
		}
		if err := j.Apply(nil, []netip.Addr{a1}, done); err != nil {
			t.Fatal(err)
		}
		if got, err := j.Load(); err != nil || len(got) != 1 || got[0].Addr != a2 {
			t.Errorf("after a1 is done: %+v, %v; want a2's work", got, err)
		}
		if got, err := jb.Load(); err != nil || len(got) != 1 || got[0].Addr != a1 || got[0].Want != nil {
			t.Errorf("instance b: %+v, %v; want its own a1 row", got, err)
		}
		st := openTest(t, db, retention{})
		mustCommit(t, st, regEvent(duidA, a1.String(), st0, time.Hour))
		h := mustHistory(t, st, HistoryQuery{Address: a1})
		var evs []string
		for _, r := range h {
			evs = append(evs, r.Event+" "+r.FQDN+" "+r.Reason)
		}
		want := []string{"dns h1.example.net. AAAA added", "dns h1.example.net. PTR failed: add PTR: REFUSED", "register  "}
		if d := cmp.Diff(want, evs); d != "" {
			t.Errorf("history (-want +got):\n%s", d)
		}
		if len(h) == 3 && string(h[0].DUID) != string(duidA) {
			t.Errorf("dns record DUID %x", h[0].DUID)
		}
		if hd, ok := HolderAt(h, a1, st0.Add(time.Minute)); !ok || hd.Event != "register" {
			t.Errorf("holder with dns records: %+v, %v", hd, ok)
		}
	})
}

// TestMigrate0002: a database of schema version 1 (0.2's) with bindings
// and history is migrated at start: its rows kept, ddns_pending added.
func TestMigrate0002(t *testing.T) {
	forBackends(t, func(t *testing.T, db string) {
		ctx := context.Background()
		dialect, driver, dsn := "sqlite", "sqlite3", "file:"+db
		if isPostgres(db) {
			dialect, driver, dsn = "postgres", "pgx", db
		}
		ms, err := migrationList(dialect)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := sql.Open(driver, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		for _, q := range []string{
			`CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ns BIGINT NOT NULL)`,
			ms[0].sql,
			`INSERT INTO schema_version VALUES (1, '0001_init.sql', 0)`,
			`INSERT INTO bindings (addr, prefix64, duid, first_ns, last_ns, preferred_s, valid_s) VALUES ('2001:db8::1', '2001:db8::/64', '0004aa', 1, 1, 60, 120)`,
			`INSERT INTO history (time_ns, event, duid, addr) VALUES (1, 'register', '0004aa', '2001:db8::1')`,
		} {
			if _, err := raw.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		raw.Close()
		j := openJournal(t, db, "")
		if err := j.Apply([]ddns.Pending{{Addr: netip.MustParseAddr("2001:db8::1"), Since: st0}}, nil, nil); err != nil {
			t.Fatal(err)
		}
		st := openTest(t, db, retention{})
		var v int
		if err := st.writeDB().QueryRowContext(ctx, `SELECT MAX(version) FROM schema_version`).Scan(&v); err != nil || v != SchemaVersion || v < 2 {
			t.Errorf("schema version %d, %v; want %d (≥ 2)", v, err, SchemaVersion)
		}
		bs, err := st.bindings(ctx)
		if err != nil || len(bs) != 1 {
			t.Errorf("bindings after migration: %v, %v", bs, err)
		}
		if h := mustHistory(t, st, HistoryQuery{}); len(h) != 1 || h[0].Event != "register" {
			t.Errorf("history after migration: %+v", h)
		}
	})
}
