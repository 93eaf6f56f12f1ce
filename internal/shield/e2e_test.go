package shield

// End-to-end tests of dhcp6-shield in network namespaces. They need root:
// topo.New skips them otherwise, and fails them under CI=true.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/test/topo"
)

// shieldNet is a switch namespace ("shield") joined by one veth pair to each
// node; the switch-side interface of node role is "p"+role. Unlike
// topo.New's bridge, nothing connects the ports until dhcp6-shield (or a
// bridge) runs in the shield namespace.
type shieldNet struct {
	net    *topo.Net
	shield *topo.Node
	nodes  map[string]*topo.Node
	addrs  map[string]net.IP
	macs   map[string]net.HardwareAddr
}

func newShieldNet(t testing.TB, roles ...string) *shieldNet {
	t.Helper()
	n := topo.New(t)
	sn := &shieldNet{net: n, nodes: map[string]*topo.Node{}, addrs: map[string]net.IP{}, macs: map[string]net.HardwareAddr{}}
	sn.shield = n.Node("shield")
	// topo attaches every node's eth0 to its own bridge: remove those so
	// that the only path between nodes is through the shield namespace.
	sn.shield.MustExec(t, "ip", "link", "del", "eth0")
	for i, role := range roles {
		nd := n.Node(role)
		nd.MustExec(t, "ip", "link", "del", "eth0")
		port := "p" + role
		sn.shield.MustExec(t, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", nd.NS)
		sn.shield.Sysctl(t, "net.ipv6.conf."+port+".disable_ipv6", "1")
		sn.shield.MustExec(t, "ip", "link", "set", port, "up")
		mac := net.HardwareAddr{0x02, 0, 0, 0, 0, byte(i + 1)}
		addr := net.ParseIP(fmt.Sprintf("fd00::%d", i+1))
		nd.MustExec(t, "ip", "link", "set", "eth0", "address", mac.String())
		nd.MustExec(t, "ip", "addr", "add", addr.String()+"/64", "dev", "eth0", "nodad")
		nd.MustExec(t, "ip", "link", "set", "eth0", "up")
		sn.nodes[role], sn.addrs[role], sn.macs[role] = nd, addr, mac
	}
	return sn
}

// startShield runs dhcp6-shield in the shield namespace and returns the
// process and its stats socket.
func (sn *shieldNet) startShield(t testing.TB, args ...string) (*topo.Proc, string) {
	t.Helper()
	bin := topo.BuildBinary(t, "./cmd/dhcp6-shield")
	sock := filepath.Join(t.TempDir(), "stats.sock")
	p := sn.shield.Start(t, "dhcp6-shield", append([]string{bin, "--stats", sock, "--log-level", "debug"}, args...)...)
	p.WaitOutput(t, "dhcp6-shield running", 10*time.Second)
	return p, sock
}

func readStats(t testing.TB, sock string) map[string]PortStats {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("stats socket: %v", err)
	}
	defer c.Close()
	var st Stats
	if err := json.NewDecoder(c).Decode(&st); err != nil {
		t.Fatalf("stats socket: decode: %v", err)
	}
	m := map[string]PortStats{}
	for _, p := range st.Ports {
		m[p.Name] = p
	}
	return m
}

// udpIn opens a UDP socket bound to port in nd's namespace.
func udpIn(t testing.TB, nd *topo.Node, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := nd.Do(func() (err error) {
		c, err = net.ListenUDP("udp6", &net.UDPAddr{Port: port})
		return err
	})
	if err != nil {
		t.Fatalf("%s: listen udp %d: %v", nd.Name, port, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// receiveUntil reads datagrams on c until d has passed and returns their
// payloads by source address.
func receiveUntil(c *net.UDPConn, d time.Duration) map[string][][]byte {
	got := map[string][][]byte{}
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(d))
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			return got
		}
		k := from.IP.String()
		got[k] = append(got[k], append([]byte(nil), buf[:n]...))
	}
}

