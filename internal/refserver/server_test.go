package refserver_test

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/addrreg/addrreg/internal/refserver"
	"github.com/addrreg/addrreg/scheduler"
	"github.com/addrreg/addrreg/test/topo"
	"go.uber.org/goleak"
)

// TestServerInProcess runs Server.Run inside a namespace on a FakeClock: a
// registration shows in Bindings, its expiry fires from the one timer when
// the clock is advanced, and Run returns once ctx ends. It is also the
// example of using the library in-process: Run must be called inside
// Node.Do, so its socket and interface look-ups happen in the namespace.
func TestServerInProcess(t *testing.T) {
	topo.RequireRoot(t)
	n := topo.New(t)
	srvNode, cli := n.Node("server"), n.Node("client")
	srvNode.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	a := netip.MustParseAddr("2001:db8:1::10")
	cli.MustExec(t, "ip", "-6", "addr", "add", a.String()+"/64", "dev", "eth0", "nodad")

	t0 := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	clock := scheduler.NewFakeClock(t0)
	cfg := refserver.DefaultConfig()
	cfg.Interfaces = []string{"eth0"}
	cfg.Prefixes = map[string][]netip.Prefix{"eth0": {netip.MustParsePrefix("2001:db8:1::/64")}}
	cfg.DBPath = filepath.Join(t.TempDir(), "b.db")
	cfg.Clock = clock
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	s, err := refserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	ignore := goleak.IgnoreCurrent()
	go func() { runErr <- srvNode.Do(func() error { return s.Run(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
		// No goroutine of the Server outlives Run.
		goleak.VerifyNone(t, ignore)
	})

	duid := testDUID(3)
	register(t, cli, "eth0", a, duid, 30, 60)
	bs := s.Bindings()
	if len(bs) != 1 || bs[0].Addr != a || !bs[0].Expires.Equal(t0.Add(time.Minute)) {
		t.Fatalf("Bindings after register: %+v", bs)
	}
	if c := s.Counters(); c["register"] != 1 || c["received"] != 1 {
		t.Errorf("Counters: %v", c)
	}
	clock.BlockUntil(1) // the expiry timer
	clock.Advance(59 * time.Second)
	if len(s.Bindings()) != 1 {
		t.Fatalf("expired early")
	}
	clock.Advance(time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Bindings()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("binding not expired at +60 s: %+v", s.Bindings())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c := s.Counters(); c["expire"] != 1 {
		t.Errorf("Counters after expiry: %v", c)
	}
	// The expiry is committed after memory changes: wait for it.
	var kinds []string
	for deadline := time.Now().Add(5 * time.Second); len(kinds) < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		hist, err := s.History()
		if err != nil {
			t.Fatal(err)
		}
		kinds = kinds[:0]
		for _, h := range hist {
			kinds = append(kinds, h.Event)
		}
	}
	if len(kinds) != 2 || kinds[0] != "register" || kinds[1] != "expire" {
		t.Errorf("history events %v, want [register expire]", kinds)
	}
}
