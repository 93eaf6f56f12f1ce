package main

import (
	"bytes"
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/internal/ddns"
	"github.com/addrreg/addrreg/internal/refserver"
)

func TestHistoryFlags(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"history"}, 2, "exactly one of --address and --client-id"},
		{[]string{"history", "--address", "10.0.0.1"}, 2, "--address"},
		{[]string{"history", "--client-id", "zz"}, 2, "--client-id"},
		{[]string{"history", "--address", "2001:db8::1", "--at", "teatime"}, 2, "--at"},
		{[]string{"history", "--client-id", "0001", "--at", "14:03"}, 2, "--at needs --address"},
		{[]string{"history", "--client-id", "0001", "--since", "yesterday"}, 2, "--since"},
		{[]string{"history", "--address", "2001:db8::1", "--control-socket", sock}, 1, "is it running?"},
		{[]string{"--history-max", "0", "-i", "eth0"}, 2, "--history-max"},
		{[]string{"--history-max-age", "-1h", "-i", "eth0"}, 2, "--history-max-age"},
		{[]string{"--metrics-listen", "nope", "-i", "eth0"}, 2, "--metrics-listen"},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.msg)
		}
	}
}

func TestParseWhen(t *testing.T) {
	loc := time.FixedZone("X", 3600)
	now := time.Date(2026, 12, 1, 20, 0, 0, 0, loc)
	for in, want := range map[string]time.Time{
		"2026-11-30T14:03:00Z":   time.Date(2026, 11, 30, 14, 3, 0, 0, time.UTC),
		"2026-11-30 14:03":       time.Date(2026, 11, 30, 14, 3, 0, 0, loc),
		"2026-11-30 14:03:07":    time.Date(2026, 11, 30, 14, 3, 7, 0, loc),
		"14:03":                  time.Date(2026, 12, 1, 14, 3, 0, 0, loc),
		"14:03:09":               time.Date(2026, 12, 1, 14, 3, 9, 0, loc),
		"2026-11-30":             time.Date(2026, 11, 30, 0, 0, 0, 0, loc),
		"2026-11-30T14:03:00.5Z": time.Date(2026, 11, 30, 14, 3, 0, 5e8, time.UTC),
	} {
		got, err := parseWhen(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseWhen("25:99", now); err == nil {
		t.Error("25:99 accepted")
	}
}

// TestHistoryShowsDNS: the DNS updater's outcomes, recorded in the
// database by its journal, are listed by history as events "dns" with
// the record's name and result.
func TestHistoryShowsDNS(t *testing.T) {
	db := filepath.Join(t.TempDir(), "bindings.db")
	j, err := refserver.OpenDNSJournal(context.Background(), refserver.Config{DBPath: db}, "")
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("2001:db8::10")
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	err = j.Apply(ddns.Batch{Del: []netip.Addr{a}, Done: []ddns.Outcome{
		{Time: at, Addr: a, Record: "AAAA", Name: "h1.example.net.", DUID: []byte{0, 4, 0xaa}, Result: ddns.OutcomeAdded},
		{Time: at.Add(time.Second), Addr: a, Record: "PTR", Name: "h1.example.net.", DUID: []byte{0, 4, 0xaa}, Result: ddns.OutcomeAdded},
		{Time: at.Add(2 * time.Second), Addr: a, Record: "AAAA", Name: "h2.example.net.", DUID: []byte{0, 4, 0xbb}, Result: ddns.OutcomeConflict},
	}})
	if cerr := j.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"history", "--db", db, "--address", a.String()}, &out, &errb); code != 0 {
		t.Fatalf("history: exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := [][]string{
		{"TIME", "EVENT", "ADDRESS", "DUID", "PREVIOUS", "DUID", "IFACE", "LINK-LAYER", "VALID", "FQDN", "REASON"},
		{"2026-12-01T10:00:00Z", "dns", a.String(), "0004aa", "-", "-", "-", "-", "h1.example.net.", "AAAA", "added"},
		{"2026-12-01T10:00:01Z", "dns", a.String(), "0004aa", "-", "-", "-", "-", "h1.example.net.", "PTR", "added"},
		{"2026-12-01T10:00:02Z", "dns", a.String(), "0004bb", "-", "-", "-", "-", "h2.example.net.", "AAAA", "conflict"},
	}
	if len(lines) != len(want) {
		t.Fatalf("history output:\n%s", out.String())
	}
	for i, l := range lines {
		if got := strings.Fields(l); !slices.Equal(got, want[i]) {
			t.Errorf("line %d: %q, want %q", i, got, want[i])
		}
	}
	out.Reset()
	if code := run([]string{"history", "--db", db, "--address", a.String(), "--json"}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), `"event": "dns"`) || !strings.Contains(out.String(), `"reason": "AAAA conflict"`) {
		t.Errorf("history --json: exit %d\n%s", code, out.String())
	}
}
