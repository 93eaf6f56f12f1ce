package refserver_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/addrreg/addrreg/internal/refserver"
	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

type queryJSON struct {
	Status     uint16 `json:"status"`
	StatusText string `json:"status_text"`
	Clients    []struct {
		DUID    string `json:"duid"`
		CLTTime uint32 `json:"clt_time"`
		Addrs   []struct {
			Addr      string `json:"addr"`
			Preferred uint32 `json:"preferred_lifetime"`
			Valid     uint32 `json:"valid_lifetime"`
		} `json:"addrs"`
	} `json:"clients"`
}

// query runs `addrreg-refserver query ARGS --json` in nd and decodes it.
func query(t *testing.T, nd *topo.Node, bin string, args ...string) queryJSON {
	t.Helper()
	out := nd.MustExec(t, append([]string{bin, "query", "--json"}, args...)...)
	var q queryJSON
	if err := json.Unmarshal([]byte(out), &q); err != nil {
		t.Fatalf("query %v: %v\n%s", args, err, out)
	}
	return q
}

// queryAddrs maps the addresses of the command's JSON answer to their DUID.
func queryAddrs(q queryJSON) map[string]string {
	m := map[string]string{}
	for _, c := range q.Clients {
		for _, a := range c.Addrs {
			m[a.Addr] = c.DUID
		}
	}
	return m
}

