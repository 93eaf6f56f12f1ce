package refserver

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// TestShedWhenQueueFull: with MaxQueue registrations waiting for their
// commit, the next message is dropped before any work (no binding, nothing
// queued) and counted as "overloaded"; once the queue drains it is handled.
func TestShedWhenQueueFull(t *testing.T) {
	s, err := New(Config{DBPath: "unused", AddrReg: true, MaxQueue: 2, Interfaces: []string{"eth0"},
		Prefixes: map[string][]netip.Prefix{"eth0": {lan1}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.jobs = make(chan job, s.cfg.MaxQueue+64)
	inform := func(i byte) Packet {
		a := cliAddr.As16()
		a[15] = i
		addr := netip.AddrFrom16(a)
		return pkt(addr, newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(addr, 1800, 3600).bytes())
	}
	for i := range byte(3) {
		s.handle(inform(i+1), 0, 0)
	}
	c := s.Counters()
	// Registrations are counted once committed: here they wait.
	if c["received"] != 3 || c["overloaded"] != 1 || len(s.jobs) != 2 || len(s.Bindings()) != 2 {
		t.Fatalf("counters %v, %d queued, %d bindings; want 2 handled and queued, 1 overloaded", c, len(s.jobs), len(s.Bindings()))
	}
	<-s.jobs
	s.release([]job{{}})
	s.handle(inform(3), 0, 0)
	if c := s.Counters(); len(s.jobs) != 2 || c["overloaded"] != 1 || len(s.Bindings()) != 3 {
		t.Fatalf("after one commit: counters %v, %d queued; want the third handled and queued", c, len(s.jobs))
	}
}
