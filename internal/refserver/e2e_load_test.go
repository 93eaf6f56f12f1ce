package refserver_test

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/pgtest"
	"github.com/addrreg/addrreg/test/topo"
)

// relayLink is the relayed link of these tests: relay link-address
// 2001:db8:2::1, prefix 2001:db8:2::/64.
var relayLink = netip.MustParseAddr("2001:db8:2::1")

// relayer sends relayed ADDR-REG-INFORMs from [::]:547 in a node, as a relay
// does, and records which addresses were acknowledged.
type relayer struct {
	c    *net.UDPConn
	dst  *net.UDPAddr
	mu   sync.Mutex
	acks map[netip.Addr]bool
	done chan struct{}
}

func newRelayer(t *testing.T, nd *topo.Node, server netip.Addr) *relayer {
	t.Helper()
	r := &relayer{dst: &net.UDPAddr{IP: server.AsSlice(), Port: 547}, acks: map[netip.Addr]bool{}, done: make(chan struct{})}
	if err := nd.Do(func() error {
		var err error
		r.c, err = net.ListenUDP("udp6", &net.UDPAddr{Port: 547})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_ = r.c.SetReadBuffer(4 << 20)
	go r.read()
	t.Cleanup(func() { r.c.Close(); <-r.done })
	return r
}

// read records the address of every ADDR-REG-REPLY in a Relay-Reply.
func (r *relayer) read() {
	defer close(r.done)
	buf := make([]byte, 65536)
	for {
		n, err := r.c.Read(buf)
		if err != nil {
			return
		}
		b := buf[:n]
		if len(b) < 38 || b[0] != 13 {
			continue
		}
		// Relay-Reply: the Relay Message option holds the ADDR-REG-REPLY,
		// whose last option is the echoed IA Address.
		for o := b[34:]; len(o) >= 4; {
			code, l := binary.BigEndian.Uint16(o), int(binary.BigEndian.Uint16(o[2:]))
			if len(o) < 4+l {
				break
			}
			if m := o[4 : 4+l]; code == 9 && len(m) >= 28 && m[0] == 37 {
				a := netip.AddrFrom16([16]byte(m[len(m)-24 : len(m)-8]))
				r.mu.Lock()
				r.acks[a] = true
				r.mu.Unlock()
			}
			o = o[4+l:]
		}
	}
}

func (r *relayer) send(duid []byte, a netip.Addr) error {
	inf := informMsg([3]byte{a.As16()[13], a.As16()[14], a.As16()[15]}, duid, a, 1800, 3600)
	b := []byte{12, 0}
	l, p := relayLink.As16(), a.As16()
	b = append(append(b, l[:]...), p[:]...)
	b = binary.BigEndian.AppendUint16(b, 9)
	b = binary.BigEndian.AppendUint16(b, uint16(len(inf)))
	_, err := r.c.WriteToUDP(append(b, inf...), r.dst)
	return err
}

func (r *relayer) acked() map[netip.Addr]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[netip.Addr]bool, len(r.acks))
	for a := range r.acks {
		m[a] = true
	}
	return m
}

func relayAddr(i int) netip.Addr {
	a := relayLink.As16()
	a[12], a[13], a[14], a[15] = 0, 1, byte(i>>8), byte(i)
	return netip.AddrFrom16(a)
}

// queryAll lists every binding with `query --bulk` (QUERY_BY_LINK_ADDRESS
// 0::0 over TCP) and returns address → DUID.
func queryAll(t *testing.T, nd *topo.Node, bin string, args ...string) (map[string]string, string) {
	t.Helper()
	out := nd.MustExec(t, append([]string{bin, "query", "--json"}, args...)...)
	var q queryJSON
	line := out
	if i := strings.Index(out, "{"); i >= 0 {
		line, _, _ = strings.Cut(out[i:], "\n")
	}
	if err := json.Unmarshal([]byte(line), &q); err != nil {
		t.Fatalf("query %v: %v\n%s", args, err, out)
	}
	return queryAddrs(q), out
}

