package refserver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/addrreg/addrreg/scheduler"
)

// TestQueryRetransmits: the same LEASEQUERY (same transaction ID) is sent
// again until answered; replies with another transaction ID or Client ID are
// ignored; without any answer Query gives up after MRC transmissions.
func TestQueryRetransmits(t *testing.T) {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer c.Close()
	server := netip.MustParseAddrPort(c.LocalAddr().String())
	h := testHandler(func(cfg *HandlerConfig) { cfg.LeasequeryAllow = nil })

	var seen [][]byte
	served := make(chan struct{})
	go func() {
		defer close(served)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			seen = append(seen, append([]byte(nil), buf[:n]...))
			if len(seen) < 3 {
				// A reply for another exchange first: must be ignored.
				bogus := append([]byte(nil), buf[:n]...)
				bogus[1] ^= 0xff
				r, _, _, _ := h.Handle(t0, Packet{Data: bogus, Src: netip.MustParseAddrPort(from.String())})
				_, _ = c.WriteToUDP(r, from)
				continue
			}
			r, _, _, err := h.Handle(t0, Packet{Data: buf[:n], Src: netip.MustParseAddrPort(from.String())})
			if err != nil {
				t.Errorf("Handle: %v", err)
			}
			_, _ = c.WriteToUDP(r, from)
		}
	}()
	rt := scheduler.Retrans{IRT: 20 * time.Millisecond, MRT: 50 * time.Millisecond, MRC: 5}
	r, err := Query(context.Background(), QueryOptions{Server: server, Address: cliAddr, Retrans: rt})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != StatusSuccess || len(r.Clients) != 0 {
		t.Errorf("reply %+v, want success without client data", r)
	}
	c.Close()
	<-served
	if len(seen) != 3 {
		t.Fatalf("%d transmissions, want 3", len(seen))
	}
	for i, m := range seen[1:] {
		if string(m) != string(seen[0]) {
			t.Errorf("retransmission %d differs: %x vs %x", i+1, m, seen[0])
		}
	}

	// Nobody answers: MRC transmissions, then ErrNoReply.
	quiet, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	start := time.Now()
	_, err = Query(context.Background(), QueryOptions{Server: netip.MustParseAddrPort(quiet.LocalAddr().String()), Address: cliAddr, Retrans: rt})
	if !errors.Is(err, ErrNoReply) {
		t.Fatalf("err %v, want ErrNoReply", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("gave up after %v; want about 20+40+50+50+50 ms", d)
	}
}
