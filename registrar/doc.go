// Package registrar is addrreg's wire: it builds and sends RFC 9686
// ADDR-REG-INFORM messages and the Information-Requests that discover
// whether a link's DHCPv6 servers support them, and validates the replies.
//
// It is a supported API of this module: Registrar (New, Run, Probe,
// Register, Stats), Config, Target, Result, the errors and DropReason may be
// used by other programs; message building and parsing are unexported.
//
// # Sockets
//
// Another DHCPv6 client (Debian's dhclient -6, NetworkManager,
// systemd-networkd) may hold [fe80::…%if]:546 with SO_REUSEADDR; binding the
// same port would silently take its unicast Replies (SPEC §5). So the
// registrar binds no UDP port at all. It has one raw IPv6 socket of protocol
// UDP per namespace:
//
//   - It sends by writing the UDP header (546 → 547) and the DHCPv6 message
//     itself; the kernel fills in the UDP checksum (IPV6_CHECKSUM, offset 6).
//     Source address and interface are chosen per packet with IPV6_PKTINFO,
//     the destination is ff02::1:2 with hop limit 1: an ADDR-REG-INFORM goes
//     out from the address it registers, only on that address's interface
//     (RFC 9686 §4.2); an Information-Request from the link-local address.
//   - It receives a copy of every UDP datagram the host receives, narrowed by
//     a classic BPF filter to source port 547, destination port 546, with
//     IPV6_RECVPKTINFO giving the destination address and interface.
//
// Datagrams are handed to the outstanding exchange whose transaction ID they
// carry. A side effect of listening without a bound port: the kernel answers
// each unicast ADDR-REG-REPLY with an ICMPv6 destination-unreachable (port
// unreachable) to the server, rate limited; the reply has been read by then.
//
// # Wire decisions
//
// ADDR-REG-INFORM carries, in this order: Client Identifier, Elapsed Time,
// exactly one IA Address, and Client FQDN when there is a name to send. Elapsed Time is
// there because RFC 8415 §21.9 says a client MUST include it in its messages
// and RFC 9686 §4.2 allows other options: 0 in the first transmission,
// updated in every retransmission, like the IA Address lifetimes, which are
// read afresh (Target.Lifetimes) for each transmission. Lifetimes are whole
// seconds, truncated; 0xffffffff and above is infinity. No Server ID, no ORO.
// The Client FQDN flags are S=1, O=0, N=0, as systemd-networkd and
// NetworkManager set them in DHCPv6: the client updates no DNS itself and
// asks the server to (whether it does is the server's policy); a dotted
// name is sent fully qualified, a single label as a partial name (RFC 4704
// §4.2) for the server to complete. The name is Config.FQDN, or the
// Target's own (Target.FQDN): addrregd sends the host's current name.
//
// Information-Request carries Client Identifier, Elapsed Time and an ORO of
// INF_MAX_RT (83, which RFC 8415 §18.2.6 requires) and
// OPTION_ADDR_REG_ENABLE (148). Probe retransmits it until a Reply comes
// (RFC 8415 §18.2.6: INF_MAX_DELAY, INF_TIMEOUT, INF_MAX_RT). A Reply with
// option 148 ends it at once; after one without, Probe listens one second more
// without retransmitting, since a link may have a registration server and an
// ordinary one (Kea 2.2, say) and the first to answer need not be the former.
//
// # Replies
//
// An ADDR-REG-REPLY is accepted only if (RFC 9686 §4.3) it is addressed to
// the registered address, its one IA Address is that address, its transaction
// ID is the exchange's, it arrived on the address's interface and the address
// is still there (Target.Lifetimes ok). Extra options are accepted (ISC Kea
// 3.x adds Server ID and Client ID), but a Client ID that is not ours is not.
// Received ADDR-REG-INFORMs are discarded. Each discarded datagram is counted
// per DropReason (Stats) and logged at debug level.
package registrar
