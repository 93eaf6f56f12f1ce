package dhcp6test

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/addrreg/addrreg/test/topo"
)

// TestE2EKit checks the kit itself on a real network: the responder
// answers direct and relayed (through Debian's dnsmasq) messages, from a
// chosen source address, and the sniffer sees the answers reach the
// client's port with kernel timestamps.
func TestE2EKit(t *testing.T) {
	n := topo.New(t)
	srv, relay, cli := n.Node("server"), n.Node("relay"), n.Node("client")
	lan2 := n.Segment("lan2")
	lan2.Attach(relay, "eth1")
	lan2.Attach(cli, "eth1")
	srv.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
	srv.MustExec(t, "ip", "-6", "route", "add", "2001:db8:2::/64", "via", "2001:db8:1::2")
	relay.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad")
	relay.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:2::1/64", "dev", "eth1", "nodad")
	relay.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
	direct, relayed := netip.MustParseAddr("2001:db8:1::10"), netip.MustParseAddr("2001:db8:2::10")
	cli.MustExec(t, "ip", "-6", "addr", "add", direct.String()+"/64", "dev", "eth0", "nodad")
	cli.MustExec(t, "ip", "-6", "addr", "add", relayed.String()+"/64", "dev", "eth1", "nodad")
	srvLL, _ := netip.AddrFromSlice(srv.WaitAddrs(t, "eth0", topo.LinkLocal, 10*time.Second)[0].IP)
	rp := relay.Start(t, "dnsmasq", "dnsmasq", "-d", "-p", "0", "--log-debug", "--log-dhcp",
		"--dhcp-relay=2001:db8:2::1,2001:db8:1::1", "--pid-file="+filepath.Join(t.TempDir(), "dnsmasq.pid"))
	rp.WaitOutput(t, "DHCP relay", 10*time.Second)

	r := StartResponder(t, srv, "eth0", AnswerAll(Answer{Offer148: true}))
	sniff := StartSniffer(t, cli, 546)

	send := func(ifname string, src netip.Addr, xid dhcpv6.TransactionID) *dhcpv6.Message {
		t.Helper()
		var got *dhcpv6.Message
		if err := cli.Do(func() (err error) {
			got, err = Exchange(ifname, src, inform(xid).ToBytes(), 5*time.Second)
			return err
		}); err != nil {
			t.Fatalf("ADDR-REG-INFORM from %s on %s: %v", src, ifname, err)
		}
		if got.MessageType != dhcpv6.MessageTypeAddrRegReply {
			t.Fatalf("answered with %s, want ADDR-REG-REPLY", got.Summary())
		}
		return got
	}
	// Direct.
	send("eth0", direct, dhcpv6.TransactionID{0, 0, 1})
	if got := r.Received(dhcpv6.MessageTypeAddrRegInform); len(got) != 1 || got[0].Relay != nil || got[0].Src != direct || got[0].Ifindex == 0 {
		t.Errorf("responder received %v, want one direct INFORM from %s", got, direct)
	}
	// Relayed: the script sees the client's message, the answer goes back
	// through the relay in a Relay-Reply.
	send("eth1", relayed, dhcpv6.TransactionID{0, 0, 2})
	got := r.Received(dhcpv6.MessageTypeAddrRegInform)
	if len(got) != 2 || got[1].Relay == nil || got[1].Src != netip.MustParseAddr("2001:db8:1::2") || got[1].IAAddr != hostAddr {
		t.Errorf("responder received %v, want a relayed INFORM second", got)
	}
	// From the link-local address, as Kea 3.x answers.
	r.SetScript(func(p Packet, seen Seen) []Send {
		s := Answer{}.To(p)
		s.From = srvLL
		return []Send{s}
	})
	send("eth0", direct, dhcpv6.TransactionID{0, 0, 3})

	sent := r.Sent()
	if len(sent) != 3 || sent[1].Why != "reply (relayed)" {
		t.Errorf("responder sent %v", sent)
	}
	var at []time.Time
	var srcs []netip.Addr
	for _, p := range sniff.Wait(t, "ADDR-REG-REPLYs", 3, 5*time.Second, func(p Packet) bool { return p.Type == dhcpv6.MessageTypeAddrRegReply }) {
		at, srcs = append(at, p.At), append(srcs, p.Src)
	}
	if want := []netip.Addr{netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("2001:db8:2::1"), srvLL}; len(srcs) != 3 ||
		srcs[0] != want[0] || srcs[1] != want[1] || srcs[2] != want[2] {
		t.Errorf("sniffer saw ADDR-REG-REPLYs from %v, want from %v", srcs, want)
	}
	for i, a := range at {
		if d := time.Since(a); d < 0 || d > time.Minute {
			t.Errorf("reply %d: kernel timestamp %v is %v from now", i, a, d)
		}
	}

	// Stop: nothing is sent after it, periodic senders included.
	r.Every(10*time.Millisecond, func() []Send {
		return []Send{{Msg: Answer{}.AddrRegReply(dhcpv6.TransactionID{9, 9, 9}, nil, nil), Dst: direct, Why: "unsolicited"}}
	})
	time.Sleep(100 * time.Millisecond)
	r.Stop()
	before := len(r.Sent())
	time.Sleep(100 * time.Millisecond)
	if after := len(r.Sent()); before <= 3 || after != before {
		t.Errorf("sent %d before Stop (want more than 3), %d after", before, after)
	}
}
