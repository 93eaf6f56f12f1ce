package refserver

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/addrreg/addrreg/internal/ddns"
)

// DNSJournal is the DNS updater's journal (ddns.Journal) in the server's
// database: the pending work in table ddns_pending, one row per address
// and server instance, and what finished updates did in the history
// (event "dns"). Each Apply is one transaction.
//
// With Config.DNSJournal set, each commit also writes the DNS changes of
// its events to ddns_intake in its own transaction (a few rows: only
// registrations, moves, renames and removals of named bindings), so a
// change committed is never lost to a crash before the updater has merged
// it; the updater's Apply deletes the changes it has merged (Batch.Taken)
// in the transaction that writes their result to ddns_pending, and Load
// returns those it had not.
//
// Servers that share a PostgreSQL database each keep their own rows
// (instance, by default the host name): a server loads, sends and deletes
// only what it queued, so two servers never fight over one row. The
// binding changes of one address committed by two servers are sent by
// each in its own order, as before; an address's last change wins only
// within one server.
//
// It has a connection of its own, so it outlives the server's Run and
// writes what is pending when the updater stops.
type DNSJournal struct {
	st       storage
	instance string
	where    string
	timeout  time.Duration
	// bound: the last change committed before the journal was opened.
	// Load returns no later one: those are this process's, handed to
	// the updater by OnCommit.
	bound int64
}

var _ ddns.Journal = (*DNSJournal)(nil)

// DefaultDNSInstance is the instance whose rows a server keeps in
// ddns_pending: "" for an SQLite database (one server), the host name
// for PostgreSQL (each server of a site its own).
func DefaultDNSInstance(db string) string {
	if !isPostgres(db) {
		return ""
	}
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return h
}

// OpenDNSJournal opens cfg's database (creating it, importing an old one
// and migrating it as Run would) for the DNS journal of instance. Call it
// before Run, and Close it once the updater has stopped.
func OpenDNSJournal(ctx context.Context, cfg Config, instance string) (*DNSJournal, error) {
	var log logger = discardLogger{}
	if cfg.Logger != nil {
		log = cfg.Logger
	}
	st, err := openStorage(ctx, cfg.DBPath, storeOptions{
		passwordFile: cfg.DBPasswordFile, log: log,
		ret: retention{max: cfg.HistoryMax, maxAge: cfg.HistoryMaxAge},
	})
	if err != nil {
		return nil, fmt.Errorf("DNS journal: %w", err)
	}
	in, err := initDNSIntake(ctx, st.writeDB(), instance)
	if err != nil {
		st.close()
		return nil, fmt.Errorf("DNS journal: database %s: %w", RedactDB(cfg.DBPath), err)
	}
	return &DNSJournal{st: st, instance: instance, where: RedactDB(cfg.DBPath), timeout: commitTimeout, bound: in.last}, nil
}

// Close closes the journal's connection.
func (j *DNSJournal) Close() error { return j.st.close() }

// dropRow is one ddns.Owner to remove, as the drops column holds it.
type dropRow struct {
	Name string `json:"name"`
	DUID string `json:"duid"`
}

// Load returns the instance's pending work, oldest first, and the changes
// its commits wrote that the updater had not taken.
func (j *DNSJournal) Load() ([]ddns.Pending, []ddns.Change, error) {
	ctx, cancel := context.WithTimeout(context.Background(), j.timeout)
	defer cancel()
	ps, err := j.loadPending(ctx)
	if err != nil {
		return nil, nil, err
	}
	cs, err := j.loadIntake(ctx)
	if err != nil {
		return ps, nil, err
	}
	return ps, cs, nil
}

