package dhcp6test

import (
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// ServerDUID is the Server Identifier Answer uses unless told otherwise.
var ServerDUID dhcpv6.DUID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}

// Send is one datagram a Responder sends.
type Send struct {
	Msg *dhcpv6.Message
	// Dst is where to: the zero value means back to the received message's
	// source, port 546, or, for a relayed message, wrapped in a Relay-Reply
	// to the relay's address, port 547. A set Dst gets the bare message on
	// port 546.
	Dst netip.Addr
	// From is the source address to send from; the zero value lets the
	// kernel choose. Kea 3.x answers from its link-local address.
	From netip.Addr
	// Why labels the datagram in Responder.Sent and in the failure log.
	Why string
}

// Answer builds a server's answers.
type Answer struct {
	// ServerID is the Server Identifier; nil means ServerDUID.
	ServerID dhcpv6.DUID
	// Offer148 puts OPTION_ADDR_REG_ENABLE (148, RFC 9686 §4.1) in the
	// Reply to an Information-Request.
	Offer148 bool
	// Bare makes an ADDR-REG-REPLY carry only the IA Address, the
	// minimum RFC 9686 §4.3 asks. By default it has Kea 3.x's shape:
	// Server ID, Client ID, then the IA Address (SPEC.md §5).
	Bare bool
	// Extra options go at the end of every answer.
	Extra []dhcpv6.Option
}

// To answers p as a server would: a Reply to an Information-Request
// (with a DNS server, and 148 if Offer148), an ADDR-REG-REPLY echoing the
// IA Address to an ADDR-REG-INFORM (built by hand: NewReplyFromMessage
// refuses type 36), same transaction ID, to p's source. Any other message
// gets a Reply with the identifiers only.
func (a Answer) To(p Packet) Send {
	if p.Type == dhcpv6.MessageTypeAddrRegInform {
		ia := p.Msg.GetOneOption(dhcpv6.OptionIAAddr)
		return Send{Msg: a.AddrRegReply(p.XID, p.Msg.Options.ClientID(), ia), Why: "reply"}
	}
	out := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply, TransactionID: p.XID}
	out.AddOption(dhcpv6.OptServerID(a.serverID()))
	if cid := p.Msg.Options.ClientID(); cid != nil {
		out.AddOption(dhcpv6.OptClientID(cid))
	}
	if p.Type == dhcpv6.MessageTypeInformationRequest {
		out.AddOption(dhcpv6.OptDNS(net.ParseIP("2001:db8:1::53")))
		if a.Offer148 {
			out.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionAddrRegEnable})
		}
	}
	for _, o := range a.Extra {
		out.AddOption(o)
	}
	return Send{Msg: out, Why: "reply"}
}

// AddrRegReply builds an ADDR-REG-REPLY with transaction ID xid carrying ia
// (if not nil) and, unless Bare, the Server ID and cid (if not nil): the
// answer to an ADDR-REG-INFORM, or an unsolicited forgery.
func (a Answer) AddrRegReply(xid dhcpv6.TransactionID, cid dhcpv6.DUID, ia dhcpv6.Option) *dhcpv6.Message {
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeAddrRegReply, TransactionID: xid}
	if !a.Bare {
		m.AddOption(dhcpv6.OptServerID(a.serverID()))
		if cid != nil {
			m.AddOption(dhcpv6.OptClientID(cid))
		}
	}
	if ia != nil {
		m.AddOption(ia)
	}
	for _, o := range a.Extra {
		m.AddOption(o)
	}
	return m
}

func (a Answer) serverID() dhcpv6.DUID {
	if a.ServerID == nil {
		return ServerDUID
	}
	return a.ServerID
}

// AnswerAll is a Script that answers every message with a.To.
func AnswerAll(a Answer) Script {
	return func(p Packet, _ Seen) []Send { return []Send{a.To(p)} }
}