// relayLab is a server (2001:db8:1::1) and a relay (2001:db8:1::2) on one
// segment, the refserver binary, and its arguments serving relayLink's
// prefix without rate limits, with a fresh database.
func relayLab(t *testing.T) (srv, relay *topo.Node, bin string, args []string) {
	t.Helper()
	topo.RequireRoot(t)
	bin = topo.BuildBinary(t, "./cmd/addrreg-refserver")
	n := topo.New(t)
	srv, relay = n.Node("server"), n.Node("relay")
	srv.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	relay.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad")
	args = []string{"-i", "eth0", "--prefix", "2001:db8:2::1=2001:db8:2::/64", "--db", filepath.Join(t.TempDir(), "b.db"),
		"--rate", "0", "--rate-duid", "0", "--no-registration-log"}
	return srv, relay, bin, args
}

// TestE2EBulkQuery: a client registers 5,000 addresses through a relay
// (--max-bindings-per-duid lets it). `query --client-id` over UDP is told
// the answer is too large and asks again over TCP by itself; `query --bulk`
// by client ID and by the relay's link-address list all 5,000.
func TestE2EBulkQuery(t *testing.T) {
	srv, relay, bin, args := relayLab(t)
	startServer(t, srv, bin, append(args, "--max-bindings-per-duid", "6000")...)
	r := newRelayer(t, relay, netip.MustParseAddr("2001:db8:1::1"))
	const count = 5000
	duid := testDUID(9)
	deadline := time.Now().Add(60 * time.Second)
	for {
		acked := r.acked()
		if len(acked) == count {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d registrations acknowledged after 60 s", len(acked), count)
		}
		for i := range count {
			if a := relayAddr(i); !acked[a] {
				if err := r.send(duid, a); err != nil {
					t.Fatal(err)
				}
				if i%200 == 0 {
					time.Sleep(time.Millisecond) // do not overrun the socket buffers
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	want := hex.EncodeToString(duid)
	for _, args := range [][]string{
		{"--client-id", want},
		{"--bulk", "--client-id", want},
		{"--bulk", "--link-address", relayLink.String()},
	} {
		got, out := queryAll(t, srv, bin, args...)
		if len(got) != count {
			t.Errorf("query %v: %d addresses, want %d", args, len(got), count)
		}
		for a, d := range got {
			if d != want {
				t.Errorf("query %v: %s held by %s, want %s", args, a, d, want)
				break
			}
		}
		if args[0] == "--client-id" && !strings.Contains(out, "asking over TCP") {
			t.Errorf("query %v over UDP: no fallback to TCP reported:\n%.300s", args, out)
		}
	}
}

// e2eBackends are the databases an end-to-end test runs its server on: an
// SQLite file, and a database of the shared test PostgreSQL (test/pgtest,
// over its unix socket, which a server in a network namespace reaches too).
func e2eBackends(t *testing.T) map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return filepath.Join(t.TempDir(), "b.db") },
		"postgres": func(t *testing.T) string { return pgtest.Shared(t).NewDB(t) },
	}
}

// withDB replaces the --db argument of a relayLab.
func withDB(args []string, db string) []string {
	out := slices.Clone(args)
	for i := range out {
		if out[i] == "--db" {
			out[i+1] = db
		}
	}
	return out
}

// loadStream sends about 5,000 registrations a second (distinct clients,
// through r) until stop is closed, then says how many it sent.
func loadStream(r *relayer, stop <-chan struct{}, sent chan<- int) {
	i := 0
	defer func() { sent <- i }()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		for range 5 {
			_ = r.send([]byte{0, 2, 0, 0, 0x7e, 0x99, byte(i >> 16), byte(i >> 8), byte(i)}, relayAddr(i))
			i++
		}
	}
}