// ping sends ICMPv6 echo requests from nd to dst until one is answered.
func ping(t testing.TB, nd *topo.Node, dst net.IP, timeout time.Duration) {
	t.Helper()
	var c *icmp.PacketConn
	if err := nd.Do(func() (err error) { c, err = icmp.ListenPacket("ip6:ipv6-icmp", "::"); return err }); err != nil {
		t.Fatalf("%s: icmp socket: %v", nd.Name, err)
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for seq := 1; time.Now().Before(deadline); seq++ {
		m := icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: 0x5e1d, Seq: seq, Data: []byte("shield")}}
		b, _ := m.Marshal(nil)
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst}); err != nil {
			t.Fatalf("%s: ping %s: %v", nd.Name, dst, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			r, err := icmp.ParseMessage(58, buf[:n])
			if err == nil && r.Type == ipv6.ICMPTypeEchoReply && from.(*net.IPAddr).IP.Equal(dst) {
				return
			}
		}
	}
	t.Fatalf("%s: no echo reply from %s within %v", nd.Name, dst, timeout)
}

// dhcpMsg is a DHCPv6 message of type t whose transaction ID marks who sent it.
func dhcpMsg(t byte, xid uint32) []byte {
	b := []byte{t, byte(xid >> 16), byte(xid >> 8), byte(xid)}
	return append(b, 0, 2, 0, 4, 0, 3, 0, 1) // Server Identifier, DUID-LL stub
}

