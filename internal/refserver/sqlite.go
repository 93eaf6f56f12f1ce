package refserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ncruces/go-sqlite3"
	sqlite3driver "github.com/ncruces/go-sqlite3/driver" // database/sql driver "sqlite3", pure Go
)

// sqliteStore is the embedded default: one file, WAL journal,
// synchronous=FULL (a commit is on disk before it returns: an acknowledged
// registration survives a power cut), one writer connection, a pool of
// readers beside it (WAL lets them read while the writer commits).
type sqliteStore struct {
	sqlReads // the readers
	path     string
	w        *sql.DB // the one writer connection
	ret      retention
	dns      *dnsIntake // nil: commits write no DNS changes
	// The checkpointer copies the WAL into the database file beside the
	// writer, so that no commit waits for a checkpoint (the writer's
	// wal_autocheckpoint is off).
	ckpt *sql.DB
	// ckptMu is held by the checkpointer's passes and by restartWAL;
	// restartDue asks the writer to restart the WAL, once it holds
	// restartFrames frames; commits counts commits, so that a
	// checkpointer with nothing new to copy does nothing.
	ckptMu        sync.Mutex
	restartDue    atomic.Bool
	restartFrames int
	commits       atomic.Uint64
	stopCkpt      context.CancelFunc
	ckptDone      chan struct{}
	// raw: the commit's statements, on the writer's connection; used
	// only while that connection is held (sql.Conn.Raw).
	raw *sqliteRaw
}

// rowSizes are the numbers of rows of the writer's multi-row statements,
// largest first, down to 1.
var rowSizes = [...]int{64, 32, 16, 8, 4, 2, 1}

