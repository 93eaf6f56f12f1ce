// Package refserver is a small DHCPv6 server for address registration
// (RFC 9686): it answers Information-Request (with OPTION_ADDR_REG_ENABLE, 148,
// when asked for) and ADDR-REG-INFORM, direct or relayed, keeps the DUID ↔
// address bindings and a history of registration events in a bbolt database,
// expires bindings on time, and answers RFC 5007 leasequeries from them.
//
// It is the implementation behind cmd/addrreg-refserver and the tests'
// reference server, not a supported API: cmd/addrreg-refserver,
// cmd/addrreg-loadgen, test/dhcp6test and the end-to-end tests import it,
// and it changes with them. It lives under test/ because it exists to test
// addrregd against a correct server.
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
//   - Query (query.go) and BulkQuery (bulk.go): the leasequery requestors
//     used by `addrreg-refserver query`.
//
// Choices worth knowing:
//
//   - Nesting: relayed messages are accepted up to HopCountLimit (8)
//     Relay-Forward levels, the HOP_COUNT_LIMIT of RFC 8415 §7.6 (RFC 3315
//     had 32). The Relay-Reply goes back to the UDP source of the outermost
//     Relay-Forward (address and port, which also honours RFC 8357).
//   - "Appropriate to the link": Config.Prefixes per interface or relay
//     link-address; without an entry, the interface's own global prefixes
//     (a /128 counts as its /64), or for a relay the entry whose prefix holds
//     the link-address, else the link-address's /64.
//   - Durability: a binding change is committed (bbolt, fsync) before its
//     ADDR-REG-REPLY is sent; one writer goroutine commits everything queued
//     in one transaction (group commit, sized by what queued up during the
//     previous commit), then sends the replies with sendmmsg. In-memory state
//     changes first, so a leasequery may see a registration a few
//     milliseconds before it is on disk.
//   - Throughput: Config.Readers goroutines take datagrams off the socket
//     with recvmmsg and handle them (a plain INFORM is decoded without
//     allocating; replies go into pooled buffers); at most Config.MaxQueue
//     wait for a commit, and what arrives beyond is dropped and counted
//     ("overloaded"), so latency stays bounded under overload.
//   - Rate limits are token buckets per source address (the innermost
//     peer-address when relayed) and per DUID; rate-limited, truncated,
//     oversized and malformed datagrams are counted but not written to the
//     history, so a flood cannot fill the database.
//   - Leasequery (RFC 5007) answers QUERY_BY_ADDRESS and QUERY_BY_CLIENTID
//     over UDP; an answer larger than MaxUDPLeasequeryReply is replaced by
//     status UnspecFail with TooLargeText. Bulk Leasequery (RFC 5460, bulk.go)
//     answers those and QUERY_BY_LINK_ADDRESS over TCP port 547, a client's
//     addresses in parts of at most 1,024 per OPTION_CLIENT_DATA (a framed
//     message holds 64 KB). The default allow list is ::1/128.
package refserver
