package refserver

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/addrreg/addrreg/internal/ddns"
)

// DNSJournal is the DNS updater's journal (ddns.Journal) in the server's
// database: the pending work in table ddns_pending, one row per address
// and server instance, and what finished updates did in the history
// (event "dns"). Each Apply is one transaction.
//
// Servers that share a PostgreSQL database each keep their own rows
// (instance, by default the host name): a server loads, sends and deletes
// only what it queued, so two servers never fight over one row. The
// binding changes of one address committed by two servers are sent by
// each in its own order, as before; an address's last change wins only
// within one server.
//
// The journal is written by the updater, after the commit that queued
// the work (about once a second while it is busy, at once when it is
// idle): a crash in between loses those changes' DNS updates, not the
// bindings. It has a connection of its own, so it outlives the server's
// Run and writes what is pending when the updater stops.
type DNSJournal struct {
	st       storage
	instance string
	where    string
	timeout  time.Duration
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
	return &DNSJournal{st: st, instance: instance, where: RedactDB(cfg.DBPath), timeout: commitTimeout}, nil
}

// Close closes the journal's connection.
func (j *DNSJournal) Close() error { return j.st.close() }

// dropRow is one ddns.Owner to remove, as the drops column holds it.
type dropRow struct {
	Name string `json:"name"`
	DUID string `json:"duid"`
}

// Load returns the instance's pending work, oldest first.
func (j *DNSJournal) Load() ([]ddns.Pending, error) {
	ctx, cancel := context.WithTimeout(context.Background(), j.timeout)
	defer cancel()
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

// Apply writes put, deletes del and records done in the history, in one
// transaction.
func (j *DNSJournal) Apply(put []ddns.Pending, del []netip.Addr, done []ddns.Outcome) error {
	ctx, cancel := context.WithTimeout(context.Background(), j.timeout)
	defer cancel()
	if err := j.apply(ctx, put, del, done); err != nil {
		return fmt.Errorf("database %s: write DNS journal: %w", j.where, err)
	}
	return nil
}

func (j *DNSJournal) apply(ctx context.Context, put []ddns.Pending, del []netip.Addr, done []ddns.Outcome) error {
	tx, err := j.st.writeDB().BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
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
		w := j.st.txw()
		if err := w.write(ctx, tx, nil, nil, hist); err != nil {
			return err
		}
		if err := w.prune(ctx, tx, j.st.retention(), newest); err != nil {
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
func (s *sqliteStore) writeDB() *sql.DB       { return s.w }
func (s *sqliteStore) txw() txWriter          { return sqliteTx{s} }
func (s *sqliteStore) retention() retention   { return s.ret }
func (s *postgresStore) writeDB() *sql.DB     { return s.db }
func (s *postgresStore) txw() txWriter        { return pgTx{} }
func (s *postgresStore) retention() retention { return s.ret }