// sqliteURI is path as an SQLite URI filename: "%", "?" and "#" in it are
// escaped, or SQLite would read "%12" in "/tmp/loss=10%12/x.db" as a
// byte and "?" as the start of the parameters.
func sqliteURI(path string) string {
	return "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}

// writerBusyTimeout is how long (ms) a connection waits for a lock.
const writerBusyTimeout = 10000

func sqliteDSN(path string, write bool) string {
	dsn := sqliteURI(path) + "?_pragma=busy_timeout(" + strconv.Itoa(writerBusyTimeout) + ")&_pragma=foreign_keys(0)"
	if write {
		// The writer's WAL writes are gathered (sqlite_walbuf.go). Its
		// page cache is 8 MB: at the end of each transaction SQLite
		// scans the cache's hash table (pcache1TruncateUnsafe), at a
		// cost that grows with its size (32 MB: 10 % of the CPU of a
		// commit of 48 registrations; 8 MB: 4 %, and 3 % more in reads).
		// It scans the whole table, not the few slots above the database's
		// end, because a B-tree split that puts its new pages in order
		// (balance_nonroot) swaps two page numbers through the lock-byte
		// page (262,145 at 4 KB pages), which leaves that number as the
		// highest the cache has seen until the end of the transaction.
		// No setting avoids it; cache_size 2 and 4 MB, mmap_size 256 MB,
		// page_size 2 and 8 KB measured no better than this (within the
		// runs' noise, 8 %; BenchmarkStoreCommitSequential).
		return dsn + "&vfs=" + walBufVFSName + "&_pragma=journal_mode(wal)&_pragma=synchronous(full)&_pragma=wal_autocheckpoint(0)&_pragma=journal_size_limit(" + strconv.Itoa(walSizeLimit) + ")&_pragma=cache_size(-8192)&_pragma=temp_store(memory)&_txlock=immediate"
	}
	return dsn + "&_pragma=query_only(1)"
}

// openSQLite opens (or creates) the SQLite database at path, imports an
// old-format database found there, and applies the migrations it lacks.
func openSQLite(ctx context.Context, path string, o storeOptions) (_ *sqliteStore, err error) {
	if !o.readOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("create database directory for %s: %w", path, err)
		}
		if err := importLegacy(ctx, path, o); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	s := &sqliteStore{path: path, ret: o.ret, restartFrames: defaultRestartFrames}
	if o.walRestartFrames > 0 {
		s.restartFrames = o.walRestartFrames
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if !o.readOnly {
		if s.w, err = sql.Open("sqlite3", sqliteDSN(path, true)); err != nil {
			return nil, fmt.Errorf("database %s: %w", path, err)
		}
		s.w.SetMaxOpenConns(1)
		s.w.SetConnMaxIdleTime(0)
		if err := checkSQLite(ctx, s.w, path); err != nil {
			return nil, err
		}
		if _, err := migrate(ctx, s.w, "sqlite", path, ""); err != nil {
			return nil, err
		}
	}
	if s.db, err = sql.Open("sqlite3", sqliteDSN(path, false)); err != nil {
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	s.db.SetMaxOpenConns(4)
	if o.readOnly {
		if err := checkSQLite(ctx, s.db, path); err != nil {
			return nil, err
		}
		var v int
		if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v); err != nil {
			return nil, fmt.Errorf("database %s: read schema version: %w", path, err)
		}
		if v > SchemaVersion {
			return nil, fmt.Errorf("database %s: %w: schema version %d, this program knows up to %d", path, ErrSchemaNewer, v, SchemaVersion)
		}
		return s, nil
	}
	if o.dnsInstance != nil {
		if s.dns, err = initDNSIntake(ctx, s.w, *o.dnsInstance); err != nil {
			return nil, fmt.Errorf("database %s: %w", path, err)
		}
	}
	// busy_timeout 0: the checkpointer never waits in SQLite (a RESTART
	// that meets a reader gives up at once, see walRestart).
	if s.ckpt, err = sql.Open("sqlite3", sqliteURI(path)+"?_pragma=busy_timeout(0)&_pragma=synchronous(full)"); err != nil {
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	s.ckpt.SetMaxOpenConns(1)
	cctx, cancel := context.WithCancel(context.Background())
	s.stopCkpt, s.ckptDone = cancel, make(chan struct{})
	go s.checkpointer(cctx, o.log)
	return s, nil
}

// checkpointInterval is how often the checkpointer runs. Short: each
// round copies what 100 ms of commits wrote, a few milliseconds of work
// beside the writer; at one round a second (the first design) each took
// 12-16 ms at 20,000 registrations/s and the commits beside it slowed to
// 4-9 ms (make bench-server p99 at 20,000/s: 8.5-11.5 ms at 1 s, 5.9-7.4 ms
// at 250 ms, 4.8-5.6 ms at 100 ms).
const checkpointInterval = 100 * time.Millisecond

// walSizeLimit is what the WAL file is cut back to when it restarts
// (journal_size_limit) after a burst made it grow beyond. Below it the
// file keeps its size: a commit that writes into it does not extend it,
// so its fdatasync writes no inode.
const walSizeLimit = 256 << 20

// defaultRestartFrames: once the WAL holds this many frames (64 MB of 4 KB
// pages), the writer restarts it (restartWAL). Each restart holds the
// writer about 1 ms; at 20,000 registrations/s, about twice a second.
const defaultRestartFrames = 16384

// checkpointer copies what the WAL holds into the database file with
// PASSIVE checkpoints (beside the writer and the readers, waiting for
// neither), until ctx ends; and once the WAL is long, asks the writer to
// restart it.
//
// SQLite writes from the start of the WAL again only when a write
// transaction begins with every frame copied. A PASSIVE checkpoint never
// achieves that while commits go on, each adding frames while it copies:
// the WAL grew by 100 MB/s at 20,000 registrations/s (1 GB after 11 s),
// and with it every commit's fdatasync (the file grew, so the inode was
// written too) and the WAL index that every read searches. So the writer
// restarts the WAL itself, between two commits (restartWAL).
func (s *sqliteStore) checkpointer(ctx context.Context, log logger) {
	defer close(s.ckptDone)
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	failing := false
	var seen uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := s.commits.Load()
		if n == seen && !failing {
			continue // nothing committed since the last round
		}
		seen = n
		err := s.checkpoint(ctx)
		if err != nil && ctx.Err() == nil && !failing {
			log.Warn("database: checkpoint failed", "db", s.path, "err", err)
		}
		failing = err != nil
	}
}

// checkpoint runs one round: PASSIVE passes, again while the last one
// copied more than a few pages' worth of new frames (at most 4); if the
// WAL is long by then, the writer's restart is due.
func (s *sqliteStore) checkpoint(ctx context.Context) error {
	s.ckptMu.Lock()
	defer s.ckptMu.Unlock()
	prev := 0
	for range 4 {
		busy, logged, _, err := s.walCheckpoint(ctx, s.ckpt, "PASSIVE")
		if err != nil {
			return err
		}
		if logged >= s.restartFrames {
			s.restartDue.Store(true)
		}
		if busy == 0 && logged-prev <= 64 {
			break
		}
		prev = logged
	}
	return nil
}

// restartWAL runs a RESTART checkpoint on the writer's connection, between
// commits: it copies what the checkpointer's passes left and has the next
// commit write from the start of the WAL. busy_timeout 0: a reader still
// on the WAL makes it give up at once (tried again at the next commit)
// rather than hold the writer. The checkpointer must not be running
// (ckptMu): two checkpoints at once, one gives up.
func (s *sqliteStore) restartWAL(ctx context.Context, conn *sql.Conn) error {
	if !s.ckptMu.TryLock() {
		return nil
	}
	defer s.ckptMu.Unlock()
	if _, err := conn.ExecContext(ctx, `PRAGMA busy_timeout = 0`); err != nil {
		return fmt.Errorf("restart WAL: %w", err)
	}
	busy, _, _, err := s.walCheckpoint(ctx, conn, "RESTART")
	if _, err2 := conn.ExecContext(ctx, `PRAGMA busy_timeout = `+strconv.Itoa(writerBusyTimeout)); err == nil {
		err = err2
	}
	if err != nil {
		return fmt.Errorf("restart WAL: %w", err)
	}
	if busy == 0 {
		s.restartDue.Store(false)
	}
	return nil
}

// queryRower is a *sql.DB or *sql.Conn.
type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// walCheckpoint runs PRAGMA wal_checkpoint(mode) on db: busy is 1 when it
// could not finish (a reader, or another checkpoint), logged is the WAL's
// frames, done those copied.
func (s *sqliteStore) walCheckpoint(ctx context.Context, db queryRower, mode string) (busy, logged, done int, err error) {
	err = db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(`+mode+`)`).Scan(&busy, &logged, &done)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("checkpoint %s: %w", mode, err)
	}
	return busy, logged, done, nil
}

// checkSQLite refuses a file that is not an SQLite database, or one that
// holds tables but not ours.
func checkSQLite(ctx context.Context, db *sql.DB, path string) error {
	rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("database %s: %w", path, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("database %s is not an SQLite database (or is corrupt): %w", path, err)
	}
	defer rows.Close()
	var tables []string
	ours := false
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return fmt.Errorf("database %s: %w", path, err)
		}
		tables = append(tables, n)
		ours = ours || n == "schema_version"
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("database %s is not an SQLite database (or is corrupt): %w", path, err)
	}
	if len(tables) > 0 && !ours {
		return fmt.Errorf("database %s is an SQLite database of something else (tables %s), not addrreg-refserver's", path, strings.Join(tables, ", "))
	}
	return nil
}

// placeholders is n groups of k placeholders, "(?, ?), (?, ?)", or for k
// 1 "?, ?"; the nullIf-th of a group (1-based) is NULLIF(?, 0).
func placeholders(n, k int, nullIf ...int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		if k > 1 {
			b.WriteByte('(')
		}
		for j := range k {
			if j > 0 {
				b.WriteString(", ")
			}
			if len(nullIf) > 0 && j+1 == nullIf[0] {
				b.WriteString("NULLIF(?, 0)")
			} else {
				b.WriteByte('?')
			}
		}
		if k > 1 {
			b.WriteByte(')')
		}
	}
	return b.String()
}

const (
	sqliteUpsertValues = `($1, $2, $3, $4, $5, $6, $7, $8, $9, NULLIF($10, 0), $11, $12)`
	sqliteUpsert       = `INSERT INTO bindings (addr, prefix64, duid, iface, link_addr, link_layer, fqdn, first_ns, last_ns, expires_ns, preferred_s, valid_s)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULLIF($10, 0), $11, $12)
		ON CONFLICT (addr) DO UPDATE SET prefix64 = excluded.prefix64, duid = excluded.duid, iface = excluded.iface,
		link_addr = excluded.link_addr, link_layer = excluded.link_layer, fqdn = excluded.fqdn, first_ns = excluded.first_ns,
		last_ns = excluded.last_ns, expires_ns = excluded.expires_ns, preferred_s = excluded.preferred_s, valid_s = excluded.valid_s`
)

// The writer's statements. Multi-row ones have rowSizes[k] rows in the
// k-th: a batch of n rows takes one statement per set bit of n (and n/64
// of the largest), not n; each statement costs a call into SQLite, a reset
// and its bindings.
func sqliteCurrent(n int) string {
	return `SELECT ` + bindingCols + ` FROM bindings WHERE addr IN (` + placeholders(n, 1) + `)`
}

func sqliteCount(n int) string {
	return `SELECT duid, COUNT(*) FROM bindings WHERE duid IN (` + placeholders(n, 1) + `) GROUP BY duid`
}

func sqliteUpserts(n int) string {
	return strings.Replace(sqliteUpsert, sqliteUpsertValues, placeholders(n, 12, 10), 1)
}

const (
	sqliteExpire = `DELETE FROM bindings WHERE expires_ns IS NOT NULL AND expires_ns <= $1 RETURNING ` + bindingCols
	sqliteDelete = `DELETE FROM bindings WHERE addr = $1`
)

func (s *sqliteStore) close() error {
	var errs []error
	if s.stopCkpt != nil {
		s.stopCkpt()
		<-s.ckptDone
		errs = append(errs, s.ckpt.Close())
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
	}
	if s.w != nil {
		if s.raw != nil {
			// SQLite does not close a connection with statements
			// left open.
			errs = append(errs, s.onRaw(context.Background(), s.dropRaw))
		}
		errs = append(errs, s.w.Close())
	}
	return errors.Join(errs...)
}

// dropRaw finalizes the commit's statements; c is the writer's connection
// now (held). When database/sql has replaced the one they were prepared
// on (it keeps none open beside the writer's one), it closed that one, but
// SQLite kept it open for the statements left on it: closed here.
func (s *sqliteStore) dropRaw(c *sqlite3.Conn) error {
	err := s.raw.close()
	if s.raw.c != c {
		err = errors.Join(err, s.raw.c.Close())
	}
	s.raw = nil
	return err
}

// onRaw runs f on the writer's SQLite connection, held for it.
func (s *sqliteStore) onRaw(ctx context.Context, f func(c *sqlite3.Conn) error) error {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error { return f(dc.(sqlite3driver.Conn).Raw()) })
}

func (s *sqliteStore) serverDUID(ctx context.Context, gen func() []byte) ([]byte, error) {
	return metaDUID(ctx, s.w, gen)
}

// commit runs the transaction on the writer's SQLite connection itself
// (sqliteRaw), past database/sql: at 20,000 registrations/s the writer is
// busy nearly all the time, and database/sql's locks, argument
// conversions, statement lookups and row scans were most of its time
// outside SQLite (BenchmarkStoreCommitSeq batch=48: 22 -> 16 CPU-µs and
// 31 -> 12 allocations per registration).
func (s *sqliteStore) commit(ctx context.Context, evs []Event, expireAt time.Time, max int) ([]Event, error) {
	defer s.commits.Add(1)
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", s.path, err)
	}
	defer conn.Close()
	if s.restartDue.Load() {
		if err := s.restartWAL(ctx, conn); err != nil {
			return nil, fmt.Errorf("database %s: %w", s.path, err)
		}
	}
	var expired []Event
	err = conn.Raw(func(dc any) error {
		c := dc.(sqlite3driver.Conn).Raw()
		if s.raw != nil && s.raw.c != c {
			_ = s.dropRaw(c)
		}
		if s.raw == nil {
			w, err := prepareRaw(c)
			if err != nil {
				return err
			}
			s.raw = w
		}
		if old := c.SetInterrupt(ctx); old != ctx {
			defer c.SetInterrupt(old)
		}
		if err := c.Exec(`BEGIN IMMEDIATE`); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		var err error
		if expired, err = commitTx(ctx, s.raw, evs, expireAt, max, s.ret, s.dns); err != nil {
			s.raw.rollback()
			return err
		}
		if err := c.Exec(`COMMIT`); err != nil {
			if !c.GetAutocommit() {
				s.raw.rollback()
			}
			return fmt.Errorf("commit: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", s.path, err)
	}
	return expired, nil
}

// sqliteRaw is the commit's txWriter on SQLite: statements prepared once
// on the writer's connection, bound and stepped directly, in the
// transaction commit began.
type sqliteRaw struct {
	c *sqlite3.Conn
	// hs is history_state as the commit's write read it, for its prune
	// (hsRead).
	hs     histState
	hsRead bool
	st     struct {
		expire, del, intake, histState, loadHistState *rawStmt
		current, count, upsert                        [len(rowSizes)]*rawStmt
		hist                                          [histParts][len(rowSizes)]*rawStmt
	}
}

// rawStmt is a statement and what its parameters hold: SQLite keeps them
// from one execution to the next, so a parameter that gets the value it
// holds is not bound again (each text bound is copied into SQLite's
// memory). Its parameters are bound only through a binder.
type rawStmt struct {
	s     *sqlite3.Stmt
	bound []boundValue // the p-th parameter's in [p-1]
}

type boundValue struct {
	kind uint8 // 0: not known, boundText, boundInt
	text string
	int  int64
}

const (
	boundText = 1 + iota
	boundInt
)

// prepareRaw prepares the writer's statements on c.
func prepareRaw(c *sqlite3.Conn) (*sqliteRaw, error) {
	w := &sqliteRaw{c: c}
	var errs []error
	p := func(dst **rawStmt, q string) {
		st, _, err := c.Prepare(q)
		if err != nil {
			errs = append(errs, fmt.Errorf("prepare %q: %w", q, err))
			return
		}
		*dst = &rawStmt{s: st, bound: make([]boundValue, st.BindCount())}
	}
	p(&w.st.expire, sqliteExpire)
	p(&w.st.del, sqliteDelete)
	p(&w.st.intake, sqliteIntake)
	p(&w.st.histState, sqliteSaveHistState)
	p(&w.st.loadHistState, sqliteLoadHistState)
	for k, n := range rowSizes {
		p(&w.st.current[k], sqliteCurrent(n))
		p(&w.st.count[k], sqliteCount(n))
		p(&w.st.upsert[k], sqliteUpserts(n))
	}
	if err := errors.Join(errs...); err != nil {
		w.close()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	return w, nil
}

// close finalizes the statements.
func (w *sqliteRaw) close() error {
	sts := []*rawStmt{w.st.expire, w.st.del, w.st.intake, w.st.histState, w.st.loadHistState}
	for k := range rowSizes {
		sts = append(sts, w.st.current[k], w.st.count[k], w.st.upsert[k])
		for part := range histParts {
			sts = append(sts, w.st.hist[part][k])
		}
	}
	var errs []error
	for _, st := range sts {
		if st != nil {
			errs = append(errs, st.s.Close())
		}
	}
	return errors.Join(errs...)
}

// rollback rolls back the transaction commit began, even with the
// commit's context done (as database/sql's Tx.Rollback).
func (w *sqliteRaw) rollback() {
	ctx := context.Background()
	if old := w.c.SetInterrupt(ctx); old != ctx {
		defer w.c.SetInterrupt(old)
	}
	_ = w.c.Exec(`ROLLBACK`)
}

// binder binds a statement's parameters, keeping the first error.
type binder struct {
	st  *rawStmt
	err error
}

func (b *binder) text(p int, v string) {
	if b.err != nil {
		return
	}
	h := &b.st.bound[p-1]
	if h.kind == boundText && h.text == v {
		return
	}
	if b.err = b.st.s.BindText(p, v); b.err != nil {
		*h = boundValue{}
		return
	}
	*h = boundValue{kind: boundText, text: v}
}

func (b *binder) int64(p int, v int64) {
	if b.err != nil {
		return
	}
	h := &b.st.bound[p-1]
	if h.kind == boundInt && h.int == v {
		return
	}
	if b.err = b.st.s.BindInt64(p, v); b.err != nil {
		*h = boundValue{}
		return
	}
	*h = boundValue{kind: boundInt, int: v}
}

// rawBinding reads a row of bindingCols; addr is its address's text.
func rawBinding(st *sqlite3.Stmt) (b Binding, addr string, err error) {
	addr = st.ColumnText(0)
	b.Iface, b.FQDN = st.ColumnText(2), st.ColumnText(5)
	var exp sql.NullInt64
	if exp.Valid = st.ColumnType(8) != sqlite3.NULL; exp.Valid { // the type first: a conversion changes it
		exp.Int64 = st.ColumnInt64(8)
	}
	err = b.fromColumns(addr, st.ColumnText(1), st.ColumnText(3), st.ColumnText(4),
		st.ColumnInt64(6), st.ColumnInt64(7), exp, st.ColumnInt64(9), st.ColumnInt64(10))
	return b, addr, err
}

func (w *sqliteRaw) expire(_ context.Context, ns int64) ([]Binding, error) {
	b := binder{st: w.st.expire}
	b.int64(1, ns)
	st, err := b.st.s, b.err
	var out []Binding
	for err == nil && st.Step() {
		var b Binding
		b, _, err = rawBinding(st)
		out = append(out, b)
	}
	if rerr := st.Reset(); err == nil {
		err = rerr
	}
	if err != nil {
		return nil, fmt.Errorf("expire: %w", err)
	}
	return out, nil
}

func (w *sqliteRaw) current(_ context.Context, addrs []string) (map[string]Binding, error) {
	m := make(map[string]Binding, len(addrs))
	err := w.query(&w.st.current, addrs, func(st *sqlite3.Stmt) error {
		// The address as written (Addr.String()): what it was found by.
		b, a, err := rawBinding(st)
		if err == nil {
			m[a] = b
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read bindings: %w", err)
	}
	return m, nil
}

func (w *sqliteRaw) counts(_ context.Context, duids []string) (map[string]int, error) {
	m := make(map[string]int, len(duids)) // a DUID without bindings has no row: 0
	err := w.query(&w.st.count, duids, func(st *sqlite3.Stmt) error {
		m[st.ColumnText(0)] = st.ColumnInt(1)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count bindings: %w", err)
	}
	return m, nil
}

// chunks calls run for the rows [i, i+rowSizes[k]) that cover n rows with
// the fewest statements: the largest size as often as it fits, then at
// most one of each smaller size (the bits of the rest).
func chunks(n int, run func(k, i int) error) error {
	i := 0
	for k, size := range rowSizes {
		for n-i >= size {
			if err := run(k, i); err != nil {
				return err
			}
			i += size
		}
	}
	return nil
}

// query runs the multi-row statements sts over keys, one parameter each,
// calling scan for each result row.
func (w *sqliteRaw) query(sts *[len(rowSizes)]*rawStmt, keys []string, scan func(*sqlite3.Stmt) error) error {
	return chunks(len(keys), func(k, i int) error {
		b := binder{st: sts[k]}
		for j := range rowSizes[k] {
			b.text(j+1, keys[i+j])
		}
		st, err := b.st.s, b.err
		for err == nil && st.Step() {
			err = scan(st)
		}
		if rerr := st.Reset(); err == nil {
			err = rerr
		}
		return err
	})
}

// exec runs the multi-row statements sts over n rows of cols parameters,
// bind binding row i's from parameter p on.
func (w *sqliteRaw) exec(sts *[len(rowSizes)]*rawStmt, n, cols int, bind func(b *binder, p, i int)) error {
	return chunks(n, func(k, i int) error {
		b := binder{st: sts[k]}
		for j := range rowSizes[k] {
			bind(&b, j*cols+1, i+j)
		}
		if b.err != nil {
			return b.err
		}
		return b.st.s.Exec()
	})
}

func (w *sqliteRaw) write(_ context.Context, ups []bindingRow, dels []string, hist []historyRow) error {
	for _, a := range dels {
		b := binder{st: w.st.del}
		b.text(1, a)
		err := b.err
		if err == nil {
			err = b.st.s.Exec()
		}
		if err != nil {
			return fmt.Errorf("delete binding %s: %w", a, err)
		}
	}
	if len(ups) > 0 {
		err := w.exec(&w.st.upsert, len(ups), 12, func(b *binder, p, i int) {
			r := &ups[i]
			b.text(p, r.addr)
			b.text(p+1, r.prefix64)
			b.text(p+2, r.duid)
			b.text(p+3, r.iface)
			b.text(p+4, r.linkAddr)
			b.text(p+5, r.linkLayer)
			b.text(p+6, r.fqdn)
			b.int64(p+7, r.first)
			b.int64(p+8, r.last)
			b.int64(p+9, r.expires)
			b.int64(p+10, r.preferred)
			b.int64(p+11, r.valid)
		})
		if err != nil {
			return fmt.Errorf("write bindings: %w", err)
		}
	}
	if len(hist) > 0 {
		hs, err := w.histState(true)
		if err != nil {
			return err
		}
		sts := &w.st.hist[hs.cur]
		if sts[0] == nil {
			// Prepared at the partition's first use: 21 partitions'
			// statements at open took long and much memory.
			if err := w.prepareHist(hs.cur); err != nil {
				return err
			}
		}
		seq := hs.next
		err = w.exec(sts, len(hist), 13, func(b *binder, p, i int) {
			h := &hist[i]
			b.int64(p, seq+int64(i))
			b.int64(p+1, h.time)
			b.text(p+2, h.event)
			b.text(p+3, h.duid)
			b.text(p+4, h.prevDUID)
			b.text(p+5, h.addr)
			b.text(p+6, h.iface)
			b.text(p+7, h.linkAddr)
			b.text(p+8, h.linkLayer)
			b.text(p+9, h.fqdn)
			b.int64(p+10, h.preferred)
			b.int64(p+11, h.valid)
			b.text(p+12, h.reason)
		})
		if err != nil {
			return fmt.Errorf("write history: %w", err)
		}
		hs.added(hist)
	}
	return nil
}

// prepareHist prepares the inserts into partition part.
func (w *sqliteRaw) prepareHist(part int) error {
	for k, n := range rowSizes {
		q := sqliteHistoryInto(part, n)
		st, _, err := w.c.Prepare(q)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", q, err)
		}
		w.st.hist[part][k] = &rawStmt{s: st, bound: make([]boundValue, st.BindCount())}
	}
	return nil
}

// histState is history_state as this transaction has it: read again
// for each commit's write (another process's server may have written
// since; reading the one row is a page already in the cache), and by its
// prune unless the write just did.
func (w *sqliteRaw) histState(write bool) (*histState, error) {
	if write || !w.hsRead {
		s, err := loadHistState(w)
		if err != nil {
			return nil, err
		}
		w.hs, w.hsRead = s, true
	}
	return &w.hs, nil
}

func (w *sqliteRaw) prune(_ context.Context, ret retention, now int64) error {
	hs, err := w.histState(false)
	if err != nil {
		return err
	}
	w.hsRead = false
	if err := hs.retain(w, ret, now); err != nil {
		return err
	}
	return w.saveState(hs)
}

func (w *sqliteRaw) ints(q string, dst ...*int64) error {
	var st *sqlite3.Stmt
	if q == sqliteLoadHistState {
		st = w.st.loadHistState.s
	} else {
		var err error
		if st, _, err = w.c.Prepare(q); err != nil {
			return err
		}
		defer st.Close()
	}
	if !st.Step() {
		err := st.Err()
		if rerr := st.Reset(); err == nil {
			err = rerr
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("%s: no row", q)
	}
	for i, d := range dst {
		*d = st.ColumnInt64(i)
	}
	return st.Reset()
}

func (w *sqliteRaw) execSQL(q string) error { return w.c.Exec(q) }

func (w *sqliteRaw) saveState(s *histState) error {
	b := binder{st: w.st.histState}
	b.int64(1, s.floorSeq)
	b.int64(2, s.floorTime)
	b.int64(3, s.next)
	b.int64(4, int64(s.cur))
	b.int64(5, s.curRows)
	b.int64(6, s.curMin)
	if b.err != nil {
		return fmt.Errorf("write history state: %w", b.err)
	}
	if err := b.st.s.Exec(); err != nil {
		return fmt.Errorf("write history state: %w", err)
	}
	return nil
}

// sqliteTx writes rows through database/sql in tx, on the writer's pool:
// the DNS journal's history and the import (the history with multi-row
// inserts, the rest one row per statement, prepared in tx).
type sqliteTx struct {
	tx *sql.Tx
}

// exec runs the one-row statement q, prepared in tx, over n rows'
// arguments.
func (t sqliteTx) exec(ctx context.Context, q string, n int, args func(i int, a []any) []any) error {
	a := make([]any, 0, 12)
	one, err := t.tx.PrepareContext(ctx, q)
	if err != nil {
		return err
	}
	defer one.Close()
	for i := range n {
		if _, err := one.ExecContext(ctx, args(i, a[:0])...); err != nil {
			return err
		}
	}
	return nil
}

func (t sqliteTx) write(ctx context.Context, ups []bindingRow, dels []string, hist []historyRow) error {
	if len(dels) > 0 {
		err := t.exec(ctx, sqliteDelete, len(dels), func(i int, a []any) []any { return append(a, dels[i]) })
		if err != nil {
			return fmt.Errorf("delete bindings: %w", err)
		}
	}
	if len(ups) > 0 {
		err := t.exec(ctx, sqliteUpsert, len(ups), func(i int, a []any) []any {
			r := &ups[i]
			return append(a, r.addr, r.prefix64, r.duid, r.iface, r.linkAddr, r.linkLayer, r.fqdn,
				r.first, r.last, r.expires, r.preferred, r.valid)
		})
		if err != nil {
			return fmt.Errorf("write bindings: %w", err)
		}
	}
	if len(hist) > 0 {
		h := txHist{ctx, t.tx}
		hs, err := loadHistState(h)
		if err != nil {
			return err
		}
		// The multi-row inserts, prepared in tx as needed.
		var sts [len(rowSizes)]*sql.Stmt
		defer func() {
			for _, st := range sts {
				if st != nil {
					st.Close()
				}
			}
		}()
		a := make([]any, 0, rowSizes[0]*13)
		err = chunks(len(hist), func(k, i int) error {
			if sts[k] == nil {
				st, err := t.tx.PrepareContext(ctx, sqliteHistoryInto(hs.cur, rowSizes[k]))
				if err != nil {
					return err
				}
				sts[k] = st
			}
			a = a[:0]
			for j := i; j < i+rowSizes[k]; j++ {
				h := &hist[j]
				a = append(a, hs.next+int64(j), h.time, h.event, h.duid, h.prevDUID, h.addr, h.iface, h.linkAddr, h.linkLayer,
					h.fqdn, h.preferred, h.valid, h.reason)
			}
			_, err := sts[k].ExecContext(ctx, a...)
			return err
		})
		if err != nil {
			return fmt.Errorf("write history: %w", err)
		}
		hs.added(hist)
		return h.saveState(&hs)
	}
	return nil
}

func (t sqliteTx) prune(ctx context.Context, ret retention, now int64) error {
	h := txHist{ctx, t.tx}
	hs, err := loadHistState(h)
	if err != nil {
		return err
	}
	if err := hs.retain(h, ret, now); err != nil {
		return err
	}
	return h.saveState(&hs)
}

// txHist is a histDB on a database/sql transaction.
type txHist struct {
	ctx context.Context
	tx  *sql.Tx
}

func (h txHist) ints(q string, dst ...*int64) error {
	a := make([]any, len(dst))
	for i, d := range dst {
		a[i] = d
	}
	return h.tx.QueryRowContext(h.ctx, q).Scan(a...)
}

func (h txHist) execSQL(q string) error {
	_, err := h.tx.ExecContext(h.ctx, q)
	return err
}

func (h txHist) saveState(s *histState) error {
	_, err := h.tx.ExecContext(h.ctx, sqliteSaveHistState, s.floorSeq, s.floorTime, s.next, s.cur, s.curRows, s.curMin)
	if err != nil {
		return fmt.Errorf("write history state: %w", err)
	}
	return nil
}

const (
	pruneBySeq = `DELETE FROM history WHERE seq <= (SELECT MAX(seq) FROM history) - $1`
	pruneByAge = `DELETE FROM history WHERE time_ns < $1`
)

type execFunc func(ctx context.Context, args ...any) (sql.Result, error)

// pruneHistory keeps the newest ret.max records (0: HistoryCap) and none
// older than ret.maxAge.
func pruneHistory(ctx context.Context, bySeq, byAge execFunc, ret retention, now int64) error {
	limit := ret.max
	if limit == 0 {
		limit = HistoryCap
	}
	if limit < math.MaxInt64 {
		if _, err := bySeq(ctx, int64(limit)); err != nil {
			return fmt.Errorf("prune history: %w", err)
		}
	}
	if ret.maxAge > 0 {
		if _, err := byAge(ctx, now-int64(ret.maxAge)); err != nil {
			return fmt.Errorf("prune history: %w", err)
		}
	}
	return nil
}

// OldFormatSuffix is added to the database path to name the directory
// where an imported old-format database is kept (its files under their
// own names).
const OldFormatSuffix = ".old-format"

// importLegacy imports the old-format database at path (legacy.go), if
// that is what is there, into a new SQLite database that then takes its
// place; the old files are kept in path+OldFormatSuffix. A crash before
// the new file is renamed into place leaves the old one there, imported
// again at the next start; after it, leftovers are removed.
func importLegacy(ctx context.Context, path string, o storeOptions) error {
	aside := path + OldFormatSuffix
	if !isLegacy(path) {
		if _, err := os.Stat(aside); err == nil {
			// Renamed into place, leftovers not yet removed.
			removeLegacyLeftovers(path)
		}
		return nil
	}
	old, err := readLegacy(path)
	if err != nil {
		return err
	}
	tmp := path + ".importing"
	for _, f := range []string{tmp, tmp + "-wal", tmp + "-shm"} {
		_ = os.Remove(f)
	}
	_ = os.RemoveAll(aside)
	db, err := sql.Open("sqlite3", sqliteDSN(tmp, true))
	if err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	err = func() error {
		if _, err := migrate(ctx, db, "sqlite", tmp, ""); err != nil {
			return err
		}
		if err := importLegacyInto(ctx, db, (&sqliteStore{}).txw, old); err != nil {
			return err
		}
		// One file again, so that the rename moves everything.
		_, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
		return err
	}()
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("import old database %s: %w", path, err)
	}
	if err := os.Mkdir(aside, 0o750); err != nil {
		return fmt.Errorf("import old database %s: %w", path, err)
	}
	for _, f := range old.files {
		if err := os.Link(f, filepath.Join(aside, filepath.Base(f))); err != nil {
			return fmt.Errorf("import old database %s: keep %s: %w", path, f, err)
		}
	}
	if err := syncDir(aside); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("import old database %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	removeLegacyLeftovers(path)
	o.log.Warn("database: imported the old-format database into SQLite; the old files are kept aside",
		"db", path, "bindings", len(old.bindings), "history", len(old.history), "old_files", aside)
	return nil
}

func removeLegacyLeftovers(path string) {
	segs, _ := filepath.Glob(path + ".wal.*")
	for _, f := range append(segs, path+".lock", path+".importing-wal", path+".importing-shm") {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			continue
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
