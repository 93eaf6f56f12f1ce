package refserver

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// backend is a database a storage test runs against.
type backend struct {
	name string
	db   func(t testing.TB) string // a new, empty database for one test
}

// backends are SQLite and (unless -short) a real PostgreSQL (test/pgtest):
// every storage test runs against both.
func backends(t testing.TB) []backend {
	bs := []backend{{"sqlite", func(t testing.TB) string { return filepath.Join(t.TempDir(), "bindings.db") }}}
	if !testing.Short() {
		bs = append(bs, backend{"postgres", func(t testing.TB) string { return pgtest.Shared(t).NewDB(t) }})
	}
	return bs
}

// forBackends runs fn as a subtest per backend, with a new database.
func forBackends(t *testing.T, fn func(t *testing.T, db string)) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { fn(t, b.db(t)) })
	}
}

// openTest opens db for a test and closes it when the test ends.
func openTest(t testing.TB, db string, ret retention) storage {
	t.Helper()
	st, err := openStorage(context.Background(), db, storeOptions{ret: ret, log: discardLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	return st
}

// mustCommit commits evs without a per-DUID limit and returns them as
// the database decided them.
func mustCommit(t testing.TB, st storage, evs ...Event) []Event {
	t.Helper()
	if _, err := st.commit(context.Background(), evs, time.Time{}, 0); err != nil {
		t.Fatal(err)
	}
	return evs
}

func mustHistory(t testing.TB, st storage, q HistoryQuery) []HistoryRecord {
	t.Helper()
	rs, err := st.history(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}
