package refserver

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// postgresStore keeps the bindings of every server of a site in one
// PostgreSQL database. Each commit first takes a transaction-scoped
// advisory lock (siteLock), so the servers' commits take turns: each
// decides its events from rows no other server is changing (the kind of
// a registration, the per-DUID limit), and an expired binding is deleted,
// logged and written to the history by exactly one of them. A group
// commit is a handful of statements whatever its size (arrays and
// unnest), so taking turns costs little.
type postgresStore struct {
	sqlReads
	where string // the URL without its password, for messages
	ret   retention
	dns   *dnsIntake // nil: commits write no DNS changes
}

// siteLock is the advisory lock key of a site's commits ("addrreg" in ASCII, 0x61646472726567).
const siteLock = `SELECT pg_advisory_xact_lock(27413455320540519)`

// openPostgres connects to the PostgreSQL database at url. The password
// comes from the URL, o.passwordFile, or pgx's environment (PGPASSWORD,
// PGPASSFILE, ~/.pgpass); TLS settings (sslmode, sslrootcert …) pass
// through the URL. It fails when the database cannot be reached.
func openPostgres(ctx context.Context, url string, o storeOptions) (_ *postgresStore, err error) {
	where := RedactDB(url)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database %s: %s", where, scrub(err.Error(), url))
	}
	if o.passwordFile != "" {
		b, err := os.ReadFile(o.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("database %s: password file: %w", where, err)
		}
		cfg.Password = strings.TrimRight(string(b), "\r\n")
	}
	s := &postgresStore{where: where, ret: o.ret}
	s.db = stdlib.OpenDB(*cfg)
	s.db.SetMaxOpenConns(8)
	s.db.SetMaxIdleConns(8)
	s.db.SetConnMaxIdleTime(5 * time.Minute)
	defer func() {
		if err != nil {
			s.db.Close()
		}
	}()
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := s.db.PingContext(pctx); err != nil {
		return nil, fmt.Errorf("database %s: cannot connect: %s", where, scrub(err.Error(), cfg.Password))
	}
	if o.readOnly {
		var v int
		if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v); err != nil {
			return nil, fmt.Errorf("database %s: read schema version: %w", where, err)
		}
		if v > SchemaVersion {
			return nil, fmt.Errorf("database %s: %w: schema version %d, this program knows up to %d", where, ErrSchemaNewer, v, SchemaVersion)
		}
		return s, nil
	}
	if _, err := migrate(ctx, s.db, "postgres", where, siteLock); err != nil {
		return nil, err
	}
	if o.dnsInstance != nil {
		if s.dns, err = initDNSIntake(ctx, s.db, *o.dnsInstance); err != nil {
			return nil, fmt.Errorf("database %s: %w", where, err)
		}
	}
	return s, nil
}

// scrub removes secret from msg.
func scrub(msg, secret string) string {
	if secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, secret, "xxxxx")
}

func (s *postgresStore) close() error { return s.db.Close() }

func (s *postgresStore) serverDUID(ctx context.Context, gen func() []byte) ([]byte, error) {
	return metaDUID(ctx, s.db, gen)
}

