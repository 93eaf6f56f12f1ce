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
		if err := j.Apply(ddns.Batch{Put: []ddns.Pending{p2, p1}}); err != nil {
			t.Fatal(err)
		}
		p1.Want.TTL = 600 // a later change of a1's work
		if err := j.Apply(ddns.Batch{Put: []ddns.Pending{p1}}); err != nil {
			t.Fatal(err)
		}
		// Another server of the site has its own rows.
		jb := openJournal(t, db, "b")
		if err := jb.Apply(ddns.Batch{Put: []ddns.Pending{{Addr: a1, Since: st0}}}); err != nil {
			t.Fatal(err)
		}
		j.Close()

		j = openJournal(t, db, "a")
		got, _, err := j.Load()
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
		if err := j.Apply(ddns.Batch{Del: []netip.Addr{a1}, Done: done}); err != nil {
			t.Fatal(err)
		}
		if got, _, err := j.Load(); err != nil || len(got) != 1 || got[0].Addr != a2 {
			t.Errorf("after a1 is done: %+v, %v; want a2's work", got, err)
		}
		if got, _, err := jb.Load(); err != nil || len(got) != 1 || got[0].Addr != a1 || got[0].Want != nil {
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
		if err := j.Apply(ddns.Batch{Put: []ddns.Pending{{Addr: netip.MustParseAddr("2001:db8::1"), Since: st0}}}); err != nil {
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

// TestDNSIntake: with a DNS journal, a commit writes the DNS changes of
// its events in its own transaction (a refresh that keeps the name
// writes none); a journal opened after a crash returns them, not those
// committed after it was opened, and forgets them once taken.
func TestDNSIntake(t *testing.T) {
	forBackends(t, func(t *testing.T, db string) {
		ctx := context.Background()
		j0 := openJournal(t, db, "x") // creates the schema
		j0.Close()
		inst := "x"
		st, err := openStorage(ctx, db, storeOptions{log: discardLogger{}, dnsInstance: &inst})
		if err != nil {
			t.Fatal(err)
		}
		reg := regEvent(duidA, "2001:db8::1", st0, time.Hour)
		reg.Binding.FQDN = "h1"
		ref := reg
		ref.Time = st0.Add(time.Minute)
		ref.Binding.Last = ref.Time
		ref.Binding.Expires = ref.Time.Add(time.Hour)
		plain := regEvent(duidB, "2001:db8::2", st0, time.Hour) // no name: nothing for DNS
		dereg := regEvent(duidA, "2001:db8::1", st0.Add(2*time.Minute), 0)
		evs := mustCommit(t, st, reg, ref, plain, dereg)
		if evs[0].DNSSeq == 0 || evs[1].DNSSeq != 0 || evs[2].DNSSeq != 0 || evs[3].DNSSeq <= evs[0].DNSSeq {
			t.Errorf("DNSSeq %d %d %d %d; want the register's and the deregister's, increasing", evs[0].DNSSeq, evs[1].DNSSeq, evs[2].DNSSeq, evs[3].DNSSeq)
		}
		st.close() // a crash: the updater never journaled them

		j := openJournal(t, db, "x")
		if got, _, err := openJournal(t, db, "y").Load(); err != nil || len(got) != 0 {
			t.Errorf("another instance: %v, %v", got, err)
		}
		// Committed after the journal was opened: this process's, not the Load's.
		st2, err := openStorage(ctx, db, storeOptions{log: discardLogger{}, dnsInstance: &inst})
		if err != nil {
			t.Fatal(err)
		}
		defer st2.close()
		st = st2
		late := regEvent(duidA, "2001:db8::4", st0.Add(3*time.Minute), time.Hour)
		late.Binding.FQDN = "h4"
		if l := mustCommit(t, st, late); l[0].DNSSeq == 0 {
			t.Fatal("no DNSSeq for a later registration")
		}
		_, cs, err := j.Load()
		if err != nil {
			t.Fatal(err)
		}
		a1 := netip.MustParseAddr("2001:db8::1")
		want := []ddns.Change{
			{Addr: a1, Name: "h1", DUID: duidA, Valid: time.Hour, PrevDUID: duidA, Seq: evs[0].DNSSeq},
			{Addr: a1, PrevName: "h1", PrevDUID: duidA, DUID: []byte{}, Seq: evs[3].DNSSeq},
		}
		if d := cmp.Diff(want, cs, bindingCmp); d != "" {
			t.Errorf("changes after the crash (-want +got):\n%s", d)
		}
		if err := j.Apply(ddns.Batch{Put: []ddns.Pending{{Addr: a1, Since: st0}}, Taken: []int64{evs[0].DNSSeq, evs[3].DNSSeq}}); err != nil {
			t.Fatal(err)
		}
		j.Close()
		if ps, cs, err := openJournal(t, db, "x").Load(); err != nil || len(ps) != 1 || len(cs) != 1 || cs[0].Name != "h4" {
			t.Errorf("after Apply: %+v, %+v, %v; want the pending row and h4's change", ps, cs, err)
		}
	})
}
