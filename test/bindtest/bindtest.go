// Package bindtest runs ISC BIND 9 (Debian's bind9 package, `named`) in a
// test's network namespace: a primary for a forward zone and an ip6.arpa
// reverse zone that accept dynamic updates (RFC 2136) signed with a TSIG
// key made by tsig-keygen, with its configuration, zones and journals in a
// temporary directory. It never touches the system's named service or
// /etc/bind. It is test infrastructure, not a supported API.
//
//	dns := bindtest.Start(t, n.Node("dns"), bindtest.Zones{Forward: "example.net.", Reverse: "8.b.d.0.1.0.0.2.ip6.arpa."})
//	out := dns.Dig(t, host, "AAAA", "h1.example.net.")
package bindtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/topo"
)

// Zones are the zones the server is primary for, canonical FQDNs.
type Zones struct {
	Forward []string
	Reverse []string
}

// KeyName is the TSIG key's name.
const KeyName = "addrreg-test."

// Server is a running named.
type Server struct {
	Node    *topo.Node
	Dir     string
	KeyFile string // tsig-keygen's output: the key clause
	// Addr is where it listens, [::1]:53 inside Node's namespace, and on
	// every address Node has when it starts.
	Addr  string
	conf  string
	proc  *topo.Proc
	zones Zones
}

// Require skips (or, under CI, fails) the test when named, tsig-keygen or
// dig are missing.
func Require(t testing.TB) {
	t.Helper()
	for _, b := range []string{"named", "tsig-keygen", "dig"} {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found: install bind9 and bind9-dnsutils (make deps)", b)
			}
			t.Skipf("%s not found: install bind9 and bind9-dnsutils (make deps)", b)
		}
	}
}

// Start writes a configuration for zones and starts named in nd's
// namespace, waiting until it serves them.
func Start(t testing.TB, nd *topo.Node, zones Zones) *Server {
	t.Helper()
	Require(t)
	dir := t.TempDir()
	s := &Server{Node: nd, Dir: dir, KeyFile: filepath.Join(dir, "tsig.key"), Addr: "[::1]:53",
		conf: filepath.Join(dir, "named.conf"), zones: zones}
	key, err := exec.Command("tsig-keygen", "-a", "hmac-sha256", KeyName).Output()
	if err != nil {
		t.Fatalf("tsig-keygen: %v", err)
	}
	write(t, s.KeyFile, string(key))
	var b strings.Builder
	fmt.Fprintf(&b, `options {
	directory %[1]q;
	pid-file %[2]q;
	session-keyfile %[3]q;
	listen-on { none; };
	listen-on-v6 { any; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
};
controls { };
include %[4]q;
logging { category default { default_stderr; }; category update { default_stderr; }; };
`, dir, filepath.Join(dir, "named.pid"), filepath.Join(dir, "session.key"), s.KeyFile)
	for _, z := range append(append([]string(nil), zones.Forward...), zones.Reverse...) {
		file := filepath.Join(dir, strings.TrimSuffix(z, ".")+".db")
		write(t, file, `$TTL 60
@	IN SOA ns.invalid. hostmaster.invalid. 1 60 60 600 60
@	IN NS ns.invalid.
`)
		fmt.Fprintf(&b, "zone %q { type primary; file %q; update-policy { grant %s zonesub ANY; }; };\n", z, file, KeyName)
	}
	write(t, s.conf, b.String())
	if out, err := exec.Command("named-checkconf", s.conf).CombinedOutput(); err != nil {
		t.Fatalf("named-checkconf %s: %v\n%s", s.conf, err, out)
	}
	s.start(t)
	return s
}

func write(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	// -g: foreground, logs to stderr; no -u: stays root, inside the
	// namespace only; -n 1: one worker thread, the machine is shared.
	s.proc = s.Node.Start(t, "named", "named", "-g", "-n", "1", "-c", s.conf)
	deadline := time.Now().Add(20 * time.Second)
	// Not "running on Linux …", its first line: the last, " running".
	for !strings.Contains(s.proc.Output(), " running\n") {
		select {
		case <-s.proc.Done():
			t.Fatalf("named exited:\n%s", s.proc.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("named not running after 20 s:\n%s", s.proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops named (SIGTERM; it writes its journals first).
func (s *Server) Stop() { s.proc.Stop() }

// Restart starts named again with the same configuration and zones (their
// journals keep the updates made so far).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.start(t)
}

// Output is what named logged.
func (s *Server) Output() string { return s.proc.Output() }

// Dig runs dig in from's namespace against the server at addr (an
// address of the server's node, or ::1 when from is the server's node)
// and returns its +short answer lines. args are the query, e.g. "AAAA",
// "h1.example.net." or "-x", "2001:db8::1".
func Dig(t testing.TB, from *topo.Node, addr string, args ...string) []string {
	t.Helper()
	argv := append([]string{"dig", "@" + addr, "+short", "+tries=1", "+time=2"}, args...)
	out, err := from.Exec(argv...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, ";") {
			lines = append(lines, l)
		}
	}
	return lines
}

// Lookup is Dig from the server's own namespace, at ::1.
func (s *Server) Lookup(t testing.TB, args ...string) []string {
	t.Helper()
	return Dig(t, s.Node, "::1", args...)
}

// WaitFor polls Lookup until check accepts its answer, failing the test
// after timeout; it returns the last answer.
func (s *Server) WaitFor(t testing.TB, timeout time.Duration, check func([]string) bool, args ...string) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.Lookup(t, args...)
		if check(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("dig %s: %q after %v", strings.Join(args, " "), got, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