// commit runs the transaction on one connection of the pool through pgx
// itself (pgPipe), so that its statements go out pipelined: BEGIN and the
// lock with the first read, the writes, the pruning and COMMIT together.
// A batch costs two round trips (three with an expiry run) instead of one
// per statement.
func (s *postgresStore) commit(ctx context.Context, evs []Event, expireAt time.Time, max int) ([]Event, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", s.where, err)
	}
	defer conn.Close()
	var expired []Event
	err = conn.Raw(func(dc any) error {
		c := dc.(*stdlib.Conn).Conn()
		p := &pgPipe{c: c, q: &pgx.Batch{}}
		p.queue("BEGIN")
		p.queue(siteLock)
		var err error
		if expired, err = commitTx(ctx, p, evs, expireAt, max, s.ret, s.dns); err == nil {
			err = p.commit(ctx)
		}
		if err != nil {
			p.abandon()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", s.where, err)
	}
	return expired, nil
}

// pgPipe is the commit's txWriter on PostgreSQL (it holds its own
// connection, in the transaction commit began).
// Statements whose results the commit does not wait for are queued and
// go out with the next read, or with COMMIT: pgx sends a batch as one
// pipeline (one round trip), and PostgreSQL skips what follows a failed
// statement, COMMIT included, until the batch ends.
type pgPipe struct {
	c *pgx.Conn
	q *pgx.Batch
	// ahead: the DUIDs to count with the next read of the current
	// rows (countsAhead); counted: their counts, once read.
	ahead   []string
	counted map[string]int
}

func (p *pgPipe) countAhead(duids []string) { p.ahead = duids }

func (p *pgPipe) queue(q string, args ...any) { p.q.Queue(q, args...) }

// pgQuery is a statement whose rows a read waits for.
type pgQuery struct {
	q    string
	args []any
	scan func(pgx.Rows) error
}

// send sends the queued statements and then qs in one round trip, and
// calls each query's scan for each row of its result. It returns the
// command tag of the last statement.
func (p *pgPipe) send(ctx context.Context, qs ...pgQuery) (tag pgconn.CommandTag, err error) {
	b := p.q
	p.q = &pgx.Batch{}
	n := b.Len()
	for _, q := range qs {
		b.Queue(q.q, q.args...)
	}
	if b.Len() == 0 {
		return tag, nil
	}
	br := p.c.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	for range n {
		if tag, err = br.Exec(); err != nil {
			return tag, err
		}
	}
	for _, q := range qs {
		if tag, err = readRows(br, q.scan); err != nil {
			return tag, err
		}
	}
	return tag, nil
}

func readRows(br pgx.BatchResults, scan func(pgx.Rows) error) (pgconn.CommandTag, error) {
	rows, err := br.Query()
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return pgconn.CommandTag{}, err
		}
	}
	rows.Close()
	return rows.CommandTag(), rows.Err()
}

// commit sends what is queued and COMMIT.
func (p *pgPipe) commit(ctx context.Context) error {
	p.queue("COMMIT")
	tag, err := p.send(ctx)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if tag.String() != "COMMIT" {
		// PostgreSQL answers COMMIT of a failed transaction with ROLLBACK.
		return fmt.Errorf("commit: the transaction was rolled back (%s)", tag)
	}
	return nil
}

// abandon rolls back what a failed commit left open, or closes the
// connection (the pool then drops it) when that fails too.
func (p *pgPipe) abandon() {
	if p.c.IsClosed() || p.c.PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.c.Exec(ctx, "ROLLBACK"); err != nil {
		_ = p.c.Close(ctx)
	}
}

func (p *pgPipe) bindings(ctx context.Context, q string, args []any, more ...pgQuery) ([]Binding, error) {
	var out []Binding
	_, err := p.send(ctx, append([]pgQuery{{q, args, func(r pgx.Rows) error {
		b, err := scanBinding(r)
		out = append(out, b)
		return err
	}}}, more...)...)
	return out, err
}

// countQuery counts duids into m.
func countQuery(duids []string, m map[string]int) pgQuery {
	return pgQuery{pgCounts, []any{duids}, func(r pgx.Rows) error {
		var d string
		var n int
		err := r.Scan(&d, &n)
		m[d] = n
		return err
	}}
}

func (p *pgPipe) expire(ctx context.Context, ns int64) ([]Binding, error) {
	bs, err := p.bindings(ctx, pgExpire, []any{ns})
	if err != nil {
		return nil, fmt.Errorf("expire: %w", err)
	}
	return bs, nil
}

