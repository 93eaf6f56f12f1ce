package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestBadFlagsExit2NamingTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--irt", "0s"}, "--irt"},
		{[]string{"--irt", "soon"}, "--irt"},
		{[]string{"--mrc", "-1"}, "--mrc"},
		{[]string{"--mrc", "0"}, "--mrc"},
		{[]string{"--mrt", "-1s"}, "--mrt"},
		{[]string{"--mrd", "-1s"}, "--mrd"},
		{[]string{"--static-refresh", "0"}, "--static-refresh"},
		{[]string{"--max-refresh", "-1h"}, "--max-refresh"},
		{[]string{"--coalesce", "-1s"}, "--coalesce"},
		{[]string{"--tolerance", "-1s"}, "--tolerance"},
		{[]string{"--rate", "0"}, "--rate"},
		{[]string{"--burst", "0"}, "--burst"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--duid", "zz"}, "--duid"},
		{[]string{"--fqdn", strings.Repeat("a", 64) + ".example"}, "--fqdn"},
		{[]string{"--fqdn="}, "--send-hostname=false"},
		{[]string{"--fqdn", "host.example.com", "--send-hostname=false"}, "--send-hostname"},
		{[]string{"--send-hostname=maybe"}, "--send-hostname"},
		{[]string{"-i", "eth0/1"}, "--interface"},
		{[]string{"--enable=maybe"}, "--enable"},
		{[]string{"--no-such-flag"}, "--no-such-flag"},
		{[]string{"stray"}, "stray"},
		{[]string{"--include-prefix", "10.0.0.0/8"}, "--include-prefix"},
		{[]string{"--exclude-prefix", "2001:db8::"}, "--exclude-prefix"},
		{[]string{"--metrics-listen", "nonsense"}, "--metrics-listen"},
		{[]string{"--register-temporary=maybe"}, "--register-temporary"},
		{[]string{"--control-socket", "", "--control-group", "adm"}, "--control-group"},
		{[]string{"status", "--bogus"}, "--bogus"},
		{[]string{"status", "stray"}, "stray"},
		{[]string{"--retry-first", "0s"}, "--retry-first"},
		{[]string{"--retry-first", "-5s"}, "--retry-first"},
		{[]string{"--retry-max", "10s"}, "--retry-max"}, // below the 30 s first delay
		{[]string{"--retry-first", "2m", "--retry-max", "1m"}, "--retry-max"},
		{[]string{"--state-file", "state.json"}, "--state-file"},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", tc.args, code, errb.String())
		}
		if !strings.Contains(errb.String(), tc.flag) {
			t.Errorf("%v: message %q does not name %s", tc.args, errb.String(), tc.flag)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "--deregister-on-stop") {
		t.Errorf("--help: exit %d, output %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"--version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "addrregd ") {
		t.Errorf("--version: exit %d, output %q", code, out.String())
	}
}

func TestMissingMachineIDIsNotAUsageError(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"--machine-id", t.TempDir() + "/none"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "--duid") {
		t.Fatalf("exit %d, stderr %q; want 1 and a hint to set --duid", code, errb.String())
	}
}

// TestCLIConvention: the convention the three commands share (--help on
// stdout with a synopsis, --version, --check, exit 2 naming the flag).
func TestCLIConvention(t *testing.T) {
	duid := "000400112233445566778899aabbccddeeff"
	for _, tc := range []struct {
		args       []string
		code       int
		stdout     string // prefix
		stderrHas  string
		stderrNone bool
	}{
		{[]string{"--help"}, 0, "Usage: addrregd [flags]\n       addrregd --check [flags]\n", "", true},
		{[]string{"--version"}, 0, "addrregd " + version + "\n", "", true},
		{[]string{"--check", "--duid", duid, "-i", "eth0"}, 0, "addrregd: configuration OK: duid " + duid + ", interfaces eth0", "", true},
		{[]string{"--check", "--duid", duid, "--metrics-listen", "[::1]"}, 2, "", "--metrics-listen", false},
		{[]string{"--check", "--machine-id", "/nonexistent"}, 1, "", "--duid", false},
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
