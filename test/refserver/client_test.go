package refserver_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// testDUID is a DUID-LL (RFC 8415 §11.4) for hardware address 02:00:00:00:00:nn.
func testDUID(n byte) []byte {
	return []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, n}
}

// informMsg builds an ADDR-REG-INFORM (RFC 9686 §4.2) for addr.
func informMsg(xid [3]byte, duid []byte, addr netip.Addr, preferred, valid uint32) []byte {
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeAddrRegInform, TransactionID: dhcpv6.TransactionID(xid)}
	m.Options.Add(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionClientID, OptionData: duid})
	m.Options.Add(&dhcpv6.OptIAAddress{
		IPv6Addr:          addr.AsSlice(),
		PreferredLifetime: time.Duration(preferred) * time.Second,
		ValidLifetime:     time.Duration(valid) * time.Second,
	})
	return m.ToBytes()
}

// infoRequestMsg builds an Information-Request asking for option 148.
func infoRequestMsg(xid [3]byte, duid []byte) []byte {
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeInformationRequest, TransactionID: dhcpv6.TransactionID(xid)}
	m.Options.Add(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionClientID, OptionData: duid})
	m.Options.Add(dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer, dhcpv6.OptionAddrRegEnable))
	return m.ToBytes()
}

// exchange sends msg from src ([addr]:546) to ff02::1:2%ifname:547 and waits
// for a reply with the same transaction ID, retrying every 500 ms.
// It must run inside the client's namespace (topo Node.Do).
func exchange(ifname string, src netip.Addr, msg []byte, timeout time.Duration) (*dhcpv6.Message, netip.Addr, error) {
	laddr := &net.UDPAddr{IP: src.AsSlice(), Port: 546}
	if src.IsLinkLocalUnicast() {
		laddr.Zone = ifname
	}
	c, err := net.ListenUDP("udp6", laddr)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("bind %s: %w", laddr, err)
	}
	defer c.Close()
	dst := &net.UDPAddr{IP: net.ParseIP("ff02::1:2"), Port: 547, Zone: ifname}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		if _, err := c.WriteToUDP(msg, dst); err != nil {
			return nil, netip.Addr{}, fmt.Errorf("send to %s: %w", dst, err)
		}
		rd := time.Now().Add(500 * time.Millisecond)
		if rd.After(deadline) {
			rd = deadline
		}
		_ = c.SetReadDeadline(rd)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				break
			}
			r, err := dhcpv6.MessageFromBytes(buf[:n])
			if err != nil || !bytes.Equal(r.TransactionID[:], msg[1:4]) {
				continue
			}
			fa, _ := netip.AddrFromSlice(from.IP)
			return r, fa, nil
		}
	}
	return nil, netip.Addr{}, errors.New("no reply")
}
