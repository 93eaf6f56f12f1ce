package main

import (
	"bytes"
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
		if code := run(tc.args, &stderr); code != 2 {
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
