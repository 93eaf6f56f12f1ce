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
	"golang.org/x/net/ipv6"

	"github.com/addrreg/addrreg/test/topo"
)

// Seen says how many messages a Responder had received before this one
// of the same type, and of the same transaction ID (0 for the first).
type Seen struct {
	OfType, OfXID int
}

// Script decides what a Responder sends in answer to p: nothing (nil),
// one answer or several.
type Script func(p Packet, seen Seen) []Send

// Transmission is one datagram a Responder sent.
type Transmission struct {
	Type dhcpv6.MessageType
	Dst  netip.Addr
	XID  dhcpv6.TransactionID
	Why  string
}

func (s Transmission) String() string {
	return fmt.Sprintf("%s %s→%s xid=%s", s.Why, s.Type, s.Dst, s.XID)
}

// Responder is a scripted DHCPv6 server on UDP [::]:547 in one node's
// namespace, joined to ff02::1:2 on one interface. It records every message
// it receives and everything it sends.
type Responder struct {
	t       testing.TB
	conn    *net.UDPConn
	ifindex int
	done    chan struct{} // closed by Stop
	wg      sync.WaitGroup

	mu      sync.Mutex // guards the fields below and every send
	stopped bool
	script  Script
	got     []Packet
	sent    []Transmission
	errs    []error
}

// StartResponder starts a Responder on ifname in nd, answering with script
// (nil: answer nothing) until Stop or the end of the test.
func StartResponder(t testing.TB, nd *topo.Node, ifname string, script Script) *Responder {
	t.Helper()
	r := &Responder{t: t, script: script, done: make(chan struct{})}
	err := nd.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		r.ifindex = ifi.Index
		if r.conn, err = net.ListenUDP("udp6", &net.UDPAddr{Port: 547}); err != nil {
			return err
		}
		if err := ipv6.NewPacketConn(r.conn).JoinGroup(ifi, &net.UDPAddr{IP: net.ParseIP("ff02::1:2")}); err != nil {
			r.conn.Close()
			return fmt.Errorf("join ff02::1:2 on %s: %w", ifname, err)
		}
		if err := enableRecvInfo(r.conn); err != nil {
			r.conn.Close()
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("responder in %s: listen on [::]:547 joined to ff02::1:2: %v", nd.Name, err)
	}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("--- the responder in %s ---\n%s", nd.Name, r.Dump())
		}
	})
	return r
}

func (r *Responder) serve() {
	defer r.wg.Done()
	buf, oob := make([]byte, 65536), make([]byte, 512)
	for {
		n, oobn, _, from, err := r.conn.ReadMsgUDP(buf, oob)
		if err != nil {
			return // closed by Stop
		}
		at, dst, ifindex, _ := parseRecvInfo(oob[:oobn])
		p := Packet{At: at, Src: from.AddrPort().Addr().Unmap().WithZone(""), Dst: dst, SrcPort: uint16(from.Port),
			DstPort: 547, Ifindex: ifindex}
		if err := p.decode(append([]byte(nil), buf[:n]...)); err != nil {
			r.t.Errorf("responder: undecodable datagram from %s: %x: %v", p.Src, buf[:n], err)
			continue
		}
		r.mu.Lock()
		var seen Seen
		for _, g := range r.got {
			if g.Type == p.Type {
				seen.OfType++
			}
			if g.XID == p.XID {
				seen.OfXID++
			}
		}
		r.got = append(r.got, p)
		script := r.script
		r.mu.Unlock()
		if script == nil {
			continue
		}
		for _, s := range script(p, seen) {
			r.answer(p, s)
		}
	}
}