// checkNoneLost fails t for every acknowledged address that is not stored.
func checkNoneLost(t *testing.T, acked map[netip.Addr]bool, got map[string]string) {
	t.Helper()
	lost := 0
	for a := range acked {
		if _, ok := got[a.String()]; !ok {
			lost++
			if lost <= 5 {
				t.Errorf("%s was acknowledged but is not stored", a)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d acknowledged registrations lost", lost)
	}
}

// TestE2EKillUnderLoad: registrations stream in (distinct clients, through
// a relay) while the server is killed with SIGKILL; after a restart every
// registration that was acknowledged is still there: nothing is answered
// before it is committed. On both databases.
func TestE2EKillUnderLoad(t *testing.T) {
	for name, newDB := range e2eBackends(t) {
		t.Run(name, func(t *testing.T) {
			srv, relay, bin, args := relayLab(t)
			testKillUnderLoad(t, srv, relay, bin, withDB(args, newDB(t)))
		})
	}
}

func testKillUnderLoad(t *testing.T, srv, relay *topo.Node, bin string, args []string) {
	p := startServer(t, srv, bin, args...)
	r := newRelayer(t, relay, netip.MustParseAddr("2001:db8:1::1"))

	// About 5,000 a second until well after the kill.
	stop := make(chan struct{})
	sent := make(chan int)
	go loadStream(r, stop, sent)
	for deadline := time.Now().Add(30 * time.Second); len(r.acked()) < 3000; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged after 30 s\n%s", len(r.acked()), p.Output())
		}
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.Wait(t, 10*time.Second)
	time.Sleep(200 * time.Millisecond) // replies already on the wire arrive
	close(stop)
	total := <-sent
	acked := r.acked()

	p = startServer(t, srv, bin, args...)
	got, _ := queryAll(t, srv, bin, "--bulk")
	t.Logf("sent %d, acknowledged %d before SIGKILL, %d stored after restart", total, len(acked), len(got))
	checkNoneLost(t, acked, got)
	_ = p.Signal(syscall.SIGTERM)
}

// TestE2EPostgresRestartUnderLoad: PostgreSQL restarts (pg_ctl restart -m
// fast) while registrations stream in. The server stops acknowledging while
// it cannot commit, says so, and resumes by itself; no acknowledged
// registration is lost.
func TestE2EPostgresRestartUnderLoad(t *testing.T) {
	pg := pgtest.Shared(t)
	srv, relay, bin, args := relayLab(t)
	p := startServer(t, srv, bin, withDB(args, pg.NewDB(t))...)
	r := newRelayer(t, relay, netip.MustParseAddr("2001:db8:1::1"))
	stop := make(chan struct{})
	sent := make(chan int)
	go loadStream(r, stop, sent)
	for deadline := time.Now().Add(30 * time.Second); len(r.acked()) < 2000; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged after 30 s\n%s", len(r.acked()), p.Output())
		}
	}
	if err := pg.Restart(); err != nil {
		t.Fatal(err)
	}
	before := len(r.acked())
	p.WaitOutput(t, "database commits work again", 60*time.Second)
	for deadline := time.Now().Add(30 * time.Second); len(r.acked()) < before+2000; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after the restart: %d acknowledged, %d before it\n%s", len(r.acked()), before, p.Output())
		}
	}
	close(stop)
	total := <-sent
	time.Sleep(500 * time.Millisecond) // the last replies arrive
	acked := r.acked()
	got, _ := queryAll(t, srv, bin, "--bulk")
	t.Logf("sent %d, acknowledged %d (%d before the restart), %d stored", total, len(acked), before, len(got))
	if !strings.Contains(p.Output(), "database commit failed") {
		t.Errorf("no log line about the failed commits:\n%.2000s", p.Output())
	}
	checkNoneLost(t, acked, got)
	_ = p.Signal(syscall.SIGTERM)
}

// A server told to stop while its database is down stops at once: the
// writer's backoff between failed commits (doubling up to 5 s) ends with
// the server instead of holding its shutdown.
func TestE2EStopWhileDatabaseDown(t *testing.T) {
	pg := pgtest.Shared(t)
	srv, relay, bin, args := relayLab(t)
	p := startServer(t, srv, bin, append(withDB(args, pg.NewDB(t)), "--log-level", "debug")...)
	r := newRelayer(t, relay, netip.MustParseAddr("2001:db8:1::1"))
	stop := make(chan struct{})
	sent := make(chan int)
	go loadStream(r, stop, sent)
	defer func() { close(stop); <-sent }()
	for deadline := time.Now().Add(30 * time.Second); len(r.acked()) < 100; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged after 30 s\n%s", len(r.acked()), p.Output())
		}
	}
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pg.Start(); err != nil {
			t.Errorf("PostgreSQL does not start again: %v", err)
		}
	})
	p.WaitOutput(t, "retry_in=5s", 30*time.Second) // the backoff at its cap
	t0 := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := p.Wait(t, 30*time.Second)
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("stopped %v after SIGTERM (exit %v), want at once: the backoff held the shutdown\n%.3000s", took.Round(time.Millisecond), err, p.Output())
	} else {
		t.Logf("stopped %v after SIGTERM (exit %v)", took.Round(time.Millisecond), err)
	}
}
