package refserver

import (
	"context"
	"database/sql"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// openWALTest opens an SQLite store whose writer restarts the WAL once it
// holds restartFrames frames.
func openWALTest(t *testing.T, restartFrames int) *sqliteStore {
	t.Helper()
	st, err := openSQLite(context.Background(), filepath.Join(t.TempDir(), "bindings.db"),
		storeOptions{log: discardLogger{}, walRestartFrames: restartFrames})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	return st
}

// commitFor commits batches of 16 new registrations, starting at client n,
// back to back for d while the store's checkpointer runs beside them, as
// a loaded server's writer does; it returns the next client and the WAL
// file's size at its largest.
func commitFor(t *testing.T, st *sqliteStore, n int, d time.Duration) (int, int64) {
	t.Helper()
	ctx := context.Background()
	var most int64
	for end := time.Now().Add(d); time.Now().Before(end); {
		evs := make([]Event, 16)
		for i := range evs {
			a := cliAddr.As16()
			a[12], a[13], a[14], a[15] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
			evs[i] = registerEvent(netip.AddrFrom16(a))
			evs[i].Binding.DUID = []byte{0, 2, 0, 0, 0x7e, 0x99, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
			n++
		}
		start := time.Now()
		if _, err := st.commit(ctx, evs, time.Time{}, 0); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("a commit of 16 took %v: the WAL restart waited", d)
		}
		fi, err := os.Stat(st.path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, fi.Size())
	}
	return n, most
}

// walFrames is how many frames the WAL holds now.
func walFrames(t *testing.T, st *sqliteStore) int {
	t.Helper()
	_, logged, _, err := st.walCheckpoint(context.Background(), st.ckpt, "PASSIVE")
	if err != nil {
		t.Fatal(err)
	}
	return logged
}

func countBindings(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM bindings`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSQLiteWALRestarts: under commits that never pause, the WAL is
// written from its start again once it is long, so the file stops
// growing; nothing committed is lost by it. Before, PASSIVE checkpoints
// alone never let SQLite restart it: the same load grows it without end.
func TestSQLiteWALRestarts(t *testing.T) {
	// A second of commits is ten checkpointer rounds: restarted after
	// each, the WAL holds a tenth of what it grows to without restarts.
	never := openWALTest(t, math.MaxInt)
	m, grown := commitFor(t, never, 0, time.Second)
	st := openWALTest(t, 256)
	n, bounded := commitFor(t, st, 0, time.Second)
	t.Logf("WAL file at its largest: %d KB after %d registrations without restarts, %d KB after %d with them", grown>>10, m, bounded>>10, n)
	if bounded*3 > grown*int64(n)/int64(m) {
		t.Errorf("WAL grew to %d KB with restarts at 256 frames, %d KB without (per registration): want under a third", bounded>>10, grown>>10)
	}
	if got := countBindings(t, st.db); got != n {
		t.Errorf("%d bindings, want %d", got, n)
	}
	path := st.path
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	again, err := openSQLite(context.Background(), path, storeOptions{log: discardLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	defer again.close()
	if got := countBindings(t, again.db); got != n {
		t.Errorf("reopened: %d bindings, want %d", got, n)
	}
}

// TestSQLiteWALRestartBesideReader: a reader that holds an old snapshot
// (a long leasequery) keeps the WAL from restarting, but never holds up
// a commit; once it is done, the next restart happens.
func TestSQLiteWALRestartBesideReader(t *testing.T) {
	st := openWALTest(t, 256)
	ctx := context.Background()
	n, _ := commitFor(t, st, 0, 200*time.Millisecond)
	tx, err := st.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var before int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM bindings`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	n, _ = commitFor(t, st, n, 500*time.Millisecond) // each commit checks it took < 2 s
	held := walFrames(t, st)
	if !st.restartDue.Load() {
		t.Errorf("restart not due with %d frames in the WAL", held)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	n, _ = commitFor(t, st, n, 300*time.Millisecond)
	if f := walFrames(t, st); f >= held {
		t.Errorf("WAL holds %d frames after the reader left, %d while it read: not restarted", f, held)
	}
	if got := countBindings(t, st.db); got != n || before == 0 {
		t.Errorf("%d bindings (the reader saw %d), want %d", got, before, n)
	}
}
