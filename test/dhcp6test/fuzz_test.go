package dhcp6test

import (
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// FuzzDecode: whatever reaches a responder or a sniffer, decoding it and
// its control messages never panics, and a decoded packet has a message.
func FuzzDecode(f *testing.F) {
	f.Add(inform(dhcpv6.TransactionID{1, 2, 3}).ToBytes(), []byte{})
	f.Add(infoRequest(dhcpv6.TransactionID{1, 2, 3}).ToBytes(), []byte{1, 2, 3})
	r, _ := dhcpv6.EncapsulateRelay(inform(dhcpv6.TransactionID{4, 5, 6}), dhcpv6.MessageTypeRelayForward, nil, nil)
	f.Add(r.ToBytes(), make([]byte, 40))
	f.Fuzz(func(t *testing.T, payload, oob []byte) {
		parseRecvInfo(oob)
		var p Packet
		if err := p.decode(payload); err == nil && p.Msg == nil {
			t.Fatalf("decoded %x without a message", payload)
		}
		_ = p.String()
	})
}
