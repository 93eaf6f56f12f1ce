// Package refserver is a small DHCPv6 server for address registration
// (RFC 9686): it answers Information-Request (with OPTION_ADDR_REG_ENABLE, 148,
// when asked for) and ADDR-REG-INFORM, direct or relayed, keeps the DUID ↔
// address bindings and a history of registration events in a write-ahead
// log with snapshots, expires bindings on time, and answers RFC 5007 leasequeries from them.
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
//   - store.go and logfile.go: the database, an append-only write-ahead log
//     of CRC-checked records with periodic snapshots (the on-disk format is
//     documented in logfile.go), written by one goroutine that appends all
//     queued events with one write and one fdatasync (group commit) and only
//     then releases the ADDR-REG-REPLYs that depend on them. migrate.go
//     reads the bbolt database of older servers.
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
//   - Durability: a binding change is in the log and synced (fdatasync)
//     before its ADDR-REG-REPLY is sent; one writer goroutine appends
//     everything queued as one group (sized by what queued up during the
//     previous sync, not by a timer), then a sender goroutine sends the
//     replies with sendmmsg while the writer syncs the next group. In-memory
//     state changes first, so a leasequery may see a registration a
//     millisecond before it is on disk.
//   - Database files: the snapshot at Config.DBPath, log segments
//     DBPath.wal.N (made ahead, zero-filled and synced, so an append never
//     changes a file's size and its fdatasync writes data only), and
//     DBPath.lock (flock: one server per database). When the full segments
//     outgrow the snapshot (at least 64 MB), a background goroutine folds
//     them into a new snapshot (written beside, synced, renamed, directory
//     synced) and removes them. At startup a torn record at the end of a
//     segment (a crash during a commit that was never acknowledged) is cut
//     off with a warning; any other damage stops the server with an error
//     naming the file. A bbolt database of an older server at DBPath is
//     migrated on first start and kept as DBPath.bbolt.
//   - Throughput: Config.Readers goroutines take datagrams off the socket
//     with recvmmsg and handle them (a plain INFORM is decoded without
//     allocating; replies go into pooled buffers); at most Config.MaxQueue
//     wait for a commit, and what arrives beyond is dropped and counted
//     ("overloaded"), as is a datagram that waited in the socket longer than
//     Config.MaxWait (its kernel receive timestamp): latency stays bounded
//     under overload, the oldest work shed first.
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
