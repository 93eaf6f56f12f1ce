package refserver

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// HistoryRecord is one registration event as stored in the database.
type HistoryRecord struct {
	Seq       uint64           `json:"seq"`
	Time      time.Time        `json:"time"`
	Event     string           `json:"event"`
	DUID      []byte           `json:"duid,omitempty"`
	PrevDUID  []byte           `json:"prev_duid,omitempty"`
	Addr      netip.Addr       `json:"addr,omitzero"`
	Iface     string           `json:"iface,omitempty"`
	LinkAddr  netip.Addr       `json:"link_addr,omitzero"`
	LinkLayer net.HardwareAddr `json:"link_layer,omitzero"`
	FQDN      string           `json:"fqdn,omitempty"`
	Preferred time.Duration    `json:"preferred,omitempty"`
	Valid     time.Duration    `json:"valid,omitempty"`
	Reason    string           `json:"reason,omitempty"`
}

// storage is the database behind a Server: one interface, two
// implementations on one schema (sqlite.go, postgres.go; the schema is
// in the package doc and migrations/). Every method may be called from any
// goroutine; commit is called by the one writer.
type storage interface {
	// commit applies evs (the handler's durable events and rejects, in
	// order) and, when expireAt is set, removes the bindings expired by
	// then, in one transaction. It decides each event from the database,
	// not from the caller's memory: the kind (register, refresh, move),
	// the previous holder, the first-registered time, and the per-DUID
	// limit (max) are rewritten in evs; an event over the limit becomes a
	// reject (ErrTooManyBindings) whose reply must not be sent. It returns
	// the expire events it committed. Nothing is changed when it fails.
	commit(ctx context.Context, evs []Event, expireAt time.Time, max int) ([]Event, error)
	serverDUID(ctx context.Context, gen func() []byte) ([]byte, error)
	bindingSource
	bindings(ctx context.Context) ([]Binding, error)
	nextExpiry(ctx context.Context) (time.Time, bool, error)
	history(ctx context.Context, q HistoryQuery) ([]HistoryRecord, error)
	close() error
	// For the DNS journal (dnsjournal.go): the pool that writes, a
	// writer of rows in a transaction on it, the history's retention.
	writeDB() *sql.DB
	txw(tx *sql.Tx) rowWriter
	retention() retention
}

// bindingSource is what leasequery reads (leasequery.go): the Handler's
// own table, or the database so that every server of a site answers for
// all of them.
type bindingSource interface {
	byAddr(ctx context.Context, a netip.Addr) (Binding, bool, error)
	byDUID(ctx context.Context, duid []byte) ([]Binding, error)
	all(ctx context.Context) ([]Binding, error)
	// linkKnown: a binding was registered through relay link-address la,
	// or holds an address in la's /64.
	linkKnown(ctx context.Context, la netip.Addr) (bool, error)
}

// SchemaVersion is the number of the newest migration this server knows.
var SchemaVersion = func() int {
	n, _ := migrationList("sqlite")
	return len(n)
}()

//go:embed migrations
var migrationFS embed.FS

// migration is one numbered SQL file of migrations/DIALECT/.
type migration struct {
	version int
	name    string
	sql     string
}

func migrationList(dialect string) ([]migration, error) {
	dir := "migrations/" + dialect
	ents, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range ents {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration %s: want NNNN_name.sql", e.Name())
		}
		b, err := fs.ReadFile(migrationFS, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: want number %d", m.name, i+1)
		}
	}
	return ms, nil
}

// ErrSchemaNewer: the database was written by a newer server.
var ErrSchemaNewer = errors.New("database schema is newer than this server")

