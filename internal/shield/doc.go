// Package shield implements DHCPv6-Shield (RFC 7610): a classifier that decides,
// for one Ethernet frame received on a layer-2 port, whether it may be
// forwarded, and a userspace layer-2 switch (Switch) that enforces it between
// network interfaces.
//
// It is the implementation behind cmd/dhcp6-shield, not a supported API: it
// exists to prove that a rogue server cannot fake registrations, and it
// changes with the command and its tests.
//
// The classifier is a pure function with no allocation per frame. It walks
// Ethernet, any stack of 802.1Q/802.1ad tags and the entire IPv6 header chain
// with no byte limit (RFC 7610 §5 rule 1), and reports an Action and the
// Reason for it.
//
// Decisions on malformed input, where RFC 7610 leaves room:
//   - A frame whose EtherType (after all tags) is not IPv6, including runts too
//     short to hold an EtherType, passes (ReasonNotIPv6): it cannot carry a
//     DHCPv6 message to an IPv6 stack.
//   - A frame with the IPv6 EtherType whose IPv6 header, an extension header
//     or the upper-layer header is cut short is dropped (ReasonTruncated), or
//     ReasonIncompleteFirstFragment if a first Fragment header was seen
//     (RFC 7610 §5 rule 2). Such a packet cannot be positively identified as
//     not being a DHCPv6-server message (RFC 7610 §5, discussion of rule 2).
//   - The packet ends at 40 + Payload Length bytes when Payload Length is
//     smaller than what the frame holds (Ethernet padding is not parsed);
//     when Payload Length is larger, the bytes present are walked, and a chain
//     that runs off the end is dropped as above. Payload Length 0 (a
//     jumbogram, or an empty packet) walks the bytes present.
//   - The upper-layer header must be present in full for the protocols whose
//     minimum header size is known (UDP 8 bytes, TCP 20, ICMPv6 4, ESP 8,
//     IPv6 40); for UDP to port 547 the DHCPv6 msg-type byte must be present
//     too in a first fragment. Other recognised upper layers need no bytes.
//
// The files, one concern each:
//   - classify.go: the classifier (Classify, Action, Reason, Config); pure.
//   - switch.go: the Switch, its configuration and ports, and Run, which
//     opens the ports and runs one receive loop per port under an errgroup.
//   - forward.go: the receive loop and the forwarding decision (classify,
//     count, log, learn, send to one port or flood). It sees a port only
//     through the frameConn interface, so it is tested without root on fake
//     ports (forward_test.go).
//   - mactable.go: the MAC learning table (ageing, bounded size).
//   - packetconn.go: the frameConn of a real port: an AF_PACKET socket in
//     promiscuous mode with PACKET_AUXDATA and PACKET_VNET_HDR, read with
//     recvmsg into a reused buffer.
//   - vlan.go: putting back the outer VLAN tag the kernel strips (SPEC §3);
//     pure.
//   - offload.go: turning off the ports' VLAN, receive and segmentation
//     offloads with the SIOCETHTOOL ioctl (as ethtool -K does).
//   - droplog.go: the security log (RFC 7610 §5) and its per-port rate
//     limiter.
//   - stats.go: the per-port counters, Stats and the JSON stats socket.
//
// Tests: `go test ./internal/shield/` (the end-to-end tests need root and build
// cmd/dhcp6-shield; the classifier, VLAN, forwarding and Run tests on fake
// ports do not); `go test -run '^$' -fuzz FuzzClassify -fuzztime 5m
// ./internal/shield/`; `go test -run '^$' -bench . -benchtime=1x ./internal/shield/`
// for the classifier and the forwarding throughput against a Linux bridge.
package shield
