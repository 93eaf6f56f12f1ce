package refserver_test

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/addrreg/addrreg/internal/refserver"
	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

// dnsmasqRelayConf is the deployment guide's dnsmasq relay configuration
// (doc/deployment.md): the tests run the file the guide shows.
const dnsmasqRelayConf = "../../doc/examples/dnsmasq-relay.conf"

// relayNet is the guide's relayed topology: the server at 2001:db8:1::1 on
// the main segment, a relay with 2001:db8:1::2 there and 2001:db8:2::1 on
// lan2, and a client only on lan2 holding addr.
type relayNet struct {
	srv, relay, cli *topo.Node
	addr            netip.Addr
}

func newRelayNet(t *testing.T) *relayNet {
	t.Helper()
	topo.RequireRoot(t)
	n := topo.New(t)
	rn := &relayNet{srv: n.Node("server"), relay: n.Node("relay"), cli: n.Node("client"), addr: netip.MustParseAddr("2001:db8:2::10")}
	lan2 := n.Segment("lan2")
	lan2.Attach(rn.relay, "eth1")
	lan2.Attach(rn.cli, "eth1")
	rn.cli.MustExec(t, "ip", "link", "set", "eth0", "down") // the client is only on lan2
	rn.srv.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	rn.srv.MustExec(t, "ip", "-6", "route", "add", "2001:db8:2::/64", "via", "2001:db8:1::2")
	rn.relay.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad")
	rn.relay.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:2::1/64", "dev", "eth1", "nodad")
	rn.relay.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
	rn.cli.MustExec(t, "ip", "-6", "addr", "add", rn.addr.String()+"/64", "dev", "eth1", "nodad")
	return rn
}

// startDnsmasq runs dnsmasq on the relay with the guide's configuration file.
func (rn *relayNet) startDnsmasq(t *testing.T) *topo.Proc {
	t.Helper()
	conf, err := filepath.Abs(dnsmasqRelayConf)
	if err != nil {
		t.Fatal(err)
	}
	p := rn.relay.Start(t, "dnsmasq", "dnsmasq", "-d", "-C", conf, "--log-debug", "--log-dhcp",
		"--pid-file="+filepath.Join(t.TempDir(), "dnsmasq.pid"))
	p.WaitOutput(t, "DHCP relay", 10*time.Second)
	return p
}

// ISC's dhcrelay (Debian's isc-dhcp-relay 4.4) relays an Information-Request
// but drops ADDR-REG-INFORM as an unknown message type (SPEC.md §5): the
// deployment guide tells operators to use another relay. The
// Information-Request is the control: the same relay, server and client
// work for a message dhcrelay knows.
func TestE2EDhcrelayDropsInform(t *testing.T) {
	bin := topo.BuildBinary(t, "./cmd/addrreg-refserver")
	rn := newRelayNet(t)
	p := startServer(t, rn.srv, bin, "-i", "eth0", "--prefix", "2001:db8:2::1=2001:db8:2::/64", "--db", filepath.Join(t.TempDir(), "b.db"), "--log-level", "debug")
	rn.relay.WaitAddrs(t, "eth1", topo.LinkLocal, 10*time.Second)
	rp := rn.relay.Start(t, "dhcrelay", "dhcrelay", "-6", "-d", "-pf", filepath.Join(t.TempDir(), "dhcrelay.pid"),
		"-l", "eth1", "-u", "2001:db8:1::1%eth0")
	rp.WaitOutput(t, "Sending on", 10*time.Second)

	duid := testDUID(9)
	var r *dhcpv6.Message
	if err := rn.cli.Do(func() error {
		var err error
		r, err = dhcp6test.Exchange("eth1", rn.addr, infoRequestMsg([3]byte{1, 2, 3}, duid), 10*time.Second)
		return err
	}); err != nil {
		t.Fatalf("Information-Request through dhcrelay (the control): %v\nrelay:\n%s", err, rp.Output())
	}
	if r.MessageType != dhcpv6.MessageTypeReply || r.GetOneOption(dhcpv6.OptionAddrRegEnable) == nil {
		t.Fatalf("Information-Request through dhcrelay: got %s %v, want a Reply with option 148", r.MessageType, r.Options)
	}

	if err := rn.cli.Do(func() error {
		_, err := dhcp6test.Exchange("eth1", rn.addr, informMsg([3]byte{4, 5, 6}, duid, rn.addr, 600, 1200), 4*time.Second)
		return err
	}); err == nil {
		t.Fatalf("ADDR-REG-INFORM through dhcrelay was answered: this dhcrelay relays registrations; update doc/deployment.md")
	}
	if !strings.Contains(rp.Output(), "Unknown 36 type") {
		t.Errorf("dhcrelay log lacks \"Unknown 36 type\":\n%s", rp.Output())
	}
	if strings.Contains(p.Output(), "msg=register") {
		t.Errorf("the server registered something through dhcrelay:\n%s", p.Output())
	}
	q := query(t, rn.srv, bin, "--address", rn.addr.String())
	if q.Status != uint16(refserver.StatusSuccess) || len(q.Clients) != 0 {
		t.Errorf("leasequery for %s after the dropped registration: %+v, want success and no client", rn.addr, q)
	}
	if testing.Verbose() {
		t.Logf("relay:\n%s", rp.Output())
	}
}
