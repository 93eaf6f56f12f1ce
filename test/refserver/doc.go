// Package refserver is a small DHCPv6 server for address registration
// (RFC 9686): it answers Information-Request (with OPTION_ADDR_REG_ENABLE, 148,
// when asked for) and ADDR-REG-INFORM, direct or relayed, keeps the DUID ↔
// address bindings and a history of registration events in a bbolt database,
// expires bindings on time, and answers RFC 5007 leasequeries from them.
//
// The pieces, from pure to I/O:
//
//   - wire.go: the DHCPv6 TLV walk, relay unwrap (RFC 8415 §9) and Relay-Reply
//     wrap (§19.3), leasequery encoding (RFC 5007).
//   - Handler (handler.go): a pure state machine, Handle(now, Packet), table-tested
//     without sockets. It owns the in-memory bindings and the rate limiters.
//   - store.go: the bbolt database, written by one goroutine that commits all
//     queued events in one transaction (group commit) and only then releases the
//     ADDR-REG-REPLYs that depend on them.
//   - Server (server.go): the UDP socket on [::]:547, ff02::1:2 membership, the
//     expiry timer, and the wiring.
//   - Query (query.go): the leasequery requestor used by `addrreg-refserver query`.
//
// Nesting: relayed messages are accepted up to HopCountLimit (8) Relay-Forward
// levels, the HOP_COUNT_LIMIT of RFC 8415 §7.6 (RFC 3315 had 32).
package refserver