func (j *DNSJournal) loadIntake(ctx context.Context) ([]ddns.Change, error) {
	rows, err := j.st.writeDB().QueryContext(ctx, `SELECT seq, addr, name, duid, valid_s, prev_name, prev_duid
		FROM ddns_intake WHERE instance = $1 AND seq <= $2 ORDER BY seq`, j.instance, j.bound)
	if err != nil {
		return nil, fmt.Errorf("database %s: read DNS intake: %w", j.where, err)
	}
	defer rows.Close()
	var out []ddns.Change
	for rows.Next() {
		var c ddns.Change
		var addr, duid, prevDUID string
		var valid int64
		if err := rows.Scan(&c.Seq, &addr, &c.Name, &duid, &valid, &c.PrevName, &prevDUID); err != nil {
			return nil, fmt.Errorf("database %s: read DNS intake: %w", j.where, err)
		}
		var err1, err2, err3 error
		c.Addr, err1 = netip.ParseAddr(addr)
		c.DUID, err2 = hex.DecodeString(duid)
		c.PrevDUID, err3 = hex.DecodeString(prevDUID)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("database %s: DNS intake row %d: %w", j.where, c.Seq, err)
		}
		c.Valid = time.Duration(valid) * time.Second
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("database %s: read DNS intake: %w", j.where, err)
	}
	return out, nil
}

