package ddns_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/addrreg/addrreg/internal/ddns"
	"github.com/addrreg/addrreg/scheduler"
	"github.com/addrreg/addrreg/test/bindtest"
	"github.com/addrreg/addrreg/test/topo"
)

const (
	fwd = "example.net."
	rev = "8.b.d.0.1.0.0.2.ip6.arpa."
)

var (
	duidA = []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 0xa}
	duidB = []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 0xb}
	addr1 = netip.MustParseAddr("2001:db8:1::a1")
	addr2 = netip.MustParseAddr("2001:db8:1::a2")
	ula   = netip.MustParseAddr("fd00:1::a3") // outside the reverse zone
)

// startBIND runs named in a fresh namespace.
func startBIND(t *testing.T) *bindtest.Server {
	t.Helper()
	topo.RequireRoot(t)
	bindtest.Require(t)
	n := topo.New(t)
	return bindtest.Start(t, n.Node("dns"), bindtest.Zones{Forward: []string{fwd}, Reverse: []string{rev}})
}

// updater returns an Updater for s's zones, its sockets in s's namespace.
func updater(t *testing.T, s *bindtest.Server, j ddns.Journal) *ddns.Updater {
	t.Helper()
	key, err := ddns.ReadKeyFile(s.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	u, err := ddns.New(ddns.Config{
		Server: s.Addr, ForwardZones: []string{fwd}, ReverseZones: []string{rev}, Key: &key,
		Journal: j, Logger: testLogger(t), Timeout: 500 * time.Millisecond,
		Retry: scheduler.Retry{First: 100 * time.Millisecond, Max: 400 * time.Millisecond},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := s.Node.Do(func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// run runs u until the test ends (or stop is called).
func run(t *testing.T, u *ddns.Updater) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func sameSet(want ...string) func([]string) bool {
	return func(got []string) bool {
		g, w := slices.Clone(got), slices.Clone(want)
		slices.Sort(g)
		slices.Sort(w)
		return slices.Equal(g, w)
	}
}

func register(a netip.Addr, name string, duid []byte) ddns.Change {
	return ddns.Change{Addr: a, Name: name, DUID: duid, Valid: time.Minute}
}

func deregister(a netip.Addr, name string, duid []byte) ddns.Change {
	return ddns.Change{Addr: a, PrevName: name, PrevDUID: duid}
}

func TestBINDAddRemove(t *testing.T) {
	s := startBIND(t)
	u := updater(t, s, nil)
	run(t, u)
	const w = 10 * time.Second
	u.Enqueue(register(addr1, "h1", duidA)) // a partial name: qualified in the first zone
	u.Enqueue(register(addr2, "h1.example.net", duidA))
	u.Enqueue(register(ula, "h1.example.net.", duidA))
	s.WaitFor(t, w, sameSet(addr1.String(), addr2.String(), ula.String()), "AAAA", "h1.example.net.")
	s.WaitFor(t, w, sameSet("h1.example.net."), "-x", addr1.String())
	s.WaitFor(t, w, sameSet("h1.example.net."), "-x", addr2.String())
	if got := s.Lookup(t, "DHCID", "h1.example.net."); len(got) != 1 {
		t.Errorf("DHCID h1: %q, want one", got)
	}
	if got := s.Lookup(t, "AAAA", "h1.example.net."); len(got) != 3 {
		t.Errorf("AAAA: %q", got)
	}

	// A name outside the zones gets nothing.
	u.Enqueue(register(netip.MustParseAddr("2001:db8:1::a9"), "h9.example.org.", duidA))

	u.Enqueue(deregister(addr1, "h1.example.net.", duidA))
	s.WaitFor(t, w, sameSet(addr2.String(), ula.String()), "AAAA", "h1.example.net.")
	s.WaitFor(t, w, sameSet(), "-x", addr1.String())
	u.Enqueue(deregister(addr2, "h1.example.net.", duidA))
	u.Enqueue(deregister(ula, "h1.example.net.", duidA))
	s.WaitFor(t, w, sameSet(), "AAAA", "h1.example.net.")
	s.WaitFor(t, w, sameSet(), "-x", addr2.String())
	s.WaitFor(t, w, sameSet(), "DHCID", "h1.example.net.") // the name is free again
	s.WaitFor(t, w, sameSet(), "ANY", "h9.example.org.")
	waitPending(t, u, 0)

	// A renamed host: the address moves from one name to the other.
	u.Enqueue(register(addr1, "h1", duidA))
	s.WaitFor(t, w, sameSet(addr1.String()), "AAAA", "h1.example.net.")
	u.Enqueue(ddns.Change{Addr: addr1, Name: "h2", DUID: duidA, PrevName: "h1", PrevDUID: duidA, Valid: time.Minute})
	s.WaitFor(t, w, sameSet(addr1.String()), "AAAA", "h2.example.net.")
	s.WaitFor(t, w, sameSet(), "AAAA", "h1.example.net.")
	s.WaitFor(t, w, sameSet("h2.example.net."), "-x", addr1.String())
}

func TestBINDConflict(t *testing.T) {
	s := startBIND(t)
	u := updater(t, s, nil)
	run(t, u)
	const w = 10 * time.Second
	u.Enqueue(register(addr1, "h1", duidA))
	s.WaitFor(t, w, sameSet(addr1.String()), "AAAA", "h1.example.net.")
	// Another client asks for the same name: not taken.
	u.Enqueue(register(addr2, "h1", duidB))
	waitPending(t, u, 0)
	if got := s.Lookup(t, "AAAA", "h1.example.net."); !sameSet(addr1.String())(got) {
		t.Errorf("AAAA h1 after B's claim: %q, want only A's %s", got, addr1)
	}
	if got := s.Lookup(t, "-x", addr2.String()); len(got) != 0 {
		t.Errorf("PTR of B's address: %q, want none", got)
	}
	if n := testutil.ToFloat64(ddns.ConflictsCounter(u)); n != 1 {
		t.Errorf("conflicts = %v, want 1", n)
	}
	// B's deregistration does not remove A's records.
	u.Enqueue(deregister(addr2, "h1", duidB))
	waitPending(t, u, 0)
	if got := s.Lookup(t, "AAAA", "h1.example.net."); !sameSet(addr1.String())(got) {
		t.Errorf("AAAA h1 after B's deregistration: %q", got)
	}
	// Once A lets it go, B may have it.
	u.Enqueue(deregister(addr1, "h1", duidA))
	u.Enqueue(register(addr2, "h1", duidB))
	s.WaitFor(t, w, sameSet(addr2.String()), "AAAA", "h1.example.net.")
	s.WaitFor(t, w, sameSet("h1.example.net."), "-x", addr2.String())
}

func TestBINDDownThenUp(t *testing.T) {
	s := startBIND(t)
	u := updater(t, s, nil)
	s.Stop()
	run(t, u)
	u.Enqueue(register(addr1, "h1", duidA))
	deadline := time.Now().Add(10 * time.Second)
	for noAnswers(u) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no failed attempts seen")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if u.Pending() != 1 {
		t.Fatalf("pending = %d, want 1", u.Pending())
	}
	start := time.Now()
	s.Restart(t)
	s.WaitFor(t, 10*time.Second, sameSet(addr1.String()), "AAAA", "h1.example.net.")
	s.WaitFor(t, 10*time.Second, sameSet("h1.example.net."), "-x", addr1.String())
	t.Logf("records in DNS %v after named came back (%v no-answer attempts)", time.Since(start).Round(time.Millisecond), noAnswers(u))
	waitPending(t, u, 0)
}

func TestBINDRestartWithPending(t *testing.T) {
	s := startBIND(t)
	path := filepath.Join(t.TempDir(), "ddns.json")
	s.Stop()
	u1 := updater(t, s, ddns.NewFileJournal(path))
	stop1 := run(t, u1)
	u1.Enqueue(register(addr1, "h1", duidA))
	u1.Enqueue(register(addr2, "h1", duidA))
	u1.Enqueue(deregister(addr2, "h1", duidA)) // coalesced
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), addr1.String()) && strings.Contains(string(b), addr2.String()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journal never held the pending work:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop1()

	s.Restart(t)
	u2 := updater(t, s, ddns.NewFileJournal(path))
	run(t, u2)
	s.WaitFor(t, 10*time.Second, sameSet(addr1.String()), "AAAA", "h1.example.net.")
	s.WaitFor(t, 10*time.Second, sameSet("h1.example.net."), "-x", addr1.String())
	waitPending(t, u2, 0)
	ps, _, err := ddns.NewFileJournal(path).Load()
	if err != nil || len(ps) != 0 {
		t.Errorf("journal after the work is done: %v, %v; want empty", ps, err)
	}
}

func noAnswers(u *ddns.Updater) float64 {
	return testutil.ToFloat64(ddns.UpdatesCounter(u).WithLabelValues("AAAA", "add", "no_answer"))
}

func waitPending(t *testing.T, u *ddns.Updater, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for u.Pending() != n {
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d, want %d", u.Pending(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBINDBurst: 500 hosts registered at once (as after a server restart
// with an outage behind it) all reach DNS; the rate is logged.
func TestBINDBurst(t *testing.T) {
	s := startBIND(t)
	u := updater(t, s, ddns.NewFileJournal(filepath.Join(t.TempDir(), "j.json")))
	const n = 500
	for i := range n {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 14: byte(i >> 8), 15: byte(i)})
		u.Enqueue(register(a, "b"+strconv.Itoa(i), duidA))
	}
	start := time.Now()
	run(t, u)
	deadline := start.Add(60 * time.Second)
	for u.Pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d still pending after 60 s", u.Pending(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d := time.Since(start)
	t.Logf("%d hosts (AAAA+DHCID, PTR: %d updates) in DNS in %v: %.0f hosts/s", n, 2*n, d.Round(time.Millisecond), n/d.Seconds())
	if got := s.Lookup(t, "AAAA", "b499.example.net."); len(got) != 1 {
		t.Errorf("AAAA b499: %q", got)
	}
}
