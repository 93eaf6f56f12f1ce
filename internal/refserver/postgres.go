package refserver

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
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

func (s *postgresStore) commit(ctx context.Context, evs []Event, expireAt time.Time, max int) ([]Event, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("database %s: begin: %w", s.where, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, siteLock); err != nil {
		return nil, fmt.Errorf("database %s: lock: %w", s.where, err)
	}
	expired, err := commitTx(ctx, tx, pgTx{}, evs, expireAt, max, s.ret, s.dns)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", s.where, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("database %s: commit: %w", s.where, err)
	}
	return expired, nil
}

// Arrays are joined through unnest (a nested loop over the primary key or
// the duid index), not matched with = ANY($1): the statement's generic
// plan, made while the table was empty, would scan the whole table for
// each batch.

// bindingColsB is bindingCols of the table aliased b.
var bindingColsB = "b." + strings.ReplaceAll(bindingCols, ", ", ", b.")

// pgTx writes a batch with one statement per table and kind (arrays
// through unnest): a round trip costs more than a row.
type pgTx struct{}

func (pgTx) expire(ctx context.Context, tx *sql.Tx, ns int64) ([]Binding, error) {
	return queryBindingsTx(ctx, tx, `DELETE FROM bindings WHERE expires_ns IS NOT NULL AND expires_ns <= $1 RETURNING `+bindingCols, ns)
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

func (pgTx) current(ctx context.Context, tx *sql.Tx, addrs []string) (map[string]Binding, error) {
	bs, err := queryBindingsTx(ctx, tx, `SELECT `+bindingColsB+` FROM unnest($1::text[]) AS u(a) JOIN bindings b ON b.addr = u.a`, addrs)
	if err != nil {
		return nil, fmt.Errorf("read bindings: %w", err)
	}
	m := make(map[string]Binding, len(bs))
	for _, b := range bs {
		m[b.Addr.String()] = b
	}
	return m, nil
}

func (pgTx) counts(ctx context.Context, tx *sql.Tx, duids []string) (map[string]int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT u.d, (SELECT COUNT(*) FROM bindings b WHERE b.duid = u.d) FROM unnest($1::text[]) AS u(d)`, duids)
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

func (pgTx) write(ctx context.Context, tx *sql.Tx, ups []bindingRow, dels []string, hist []historyRow) error {
	if len(dels) > 0 {
		if _, err := tx.ExecContext(ctx, `DELETE FROM bindings USING unnest($1::text[]) AS u(a) WHERE bindings.addr = u.a`, dels); err != nil {
			return fmt.Errorf("delete bindings: %w", err)
		}
	}
	if len(ups) > 0 {
		n := len(ups)
		var a, p, d, i, la, ll, f = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		var fi, lt, ex, pr, va = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		for k, r := range ups {
			a[k], p[k], d[k], i[k], la[k], ll[k], f[k] = r.addr, r.prefix64, r.duid, r.iface, r.linkAddr, r.linkLayer, r.fqdn
			fi[k], lt[k], ex[k], pr[k], va[k] = r.first, r.last, r.expires, r.preferred, r.valid
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO bindings (addr, prefix64, duid, iface, link_addr, link_layer, fqdn, first_ns, last_ns, expires_ns, preferred_s, valid_s)
			SELECT a, p, d, i, la, ll, f, fi, lt, NULLIF(ex, 0), pr, va
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
				$8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[]) AS t(a, p, d, i, la, ll, f, fi, lt, ex, pr, va)
			ON CONFLICT (addr) DO UPDATE SET prefix64 = excluded.prefix64, duid = excluded.duid, iface = excluded.iface,
			link_addr = excluded.link_addr, link_layer = excluded.link_layer, fqdn = excluded.fqdn, first_ns = excluded.first_ns,
			last_ns = excluded.last_ns, expires_ns = excluded.expires_ns, preferred_s = excluded.preferred_s, valid_s = excluded.valid_s`,
			a, p, d, i, la, ll, f, fi, lt, ex, pr, va)
		if err != nil {
			return fmt.Errorf("write bindings: %w", err)
		}
	}
	if len(hist) > 0 {
		n := len(hist)
		var t, pr, va = make([]int64, n), make([]int64, n), make([]int64, n)
		var ev, d, pd, a, i, la, ll, f, r = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		for k, h := range hist {
			t[k], ev[k], d[k], pd[k], a[k], i[k], la[k], ll[k], f[k], pr[k], va[k], r[k] =
				h.time, h.event, h.duid, h.prevDUID, h.addr, h.iface, h.linkAddr, h.linkLayer, h.fqdn, h.preferred, h.valid, h.reason
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO history (`+historyCols+`)
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
				$9::text[], $10::bigint[], $11::bigint[], $12::text[])`,
			t, ev, d, pd, a, i, la, ll, f, pr, va, r)
		if err != nil {
			return fmt.Errorf("write history: %w", err)
		}
	}
	return nil
}

func (pgTx) prune(ctx context.Context, tx *sql.Tx, ret retention, now int64) error {
	return pruneHistory(ctx, func(ctx context.Context, args ...any) (sql.Result, error) {
		return tx.ExecContext(ctx, pruneBySeq, args...)
	}, func(ctx context.Context, args ...any) (sql.Result, error) {
		return tx.ExecContext(ctx, pruneByAge, args...)
	}, ret, now)
}