func (j *DNSJournal) loadPending(ctx context.Context) ([]ddns.Pending, error) {
	rows, err := j.st.writeDB().QueryContext(ctx, `SELECT addr, want_name, want_duid, want_ttl, drops, since_ns
		FROM ddns_pending WHERE instance = $1 ORDER BY since_ns, addr`, j.instance)
	if err != nil {
		return nil, fmt.Errorf("database %s: read DNS journal: %w", j.where, err)
	}
	defer rows.Close()
	var out []ddns.Pending
	for rows.Next() {
		var addr, name, duid, drops string
		var ttl, since int64
		if err := rows.Scan(&addr, &name, &duid, &ttl, &drops, &since); err != nil {
			return nil, fmt.Errorf("database %s: read DNS journal: %w", j.where, err)
		}
		p, err := pendingOf(addr, name, duid, ttl, drops, since)
		if err != nil {
			return nil, fmt.Errorf("database %s: DNS journal: %w", j.where, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("database %s: read DNS journal: %w", j.where, err)
	}
	return out, nil
}

func pendingOf(addr, name, duid string, ttl int64, drops string, since int64) (ddns.Pending, error) {
	var p ddns.Pending
	var err error
	if p.Addr, err = netip.ParseAddr(addr); err != nil {
		return p, fmt.Errorf("address %q: %w", addr, err)
	}
	p.Since = time.Unix(0, since).UTC()
	if name != "" {
		d, err := hex.DecodeString(duid)
		if err != nil {
			return p, fmt.Errorf("%s: DUID %q: %w", addr, duid, err)
		}
		p.Want = &ddns.Owner{Name: name, DUID: d, TTL: uint32(ttl)}
	}
	var ds []dropRow
	if err := json.Unmarshal([]byte(drops), &ds); err != nil {
		return p, fmt.Errorf("%s: drops %q: %w", addr, drops, err)
	}
	for _, dr := range ds {
		d, err := hex.DecodeString(dr.DUID)
		if err != nil {
			return p, fmt.Errorf("%s: drop DUID %q: %w", addr, dr.DUID, err)
		}
		p.Drop = append(p.Drop, ddns.Owner{Name: dr.Name, DUID: d})
	}
	return p, nil
}

// Apply writes b.Put, deletes b.Del and the changes b.Taken, and records
// b.Done in the history, in one transaction.
func (j *DNSJournal) Apply(b ddns.Batch) error {
	ctx, cancel := context.WithTimeout(context.Background(), j.timeout)
	defer cancel()
	if err := j.apply(ctx, b.Put, b.Del, b.Done, b.Taken); err != nil {
		return fmt.Errorf("database %s: write DNS journal: %w", j.where, err)
	}
	return nil
}

func (j *DNSJournal) apply(ctx context.Context, put []ddns.Pending, del []netip.Addr, done []ddns.Outcome, taken []int64) error {
	tx, err := j.st.writeDB().BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if len(taken) > 0 {
		st, err := tx.PrepareContext(ctx, `DELETE FROM ddns_intake WHERE instance = $1 AND seq = $2`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, n := range taken {
			if _, err := st.ExecContext(ctx, j.instance, n); err != nil {
				return fmt.Errorf("delete change %d: %w", n, err)
			}
		}
	}
	if len(del) > 0 {
		st, err := tx.PrepareContext(ctx, `DELETE FROM ddns_pending WHERE instance = $1 AND addr = $2`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, a := range del {
			if _, err := st.ExecContext(ctx, j.instance, a.String()); err != nil {
				return fmt.Errorf("delete %s: %w", a, err)
			}
		}
	}
	if len(put) > 0 {
		st, err := tx.PrepareContext(ctx, `INSERT INTO ddns_pending (instance, addr, want_name, want_duid, want_ttl, drops, since_ns)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (instance, addr) DO UPDATE SET want_name = excluded.want_name, want_duid = excluded.want_duid,
			want_ttl = excluded.want_ttl, drops = excluded.drops, since_ns = excluded.since_ns`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, p := range put {
			var name, duid string
			var ttl int64
			if p.Want != nil {
				name, duid, ttl = p.Want.Name, hex.EncodeToString(p.Want.DUID), int64(p.Want.TTL)
			}
			ds := make([]dropRow, 0, len(p.Drop))
			for _, d := range p.Drop {
				ds = append(ds, dropRow{Name: d.Name, DUID: hex.EncodeToString(d.DUID)})
			}
			b, err := json.Marshal(ds)
			if err != nil {
				return fmt.Errorf("encode %s: %w", p.Addr, err)
			}
			if _, err := st.ExecContext(ctx, j.instance, p.Addr.String(), name, duid, ttl, string(b), p.Since.UnixNano()); err != nil {
				return fmt.Errorf("write %s: %w", p.Addr, err)
			}
		}
	}
	if len(done) > 0 {
		hist := make([]historyRow, 0, len(done))
		newest := int64(0)
		for _, o := range done {
			h := historyRowOfDNS(o)
			newest = max(newest, h.time)
			hist = append(hist, h)
		}
		w := j.st.txw(tx)
		if err := w.write(ctx, nil, nil, hist); err != nil {
			return err
		}
		if err := w.prune(ctx, j.st.retention(), newest); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// EventDNS is the history event of a DNS update's outcome: FQDN is the
// record's name (an AAAA's owner, a PTR's target), Reason the record type
// and the result ("AAAA added", "PTR removed", "AAAA conflict", "AAAA
// failed: …").
const EventDNS = "dns"

func historyRowOfDNS(o ddns.Outcome) historyRow {
	r := historyRow{time: o.Time.UnixNano(), event: EventDNS, duid: hex.EncodeToString(o.DUID), fqdn: o.Name,
		reason: o.Record + " " + o.Result}
	if o.Addr.IsValid() {
		r.addr = o.Addr.String()
	}
	if o.Err != "" {
		r.reason += ": " + o.Err
	}
	return r
}

// writeDB is the connection pool that writes (SQLite: the one writer).
func (s *sqliteStore) writeDB() *sql.DB           { return s.w }
func (s *sqliteStore) txw(tx *sql.Tx) rowWriter   { return sqliteTx{tx} }
func (s *sqliteStore) retention() retention       { return s.ret }
func (s *postgresStore) writeDB() *sql.DB         { return s.db }
func (s *postgresStore) txw(tx *sql.Tx) rowWriter { return pgTx{tx} }
func (s *postgresStore) retention() retention     { return s.ret }

// DNSChange is what a committed event changes in DNS (ddns.Change, with
// e.DNSSeq); false for events that change no binding.
func DNSChange(e Event) (ddns.Change, bool) {
	b := e.Binding
	// The server keeps the labels of an FQDN option joined by commas
	// (one name in practice).
	first := func(s string) string { n, _, _ := strings.Cut(s, ","); return n }
	c := ddns.Change{Addr: b.Addr, Seq: e.DNSSeq}
	switch e.Kind {
	case EventRegister, EventRefresh, EventMove:
		c.Name, c.DUID, c.Valid = first(b.FQDN), b.DUID, b.Valid
		c.PrevName, c.PrevDUID = first(e.PrevFQDN), b.DUID
		if e.Kind == EventMove {
			c.PrevDUID = e.PrevDUID
		}
	case EventDeregister, EventExpire:
		c.PrevName, c.PrevDUID = first(b.FQDN), b.DUID
		if e.PrevDUID != nil { // deregistered by another client
			c.PrevDUID = e.PrevDUID
		}
	default:
		return c, false
	}
	return c, true
}

// dnsIntake is what a commit needs to write the DNS changes of its
// events to ddns_intake: the instance, and the last seq used.
type dnsIntake struct {
	instance string
	last     int64
}

// intakeRow is a ddns_intake row.
type intakeRow struct {
	seq                                  int64
	addr, name, duid, prevName, prevDUID string
	valid                                int64
}

// intakeOf returns e's row, false when e changes nothing in DNS (no
// name before or after, or a refresh that keeps the name and client:
// what the updater would ignore whatever its zones).
func (d *dnsIntake) intakeOf(e *Event) (intakeRow, bool) {
	c, ok := DNSChange(*e)
	if !ok || c.Name == "" && c.PrevName == "" || c.Name == c.PrevName && string(c.DUID) == string(c.PrevDUID) {
		return intakeRow{}, false
	}
	d.last = max(d.last+1, time.Now().UnixNano())
	e.DNSSeq = d.last
	return intakeRow{seq: d.last, addr: c.Addr.String(), name: c.Name, duid: hex.EncodeToString(c.DUID),
		prevName: c.PrevName, prevDUID: hex.EncodeToString(c.PrevDUID), valid: int64(c.Valid / time.Second)}, true
}

// initDNSIntake reads the instance's last seq, so that seqs keep growing
// across restarts whatever the clock does.
func initDNSIntake(ctx context.Context, db *sql.DB, instance string) (*dnsIntake, error) {
	var last sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MAX(seq) FROM ddns_intake WHERE instance = $1`, instance).Scan(&last); err != nil {
		return nil, fmt.Errorf("read DNS intake: %w", err)
	}
	return &dnsIntake{instance: instance, last: last.Int64}, nil
}

func (w *sqliteRaw) intake(_ context.Context, instance string, rows []intakeRow) error {
	for _, r := range rows {
		b := binder{st: w.st.intake}
		b.text(1, instance)
		b.int64(2, r.seq)
		b.text(3, r.addr)
		b.text(4, r.name)
		b.text(5, r.duid)
		b.int64(6, r.valid)
		b.text(7, r.prevName)
		b.text(8, r.prevDUID)
		if b.err != nil {
			return b.err
		}
		if err := b.st.s.Exec(); err != nil {
			return err
		}
	}
	return nil
}

const sqliteIntake = `INSERT INTO ddns_intake (instance, seq, addr, name, duid, valid_s, prev_name, prev_duid) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`

func (t pgTx) intake(ctx context.Context, instance string, rows []intakeRow) error {
	q, args := pgIntake(instance, rows)
	_, err := t.tx.ExecContext(ctx, q, args...)
	return err
}

// pgIntake is the statement that writes rows to ddns_intake (arrays).
func pgIntake(instance string, rows []intakeRow) (string, []any) {
	n := len(rows)
	seq, valid := make([]int64, n), make([]int64, n)
	a, nm, d, pn, pd := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for k, r := range rows {
		seq[k], valid[k], a[k], nm[k], d[k], pn[k], pd[k] = r.seq, r.valid, r.addr, r.name, r.duid, r.prevName, r.prevDUID
	}
	return `INSERT INTO ddns_intake (instance, seq, addr, name, duid, valid_s, prev_name, prev_duid)
		SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[])`,
		[]any{instance, seq, a, nm, d, valid, pn, pd}
}
