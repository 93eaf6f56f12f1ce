package main

import (
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/addrreg/addrreg/internal/ddns"
	"github.com/addrreg/addrreg/internal/refserver"
)

func TestDDNSBadFlags(t *testing.T) {
	dir := t.TempDir()
	badKey := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(badKey, []byte(`key "k" { algorithm hmac-md5; secret "AAAA"; };`), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := []string{"-i", "eth0", "--ddns-server", "[::1]:53"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-i", "eth0", "--ddns-forward-zone", "example.net."}, "--ddns-forward-zone"},
		{[]string{"-i", "eth0", "--ddns-tsig-key-file", badKey}, "--ddns-tsig-key-file"},
		{srv, "--ddns-forward-zone"},
		{[]string{"-i", "eth0", "--ddns-server", "nowhere", "--ddns-forward-zone", "example.net"}, "--ddns-server"},
		{append(srv, "--ddns-forward-zone", "a..b"), "--ddns-forward-zone"},
		{append(srv, "--ddns-forward-zone", "example.net", "--ddns-reverse-zone", "example.org"), "--ddns-reverse-zone"},
		{append(srv, "--ddns-forward-zone", "example.net", "--ddns-tsig-key-file", badKey), "--ddns-tsig-key-file"},
		{append(srv, "--ddns-forward-zone", "example.net", "--ddns-tsig-key-file", filepath.Join(dir, "none")), "--ddns-tsig-key-file"},
		{append(srv, "--ddns-forward-zone", "example.net", "--ddns-ttl", "-1s"), "--ddns-ttl"},
		{append(srv, "--ddns-forward-zone", "example.net", "--ddns-ttl", "soon"), "--ddns-ttl"},
	} {
		wantUsageError(t, tc.args, tc.want)
	}
}

func TestDDNSConfig(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "tsig.key")
	if err := os.WriteFile(key, []byte("key \"addrreg\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, ops, err := serverConfig([]string{"-i", "eth0", "--db", filepath.Join(dir, "b.db"), "--ddns-server", "2001:db8::53",
		"--ddns-forward-zone", "Example.NET", "--ddns-reverse-zone", "8.b.d.0.1.0.0.2.ip6.arpa", "--ddns-tsig-key-file", key,
		"--ddns-ttl", "5m"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := ops.ddns
	if c == nil || c.Server != "[2001:db8::53]:53" || c.ForwardZones[0] != "example.net." || c.ReverseZones[0] != "8.b.d.0.1.0.0.2.ip6.arpa." ||
		c.Key.Name != "addrreg." || c.TTL != 5*time.Minute || c.Journal != nil {
		t.Errorf("ddns config %+v (want no journal: the database's, opened at start)", c)
	}
	_, ops, err = serverConfig([]string{"-i", "eth0", "--ddns-server", "2001:db8::53", "--ddns-forward-zone", "example.net",
		"--ddns-journal", filepath.Join(dir, "j.json")}, io.Discard, io.Discard)
	if _, ok := ops.ddns.Journal.(*ddns.FileJournal); err != nil || !ok {
		t.Errorf("--ddns-journal: journal %T, %v; want a file", ops.ddns.Journal, err)
	}
	if _, ops, err := serverConfig([]string{"-i", "eth0"}, io.Discard, io.Discard); err != nil || ops.ddns != nil {
		t.Errorf("without --ddns-server: %+v, %v; want off", ops.ddns, err)
	}
}

func TestDDNSChange(t *testing.T) {
	a := netip.MustParseAddr("2001:db8:1::1")
	dA, dB := []byte{1}, []byte{2}
	b := refserver.Binding{Addr: a, DUID: dA, FQDN: "h1", Valid: time.Hour}
	for _, tc := range []struct {
		ev   refserver.Event
		want ddns.Change
		ok   bool
	}{
		{refserver.Event{Kind: refserver.EventRegister, Binding: b}, ddns.Change{Addr: a, Name: "h1", DUID: dA, Valid: time.Hour, PrevDUID: dA}, true},
		{refserver.Event{Kind: refserver.EventRefresh, Binding: b, PrevFQDN: "h0"}, ddns.Change{Addr: a, Name: "h1", DUID: dA, Valid: time.Hour, PrevName: "h0", PrevDUID: dA}, true},
		{refserver.Event{Kind: refserver.EventMove, Binding: b, PrevFQDN: "h0", PrevDUID: dB}, ddns.Change{Addr: a, Name: "h1", DUID: dA, Valid: time.Hour, PrevName: "h0", PrevDUID: dB}, true},
		{refserver.Event{Kind: refserver.EventExpire, Binding: b}, ddns.Change{Addr: a, PrevName: "h1", PrevDUID: dA}, true},
		{refserver.Event{Kind: refserver.EventDeregister, Binding: refserver.Binding{Addr: a, DUID: dB, FQDN: "h1"}, PrevDUID: dA}, ddns.Change{Addr: a, PrevName: "h1", PrevDUID: dA}, true},
		{refserver.Event{Kind: refserver.EventReject, Binding: b}, ddns.Change{Addr: a}, false},
	} {
		got, ok := ddnsChange(tc.ev)
		if ok != tc.ok {
			t.Errorf("%v: ok %v", tc.ev.Kind, ok)
		}
		if d := cmp.Diff(tc.want, got, cmpopts.EquateComparable(netip.Addr{})); d != "" {
			t.Errorf("%v: (-want +got)\n%s", tc.ev.Kind, d)
		}
	}
}

// TestDNSJournalImport: the work pending in the file an older server kept
// by default is moved into the database at start, the file kept aside.
func TestDNSJournalImport(t *testing.T) {
	db := filepath.Join(t.TempDir(), "bindings.db")
	a := netip.MustParseAddr("2001:db8::7")
	p := ddns.Pending{Addr: a, Want: &ddns.Owner{Name: "h.example.net.", DUID: []byte{1}, TTL: 60}, Since: time.Unix(1e9, 0).UTC()}
	if err := ddns.NewFileJournal(db + ".ddns").Apply(ddns.Batch{Put: []ddns.Pending{p}}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second start finds nothing to import
		j, err := openDNSJournal(context.Background(), refserver.Config{DBPath: db})
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := j.Load()
		j.Close()
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]ddns.Pending{p}, got, cmpopts.EquateComparable(netip.Addr{})); d != "" {
			t.Errorf("imported (-want +got):\n%s", d)
		}
	}
	if _, err := os.Stat(db + ".ddns.imported"); err != nil {
		t.Errorf("old journal not kept aside: %v", err)
	}
	if _, err := os.Stat(db + ".ddns"); err == nil {
		t.Error("old journal still in place")
	}
}
