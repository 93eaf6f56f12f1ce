package main

import (
	"bytes"
	"database/sql"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	_ "github.com/ncruces/go-sqlite3/driver"

	"github.com/addrreg/addrreg/internal/refserver"
)

func TestBadFlags(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(cfg, []byte(`{"interfaces": ["eth0"], "bogus": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string // in stderr: the flag named
	}{
		{[]string{"--bogus"}, "--bogus"},
		{[]string{"--rate", "fast"}, "--rate"},
		{[]string{"--rate", "-1"}, "--rate"},
		{[]string{"--burst", "-1"}, "--burst"},
		{[]string{"--max-bindings-per-duid", "0"}, "--max-bindings-per-duid"},
		{[]string{"--queue", "-5"}, "--queue"},
		{[]string{"--max-wait", "-1s"}, "--max-wait"},
		{[]string{"query", "--link-address", "2001:db8::1"}, "--bulk"},
		{[]string{"--prefix", "eth0"}, "--prefix"},
		{[]string{"--prefix", "eth0=10.0.0.0/8"}, "--prefix"},
		{[]string{"--leasequery-allow", "nope"}, "--leasequery-allow"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--config", cfg}, "--config"},
		{[]string{"--config", "/nonexistent.json"}, "--config"},
		{[]string{"stray"}, "stray"},
		{[]string{"query"}, "--address"},
		{[]string{"query", "--address", "x"}, "--address"},
		{[]string{"query", "--client-id", "zz"}, "--client-id"},
		{[]string{"query", "--address", "2001:db8::1", "--server", "nowhere"}, "--server"},
		{[]string{"query", "--address", "2001:db8::1", "--client-id", "0001"}, "--client-id"},
	} {
		wantUsageError(t, tc.args, tc.want)
	}
}

func TestPrintTable(t *testing.T) {
	r := &refserver.LeasequeryReply{Clients: []refserver.ClientData{{
		DUID: []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}, CLTTime: 5,
		Addrs: []refserver.LeaseAddr{{Addr: netip.MustParseAddr("2001:db8:1::10"), Preferred: 100, Valid: 0xffffffff}},
	}}}
	var b bytes.Buffer
	printTable(&b, r)
	want := "DUID                  ADDRESS         PREFERRED  VALID     LAST SEEN\n" +
		"00030001020000000001  2001:db8:1::10  100s       infinite  5s ago\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	printTable(&b, &refserver.LeasequeryReply{Status: refserver.StatusNotAllowed, Message: "requestor not allowed"})
	if got := b.String(); got != "status: NotAllowed (10) requestor not allowed\n" {
		t.Errorf("status line %q", got)
	}
}

func TestServerConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(file, []byte(`{
		"interfaces": ["eth0"],
		"prefixes": {"eth0": ["2001:db8:1::/64"], "2001:db8:2::1": ["2001:db8:2::/64"]},
		"addr_reg": true,
		"db": "/tmp/from-file.db",
		"leasequery_allow": ["2001:db8:ff::/48"],
		"rate": 5, "burst": 7, "max_bindings_per_duid": 20000
	}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cfg, _, err := serverConfig([]string{"--config", file, "-i", "eth1", "--prefix", "eth1=2001:db8:3::1/64", "--no-addr-reg", "--rate-duid", "9"}, io.Discard, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = nil
	want := refserver.Config{
		Interfaces: []string{"eth1"},
		Prefixes: map[string][]netip.Prefix{
			"eth0":          {netip.MustParsePrefix("2001:db8:1::/64")},
			"2001:db8:2::1": {netip.MustParsePrefix("2001:db8:2::/64")},
			"eth1":          {netip.MustParsePrefix("2001:db8:3::/64")},
		},
		AddrReg: false, DBPath: "/tmp/from-file.db",
		LeasequeryAllow: []netip.Prefix{netip.MustParsePrefix("2001:db8:ff::/48")},
		RatePerSource:   5, RatePerDUID: 9, Burst: 7,
		MaxBindingsPerDUID: 20000, MaxQueue: refserver.DefaultMaxQueue,
		MaxWait: refserver.DefaultMaxWait, HistoryMax: refserver.DefaultHistoryMax,
	}
	if diff := cmp.Diff(want, cfg, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if _, _, err := serverConfig(nil, io.Discard, &stderr); err == nil || !strings.Contains(err.Error(), "-i IFACE") {
		t.Errorf("no interface: err = %v, want a usage error asking for -i", err)
	}
	cfg, _, err = serverConfig([]string{"-i", "eth0"}, io.Discard, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.AddrReg || cfg.DBPath != refserver.DefaultDBPath || cfg.RatePerSource != 20 || cfg.MaxBindingsPerDUID != 1024 {
		t.Errorf("defaults: %+v", cfg)
	}
}

// TestDatabaseRefusedExits1: a database the server cannot use (not SQLite,
// one of a newer schema, an unreachable PostgreSQL) stops it at start with exit 1 and a message
// naming it, never its password.
func TestDatabaseRefusedExits1(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server")
	}
	junk := filepath.Join(t.TempDir(), "junk.db")
	if err := os.WriteFile(junk, []byte(strings.Repeat("junk", 2000)), 0o600); err != nil {
		t.Fatal(err)
	}
	newer := filepath.Join(t.TempDir(), "newer.db")
	db, err := sql.Open("sqlite3", "file:"+newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ns BIGINT NOT NULL);
		INSERT INTO schema_version VALUES (99, 'from the future', 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, tc := range []struct{ db, want, secret string }{
		{junk, junk + " is not an SQLite database", ""},
		{newer, "database schema is newer than this server: schema version 99", ""},
		{"postgres://u:hunter2@127.0.0.1:1/sitedb?connect_timeout=2", "postgres://u:xxxxx@127.0.0.1:1/sitedb", "hunter2"},
	} {
		var stderr bytes.Buffer
		code := run([]string{"-i", "lo", "--db", tc.db, "--control-socket", ""}, io.Discard, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), tc.want) || (tc.secret != "" && strings.Contains(stderr.String(), tc.secret)) {
			t.Errorf("--db %s: exit %d, stderr:\n%s\nwant exit 1 and %q", tc.db, code, stderr.String(), tc.want)
		}
	}
}

// TestCLIConvention: the convention the three commands share (--help on
// stdout with a synopsis, --version, --check, exit 2 naming the flag).
func TestCLIConvention(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(cfg, []byte(`{"interfaces": ["eth0"], "rate": -1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args       []string
		code       int
		stdout     string // prefix
		stderrHas  string
		stderrNone bool
	}{
		{[]string{"--help"}, 0, "Usage: addrreg-refserver -i IFACE [flags]\n", "", true},
		{[]string{"query", "--help"}, 0, "Usage: addrreg-refserver query ", "", true},
		{[]string{"history", "--help"}, 0, "Usage: addrreg-refserver history ", "", true},
		{[]string{"--version"}, 0, "addrreg-refserver " + version + "\n", "", true},
		{[]string{"--check", "-i", "eth0", "--db", "/nonexistent/dir/b.db"}, 0,
			"addrreg-refserver: configuration OK: interfaces eth0, db /nonexistent/dir/b.db", "", true},
		{[]string{"--check", "--config", cfg}, 2, "", "--rate", false},
		{[]string{"--check"}, 2, "", "-i IFACE", false},
		{[]string{"--check", "-i", "eth0", "--ddns-ttl", "5m"}, 2, "", "--ddns-", false},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.HasPrefix(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderrHas) ||
			(tc.stderrNone && stderr.Len() > 0) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d, stdout starting %q, stderr naming %q",
				tc.args, code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderrHas)
		}
	}
}

// wantUsageError runs the command with args and wants exit 2 with a message
// that names want (the flag at fault).
func wantUsageError(t *testing.T, args []string, want string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != 2 {
		t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, stderr.String())
	}
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("%v: stderr %q does not name %s", args, stderr.String(), want)
	}
}
