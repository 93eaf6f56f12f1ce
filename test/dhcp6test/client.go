package dhcp6test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// ErrNoAnswer is Exchange's error when nothing answered in time.
var ErrNoAnswer = errors.New("no answer")

// Exchange is a client's side: it sends msg from [src]:546 to
// ff02::1:2%ifname:547 and waits for a message with the same transaction ID
// on that socket, sending again every 500 ms, until timeout. Call it inside
// the client's namespace (topo.Node.Do).
func Exchange(ifname string, src netip.Addr, msg []byte, timeout time.Duration) (*dhcpv6.Message, error) {
	if len(msg) < 4 {
		return nil, fmt.Errorf("a %d-byte message has no transaction ID", len(msg))
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp6", udpAddr(src, 546, ifi.Index))
	if err != nil {
		return nil, fmt.Errorf("bind [%s]:546: %w", src, err)
	}
	defer c.Close()
	dst := udpAddr(netip.MustParseAddr("ff02::1:2"), 547, ifi.Index)
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		if _, err := c.WriteToUDP(msg, dst); err != nil {
			return nil, fmt.Errorf("send to %s: %w", dst, err)
		}
		rd := time.Now().Add(500 * time.Millisecond)
		if rd.After(deadline) {
			rd = deadline
		}
		_ = c.SetReadDeadline(rd)
		for {
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			if m, err := dhcpv6.MessageFromBytes(buf[:n]); err == nil && m.TransactionID == [3]byte(msg[1:4]) {
				return m, nil
			}
		}
	}
	return nil, fmt.Errorf("%w from ff02::1:2 on %s within %v", ErrNoAnswer, ifname, timeout)
}