func (p *pgPipe) current(ctx context.Context, addrs []string) (map[string]Binding, error) {
	var more []pgQuery
	if len(p.ahead) > 0 {
		p.counted = make(map[string]int, len(p.ahead))
		more = append(more, countQuery(p.ahead, p.counted))
		p.ahead = nil
	}
	bs, err := p.bindings(ctx, pgCurrent, []any{addrs}, more...)
	if err != nil {
		return nil, fmt.Errorf("read bindings: %w", err)
	}
	return byAddr(bs), nil
}

func (p *pgPipe) counts(ctx context.Context, duids []string) (map[string]int, error) {
	m := make(map[string]int, len(duids))
	for _, d := range duids {
		n, ok := p.counted[d]
		if !ok {
			m = make(map[string]int, len(duids))
			break
		}
		m[d] = n
	}
	if len(m) == len(duids) {
		return m, nil // counted ahead (no write has gone out since)
	}
	_, err := p.send(ctx, countQuery(duids, m))
	if err != nil {
		return nil, fmt.Errorf("count bindings: %w", err)
	}
	return m, nil
}

func (p *pgPipe) write(_ context.Context, ups []bindingRow, dels []string, hist []historyRow) error {
	for _, st := range pgWrites(ups, dels, hist) {
		p.queue(st.q, st.args...)
	}
	return nil
}

func (p *pgPipe) prune(ctx context.Context, ret retention, now int64) error {
	q := func(stmt string) execFunc {
		return func(_ context.Context, args ...any) (sql.Result, error) {
			p.queue(stmt, args...)
			return nil, nil
		}
	}
	return pruneHistory(ctx, q(pruneBySeq), q(pruneByAge), ret, now)
}

func (p *pgPipe) intake(_ context.Context, instance string, rows []intakeRow) error {
	q, args := pgIntake(instance, rows)
	p.queue(q, args...)
	return nil
}

// Arrays are joined through unnest (a nested loop over the primary key or
// the duid index), not matched with = ANY($1): the statement's generic
// plan, made while the table was empty, would scan the whole table for
// each batch.

// bindingColsB is bindingCols of the table aliased b.
var bindingColsB = "b." + strings.ReplaceAll(bindingCols, ", ", ", b.")

// pgTx writes a batch with one statement per table and kind (arrays
// through unnest): a round trip costs more than a row.
type pgTx struct{ tx *sql.Tx }

const (
	pgExpire = `DELETE FROM bindings WHERE expires_ns IS NOT NULL AND expires_ns <= $1 RETURNING ` + bindingCols
	pgCounts = `SELECT u.d, (SELECT COUNT(*) FROM bindings b WHERE b.duid = u.d) FROM unnest($1::text[]) AS u(d)`
	pgDelete = `DELETE FROM bindings USING unnest($1::text[]) AS u(a) WHERE bindings.addr = u.a`
	pgUpsert = `INSERT INTO bindings (addr, prefix64, duid, iface, link_addr, link_layer, fqdn, first_ns, last_ns, expires_ns, preferred_s, valid_s)
			SELECT a, p, d, i, la, ll, f, fi, lt, NULLIF(ex, 0), pr, va
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
				$8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[]) AS t(a, p, d, i, la, ll, f, fi, lt, ex, pr, va)
			ON CONFLICT (addr) DO UPDATE SET prefix64 = excluded.prefix64, duid = excluded.duid, iface = excluded.iface,
			link_addr = excluded.link_addr, link_layer = excluded.link_layer, fqdn = excluded.fqdn, first_ns = excluded.first_ns,
			last_ns = excluded.last_ns, expires_ns = excluded.expires_ns, preferred_s = excluded.preferred_s, valid_s = excluded.valid_s`
	pgHistory = `INSERT INTO history (` + historyCols + `)
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
				$9::text[], $10::bigint[], $11::bigint[], $12::text[])`
)

// pgCurrent is written with bindingColsB (below).
var pgCurrent = `SELECT ` + bindingColsB + ` FROM unnest($1::text[]) AS u(a) JOIN bindings b ON b.addr = u.a`

func (t pgTx) expire(ctx context.Context, ns int64) ([]Binding, error) {
	return queryBindingsTx(ctx, t.tx, pgExpire, ns)
}