func TestShieldEndToEnd(t *testing.T) {
	sn := newShieldNet(t, "server", "host", "rogue")
	srv, host, rogue := sn.nodes["server"], sn.nodes["host"], sn.nodes["rogue"]
	proc, sock := sn.startShield(t, "--trusted", "pserver", "--port", "phost", "--port", "progue")

	// Ordinary traffic goes through: neighbour discovery (multicast, flooded)
	// and echo (unicast, learned).
	ping(t, host, sn.addrs["server"], 10*time.Second)
	ping(t, host, sn.addrs["rogue"], 10*time.Second)

	clientSock := udpIn(t, host, 546)
	serverSock := udpIn(t, srv, 547)
	rogueSock := udpIn(t, rogue, 547)

	// The rogue answers as a server: Reply and ADDR-REG-REPLY to the host's
	// client port, Relay-Reply to the server port (RFC 7610 §5 rule 4).
	const rogueXID, srvXID = 0xbad, 0x600d
	for _, mt := range []byte{msgAdvertise, msgReply, msgReconfigure, msgAddrRegReply} {
		if _, err := rogueSock.WriteToUDP(dhcpMsg(mt, rogueXID), &net.UDPAddr{IP: sn.addrs["host"], Port: 546}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rogueSock.WriteToUDP(dhcpMsg(msgRelayRepl, rogueXID), &net.UDPAddr{IP: sn.addrs["server"], Port: 547}); err != nil {
		t.Fatal(err)
	}
	// The same from the trusted server arrives; so do client messages.
	if _, err := serverSock.WriteToUDP(dhcpMsg(msgReply, srvXID), &net.UDPAddr{IP: sn.addrs["host"], Port: 546}); err != nil {
		t.Fatal(err)
	}
	if _, err := clientSock.WriteToUDP(dhcpMsg(msgInfoRequest, srvXID), &net.UDPAddr{IP: sn.addrs["server"], Port: 547}); err != nil {
		t.Fatal(err)
	}
	if _, err := clientSock.WriteToUDP(dhcpMsg(msgAddrRegInform, srvXID), &net.UDPAddr{IP: sn.addrs["server"], Port: 547}); err != nil {
		t.Fatal(err)
	}

	atHost := receiveUntil(clientSock, time.Second)
	atServer := receiveUntil(serverSock, 10*time.Millisecond)
	if n := len(atHost[sn.addrs["rogue"].String()]); n != 0 {
		t.Errorf("host received %d messages from the rogue on port 546, want 0", n)
	}
	if got := atHost[sn.addrs["server"].String()]; len(got) != 1 || got[0][0] != msgReply {
		t.Errorf("host received %x from the trusted server, want one Reply", got)
	}
	if n := len(atServer[sn.addrs["rogue"].String()]); n != 0 {
		t.Errorf("server received %d messages from the rogue on port 547, want 0", n)
	}
	if got := atServer[sn.addrs["host"].String()]; len(got) != 2 {
		t.Errorf("server received %d client messages from the host, want 2 (Information-Request, ADDR-REG-INFORM)", len(got))
	}

	st := readStats(t, sock)
	if got := st["progue"].Drops["client_bound_dhcpv6"]; got != 4 {
		t.Errorf("progue drops client_bound_dhcpv6 = %d, want 4; stats %+v", got, st["progue"])
	}
	if got := st["progue"].Drops["relay_reply"]; got != 1 {
		t.Errorf("progue drops relay_reply = %d, want 1", got)
	}
	if got := st["progue"].Dropped; got != 5 {
		t.Errorf("progue dropped = %d, want 5", got)
	}
	for _, p := range []string{"pserver", "phost"} {
		if st[p].Dropped != 0 {
			t.Errorf("%s dropped = %d, want 0: %+v", p, st[p].Dropped, st[p])
		}
	}
	if got := st["pserver"].ServerMessages; got != 1 {
		t.Errorf("pserver server_messages = %d, want 1", got)
	}

	// One security log line per drop, with the addresses.
	proc.WaitOutput(t, `reason=relay_reply src_mac=02:00:00:00:00:03 src=fd00::3 dst=fd00::1`, 5*time.Second)
	// SIGUSR1 dumps the counters to the log; SIGTERM ends it with status 0.
	if err := proc.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	proc.WaitOutput(t, "msg=stats iface=progue", 5*time.Second)
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := proc.Wait(t, 5*time.Second); err != nil {
		t.Errorf("dhcp6-shield after SIGTERM: %v, want exit 0\n%s", err, proc.Output())
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stats socket %s left behind: %v", sock, err)
	}
}

// TestShieldVLAN sends tagged frames through the shield: the kernel strips
// the outer tag before AF_PACKET sees it, so the shield must classify and
// forward the frame with the tag put back (SPEC §3).
func TestShieldVLAN(t *testing.T) {
	sn := newShieldNet(t, "server", "host", "rogue")
	_, sock := sn.startShield(t, "--trusted", "pserver", "--port", "phost", "--port", "progue")
	capFd := rawSocket(t, sn.nodes["host"])

	for _, tc := range []struct {
		from  string
		tpids []uint16
	}{
		{"rogue", []uint16{0x8100}},
		{"rogue", []uint16{0x88a8, 0x8100}},
		{"server", []uint16{0x8100}},
		{"server", []uint16{0x88a8, 0x8100}},
	} {
		f := build(tc.tpids, hbh(8), toClient(msgReply))
		copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		copy(f[6:12], sn.macs[tc.from])
		fd := rawSocket(t, sn.nodes[tc.from])
		if _, err := unix.Write(fd, f); err != nil {
			t.Fatalf("%s: send tagged frame: %v", tc.from, err)
		}
	}

	var fromServer, fromRogue [][]byte
	r := new(rx)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		f, err := r.recv(capFd, false)
		if errors.Is(err, unix.EAGAIN) {
			r.pfd[0] = unix.PollFd{Fd: int32(capFd), Events: unix.POLLIN}
			_, _ = unix.Poll(r.pfd[:], 50)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if f == nil || !bytes.Equal(f[:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
			continue
		}
		switch {
		case bytes.Equal(f[6:12], sn.macs["server"]):
			fromServer = append(fromServer, append([]byte(nil), f...))
		case bytes.Equal(f[6:12], sn.macs["rogue"]):
			fromRogue = append(fromRogue, append([]byte(nil), f...))
		}
	}
	if len(fromRogue) != 0 {
		t.Errorf("host saw %d tagged Replies from the rogue, want 0", len(fromRogue))
	}
	if len(fromServer) != 2 {
		t.Fatalf("host saw %d tagged Replies from the server, want 2", len(fromServer))
	}
	for i, tpids := range [][]uint16{{0x8100}, {0x88a8, 0x8100}} {
		want := build(tpids, hbh(8), toClient(msgReply))
		if got := fromServer[i]; !bytes.Equal(got[12:], want[12:]) {
			t.Errorf("frame %d from the server arrived as\n%x\nwant (from the EtherType on)\n%x", i, got[12:], want[12:])
		}
	}
	if got := readStats(t, sock)["progue"].Drops["client_bound_dhcpv6"]; got != 2 {
		t.Errorf("progue drops client_bound_dhcpv6 = %d, want 2", got)
	}
}

// TestSwitchRunStops runs the Switch in this process and checks that Run
// returns when its context ends and leaves no goroutine behind.
func TestSwitchRunStops(t *testing.T) {
	sn := newShieldNet(t, "a", "b")
	ignore := goleak.IgnoreCurrent()
	sw, err := NewSwitch(SwitchConfig{Ports: []Port{{Name: "pa"}, {Name: "pb"}}, KeepOffloads: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		// Run opens its sockets on this locked thread, in the shield
		// namespace; its goroutines only use those sockets.
		done <- sn.shield.Do(func() error { return sw.Run(ctx) })
	}()
	ping(t, sn.nodes["a"], sn.addrs["b"], 10*time.Second)
	if st := sw.Stats(); st.Ports[0].Passed == 0 || st.Ports[1].TxFrames == 0 || st.MACs != 2 {
		t.Errorf("stats after ping: %+v, want frames passed on pa, sent on pb and 2 MACs", st)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2 s of the end of its context")
	}
	goleak.VerifyNone(t, ignore)
}

// rawSocket opens a non-blocking AF_PACKET socket on eth0 of nd with
// PACKET_AUXDATA, closed at the end of the test.
func rawSocket(t testing.TB, nd *topo.Node) int {
	t.Helper()
	fd := -1
	err := nd.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("%s: AF_PACKET socket: %v", nd.Name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// BenchmarkForwarding measures UDP frames per second from one namespace to
// another through dhcp6-shield and, in the same run, through a Linux bridge.
// Each sub-benchmark sends as fast as one socket can for 5 s and counts what
// arrives; run it with -benchtime=1x.
func BenchmarkForwarding(b *testing.B) {
	const d = 5 * time.Second
	for _, mode := range []string{"dhcp6-shield", "linux-bridge"} {
		b.Run(mode, func(b *testing.B) {
			sn := newShieldNet(b, "a", "b")
			switch mode {
			case "dhcp6-shield":
				sn.startShield(b, "--port", "pa", "--port", "pb")
			case "linux-bridge":
				sn.shield.MustExec(b, "ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
				sn.shield.MustExec(b, "ip", "link", "set", "pa", "master", "br0")
				sn.shield.MustExec(b, "ip", "link", "set", "pb", "master", "br0")
				sn.shield.MustExec(b, "ip", "link", "set", "br0", "up")
			}
			ping(b, sn.nodes["a"], sn.addrs["b"], 10*time.Second)
			rxc := udpIn(b, sn.nodes["b"], 9)
			_ = rxc.SetReadBuffer(8 << 20)
			txc := udpIn(b, sn.nodes["a"], 9999)
			dst := &net.UDPAddr{IP: sn.addrs["b"], Port: 9}
			// Batches through sendmmsg/recvmmsg, so that the sender offers
			// more than the path under test can carry.
			tx, rx := ipv6.NewPacketConn(txc), ipv6.NewPacketConn(rxc)
			const batch = 64
			out, in := make([]ipv6.Message, batch), make([]ipv6.Message, batch)
			for i := range out {
				out[i] = ipv6.Message{Buffers: [][]byte{make([]byte, 64)}, Addr: dst}
				in[i] = ipv6.Message{Buffers: [][]byte{make([]byte, 2048)}}
			}
			for b.Loop() {
				end := time.Now().Add(d)
				_ = rxc.SetReadDeadline(end.Add(500 * time.Millisecond))
				recvd := make(chan int)
				go func() {
					n := 0
					for {
						k, err := rx.ReadBatch(in, 0)
						if err != nil {
							recvd <- n
							return
						}
						n += k
					}
				}()
				sent := 0
				for time.Now().Before(end) {
					for i := range out {
						binary.BigEndian.PutUint64(out[i].Buffers[0], uint64(sent+i))
					}
					if k, err := tx.WriteBatch(out, 0); err == nil {
						sent += k
					}
				}
				got := <-recvd
				b.ReportMetric(float64(got)/d.Seconds(), "frames/s")
				b.ReportMetric(float64(sent)/d.Seconds(), "sent/s")
				b.ReportMetric(100*float64(sent-got)/float64(max(sent, 1)), "loss%")
			}
		})
	}
}
