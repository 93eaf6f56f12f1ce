package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", tc.args, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr %q does not name %s", tc.args, stderr.String(), tc.want)
		}
	}
}