// migrate applies the migrations the database lacks, each in its own
// transaction with its row in schema_version. lock, when set, is run first
// in each transaction (PostgreSQL: servers starting together take turns).
func migrate(ctx context.Context, db *sql.DB, dialect, where string, lock string) (int, error) {
	ms, err := migrationList(dialect)
	if err != nil {
		return 0, err
	}
	create := `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ns BIGINT NOT NULL)`
	if _, err := db.ExecContext(ctx, create); err != nil {
		return 0, fmt.Errorf("database %s: create schema_version: %w", where, err)
	}
	applied := 0
	for {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return applied, fmt.Errorf("database %s: %w", where, err)
		}
		if lock != "" {
			if _, err := tx.ExecContext(ctx, lock); err != nil {
				tx.Rollback()
				return applied, fmt.Errorf("database %s: lock for migration: %w", where, err)
			}
		}
		var cur int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&cur); err != nil {
			tx.Rollback()
			return applied, fmt.Errorf("database %s: read schema version: %w", where, err)
		}
		if cur > len(ms) {
			tx.Rollback()
			return applied, fmt.Errorf("database %s: %w: schema version %d, this server knows up to %d (upgrade the server)", where, ErrSchemaNewer, cur, len(ms))
		}
		if cur == len(ms) {
			tx.Rollback()
			return applied, nil
		}
		m := ms[cur]
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			tx.Rollback()
			return applied, fmt.Errorf("database %s: migration %s: %w", where, m.name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, name, applied_ns) VALUES ($1, $2, $3)`, m.version, m.name, time.Now().UnixNano()); err != nil {
			tx.Rollback()
			return applied, fmt.Errorf("database %s: migration %s: %w", where, m.name, err)
		}
		if err := tx.Commit(); err != nil {
			return applied, fmt.Errorf("database %s: migration %s: commit: %w", where, m.name, err)
		}
		applied++
	}
}

// isPostgres reports whether db (Config.DBPath) names a PostgreSQL
// database rather than an SQLite file.
func isPostgres(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// RedactDB returns db fit for a log line or an error: a PostgreSQL URL
// without its password (in the user part or a password parameter).
func RedactDB(db string) string {
	if !isPostgres(db) {
		return db
	}
	u, err := url.Parse(db)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// storeOptions is what opening a store needs besides the database name.
type storeOptions struct {
	passwordFile string // PostgreSQL: a file holding the password
	ret          retention
	readOnly     bool // a reader (history --db): no migration, no import
	// dnsInstance, when set, makes commits write the DNS changes of their
	// events to ddns_intake for that instance (Config.DNSJournal).
	dnsInstance *string
	log         logger
	// walRestartFrames (SQLite): the WAL's length in frames at which the
	// writer restarts it; 0: defaultRestartFrames (tests set less).
	walRestartFrames int
}

type logger interface {
	Info(msg string, args ...any)
	Warn(msg string, args ...any)
}

// openStorage opens the database db names: a PostgreSQL URL, else an
// SQLite file path (created if missing; an old-format database there is
// imported first, legacy.go).
func openStorage(ctx context.Context, db string, o storeOptions) (storage, error) {
	if o.log == nil {
		o.log = discardLogger{}
	}
	if isPostgres(db) {
		return openPostgres(ctx, db, o)
	}
	return openSQLite(ctx, db, o)
}

// The SQL shared by both backends. Placeholders are $N, numbered in order
// of first use: PostgreSQL's, and SQLite binds them by position too.

const bindingCols = `addr, duid, iface, link_addr, link_layer, fqdn, first_ns, last_ns, expires_ns, preferred_s, valid_s`

const historyCols = `time_ns, event, duid, prev_duid, addr, iface, link_addr, link_layer, fqdn, preferred_s, valid_s, reason`

type scanner interface{ Scan(dest ...any) error }

func scanBinding(r scanner) (Binding, error) {
	var addr, duid, la, ll string
	var b Binding
	var first, last int64
	var exp sql.NullInt64
	var pref, valid int64
	if err := r.Scan(&addr, &duid, &b.Iface, &la, &ll, &b.FQDN, &first, &last, &exp, &pref, &valid); err != nil {
		return b, err
	}
	err := b.fromColumns(addr, duid, la, ll, first, last, exp, pref, valid)
	return b, err
}

// fromColumns sets b from bindingCols' values (Iface and FQDN are taken
// as they are, by the caller).
func (b *Binding) fromColumns(addr, duid, la, ll string, first, last int64, exp sql.NullInt64, pref, valid int64) error {
	var err error
	if b.Addr, err = netip.ParseAddr(addr); err != nil {
		return fmt.Errorf("binding address %q: %w", addr, err)
	}
	if b.DUID, err = hex.DecodeString(duid); err != nil {
		return fmt.Errorf("binding %s: DUID %q: %w", addr, duid, err)
	}
	if la != "" {
		b.LinkAddr, _ = netip.ParseAddr(la)
	}
	if ll != "" {
		b.LinkLayer, _ = net.ParseMAC(ll)
	}
	b.First, b.Last = time.Unix(0, first).UTC(), time.Unix(0, last).UTC()
	if exp.Valid {
		b.Expires = time.Unix(0, exp.Int64).UTC()
	}
	b.Preferred, b.Valid = time.Duration(pref)*time.Second, time.Duration(valid)*time.Second
	return nil
}

// bindingRow is a binding as its columns' values.
type bindingRow struct {
	addr, prefix64, duid, iface, linkAddr, linkLayer, fqdn string
	first, last, expires                                   int64 // expires 0: never (NULL)
	preferred, valid                                       int64
}

func rowOf(b *Binding) bindingRow {
	return rowOfAt(b, b.Addr.String())
}

// rowOfAt is rowOf for a binding whose address's text is addr.
func rowOfAt(b *Binding, addr string) bindingRow {
	p, _ := b.Addr.Prefix(64)
	r := bindingRow{addr: addr, prefix64: p.String(), duid: hex.EncodeToString(b.DUID), iface: b.Iface,
		fqdn: b.FQDN, first: b.First.UnixNano(), last: b.Last.UnixNano(),
		preferred: int64(b.Preferred / time.Second), valid: int64(b.Valid / time.Second)}
	if b.LinkAddr.IsValid() {
		r.linkAddr = b.LinkAddr.String()
	}
	if len(b.LinkLayer) > 0 {
		r.linkLayer = b.LinkLayer.String()
	}
	if !b.Expires.IsZero() {
		r.expires = b.Expires.UnixNano()
	}
	return r
}

// historyRow is a history record as its columns' values.
type historyRow struct {
	time                                                                  int64
	event, duid, prevDUID, addr, iface, linkAddr, linkLayer, fqdn, reason string
	preferred, valid                                                      int64
}

func historyRowOf(e *Event) historyRow {
	var addr string
	if e.Binding.Addr.IsValid() {
		addr = e.Binding.Addr.String()
	}
	return historyRowOfAt(e, addr, hex.EncodeToString(e.Binding.DUID))
}

// historyRowOfAt is historyRowOf for an event whose address's text is addr
// and DUID's duid.
func historyRowOfAt(e *Event, addr, duid string) historyRow {
	b := &e.Binding
	r := historyRow{time: e.Time.UnixNano(), event: e.Kind.String(), duid: duid, addr: addr,
		prevDUID: hex.EncodeToString(e.PrevDUID), iface: b.Iface, fqdn: b.FQDN, reason: e.Reason,
		preferred: int64(b.Preferred / time.Second), valid: int64(b.Valid / time.Second)}
	if b.LinkAddr.IsValid() {
		r.linkAddr = b.LinkAddr.String()
	}
	if len(b.LinkLayer) > 0 {
		r.linkLayer = b.LinkLayer.String()
	}
	return r
}

func scanHistory(r scanner) (HistoryRecord, error) {
	var h HistoryRecord
	var t, pref, valid int64
	var duid, prev, addr, la, ll string
	if err := r.Scan(&h.Seq, &t, &h.Event, &duid, &prev, &addr, &h.Iface, &la, &ll, &h.FQDN, &pref, &valid, &h.Reason); err != nil {
		return h, err
	}
	h.Time = time.Unix(0, t).UTC()
	h.DUID, _ = hex.DecodeString(duid)
	h.PrevDUID, _ = hex.DecodeString(prev)
	if len(h.DUID) == 0 {
		h.DUID = nil
	}
	if len(h.PrevDUID) == 0 {
		h.PrevDUID = nil
	}
	if addr != "" {
		h.Addr, _ = netip.ParseAddr(addr)
	}
	if la != "" {
		h.LinkAddr, _ = netip.ParseAddr(la)
	}
	if ll != "" {
		h.LinkLayer, _ = net.ParseMAC(ll)
	}
	h.Preferred, h.Valid = time.Duration(pref)*time.Second, time.Duration(valid)*time.Second
	return h, nil
}

// sqlReads are the queries both backends answer alike, on db (SQLite: the
// pool of readers; PostgreSQL: the one pool).
type sqlReads struct{ db *sql.DB }

func (s sqlReads) queryBindings(ctx context.Context, where string, args ...any) ([]Binding, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+bindingCols+` FROM bindings `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read bindings: %w", err)
	}
	defer rows.Close()
	var out []Binding
	for rows.Next() {
		b, err := scanBinding(rows)
		if err != nil {
			return nil, fmt.Errorf("read bindings: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read bindings: %w", err)
	}
	return out, nil
}

func (s sqlReads) byAddr(ctx context.Context, a netip.Addr) (Binding, bool, error) {
	bs, err := s.queryBindings(ctx, `WHERE addr = $1`, a.String())
	if err != nil || len(bs) == 0 {
		return Binding{}, false, err
	}
	return bs[0], true, nil
}

func (s sqlReads) byDUID(ctx context.Context, duid []byte) ([]Binding, error) {
	return s.queryBindings(ctx, `WHERE duid = $1 ORDER BY addr`, hex.EncodeToString(duid))
}

func (s sqlReads) all(ctx context.Context) ([]Binding, error) {
	return s.queryBindings(ctx, `ORDER BY addr`)
}

func (s sqlReads) bindings(ctx context.Context) ([]Binding, error) {
	bs, err := s.all(ctx)
	slices.SortFunc(bs, func(a, b Binding) int { return a.Addr.Compare(b.Addr) })
	return bs, err
}

func (s sqlReads) linkKnown(ctx context.Context, la netip.Addr) (bool, error) {
	p, _ := la.Prefix(64)
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM bindings WHERE link_addr = $1 OR prefix64 = $2 LIMIT 1`, la.String(), p.String()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read bindings: %w", err)
	}
	return true, nil
}

