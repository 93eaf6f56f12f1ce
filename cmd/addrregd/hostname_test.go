package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

// The name sent for a host name: none for no name or a localhost one (as
// systemd-networkd and NetworkManager), none for one the option cannot
// carry, else the name as it is.
func TestSendableHostName(t *testing.T) {
	h := hostNames{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for name, want := range map[string]string{
		"web1":                  "web1",
		"web1.example.com":      "web1.example.com",
		"localhost":             "",
		"localhost.localdomain": "",
		"(none)":                "",
		"":                      "",
		strings.Repeat("x", 64): "",
		"a..b":                  "",
		"web1.example.com.":     "web1.example.com.",
	} {
		if got := h.sendable(name); got != want {
			t.Errorf("sendable(%q) = %q, want %q", name, got, want)
		}
	}
}

// By default the host's name is followed; --fqdn sends another, fixed;
// --send-hostname=false none.
func TestHostNameFlags(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		follow bool
		fqdn   string
	}{
		{nil, true, ""},
		{[]string{"--fqdn", "db.example.org"}, false, "db.example.org"},
		{[]string{"--send-hostname=false"}, false, ""},
	} {
		o, _, err := parseFlags(append([]string{"--duid", "00030001020000000010"}, tc.args...), io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		cfg, _, err := configure(o)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if follow := o.followHostname(); follow != tc.follow || cfg.FQDN != tc.fqdn {
			t.Errorf("%v: follows the host name %t, FQDN %q; want %t, %q", tc.args, follow, cfg.FQDN, tc.follow, tc.fqdn)
		}
	}
}
