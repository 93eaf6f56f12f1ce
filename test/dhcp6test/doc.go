// Package dhcp6test is the project's one DHCPv6 test kit, shared by the
// end-to-end tests of registrar, agent, refserver and shield. It is test
// infrastructure, not an API: nothing outside this module's tests imports it.
//
//   - Responder: a scriptable DHCPv6 server on UDP [::]:547 in a topo node,
//     joined to ff02::1:2. A Script decides, per received message, what to
//     send back; Answer builds the usual answers (a Reply to an
//     Information-Request with or without option 148, an ADDR-REG-REPLY in
//     Kea 3.x's shape or bare, with extra options); tests mutate them to
//     break one rule at a time (wrong transaction ID, wrong IA Address,
//     wrong destination). Relay-Forwards are unwrapped for the script and
//     its answers wrapped in a Relay-Reply (RFC 8415 §19.3) back to the relay.
//   - Sniffer: a raw IPv6/UDP socket that records every DHCPv6 message to a
//     port with the kernel's receive timestamp (SO_TIMESTAMPNS), taking
//     nothing from the sockets bound to that port.
//   - Bindings: what the reference server holds, asked in-process with its
//     own leasequery requestor (refserver.Query) from inside a node, as a map.
//   - StartKea: Debian's kea-dhcp6 (2.2) in a node, with a configuration
//     the test writes (e.g. serving IA_NA on the link).
//
// Everything started here stops in t.Cleanup, and a failing test logs what
// the responder and the sniffer saw.
package dhcp6test