// register sends an ADDR-REG-INFORM from addr in nd and checks the reply.
func register(t *testing.T, nd *topo.Node, ifname string, addr netip.Addr, duid []byte, preferred, valid uint32) {
	t.Helper()
	xid := [3]byte{byte(addr.As16()[15]), 0x42, byte(valid)}
	msg := informMsg(xid, duid, addr, preferred, valid)
	var r *dhcpv6.Message
	err := nd.Do(func() error {
		var err error
		r, err = dhcp6test.Exchange(ifname, addr, msg, 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("register %s: %v", addr, err)
	}
	if r.MessageType != dhcpv6.MessageTypeAddrRegReply {
		t.Fatalf("register %s: got %s, want ADDR-REG-REPLY", addr, r.MessageType)
	}
	ia, ok := r.Options.GetOne(dhcpv6.OptionIAAddr).(*dhcpv6.OptIAAddress)
	if !ok || !bytes.Equal(ia.ToBytes(), msg[len(msg)-24:]) {
		t.Fatalf("register %s: IA Address not echoed: %v", addr, r.Options.GetOne(dhcpv6.OptionIAAddr))
	}
}

func startServer(t *testing.T, nd *topo.Node, bin string, args ...string) *topo.Proc {
	t.Helper()
	// A control socket of the test's own unless args name one (the last
	// --control-socket wins): the default under /run is shared by every test.
	p := nd.Start(t, "refserver", append([]string{bin, "--control-socket", topo.ControlSocket(t)}, args...)...)
	p.WaitOutput(t, "msg=listening", 15*time.Second)
	return p
}

// TestE2E: a client registers 3 addresses from their own source addresses;
// query finds them by address and by client ID; kill -9 and restart keeps
// them; a binding with a 3 s valid lifetime disappears on time; SIGTERM exits 0.
func TestE2E(t *testing.T) {
	topo.RequireRoot(t)
	bin := topo.BuildBinary(t, "./cmd/addrreg-refserver")
	n := topo.New(t)
	srv, cli := n.Node("server"), n.Node("client")
	srv.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	addrs := []netip.Addr{netip.MustParseAddr("2001:db8:1::10"), netip.MustParseAddr("2001:db8:1::11"), netip.MustParseAddr("2001:db8:1::12")}
	short := netip.MustParseAddr("2001:db8:1::20")
	for _, a := range append(addrs, short) {
		cli.MustExec(t, "ip", "-6", "addr", "add", a.String()+"/64", "dev", "eth0", "nodad")
	}
	db := filepath.Join(t.TempDir(), "bindings.db")
	args := []string{"-i", "eth0", "--db", db}
	p := startServer(t, srv, bin, args...)

	// Information-Request from the link-local address: a Reply with option 148.
	var ir *dhcpv6.Message
	duid := testDUID(1)
	ll, _ := netip.AddrFromSlice(cli.WaitAddrs(t, "eth0", topo.LinkLocal, 10*time.Second)[0].IP)
	if err := cli.Do(func() error {
		var err error
		ir, err = dhcp6test.Exchange("eth0", ll, infoRequestMsg([3]byte{1, 2, 3}, duid), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("Information-Request: %v", err)
	}
	if ir.MessageType != dhcpv6.MessageTypeReply || ir.GetOneOption(dhcpv6.OptionAddrRegEnable) == nil {
		t.Fatalf("Information-Request answered with %s, want Reply with option 148", ir.Summary())
	}

	for _, a := range addrs {
		register(t, cli, "eth0", a, duid, 1800, 3600)
	}
	check := func(stage string) {
		t.Helper()
		for _, a := range addrs {
			b := dhcp6test.Bindings(t, srv, refserver.QueryOptions{Address: a})
			if got := b[a].DUID; got != hex.EncodeToString(duid) {
				t.Errorf("%s: leasequery by address %s: DUID %q, want %x (%v)", stage, a, got, duid, b)
			}
		}
		// By client ID with the command an operator runs.
		q := query(t, srv, bin, "--client-id", hex.EncodeToString(duid))
		got := queryAddrs(q)
		for _, a := range addrs {
			if got[a.String()] != hex.EncodeToString(duid) {
				t.Errorf("%s: query --client-id: %v, want %v (%+v)", stage, got, addrs, q)
			}
		}
		if len(got) != len(addrs) {
			t.Errorf("%s: query --client-id: %v, want %v (%+v)", stage, got, addrs, q)
		}
	}
	check("after registration")
	// A requestor outside --leasequery-allow (default ::1) gets NotAllowed.
	out, err := cli.Exec(bin, "query", "--json", "--server", "2001:db8:1::1", "--address", addrs[0].String())
	var na queryJSON
	line, _, _ := strings.Cut(out, "\n") // stdout's JSON, then stderr's complaint
	if jerr := json.Unmarshal([]byte(line), &na); err == nil || jerr != nil || na.Status != 10 || len(na.Clients) != 0 {
		t.Errorf("query from the client: err %v, output %q; want exit 1 and status 10 (NotAllowed)", err, out)
	}

	// kill -9 and restart: every answered registration was durable.
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.Wait(t, 5*time.Second)
	p = startServer(t, srv, bin, args...)
	check("after kill -9 and restart")

	// A 3 s binding disappears on time.
	register(t, cli, "eth0", short, testDUID(2), 3, 3)
	if b := dhcp6test.Bindings(t, srv, refserver.QueryOptions{Address: short}); len(b) != 1 {
		t.Fatalf("short binding not found: %v", b)
	}
	time.Sleep(3500 * time.Millisecond)
	if b := dhcp6test.Bindings(t, srv, refserver.QueryOptions{Address: short}); len(b) != 0 {
		t.Fatalf("short binding still there after 3.5 s: %v", b)
	}
	p.WaitOutput(t, "msg=expire", 5*time.Second) // logged after the removal is committed

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(t, 10*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.Output())
	}
	// The history in the database, after a clean shutdown.
	hist, err := refserver.ReadHistory(db)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, h := range hist {
		count[h.Event]++
		if h.Event == "expire" && h.Addr != short {
			t.Errorf("expire record for %s, want %s", h.Addr, short)
		}
	}
	if count["register"] != 4 || count["expire"] != 1 {
		t.Errorf("history events %v, want 4 register and 1 expire", count)
	}
}

// TestE2ERelay: client on lan2, dnsmasq relaying between lan2 and the
// server's segment with the deployment guide's configuration
// (doc/examples/dnsmasq-relay.conf); the registration is answered through
// the relay and the binding carries the relay's link-address.
func TestE2ERelay(t *testing.T) {
	bin := topo.BuildBinary(t, "./cmd/addrreg-refserver")
	rn := newRelayNet(t)
	// The relayed link is configured by its link-address, as an operator must.
	p := startServer(t, rn.srv, bin, "-i", "eth0", "--prefix", "2001:db8:2::1=2001:db8:2::/64", "--db", filepath.Join(t.TempDir(), "b.db"), "--log-level", "debug")
	rp := rn.startDnsmasq(t)

	duid := testDUID(7)
	register(t, rn.cli, "eth1", rn.addr, duid, 600, 1200)
	b := dhcp6test.Bindings(t, rn.srv, refserver.QueryOptions{Address: rn.addr})
	if got := b[rn.addr].DUID; got != hex.EncodeToString(duid) {
		t.Fatalf("relayed binding: %v", b)
	}
	// The binding is committed (and so visible to leasequery) before the
	// register line is logged: wait for the line, then read its fields.
	p.WaitOutput(t, "msg=register ", 10*time.Second)
	for _, want := range []string{"msg=register", "relayed=true", "link_addr=2001:db8:2::1", "link_layer="} {
		if !strings.Contains(p.Output(), want) {
			t.Errorf("server log lacks %s (dnsmasq adds option 79):\n%s", want, p.Output())
		}
	}
	if testing.Verbose() {
		t.Logf("server:\n%s\nrelay:\n%s", p.Output(), rp.Output())
	}
}

// TestE2ELoadgen runs addrreg-loadgen against the server: every INFORM from
// 200 source addresses is answered. ADDRREG_LOADGEN_ARGS replaces the
// loadgen's rate/count arguments for a measurement; -v prints the report.
func TestE2ELoadgen(t *testing.T) {
	topo.RequireRoot(t)
	bin := topo.BuildBinary(t, "./cmd/addrreg-refserver")
	lg := topo.BuildBinary(t, "./cmd/addrreg-loadgen")
	n := topo.New(t)
	srv, cli := n.Node("server"), n.Node("loadgen")
	srv.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	srvArgs := []string{"-i", "eth0", "--db", filepath.Join(t.TempDir(), "b.db"), "--no-registration-log"}
	if extra := os.Getenv("ADDRREG_REFSERVER_ARGS"); extra != "" {
		srvArgs = append(srvArgs, strings.Fields(extra)...)
	}
	p := startServer(t, srv, bin, srvArgs...)
	args := []string{"-n", "200", "--count", "2000", "--rate", "0", "--window", "64", "--timeout", "10s"}
	if extra := os.Getenv("ADDRREG_LOADGEN_ARGS"); extra != "" {
		args = strings.Fields(extra)
	}
	out := cli.MustExec(t, append([]string{lg, "-i", "eth0", "--prefix", "2001:db8:1::/64", "--json"}, args...)...)
	var rep struct {
		Sent, Replied, Dropped int
		P99                    float64 `json:"p99_ms"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("loadgen output: %v\n%s", err, out)
	}
	t.Logf("loadgen %v: %s", args, out)
	for _, nd := range []*topo.Node{srv, cli} {
		for _, l := range strings.Split(nd.MustExec(t, "cat", "/proc/net/snmp6"), "\n") {
			if strings.HasPrefix(l, "Udp6RcvbufErrors") || strings.HasPrefix(l, "Udp6SndbufErrors") {
				t.Logf("%s: %s", nd.Name, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	if rep.Sent == 0 || rep.Replied != rep.Sent || rep.Dropped != 0 {
		t.Errorf("sent %d, replied %d, dropped %d; want all answered", rep.Sent, rep.Replied, rep.Dropped)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(t, 10*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}
