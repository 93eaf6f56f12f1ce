package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestBadFlagsExit2(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string // the message must name it
	}{
		{[]string{"--port", "a", "--trusted", "b", "--unknown-next-header", "maybe"}, "--unknown-next-header"},
		{[]string{"--port", "a", "--trusted", "b", "--bogus"}, "--bogus"},
		{[]string{"--port", "a", "--trusted", "a"}, "--port"},
		{[]string{"--port", "a"}, "--port"},
		{[]string{"--port", "a", "--trusted", "b", "--log-rate", "0"}, "--log-rate"},
		{[]string{"--port", "a", "--trusted", "b", "--log-level", "loud"}, "--log-level"},
		{[]string{"--port", "a", "--trusted", "b", "eth0"}, "--port"},
	} {
		var stderr bytes.Buffer
		if code := run(tc.args, io.Discard, &stderr); code != 2 {
			t.Errorf("run(%q) = %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr.String(), tc.flag) {
			t.Errorf("run(%q) said %q, want it to name %s", tc.args, stderr.String(), tc.flag)
		}
	}
}

func TestParse(t *testing.T) {
	o, err := parse([]string{"--trusted", "s", "--port", "h", "--port", "r", "--unknown-next-header", "pass", "--stats", "/tmp/x.sock"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.cfg.Ports) != 3 || !o.cfg.Ports[0].Trusted || o.cfg.Ports[1].Trusted || o.cfg.Shield.UnknownNextHeader.String() != "pass" || o.stats != "/tmp/x.sock" {
		t.Errorf("parse = %+v", o)
	}
}

// TestCLIConvention: the convention the three commands share (--help on
// stdout with a synopsis, --version, --check, exit 2 naming the flag).
func TestCLIConvention(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		code       int
		stdout     string // prefix
		stderrHas  string
		stderrNone bool
	}{
		{[]string{"--help"}, 0, "Usage: dhcp6-shield --trusted IFACE --port IFACE", "", true},
		{[]string{"-h"}, 0, "Usage: dhcp6-shield ", "", true},
		{[]string{"--version"}, 0, "dhcp6-shield " + version + "\n", "", true},
		{[]string{"--check", "--trusted", "s", "--port", "h"}, 0, "dhcp6-shield: configuration OK: trusted s, untrusted h", "", true},
		{[]string{"--check", "--trusted", "s", "--port", "h", "--metrics-listen", "nowhere"}, 2, "", "--metrics-listen", false},
		{[]string{"--check", "--trusted", "s"}, 2, "", "--port", false},
		{[]string{"--trusted", "s", "--port", "h", "--log-rate", "many"}, 2, "", "--log-rate", false},
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