func (s sqlReads) nextExpiry(ctx context.Context) (time.Time, bool, error) {
	var ns sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MIN(expires_ns) FROM bindings WHERE expires_ns IS NOT NULL`).Scan(&ns); err != nil {
		return time.Time{}, false, fmt.Errorf("read next expiry: %w", err)
	}
	if !ns.Valid {
		return time.Time{}, false, nil
	}
	return time.Unix(0, ns.Int64), true, nil
}

func (s sqlReads) history(ctx context.Context, q HistoryQuery) ([]HistoryRecord, error) {
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	if q.Address.IsValid() {
		where = append(where, "addr = "+arg(q.Address.String()))
	}
	if len(q.ClientID) > 0 {
		d := arg(hex.EncodeToString(q.ClientID))
		where = append(where, "(duid = "+d+" OR prev_duid = "+d+")")
	}
	if !q.Since.IsZero() {
		where = append(where, "time_ns >= "+arg(q.Since.UnixNano()))
	}
	if !q.Until.IsZero() {
		where = append(where, "time_ns <= "+arg(q.Until.UnixNano()))
	}
	qs := `SELECT seq, ` + historyCols + ` FROM history`
	if len(where) > 0 {
		qs += " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := s.db.QueryContext(ctx, qs+" ORDER BY seq", args...)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	defer rows.Close()
	out := []HistoryRecord{}
	for rows.Next() {
		h, err := scanHistory(rows)
		if err != nil {
			return nil, fmt.Errorf("read history: %w", err)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	return out, nil
}

// metaDUID returns the server DUID in meta, storing gen() first when
// there is none (the first server of a site chooses it for all).
func metaDUID(ctx context.Context, db *sql.DB, gen func() []byte) ([]byte, error) {
	var v string
	err := db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'server-duid'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('server-duid', $1) ON CONFLICT (key) DO NOTHING`, hex.EncodeToString(gen())); err != nil {
			return nil, fmt.Errorf("store server DUID: %w", err)
		}
		err = db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'server-duid'`).Scan(&v)
	}
	if err != nil {
		return nil, fmt.Errorf("read server DUID: %w", err)
	}
	return hex.DecodeString(v)
}

// txWriter is the part of a commit that differs between the backends:
// reading the rows a batch touches, and writing its result. A txWriter
// carries its transaction.
type txWriter interface {
	// expire deletes the bindings expired at ns and returns them.
	expire(ctx context.Context, ns int64) ([]Binding, error)
	// current returns the rows of addrs that exist.
	current(ctx context.Context, addrs []string) (map[string]Binding, error)
	// counts returns how many bindings each of duids holds (absent: 0).
	counts(ctx context.Context, duids []string) (map[string]int, error)
	rowWriter
	// intake writes the DNS changes of a commit (dnsjournal.go).
	intake(ctx context.Context, instance string, rows []intakeRow) error
}

// rowWriter writes rows in a transaction it carries: the part of a
// txWriter that the DNS journal and the import use too.
type rowWriter interface {
	write(ctx context.Context, ups []bindingRow, dels []string, hist []historyRow) error
	prune(ctx context.Context, ret retention, now int64) error
}

// countsAhead is a txWriter that pays a round trip per read (pgPipe): told
// the DUIDs whose counts the commit may ask for, it counts them with its
// read of the current rows, and its counts answers from that.
type countsAhead interface {
	countAhead(duids []string)
}

// commitTx is the commit both backends share: it decides every event from
// the rows the transaction reads (see storage.commit) and writes the
// result with w.
//
// With dns set, the DNS changes of the committed events (expiries first:
// the order in which the server hands them on) go to ddns_intake in the
// same transaction, each event's DNSSeq naming its row.
func commitTx(ctx context.Context, w txWriter, evs []Event, expireAt time.Time, limit int, ret retention, dns *dnsIntake) ([]Event, error) {
	var hist []historyRow
	var expired []Event
	if !expireAt.IsZero() {
		bs, err := w.expire(ctx, expireAt.UnixNano())
		if err != nil {
			return nil, err
		}
		for _, b := range bs {
			e := Event{Kind: EventExpire, Binding: b, Time: expireAt}
			expired = append(expired, e)
			hist = append(hist, historyRowOf(&e))
		}
	}
	// Each durable event's address and DUID as the columns hold them,
	// made once (the event's binding changes below, but not these).
	keys := make([]evKeys, len(evs))
	var addrs []string
	seen := make(map[string]bool, len(evs))
	for i := range evs {
		if evs[i].Durable() {
			keys[i] = evKeys{evs[i].Binding.Addr.String(), hex.EncodeToString(evs[i].Binding.DUID)}
			if a := keys[i].addr; !seen[a] {
				seen[a] = true
				addrs = append(addrs, a)
			}
		}
	}
	if ca, ok := w.(countsAhead); ok && limit > 0 {
		// Every client that may gain an address, counted with the read
		// of the current rows.
		var ds []string
		seen := map[string]bool{}
		for i := range evs {
			e := &evs[i]
			if !e.Durable() || e.Kind == EventDeregister || e.Kind == EventExpire {
				continue
			}
			if d := keys[i].duid; !seen[d] {
				seen[d] = true
				ds = append(ds, d)
			}
		}
		ca.countAhead(ds)
	}
	cur := map[string]Binding{}
	if len(addrs) > 0 {
		var err error
		if cur, err = w.current(ctx, addrs); err != nil {
			return nil, err
		}
	}
	// What the batch changes: the final row per address (nil: deleted),
	// and each DUID's count against the database's.
	final := make(map[string]*Binding, len(addrs))
	delta := make(map[string]int, len(evs))
	// The clients that may gain an address, counted in one query; one
	// that only a change within the batch makes gain one is counted then.
	var want []string
	wanted := make(map[string]bool, len(evs))
	for i := range evs {
		e := &evs[i]
		if !e.Durable() || e.Kind == EventDeregister || e.Kind == EventExpire || limit <= 0 {
			continue
		}
		duid := keys[i].duid
		if old, ok := cur[keys[i].addr]; (!ok || hex.EncodeToString(old.DUID) != duid) && !wanted[duid] {
			wanted[duid] = true
			want = append(want, duid)
		}
	}
	dbCount := map[string]int{}
	if len(want) > 0 {
		var err error
		if dbCount, err = w.counts(ctx, want); err != nil {
			return nil, err
		}
	}
	count := func(duid string) (int, error) {
		if !wanted[duid] {
			m, err := w.counts(ctx, []string{duid})
			if err != nil {
				return 0, err
			}
			wanted[duid], dbCount[duid] = true, m[duid]
		}
		return dbCount[duid] + delta[duid], nil
	}
	// evHistory is historyRowOf(e) for a durable event: its binding,
	// whatever the commit made it, has the address and DUID it came with.
	evHistory := func(e *Event, k evKeys) historyRow {
		if !e.Binding.Addr.IsValid() {
			return historyRowOf(e)
		}
		return historyRowOfAt(e, k.addr, k.duid)
	}
	for i := range evs {
		e := &evs[i]
		if !e.Durable() {
			hist = append(hist, historyRowOf(e))
			continue
		}
		a, duid := keys[i].addr, keys[i].duid
		old, had := cur[a]
		if had && e.Kind != EventDeregister && e.Kind != EventExpire && !old.Expires.IsZero() && !e.Time.Before(old.Expires) {
			// Expired and not yet removed: its expiry comes first.
			x := Event{Kind: EventExpire, Binding: old, Time: e.Time}
			expired = append(expired, x)
			hist = append(hist, historyRowOf(&x))
			delta[hex.EncodeToString(old.DUID)]--
			delete(cur, a)
			final[a] = nil
			had = false
		}
		switch e.Kind {
		case EventDeregister, EventExpire:
			e.PrevDUID = nil
			if had {
				removed := old
				removed.Expires, removed.Last = e.Time, e.Time
				removed.Preferred, removed.Valid = 0, 0
				if oduid := hex.EncodeToString(old.DUID); oduid != duid {
					e.PrevDUID = old.DUID
					removed.DUID = e.Binding.DUID
				}
				e.Binding = removed
				delta[hex.EncodeToString(old.DUID)]--
				delete(cur, a)
				final[a] = nil
			}
			hist = append(hist, evHistory(e, keys[i]))
			continue
		}
		nb := e.Binding
		nb.First = nb.Last
		e.PrevDUID, e.PrevFQDN = nil, ""
		if had {
			e.PrevFQDN = old.FQDN
		}
		if had && sameInform(&old, &nb) {
			// The INFORM another server of the link committed a moment
			// ago (both answer ff02::1:2): answered again, recorded once.
			e.Kind, e.Binding = EventRefresh, old
			continue
		}
		switch {
		case !had:
			e.Kind = EventRegister
		case hex.EncodeToString(old.DUID) == duid:
			e.Kind = EventRefresh
			nb.First = old.First
		default:
			e.Kind = EventMove
			e.PrevDUID = old.DUID
		}
		if e.Kind != EventRefresh && limit > 0 {
			n, err := count(duid)
			if err != nil {
				return nil, err
			}
			if n >= limit {
				e.Kind, e.Reason, e.PrevDUID = EventReject, ErrTooManyBindings.Name, nil
				hist = append(hist, evHistory(e, keys[i]))
				continue
			}
		}
		e.Binding = nb
		if e.Kind == EventMove {
			delta[hex.EncodeToString(old.DUID)]--
		}
		if e.Kind != EventRefresh {
			delta[duid]++
		}
		cur[a] = nb
		final[a] = &e.Binding
		hist = append(hist, evHistory(e, keys[i]))
	}
	var ups []bindingRow
	var dels []string
	for _, a := range addrs {
		b, ok := final[a]
		switch {
		case !ok:
		case b == nil:
			dels = append(dels, a)
		default:
			ups = append(ups, rowOfAt(b, a))
		}
	}
	if err := w.write(ctx, ups, dels, hist); err != nil {
		return nil, err
	}
	if dns != nil {
		var rows []intakeRow
		for _, list := range [][]Event{expired, evs} {
			for i := range list {
				list[i].DNSSeq = 0
				if !list[i].Durable() {
					continue
				}
				if r, ok := dns.intakeOf(&list[i]); ok {
					rows = append(rows, r)
				}
			}
		}
		if len(rows) > 0 {
			if err := w.intake(ctx, dns.instance, rows); err != nil {
				return nil, fmt.Errorf("write DNS intake: %w", err)
			}
		}
	}
	if len(hist) > 0 {
		// The age limit counts from the newest record written.
		newest := hist[0].time
		for _, h := range hist {
			newest = max(newest, h.time)
		}
		if err := w.prune(ctx, ret, newest); err != nil {
			return nil, err
		}
	}
	return expired, nil
}

// evKeys are an event's address and DUID as the columns hold them.
type evKeys struct{ addr, duid string }

// sameInform reports whether nb is what old already records, registered
// less than a second before: the same ADDR-REG-INFORM handled by two
// servers of one link, or a retransmission. A new name is a new
// registration (a renamed host registers again at once).
func sameInform(old, nb *Binding) bool {
	d := nb.Last.Sub(old.Last).Abs() // the other server may have handled it first, committed it last
	return d < time.Second && string(old.DUID) == string(nb.DUID) &&
		old.Preferred == nb.Preferred && old.Valid == nb.Valid && old.Iface == nb.Iface && old.LinkAddr == nb.LinkAddr &&
		old.FQDN == nb.FQDN && bytes.Equal(old.LinkLayer, nb.LinkLayer) // a renamed host's INFORM is news
}

// importLegacyInto writes an old database's contents (legacy.go) into a
// new store: bindings, history in order, server DUID.
func importLegacyInto(ctx context.Context, db *sql.DB, txw func(*sql.Tx) rowWriter, old *legacyDB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	w := txw(tx)
	var ups []bindingRow
	for _, b := range old.bindings {
		ups = append(ups, rowOf(&b))
	}
	slices.SortFunc(ups, func(a, b bindingRow) int { return strings.Compare(a.addr, b.addr) })
	hist := make([]historyRow, 0, len(old.history))
	for _, h := range old.history {
		e := Event{Time: h.Time, PrevDUID: h.PrevDUID, Reason: h.Reason, Binding: Binding{DUID: h.DUID, Addr: h.Addr,
			Iface: h.Iface, LinkAddr: h.LinkAddr, LinkLayer: h.LinkLayer, FQDN: h.FQDN, Preferred: h.Preferred, Valid: h.Valid}}
		r := historyRowOf(&e)
		r.event = h.Event
		hist = append(hist, r)
	}
	if err := w.write(ctx, ups, nil, hist); err != nil {
		return err
	}
	if len(old.duid) > 0 {
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('server-duid', $1)`, hex.EncodeToString(old.duid)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// rawDB is the database handle for readers (tests run the operators' SQL
// through it).
func (s sqlReads) rawDB() *sql.DB { return s.db }