// answer sends s in answer to p: see Send.Dst.
func (r *Responder) answer(p Packet, s Send) {
	if s.Dst.IsValid() || p.Relay == nil {
		if !s.Dst.IsValid() {
			s.Dst = p.Src
		}
		r.SendNow(s)
		return
	}
	// RFC 8415 §19.3: the Relay-Reply copies each level's link-address,
	// peer-address and Interface-ID, and goes to the relay that sent it.
	rr, err := dhcpv6.NewRelayReplFromRelayForw(p.Relay, s.Msg)
	if err != nil {
		r.fail(fmt.Errorf("%s: wrap %s in a Relay-Reply: %w", s.Why, s.Msg.MessageType, err))
		return
	}
	r.send(rr.ToBytes(), netip.AddrPortFrom(p.Src, p.SrcPort), s.From,
		Transmission{Type: s.Msg.MessageType, Dst: p.Src, XID: s.Msg.TransactionID, Why: s.Why + " (relayed)"})
}

// SendNow sends s.Msg to [s.Dst]:546 now (unsolicited, or from a Script's
// helper goroutine) and records it. A send error fails the test.
func (r *Responder) SendNow(s Send) {
	r.send(s.Msg.ToBytes(), netip.AddrPortFrom(s.Dst, 546), s.From,
		Transmission{Type: s.Msg.MessageType, Dst: s.Dst, XID: s.Msg.TransactionID, Why: s.Why})
}

// SendRaw sends b from the responder's socket to dst as it is, unrecorded.
func (r *Responder) SendRaw(b []byte, dst netip.AddrPort) error {
	_, err := r.conn.WriteToUDP(b, udpAddr(dst.Addr(), int(dst.Port()), r.ifindex))
	return err
}

func (r *Responder) send(b []byte, dst netip.AddrPort, from netip.Addr, rec Transmission) {
	var oob []byte
	if from.IsValid() {
		// A link-local source needs the interface too.
		oob = (&ipv6.ControlMessage{Src: from.AsSlice(), IfIndex: r.ifindex}).Marshal()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	if _, _, err := r.conn.WriteMsgUDP(b, oob, udpAddr(dst.Addr(), int(dst.Port()), r.ifindex)); err != nil {
		r.failLocked(fmt.Errorf("%s: send %s to %s: %w", rec.Why, rec.Type, dst, err))
		return
	}
	r.sent = append(r.sent, rec)
}

func (r *Responder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failLocked(err)
}

func (r *Responder) failLocked(err error) {
	r.errs = append(r.errs, err)
	r.t.Errorf("responder: %v", err)
}

// Every calls f every d until Stop and sends what it returns: the
// unsolicited traffic of a rogue server.
func (r *Responder) Every(d time.Duration, f func() []Send) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		tk := time.NewTicker(d)
		defer tk.Stop()
		for {
			select {
			case <-r.done:
				return
			case <-tk.C:
			}
			for _, s := range f() {
				r.SendNow(s)
			}
		}
	}()
}

// SetScript replaces the script for the messages received from now on.
func (r *Responder) SetScript(s Script) {
	r.mu.Lock()
	r.script = s
	r.mu.Unlock()
}

// Stop ends the responder; it sends nothing after Stop returns. Stopping
// twice is harmless.
func (r *Responder) Stop() {
	r.mu.Lock() // no send is in progress once this is held
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	close(r.done)
	r.mu.Unlock()
	r.conn.Close()
	r.wg.Wait()
}

// Received returns the messages of type typ received so far (all of them
// for typ 0).
func (r *Responder) Received(typ dhcpv6.MessageType) []Packet {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Packet
	for _, g := range r.got {
		if typ == 0 || g.Type == typ {
			out = append(out, g)
		}
	}
	return out
}

// Sent returns what the responder sent so far.
func (r *Responder) Sent() []Transmission {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Transmission(nil), r.sent...)
}

// Errors returns the send errors so far (each has failed the test).
func (r *Responder) Errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// Dump lists what the responder received and sent, for a failure log.
func (r *Responder) Dump() string {
	var b strings.Builder
	for _, p := range r.Received(0) {
		fmt.Fprintf(&b, "received %s\n", p)
	}
	sent := r.Sent()
	byWhy := map[string]int{}
	for _, s := range sent {
		byWhy[s.Why]++
		if byWhy[s.Why] <= 20 {
			fmt.Fprintf(&b, "sent %s\n", s)
		}
	}
	fmt.Fprintf(&b, "sent %d in all %v; send errors %v\n", len(sent), byWhy, r.Errors())
	return b.String()
}
