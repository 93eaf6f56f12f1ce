package refserver

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// reg is the registration of client n (its address and DUID end in n).
func reg(n byte) Event {
	a := cliAddr.As16()
	a[15] = n
	e := registerEvent(netip.AddrFrom16(a))
	e.Binding.DUID = []byte{0, 2, 0, 0, 0x7e, 0x99, 0, n}
	return e
}

// TestSQLiteWriterNewConnection: when database/sql replaces the writer's
// connection, the commit prepares its statements again on the new one
// (the old one's would wait for the new one's write lock, and fail).
func TestSQLiteWriterNewConnection(t *testing.T) {
	st := openWALTest(t, defaultRestartFrames)
	mustCommit(t, st, reg(1))
	first := st.raw.c
	// Expired: the next use of the pool closes the connection and
	// opens another.
	st.w.SetConnMaxLifetime(time.Nanosecond)
	time.Sleep(time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := st.commit(ctx, []Event{reg(2)}, time.Time{}, 0); err != nil {
		t.Fatal(err)
	}
	st.w.SetConnMaxLifetime(0)
	if st.raw.c == first {
		t.Fatal("the writer's connection was not replaced: the test tests nothing")
	}
	mustCommit(t, st, reg(3))
	if n := countBindings(t, st.db); n != 3 {
		t.Errorf("%d bindings, want 3", n)
	}
}

// TestSQLiteCommitFailsWhole: a commit that fails half-way (here its
// history write) changes nothing, and leaves the writer's connection out
// of the transaction for the next commit.
func TestSQLiteCommitFailsWhole(t *testing.T) {
	st := openWALTest(t, defaultRestartFrames)
	ctx := context.Background()
	mustCommit(t, st, reg(1))
	if _, err := st.w.ExecContext(ctx, `CREATE TRIGGER fail BEFORE INSERT ON history_p0 BEGIN SELECT RAISE(ABORT, 'history refused'); END`); err != nil {
		t.Fatal(err)
	}
	// The bindings are written first: the failure comes after them.
	if _, err := st.commit(ctx, []Event{reg(2), reg(3)}, time.Time{}, 0); err == nil || !strings.Contains(err.Error(), "history refused") {
		t.Fatalf("commit: %v, want the trigger's error", err)
	}
	if n := countBindings(t, st.db); n != 1 {
		t.Errorf("%d bindings after the failed commit, want 1", n)
	}
	if _, err := st.w.ExecContext(ctx, `DROP TRIGGER fail`); err != nil {
		t.Fatal(err)
	}
	mustCommit(t, st, reg(2), reg(3))
	if n := countBindings(t, st.db); n != 3 {
		t.Errorf("%d bindings, want 3", n)
	}
}
