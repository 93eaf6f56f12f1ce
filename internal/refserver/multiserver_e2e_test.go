package refserver_test

import (
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/pgtest"
	"github.com/addrreg/addrreg/test/topo"
)

// TestE2ETwoServers: two servers on one PostgreSQL database, each behind
// its own relay, and a client on their link whose multicast INFORMs both
// answer. A registration through one is returned by leasequery on the
// other; --max-bindings-per-duid holds across them; the history holds each
// registration once.
func TestE2ETwoServers(t *testing.T) {
	topo.RequireRoot(t)
	db := pgtest.Shared(t).NewDB(t)
	bin := topo.BuildBinary(t, "./cmd/addrreg-refserver")
	n := topo.New(t)
	s1, s2, r1, r2, cli := n.Node("server1"), n.Node("server2"), n.Node("relay1"), n.Node("relay2"), n.Node("client")
	for nd, a := range map[*topo.Node]string{s1: "2001:db8:1::1", s2: "2001:db8:1::3", r1: "2001:db8:1::2", r2: "2001:db8:1::4"} {
		nd.MustExec(t, "ip", "-6", "addr", "add", a+"/64", "dev", "eth0", "nodad")
	}
	const limit = 6
	args := []string{"-i", "eth0", "--prefix", "2001:db8:2::1=2001:db8:2::/64", "--prefix", "eth0=2001:db8:1::/64", "--db", db,
		"--rate", "0", "--rate-duid", "0", "--max-bindings-per-duid", "6", "--log-level", "debug"}
	p1 := startServer(t, s1, bin, args...)
	p2 := startServer(t, s2, bin, args...)
	rel1 := newRelayer(t, r1, netip.MustParseAddr("2001:db8:1::1"))
	rel2 := newRelayer(t, r2, netip.MustParseAddr("2001:db8:1::3"))

	// One client, eight addresses: four through each server.
	duid := testDUID(5)
	for range 3 {
		for i := range 8 {
			rel := rel1
			if i >= 4 {
				rel = rel2
			}
			if !rel.acked()[relayAddr(i)] {
				if err := rel.send(duid, relayAddr(i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(time.Second)
	}
	acked := rel1.acked()
	for a := range rel2.acked() {
		acked[a] = true
	}
	all1, _ := queryAll(t, s1, bin, "--bulk")
	all2, _ := queryAll(t, s2, bin, "--bulk")
	if len(all1) != limit || len(acked) != limit {
		t.Errorf("%d stored, %d acknowledged; want %d (--max-bindings-per-duid across both servers)", len(all1), len(acked), limit)
	}
	for a := range acked {
		if all1[a.String()] != hex.EncodeToString(duid) || all2[a.String()] != hex.EncodeToString(duid) {
			t.Errorf("%s acknowledged, but leasequery finds %q on server1 and %q on server2", a, all1[a.String()], all2[a.String()])
		}
	}
	// By address, on the server that did not register it.
	for a := range rel1.acked() {
		if got := queryAddrs(query(t, s2, bin, "--address", a.String())); got[a.String()] != hex.EncodeToString(duid) {
			t.Errorf("server2 by address %s: %v", a, got)
		}
	}

	// A client on the link: its multicast INFORM reaches both servers, both
	// answer; the history holds it once.
	ca := netip.MustParseAddr("2001:db8:1::100")
	cli.MustExec(t, "ip", "-6", "addr", "add", ca.String()+"/64", "dev", "eth0", "nodad")
	register(t, cli, "eth0", ca, testDUID(6), 1800, 3600)
	time.Sleep(time.Second) // the slower server's commit
	out := s1.MustExec(t, bin, "history", "--json", "--db", db, "--address", ca.String())
	var hist struct{ Records []struct{ Event string } }
	if err := json.Unmarshal([]byte(out), &hist); err != nil {
		t.Fatalf("history: %v\n%s", err, out)
	}
	var events []string
	for _, h := range hist.Records {
		events = append(events, h.Event)
	}
	if len(events) != 1 || events[0] != "register" {
		t.Errorf("history of %s: %v, want one register", ca, events)
	}
	for _, p := range []*topo.Proc{p1, p2} {
		_ = p.Signal(syscall.SIGTERM)
		if err := p.Wait(t, 10*time.Second); err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	}
}
