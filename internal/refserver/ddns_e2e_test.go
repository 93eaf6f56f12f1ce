package refserver_test

import (
	"database/sql"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	_ "github.com/jackc/pgx/v5/stdlib"       // database/sql driver "pgx"
	_ "github.com/ncruces/go-sqlite3/driver" // database/sql driver "sqlite3"

	"github.com/addrreg/addrreg/internal/refserver"
	"github.com/addrreg/addrreg/test/bindtest"
	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/pgtest"
	"github.com/addrreg/addrreg/test/topo"
)

// registerFQDN sends an ADDR-REG-INFORM with a Client FQDN option (RFC
// 4704 §4.1, flags 0, name in wire format) and waits for the reply.
func registerFQDN(t *testing.T, nd *topo.Node, addr netip.Addr, duid []byte, name string, valid uint32) {
	t.Helper()
	data := []byte{0} // flags
	for l := range strings.SplitSeq(name, ".") {
		data = append(data, byte(len(l)))
		data = append(data, l...)
	}
	data = append(data, 0)
	msg := informMsg([3]byte{byte(addr.As16()[15]), 0x39, byte(valid)}, duid, addr, valid, valid)
	msg = append(msg, 0, byte(dhcpv6.OptionFQDN), 0, byte(len(data)))
	msg = append(msg, data...)
	if err := nd.Do(func() error {
		r, err := dhcp6test.Exchange("eth0", addr, msg, 5*time.Second)
		if err == nil && r.MessageType != dhcpv6.MessageTypeAddrRegReply {
			t.Errorf("register %s: %s", addr, r.MessageType)
		}
		return err
	}); err != nil {
		t.Fatalf("register %s: %v", addr, err)
	}
}

// TestE2EDNSRestart: the DNS updates a stopped server had not done are
// done when it starts again (its journal, in the database), and a binding
// that expired while it was down loses its records when it starts; the
// history shows what the updates did. On SQLite and PostgreSQL.
func TestE2EDNSRestart(t *testing.T) {
	topo.RequireRoot(t)
	bindtest.Require(t)
	bin := topo.BuildBinary(t, "./cmd/addrreg-refserver")
	t.Run("sqlite", func(t *testing.T) { testDNSRestart(t, bin, filepath.Join(t.TempDir(), "bindings.db")) })
	t.Run("postgres", func(t *testing.T) {
		if testing.Short() {
			t.Skip("PostgreSQL: not under -short")
		}
		testDNSRestart(t, bin, pgtest.Shared(t).NewDB(t))
	})
}

