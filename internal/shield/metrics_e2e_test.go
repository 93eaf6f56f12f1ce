package shield

import (
	"net"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/topo"
)

// dhcp6-shield --metrics-listen: promtool accepts the endpoint, and a
// rogue server's Reply moves its port's drop counter.
func TestShieldMetrics(t *testing.T) {
	const addr = "127.0.0.1:9549"
	sn := newShieldNet(t, "server", "host", "rogue")
	host, rogue := sn.nodes["host"], sn.nodes["rogue"]
	sn.startShield(t, "--trusted", "pserver", "--port", "phost", "--port", "progue", "--metrics-listen", addr)
	const series = `dhcp6_shield_dropped_total{iface="progue",reason="client_bound_dhcpv6",trusted="false"}`
	before := sn.shield.Scrape(t, addr)
	topo.CheckMetrics(t, before)
	if v, ok := topo.MetricValue(before, series); !ok || v != 0 {
		t.Fatalf("%s before any traffic = %v (present %v), want 0", series, v, ok)
	}
	ping(t, host, sn.addrs["rogue"], 10*time.Second)
	clientSock := udpIn(t, host, 546)
	rogueSock := udpIn(t, rogue, 547)
	for range 3 {
		if _, err := rogueSock.WriteToUDP(dhcpMsg(msgReply, 0xbad), &net.UDPAddr{IP: sn.addrs["host"], Port: 546}); err != nil {
			t.Fatal(err)
		}
	}
	receiveUntil(clientSock, 500*time.Millisecond)
	for deadline := time.Now().Add(10 * time.Second); ; {
		after := sn.shield.Scrape(t, addr)
		v, _ := topo.MetricValue(after, series)
		if v == 3 {
			topo.CheckMetrics(t, after)
			if f, _ := topo.MetricValue(after, `dhcp6_shield_rx_frames_total{iface="progue",trusted="false"}`); f < 3 {
				t.Errorf("progue rx frames %v, want >= 3", f)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after three rogue Replies, want 3", series, v)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
