package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/addrreg/addrreg/internal/refserver"
)

// runHistory is `addrreg-refserver history`: who held an address when, or
// what a client held, from the server's history.
func runHistory(args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("addrreg-refserver history", pflag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("address", "", "the address: its events, or with --at who held it then")
	at := fs.String("at", "", "with --address: the moment asked about (RFC 3339, \"2006-01-02 15:04[:05]\", or \"15:04[:05]\" today, local time)")
	cid := fs.String("client-id", "", "the client's DUID in hex (colons allowed): its events")
	since := fs.String("since", "", "only events at or after this time (formats as --at)")
	until := fs.String("until", "", "only events at or before this time (formats as --at)")
	sock := fs.String("control-socket", refserver.DefaultControlSocket, "the running server's control socket")
	db := fs.String("db", "", "read this database instead (an SQLite file or a PostgreSQL URL, read-only; a running server need not stop)")
	dbPw := fs.String("db-password-file", "", "with a PostgreSQL --db: file holding the password")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: addrreg-refserver history --address A [--at TIME] | --client-id HEX [--since T] [--until T] [--json]\n\n"+
			"Who held an address when, or what a client held, from the server's history.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("history: unexpected argument %q", fs.Arg(0))
	}
	now := time.Now()
	var q refserver.HistoryQuery
	var atT time.Time
	var err error
	if q.Address, q.ClientID, err = parseSelector("history", *addr, *cid); err != nil {
		return err
	}
	for _, f := range []struct {
		name, v string
		dst     *time.Time
	}{{"at", *at, &atT}, {"since", *since, &q.Since}, {"until", *until, &q.Until}} {
		if f.v == "" {
			continue
		}
		t, err := parseWhen(f.v, now)
		if err != nil {
			return usagef("history: --%s: %w", f.name, err)
		}
		*f.dst = t
	}
	if !atT.IsZero() && *addr == "" {
		return usagef("history: --at needs --address")
	}
	if !atT.IsZero() {
		// Who held it at T needs the events before T.
		q.Until = time.Time{}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var recs []refserver.HistoryRecord
	if *db != "" {
		recs, err = refserver.ReadHistoryDB(ctx, *db, *dbPw, q)
	} else {
		recs, err = refserver.QueryControl(ctx, *sock, q)
		if err != nil {
			err = fmt.Errorf("ask the server on %s: %w (is it running? a stopped server's file can be read with --db)", *sock, err)
		}
	}
	if err != nil {
		return err
	}
	if !atT.IsZero() {
		return printHolder(stdout, recs, q.Address, atT, *asJSON)
	}
	if *asJSON {
		out := make([]recordJSON, 0, len(recs))
		for _, r := range recs {
			out = append(out, toRecordJSON(r))
		}
		return writeJSON(stdout, map[string]any{"records": out})
	}
	printEvents(stdout, recs)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// parseWhen reads a time given on the command line; forms without a zone
// are local time, and a bare clock time is today's.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			return t, nil
		}
	}
	for _, layout := range []string{"15:04:05", "15:04"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			y, m, d := now.Date()
			return time.Date(y, m, d, t.Hour(), t.Minute(), t.Second(), 0, now.Location()), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: want RFC 3339, \"2006-01-02 15:04[:05]\" or \"15:04[:05]\"", s)
}

// recordJSON is a history record as `history --json` prints it: DUIDs in
// hex, lifetimes in seconds.
type recordJSON struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Event     string    `json:"event"`
	Address   string    `json:"address"`
	DUID      string    `json:"duid,omitempty"`
	PrevDUID  string    `json:"prev_duid,omitempty"`
	Iface     string    `json:"iface,omitempty"`
	LinkAddr  string    `json:"link_addr,omitempty"`
	LinkLayer string    `json:"link_layer,omitempty"`
	FQDN      string    `json:"fqdn,omitempty"`
	Preferred int64     `json:"preferred_lifetime"`
	Valid     int64     `json:"valid_lifetime"`
	Reason    string    `json:"reason,omitempty"`
}

