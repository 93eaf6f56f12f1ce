package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/addrreg/addrreg/internal/ddns"
	"github.com/addrreg/addrreg/internal/refserver"
)

// ddnsFlags are the DNS update flags (internal/ddns).
type ddnsFlags struct {
	fs      *pflag.FlagSet
	server  *string
	forward *[]string
	reverse *[]string
	keyFile *string
	ttl     *time.Duration
	journal *string
}

func addDDNSFlags(fs *pflag.FlagSet) *ddnsFlags {
	return &ddnsFlags{
		fs:      fs,
		server:  fs.String("ddns-server", "", "send DNS updates (RFC 2136) to this primary server, ADDR or [ADDR]:PORT (default port 53); off when empty"),
		forward: fs.StringArray("ddns-forward-zone", nil, "zone whose names get AAAA records for registered addresses (repeatable; needed with --ddns-server)"),
		reverse: fs.StringArray("ddns-reverse-zone", nil, "ip6.arpa zone whose addresses get PTR records (repeatable)"),
		keyFile: fs.String("ddns-tsig-key-file", "", "TSIG key to sign updates with, as tsig-keygen writes it (key \"NAME\" { algorithm …; secret \"…\"; };)"),
		ttl:     fs.Duration("ddns-ttl", 0, "TTL of the records (0: a third of the binding's valid lifetime, between 10s and 1h)"),
		journal: fs.String("ddns-journal", "", "keep the DNS updates not yet done in this JSON file instead of the database (default: the database's table ddns_pending, DNS outcomes in the history)"),
	}
}

// config returns the updater's configuration, nil when DNS updates are
// off.
func (f *ddnsFlags) config() (*ddns.Config, error) {
	if *f.server == "" {
		for _, n := range []string{"ddns-forward-zone", "ddns-reverse-zone", "ddns-tsig-key-file", "ddns-ttl", "ddns-journal"} {
			if f.fs.Changed(n) {
				return nil, usagef("--%s needs --ddns-server", n)
			}
		}
		return nil, nil
	}
	server := *f.server
	if a, err := netip.ParseAddr(server); err == nil {
		server = net.JoinHostPort(a.String(), "53")
	} else if _, _, err := net.SplitHostPort(server); err != nil {
		return nil, usagef("invalid --ddns-server %q: want ADDR or [ADDR]:PORT", *f.server)
	}
	cfg := &ddns.Config{Server: server, TTL: *f.ttl}
	if len(*f.forward) == 0 {
		return nil, usagef("--ddns-server needs at least one --ddns-forward-zone")
	}
	for _, z := range *f.forward {
		c, err := ddns.CheckZone(z)
		if err != nil {
			return nil, usagef("invalid --ddns-forward-zone: %w", err)
		}
		cfg.ForwardZones = append(cfg.ForwardZones, c)
	}
	for _, z := range *f.reverse {
		c, err := ddns.CheckReverseZone(z)
		if err != nil {
			return nil, usagef("invalid --ddns-reverse-zone: %w", err)
		}
		cfg.ReverseZones = append(cfg.ReverseZones, c)
	}
	if *f.keyFile != "" {
		k, err := ddns.ReadKeyFile(*f.keyFile)
		if err != nil {
			return nil, usagef("invalid --ddns-tsig-key-file: %w", err)
		}
		cfg.Key = &k
	}
	if *f.ttl < 0 || (*f.ttl > 0 && *f.ttl < time.Second) {
		return nil, usagef("invalid --ddns-ttl %v: want 0 (from the lifetime) or at least 1s", *f.ttl)
	}
	if *f.journal != "" {
		cfg.Journal = ddns.NewFileJournal(*f.journal)
	}
	// Else the database (openDNSJournal).
	return cfg, nil
}

// oldJournalPath is where an older server kept its DNS journal by
// default (--ddns-journal unset).
func oldJournalPath(dbPath string) string {
	if strings.HasPrefix(dbPath, "postgres://") || strings.HasPrefix(dbPath, "postgresql://") {
		return filepath.Join(filepath.Dir(refserver.DefaultDBPath), "ddns-pending.json")
	}
	return dbPath + ".ddns"
}

// openDNSJournal opens the DNS journal in the server's database, and
// moves into it the work pending in the file an older server kept by
// default (that file is then renamed NAME.imported).
func openDNSJournal(ctx context.Context, cfg refserver.Config) (*refserver.DNSJournal, error) {
	j, err := refserver.OpenDNSJournal(ctx, cfg, refserver.DefaultDNSInstance(cfg.DBPath))
	if err != nil {
		return nil, err
	}
	old := oldJournalPath(cfg.DBPath)
	if _, err := os.Stat(old); err != nil {
		return j, nil
	}
	ps, _, err := ddns.NewFileJournal(old).Load()
	if err == nil {
		err = j.Apply(ddns.Batch{Put: ps})
	}
	if err == nil {
		err = os.Rename(old, old+".imported")
	}
	if err != nil {
		j.Close()
		return nil, fmt.Errorf("import the DNS journal %s into the database: %w", old, err)
	}
	if cfg.Logger != nil {
		cfg.Logger.Info("DNS journal file imported into the database", "file", old, "pending", len(ps), "kept_as", old+".imported")
	}
	return j, nil
}

// ddnsChange is what a committed event changes in DNS; false for events
// that change no binding.
func ddnsChange(e refserver.Event) (ddns.Change, bool) { return refserver.DNSChange(e) }

// enqueueEvents is refserver.Config.OnCommit for an updater.
func enqueueEvents(u *ddns.Updater) func([]refserver.Event) {
	return func(evs []refserver.Event) {
		for _, e := range evs {
			if c, ok := ddnsChange(e); ok {
				u.Enqueue(c)
			}
		}
	}
}