func testDNSRestart(t *testing.T, bin, db string) {
	n := topo.New(t)
	srv, cli := n.Node("server"), n.Node("client")
	srv.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	a1, a2, a3 := netip.MustParseAddr("2001:db8:1::10"), netip.MustParseAddr("2001:db8:1::11"), netip.MustParseAddr("2001:db8:1::12")
	for _, a := range []netip.Addr{a1, a2, a3} {
		cli.MustExec(t, "ip", "-6", "addr", "add", a.String()+"/64", "dev", "eth0", "nodad")
	}
	dns := bindtest.Start(t, srv, bindtest.Zones{Forward: []string{"example.net."}, Reverse: []string{"8.b.d.0.1.0.0.2.ip6.arpa."}})
	args := []string{"-i", "eth0", "--db", db, "--ddns-server", "[::1]:53", "--ddns-forward-zone", "example.net.",
		"--ddns-reverse-zone", "8.b.d.0.1.0.0.2.ip6.arpa.", "--ddns-tsig-key-file", dns.KeyFile}
	p := startServer(t, srv, bin, args...)
	duid := testDUID(7)
	aaaa := func(want ...netip.Addr) func([]string) bool {
		var w []string
		for _, a := range want {
			w = append(w, a.String())
		}
		slices.Sort(w)
		return func(got []string) bool { slices.Sort(got); return slices.Equal(got, w) }
	}

	registerFQDN(t, cli, a1, duid, "h1", 3600)
	registerFQDN(t, cli, a3, duid, "h1", 3) // expires while the server is down
	expired := time.Now().Add(3 * time.Second)
	dns.WaitFor(t, 10*time.Second, aaaa(a1, a3), "AAAA", "h1.example.net.")

	dns.Stop()
	registerFQDN(t, cli, a2, duid, "h1", 3600)
	p.WaitOutput(t, "DNS update failed", 10*time.Second)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(t, 10*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if got := pendingDNS(t, db); !slices.Contains(got, a2.String()) {
		t.Fatalf("ddns_pending after stop: %v; want %s", got, a2)
	}
	// Start again once a3's binding has run out.
	time.Sleep(time.Until(expired.Add(200 * time.Millisecond)))

	if strings.Contains(p.Output(), "msg=expire") {
		t.Fatalf("a3 expired before the server stopped: the test did not test expiry at start\n%s", p.Output())
	}
	dns.Restart(t)
	p2 := startServer(t, srv, bin, args...)
	dns.WaitFor(t, 10*time.Second, aaaa(a1, a2), "AAAA", "h1.example.net.")
	dns.WaitFor(t, 5*time.Second, func(got []string) bool { return slices.Equal(got, []string{"h1.example.net."}) }, "-x", a2.String())
	dns.WaitFor(t, 5*time.Second, func(got []string) bool { return len(got) == 0 }, "-x", a3.String())
	if !strings.Contains(p2.Output(), "msg=expire") {
		t.Errorf("the restarted server logged no expiry:\n%s", p2.Output())
	}
	// The outcomes are in the history: a1 added before the stop, a2
	// failed while BIND was down and added after the restart, a3's
	// records removed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var got []string
		recs, err := refserver.ReadHistoryDB(t.Context(), db, "", refserver.HistoryQuery{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Event == refserver.EventDNS {
				res, _, _ := strings.Cut(r.Reason, ":")
				got = append(got, r.Addr.String()+" "+res+" "+r.FQDN)
			}
		}
		want := []string{a1.String() + " AAAA added h1.example.net.", a1.String() + " PTR added h1.example.net.",
			a2.String() + " AAAA failed h1.example.net.", a2.String() + " AAAA added h1.example.net.", a2.String() + " PTR added h1.example.net.",
			a3.String() + " AAAA removed h1.example.net.", a3.String() + " PTR removed "}
		if slices.ContainsFunc(want, func(w string) bool { return !slices.Contains(got, w) }) {
			if time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			t.Errorf("dns history %q, want (among others) %q", got, want)
		}
		break
	}
	if got := pendingDNS(t, db); len(got) != 0 {
		t.Errorf("ddns_pending once done: %v", got)
	}
}

// pendingDNS reads the addresses in the database's DNS journal.
func pendingDNS(t *testing.T, db string) []string {
	t.Helper()
	drv, dsn := "sqlite3", "file:"+db+"?mode=ro&_pragma=busy_timeout(5000)"
	if strings.HasPrefix(db, "postgres") {
		drv, dsn = "pgx", db
	}
	d, err := sql.Open(drv, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rows, err := d.Query(`SELECT addr FROM ddns_pending`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestE2EDNSNeverDelaysReplies: with a DNS server that never answers (an
// on-link address nobody holds: every exchange times out), registrations
// are answered as fast as without one.
func TestE2EDNSNeverDelaysReplies(t *testing.T) {
	topo.RequireRoot(t)
	bin := topo.BuildBinary(t, "./cmd/addrreg-refserver")
	n := topo.New(t)
	srv, cli := n.Node("server"), n.Node("client")
	srv.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	key := filepath.Join(t.TempDir(), "tsig.key")
	if err := os.WriteFile(key, []byte("key \"k\" { algorithm hmac-sha256; secret \"c2VjcmV0\"; };\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServer(t, srv, bin, "-i", "eth0", "--db", filepath.Join(t.TempDir(), "bindings.db"),
		"--ddns-server", "[2001:db8:1::dead]:53", "--ddns-forward-zone", "example.net.", "--ddns-tsig-key-file", key)
	duid := testDUID(8)
	var worst time.Duration
	for i := range 10 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: byte(0x20 + i)})
		cli.MustExec(t, "ip", "-6", "addr", "add", a.String()+"/64", "dev", "eth0", "nodad")
		start := time.Now()
		registerFQDN(t, cli, a, duid, "h"+string(rune('a'+i)), 3600)
		worst = max(worst, time.Since(start))
	}
	p.WaitOutput(t, "DNS update failed", 10*time.Second)
	t.Logf("slowest of 10 replies with DNS unreachable: %v", worst.Round(time.Microsecond))
	if worst > time.Second {
		t.Errorf("a reply took %v: DNS updates delay replies", worst)
	}
	// Nor does an exchange under way delay a stop.
	start := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(t, 10*time.Second); err != nil {
		t.Errorf("exit: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stopping took %v, want < 2s", d)
	}
}
