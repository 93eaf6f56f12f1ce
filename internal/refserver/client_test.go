package refserver_test

import (
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
