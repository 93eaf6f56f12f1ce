package refserver

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"go.uber.org/goleak"
	"golang.org/x/net/ipv6"
)

// TestServePipeline runs the whole server (readers, group-commit writer,
// sender, expiry) on a loopback socket through Serve, without root: a
// relayed INFORM is answered with a Relay-Reply once committed, the
// binding and its history are in the database, a 1-s binding expires, and
// every goroutine ends with the context.
func TestServePipeline(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	forBackends(t, func(t *testing.T, db string) {
		c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		defer c.Close()
		pc := ipv6.NewPacketConn(c)
		_ = pc.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
		relay := netip.MustParseAddr("2001:db8:2::1")
		cfg := DefaultConfig()
		cfg.DBPath, cfg.RatePerSource, cfg.RatePerDUID, cfg.MaxWait, cfg.Readers = db, 0, 0, -1, 2
		cfg.Prefixes = map[string][]netip.Prefix{relay.String(): {netip.MustParsePrefix("2001:db8:2::/64")}}
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, pc) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()

		cli, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		exchange := func(a netip.Addr, valid uint32) []byte {
			t.Helper()
			inf := newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(a, valid/2, valid).bytes()
			buf := make([]byte, 2048)
			for range 50 { // until the server is up
				if _, err := cli.WriteToUDP(relayFwd(0, relay, a, nil, inf), c.LocalAddr().(*net.UDPAddr)); err != nil {
					t.Fatal(err)
				}
				_ = cli.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				for {
					n, err := cli.Read(buf)
					if err != nil {
						break
					}
					if a16 := a.As16(); bytes.Contains(buf[:n], a16[:]) {
						return buf[:n] // not a late reply to an earlier exchange
					}
				}
			}
			t.Fatalf("no reply for %s", a)
			return nil
		}
		a, short := netip.MustParseAddr("2001:db8:2::10"), netip.MustParseAddr("2001:db8:2::11")
		if r := exchange(a, 3600); len(r) == 0 || dhcpv6.MessageType(r[0]) != dhcpv6.MessageTypeRelayReply {
			t.Fatalf("reply %x, want a Relay-Reply", r)
		}
		bs := s.Bindings()
		if len(bs) != 1 || bs[0].Addr != a || bs[0].LinkAddr != relay {
			t.Fatalf("bindings %+v", bs)
		}
		exchange(short, 1)
		deadline := time.Now().Add(10 * time.Second)
		for len(s.Bindings()) != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("the 1-s binding did not expire: %+v", s.Bindings())
			}
			time.Sleep(50 * time.Millisecond)
		}
		hist, err := s.History()
		if err != nil {
			t.Fatal(err)
		}
		var events []string
		for _, h := range hist {
			if h.Event != "refresh" { // a retransmission's
				events = append(events, h.Event+" "+h.Addr.String())
			}
		}
		want := []string{"register " + a.String(), "register " + short.String(), "expire " + short.String()}
		if len(events) != 3 || events[0] != want[0] || events[1] != want[1] || events[2] != want[2] {
			t.Errorf("history %v, want %v", events, want)
		}
		for deadline := time.Now().Add(5 * time.Second); s.Counters()["expire"] == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond) // counted by the sender, after the commit
		}
		if c := s.Counters(); c["register"] != 2 || c["expire"] != 1 || c["sent"] < 2 {
			t.Errorf("counters %v", c)
		}
	})
}