func toRecordJSON(r refserver.HistoryRecord) recordJSON {
	out := recordJSON{Seq: r.Seq, Time: r.Time, Event: r.Event, Address: r.Addr.String(),
		DUID: hex.EncodeToString(r.DUID), PrevDUID: hex.EncodeToString(r.PrevDUID), Iface: r.Iface,
		LinkLayer: r.LinkLayer.String(), FQDN: r.FQDN,
		Preferred: int64(r.Preferred / time.Second), Valid: int64(r.Valid / time.Second), Reason: r.Reason}
	if r.LinkAddr.IsValid() {
		out.LinkAddr = r.LinkAddr.String()
	}
	return out
}

// holdingJSON is refserver.Holding for JSON.
type holdingJSON struct {
	recordJSON
	Since      time.Time `json:"since"`
	Until      time.Time `json:"until,omitzero"`
	UntilEvent string    `json:"until_event,omitempty"`
}

// holderJSON is the --at answer.
type holderJSON struct {
	Address string    `json:"address"`
	At      time.Time `json:"at"`
	Held    bool      `json:"held"`
	// Holder: the client's last registration before At, when its hold
	// began and ended (zero: still held).
	Holder *holdingJSON `json:"holder,omitempty"`
}

func printHolder(w io.Writer, recs []refserver.HistoryRecord, addr netip.Addr, at time.Time, asJSON bool) error {
	h, ok := refserver.HolderAt(recs, addr, at)
	if asJSON {
		out := holderJSON{Address: addr.String(), At: at, Held: ok}
		if ok {
			out.Holder = &holdingJSON{toRecordJSON(h.HistoryRecord), h.Since, h.Until, h.UntilEvent}
		}
		return writeJSON(w, out)
	}
	if !ok {
		fmt.Fprintf(w, "%s was not registered at %s\n", addr, at.Format(time.RFC3339))
		return nil
	}
	until := "still held"
	if !h.Until.IsZero() {
		until = h.Until.Format(time.RFC3339) + " (" + h.UntilEvent + ")"
	}
	fmt.Fprintf(w, "%s at %s was held by\n", addr, at.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  DUID\t%s\n", hex.EncodeToString(h.DUID))
	fmt.Fprintf(tw, "  since\t%s\n", h.Since.Format(time.RFC3339))
	fmt.Fprintf(tw, "  until\t%s\n", until)
	fmt.Fprintf(tw, "  last registration\t%s (%s, valid %s)\n", h.Time.Format(time.RFC3339), h.Event, validText(h.Valid))
	fmt.Fprintf(tw, "  interface\t%s\n", orDash(h.Iface))
	if h.LinkAddr.IsValid() {
		fmt.Fprintf(tw, "  relay link-address\t%s\n", h.LinkAddr)
	}
	fmt.Fprintf(tw, "  link-layer address\t%s\n", orDash(h.LinkLayer.String()))
	if h.FQDN != "" {
		fmt.Fprintf(tw, "  FQDN\t%s\n", h.FQDN)
	}
	return tw.Flush()
}

func printEvents(w io.Writer, recs []refserver.HistoryRecord) {
	if len(recs) == 0 {
		fmt.Fprintln(w, "no history")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tEVENT\tADDRESS\tDUID\tPREVIOUS DUID\tIFACE\tLINK-LAYER\tVALID\tFQDN\tREASON")
	for _, r := range recs {
		valid := validText(r.Valid)
		// A dns event: FQDN is the record's name, REASON the record
		// and what became of it ("AAAA added").
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Format(time.RFC3339), r.Event, r.Addr,
			orDash(hex.EncodeToString(r.DUID)), orDash(hex.EncodeToString(r.PrevDUID)), orDash(r.Iface),
			orDash(r.LinkLayer.String()), valid, orDash(r.FQDN), orDash(r.Reason))
	}
	tw.Flush()
}

// validText shows a stored valid lifetime: "-" for none (deregister,
// expire), "infinite" for 0xffffffff seconds.
func validText(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d >= 0xffffffff*time.Second:
		return "infinite"
	}
	return d.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
