package dhcp6test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/addrreg/addrreg/test/topo"
)

// Sniffer records the DHCPv6 messages that reach one UDP port in a node's
// namespace through a raw IPv6/UDP socket: it sees a copy of every
// datagram and takes nothing from the sockets bound to the port (a server
// on 547, a client on 546). Each message carries the kernel's receive time,
// so spacing can be asserted to a few milliseconds even when the test
// process reads late.
type Sniffer struct {
	port uint16
	mu   sync.Mutex
	msgs []Packet
}

// StartSniffer records what reaches UDP port in nd until the test ends;
// a failing test logs it.
func StartSniffer(t testing.TB, nd *topo.Node, port uint16) *Sniffer {
	t.Helper()
	var c *net.IPConn
	if err := nd.Do(func() error {
		pc, err := net.ListenPacket("ip6:udp", "::")
		if err != nil {
			return err
		}
		c = pc.(*net.IPConn)
		if err := enableRecvInfo(c); err != nil {
			c.Close()
			return err
		}
		return nil
	}); err != nil {
		t.Fatalf("sniffer in %s: raw UDP socket: %v", nd.Name, err)
	}
	s := &Sniffer{port: port}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf, oob := make([]byte, 65536), make([]byte, 512)
		for {
			n, oobn, _, src, err := c.ReadMsgIP(buf, oob)
			if err != nil {
				return
			}
			if p, ok := s.parse(buf[:n], oob[:oobn], src); ok {
				s.mu.Lock()
				s.msgs = append(s.msgs, p)
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
		if t.Failed() {
			t.Logf("--- DHCPv6 messages seen at port %d in %s ---\n%s", port, nd.Name, s.Dump())
		}
	})
	return s
}

// parse decodes one raw UDP datagram (header included) to the sniffer's
// port; ok is false for other ports and undecodable payloads.
func (s *Sniffer) parse(b, oob []byte, src *net.IPAddr) (Packet, bool) {
	if len(b) < 8 || uint16(b[2])<<8|uint16(b[3]) != s.port {
		return Packet{}, false
	}
	at, dst, ifindex, ok := parseRecvInfo(oob)
	if !ok {
		return Packet{}, false
	}
	srcIP, _ := netip.AddrFromSlice(src.IP)
	p := Packet{At: at, Src: srcIP.Unmap(), Dst: dst, SrcPort: uint16(b[0])<<8 | uint16(b[1]), DstPort: s.port, Ifindex: ifindex}
	if err := p.decode(append([]byte(nil), b[8:]...)); err != nil {
		return Packet{}, false
	}
	return p, true
}

// All returns every message seen so far.
func (s *Sniffer) All() []Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Packet(nil), s.msgs...)
}

// Match returns the messages for which match holds.
func (s *Sniffer) Match(match func(Packet) bool) []Packet {
	var out []Packet
	for _, p := range s.All() {
		if match(p) {
			out = append(out, p)
		}
	}
	return out
}

// Count returns how many messages of type typ were seen.
func (s *Sniffer) Count(typ dhcpv6.MessageType) int {
	return len(s.Match(func(p Packet) bool { return p.Type == typ }))
}

// Informs returns the ADDR-REG-INFORMs for addr (all of them if addr is
// the zero Addr).
func (s *Sniffer) Informs(addr netip.Addr) []Packet {
	return s.Match(func(p Packet) bool {
		return p.Type == dhcpv6.MessageTypeAddrRegInform && (!addr.IsValid() || p.IAAddr == addr)
	})
}

// WaitInforms polls until at least n ADDR-REG-INFORMs for addr have been
// seen and returns them; it fails the test after timeout.
func (s *Sniffer) WaitInforms(t testing.TB, addr netip.Addr, n int, timeout time.Duration) []Packet {
	t.Helper()
	return s.Wait(t, fmt.Sprintf("ADDR-REG-INFORMs for %s", addr), n, timeout, func(p Packet) bool {
		return p.Type == dhcpv6.MessageTypeAddrRegInform && (!addr.IsValid() || p.IAAddr == addr)
	})
}

// Wait polls until at least n messages for which match holds have been
// seen and returns them; after timeout it fails the test, naming what.
func (s *Sniffer) Wait(t testing.TB, what string, n int, timeout time.Duration, match func(Packet) bool) []Packet {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.Match(match)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s within %v, want %d; seen:\n%s", len(got), what, timeout, n, s.Dump())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Dump lists the messages seen, one a line.
func (s *Sniffer) Dump() string {
	return List(s.All())
}

// List formats packets one a line.
func List(ps []Packet) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}
