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
//     without sockets. It owns the in-memory bindings (table.go) and the rate
//     limiters.
//   - store.go and logfile.go: the database, an append-only write-ahead log
//     of CRC-checked records with periodic snapshots (the on-disk format is
//     documented below), written by one goroutine that appends all
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
//     outgrow the snapshot (at least 64 MB), a background goroutine writes
//     a new snapshot from memory (the bindings as they are, the history up
//     to the last full segment; store.go's compactMemory says why that is
//     safe), written beside, synced, renamed, directory synced, and removes
//     the segments. Background writes (spare segments, snapshots) keep to
//     about 16 MB/s and a quarter of a core, since each commit's fdatasync
//     flushes whatever was written before it. At startup a torn record at the end of a
//     segment (a crash during a commit that was never acknowledged) is cut
//     off with a warning; any other damage stops the server with an error
//     naming the file. A bbolt database of an older server at DBPath is
//     migrated on first start and kept as DBPath.bbolt. The format is
//     below.
//   - Throughput: Config.Readers goroutines take datagrams off the socket
//     with recvmmsg and handle them (a plain INFORM is decoded without
//     allocating; replies go into pooled buffers); at most Config.MaxQueue
//     wait for a commit, and what arrives beyond is dropped and counted
//     ("overloaded"), as is a datagram that waited in the socket longer than
//     Config.MaxWait (its kernel receive timestamp): latency stays bounded
//     under overload, the oldest work shed first.
//   - Memory without pauses: the bindings live in a table without pointers
//     (fixed-size records in fixed-size chunks, maps keyed by address and
//     by a seeded hash of the DUID), and the expiry heap is chunked too, so
//     the garbage collector has nothing to scan per binding and nothing
//     grows by copying (about 240 bytes a binding; a full collection with
//     200,000 bindings takes ~1 ms, BenchmarkHandlerHeap). Spare log
//     segments are written 256 KiB at a time with pauses, so their zeros
//     never queue a commit's fdatasync behind 32 MB. Each durable reply's
//     time is measured by stage (addrreg_refserver_reply_stage_seconds).
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
//
// # On-disk format
//
// Every database file, the snapshot and each write-ahead log segment
// (store.go, logfile.go), is a header and then records.
//
//	header (24 bytes): magic "addrreg\x00", version 1, kind ('S' snapshot,
//	    'W' log segment), two zero bytes, generation (uint64), CRC-32C of
//	    the 20 bytes before it (uint32). All integers big-endian.
//	record: length n (uint32, 1 … maxRecord), CRC-32C of the n bytes that
//	    follow (uint32), then n bytes: a type byte and its payload.
//
// Record types and payloads:
//
//	'M' meta:    key length (1 byte), key, value. Keys: "server-duid",
//	             "seq" (the last history sequence number, uint64).
//	'B' binding: address (16 bytes), expiry (int64 Unix ns, 0 never),
//	             the binding (codecV1, codec.go).
//	'D' delete:  address (16 bytes), 0 (unconditional) or 1 and an expiry
//	             (int64): delete only if the binding held then still
//	             expires then (an expiry queued beside a newer register).
//	'H' history: sequence (uint64), time (int64 Unix ns), the record (codecV1).
//
// A length of zero ends the file: segments are written with zeros ahead
// of their records (see walSize). A record whose CRC does not match, or
// that runs past the end, is a torn write of a commit that was never
// acknowledged; the server truncates the file there at startup and says
// so. Replaying the snapshot, then every segment of a higher generation in
// order, gives the bindings and the history.
package refserver