func queryBindingsTx(ctx context.Context, tx *sql.Tx, q string, args ...any) ([]Binding, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Binding
	for rows.Next() {
		b, err := scanBinding(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

func (t pgTx) current(ctx context.Context, addrs []string) (map[string]Binding, error) {
	bs, err := queryBindingsTx(ctx, t.tx, pgCurrent, addrs)
	if err != nil {
		return nil, fmt.Errorf("read bindings: %w", err)
	}
	return byAddr(bs), nil
}

func (t pgTx) counts(ctx context.Context, duids []string) (map[string]int, error) {
	rows, err := t.tx.QueryContext(ctx, pgCounts, duids)
	if err != nil {
		return nil, fmt.Errorf("count bindings: %w", err)
	}
	defer rows.Close()
	m := make(map[string]int, len(duids))
	for rows.Next() {
		var d string
		var n int
		if err := rows.Scan(&d, &n); err != nil {
			return nil, fmt.Errorf("count bindings: %w", err)
		}
		m[d] = n
	}
	return m, rows.Err()
}

func (t pgTx) write(ctx context.Context, ups []bindingRow, dels []string, hist []historyRow) error {
	for _, st := range pgWrites(ups, dels, hist) {
		if _, err := t.tx.ExecContext(ctx, st.q, st.args...); err != nil {
			return fmt.Errorf("%s: %w", st.what, err)
		}
	}
	return nil
}

// pgStmt is a statement and its arguments.
type pgStmt struct {
	what, q string
	args    []any
}

// pgWrites are the statements that write a batch: one per table and kind,
// the rows as arrays.
func pgWrites(ups []bindingRow, dels []string, hist []historyRow) []pgStmt {
	var out []pgStmt
	if len(dels) > 0 {
		out = append(out, pgStmt{"delete bindings", pgDelete, []any{dels}})
	}
	if len(ups) > 0 {
		n := len(ups)
		var a, p, d, i, la, ll, f = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		var fi, lt, ex, pr, va = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		for k, r := range ups {
			a[k], p[k], d[k], i[k], la[k], ll[k], f[k] = r.addr, r.prefix64, r.duid, r.iface, r.linkAddr, r.linkLayer, r.fqdn
			fi[k], lt[k], ex[k], pr[k], va[k] = r.first, r.last, r.expires, r.preferred, r.valid
		}
		out = append(out, pgStmt{"write bindings", pgUpsert, []any{a, p, d, i, la, ll, f, fi, lt, ex, pr, va}})
	}
	if len(hist) > 0 {
		n := len(hist)
		var t, pr, va = make([]int64, n), make([]int64, n), make([]int64, n)
		var ev, d, pd, a, i, la, ll, f, r = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		for k, h := range hist {
			t[k], ev[k], d[k], pd[k], a[k], i[k], la[k], ll[k], f[k], pr[k], va[k], r[k] =
				h.time, h.event, h.duid, h.prevDUID, h.addr, h.iface, h.linkAddr, h.linkLayer, h.fqdn, h.preferred, h.valid, h.reason
		}
		out = append(out, pgStmt{"write history", pgHistory, []any{t, ev, d, pd, a, i, la, ll, f, pr, va, r}})
	}
	return out
}

func (t pgTx) prune(ctx context.Context, ret retention, now int64) error {
	return pruneHistory(ctx, func(ctx context.Context, args ...any) (sql.Result, error) {
		return t.tx.ExecContext(ctx, pruneBySeq, args...)
	}, func(ctx context.Context, args ...any) (sql.Result, error) {
		return t.tx.ExecContext(ctx, pruneByAge, args...)
	}, ret, now)
}

// byAddr indexes bindings by their address's text.
func byAddr(bs []Binding) map[string]Binding {
	m := make(map[string]Binding, len(bs))
	for _, b := range bs {
		m[b.Addr.String()] = b
	}
	return m
}
