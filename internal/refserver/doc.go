// Package refserver is a small DHCPv6 server for address registration
// (RFC 9686): it answers Information-Request (with OPTION_ADDR_REG_ENABLE, 148,
// when asked for) and ADDR-REG-INFORM, direct or relayed, keeps the DUID ↔
// address bindings and a history of registration events in an SQL
// database (SQLite, or PostgreSQL shared by several servers), expires
// bindings on time, and answers RFC 5007 leasequeries from them.
//
// It is the implementation behind cmd/addrreg-refserver (shipped as the
// addrreg-refserver package), not a supported API: cmd/addrreg-refserver,
// cmd/addrreg-loadgen, test/dhcp6test and the end-to-end tests import it,
// and it changes with them.
//
// The pieces, from pure to I/O:
//
//   - wire.go: the DHCPv6 TLV walk, relay unwrap (RFC 8415 §9) and Relay-Reply
//     wrap (§19.3), leasequery encoding (RFC 5007).
//   - Handler (handler.go): a pure state machine, Handle(now, Packet), table-tested
//     without sockets. It owns the rate limiters and a table of the bindings
//     this server saw (table.go), which predicts each event and arms the
//     expiry timer; the database decides.
//   - storage.go: the storage interface and what both backends share (the
//     commit's decisions, the readers' queries, migrations); sqlite.go and
//     postgres.go; legacy.go reads the database format of 0.1.0 once, to
//     import it.
//   - Server (server.go): the UDP socket on [::]:547, ff02::1:2 membership,
//     the group-commit writer and the sender, the expiry timer, and the wiring.
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
//   - Durability: a binding change is committed before its ADDR-REG-REPLY
//     is sent. One writer goroutine commits everything queued as one
//     transaction (group commit: the batch is what queued up during the
//     previous commit, not what a timer allowed), then a sender goroutine
//     sends the replies with sendmmsg while the writer commits the next
//     batch. The commit decides each event from the rows it reads (kind,
//     previous holder, the per-DUID limit: an INFORM over the limit gets
//     no reply) and removes expired bindings with DELETE … RETURNING, so
//     with several servers on one database a binding expires, and is
//     logged and recorded, exactly once; the same INFORM committed twice
//     within a second (two servers of a link both answer ff02::1:2, or a
//     retransmission) is answered both times and recorded once. A failed commit sends nothing;
//     the writer logs it, backs off (100 ms doubling to 5 s) and tries the
//     next batch, and says when commits work again.
//   - Databases: Config.DBPath is an SQLite file (WAL journal,
//     synchronous=FULL, one writer connection and a pool of readers
//     beside it; the writer's statements take 64, 32 … 1 rows, and its
//     WAL writes reach the kernel gathered, sqlite_walbuf.go; a
//     checkpointer copies the WAL into the file every 100 ms beside it,
//     and the writer restarts the WAL between two commits once it holds
//     64 MB, so that under sustained load it does not grow without end)
//     or a PostgreSQL URL. With PostgreSQL each commit first takes a
//     transaction-scoped advisory lock, so the commits of a site's servers
//     take turns; a commit is a handful of statements whatever its size
//     (arrays through unnest), sent pipelined through pgx: two round
//     trips, three with an expiry run. Leasequery (UDP and TCP) and
//     history read the database, so any server answers for all of them.
//   - An old database: a file in the format of 0.1.0 at DBPath (a snapshot
//     and log segments DBPath.wal.N) is imported into a new SQLite file
//     that then takes its place; its files are kept in
//     DBPath+OldFormatSuffix (".old-format").
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
//
// # Schema
//
// Schema version 3 (SchemaVersion; the migrations are numbered SQL files,
// migrations/sqlite/NNNN_name.sql and migrations/postgres/NNNN_name.sql,
// embedded and applied at start in order, each in a transaction with its
// row in schema_version; a database of a newer version is refused). The
// same tables on both databases; times are Unix nanoseconds, lifetimes
// seconds, addresses in canonical text form (RFC 5952), DUIDs lower-case
// hex, link-layer addresses colon-separated:
//
//	bindings (addr TEXT PRIMARY KEY, prefix64 TEXT, duid TEXT, iface TEXT,
//	          link_addr TEXT ('' unrelayed), link_layer TEXT, fqdn TEXT,
//	          first_ns, last_ns, expires_ns (NULL: never), preferred_s, valid_s)
//	history  (seq (INTEGER PRIMARY KEY / identity), time_ns, event (register,
//	          refresh, move, deregister, expire, reject, dns), duid, prev_duid,
//	          addr, iface, link_addr, link_layer, fqdn, preferred_s, valid_s,
//	          reason)
//	meta     (key TEXT PRIMARY KEY, value TEXT): "server-duid"
//	ddns_pending (instance TEXT, addr TEXT, PRIMARY KEY (instance, addr),
//	          want_name TEXT ('' none), want_duid TEXT, want_ttl (seconds),
//	          drops TEXT (JSON [{"name", "duid"}]), since_ns)
//	ddns_intake (instance TEXT, seq, PRIMARY KEY (instance, seq), addr,
//	          name, duid, valid_s, prev_name, prev_duid)
//	schema_version (version, name, applied_ns)
//
// 0001_init creates bindings, history and meta; 0002_ddns_pending the DNS
// journal (dnsjournal.go, DNSJournal): the work the DNS updater
// (internal/ddns) has not yet done, ddns.Pending per address — the
// records the address should have (an AAAA under want_name and a PTR to
// it; none: the PTR goes) and the names whose AAAA for it must go. A
// server loads, sends and deletes only the rows of its instance (empty with
// SQLite; with PostgreSQL the host name, DefaultDNSInstance), so servers
// sharing a database never take or overwrite each other's work. What an
// update did is a history record of event "dns": fqdn the record's name,
// duid its client's, reason "AAAA added", "PTR removed", "AAAA conflict"
// or "AAAA failed: …" (the first failure of an update that is retried).
// The journal has a connection of its own, opened before Run and closed
// after the updater. The commit writes the DNS change of each event that
// has one (ddns.Change: the name now and before, DNSChange) to
// ddns_intake in its transaction, numbered (seq, Event.DNSSeq); the
// updater merges it into its queue, and its next journal write (at once
// when idle, about once a second while busy) stores the merged work in
// ddns_pending and deletes the change, in one transaction. A crash loses
// no DNS update: at start the journal returns the pending rows and the
// changes not yet merged.
//
// 0003_history_partitions (SQLite only; on PostgreSQL a no-op that keeps
// one version number): history becomes a view over 21 partition tables
// history_p0..history_p20 (the same columns, each with indexes on time_ns,
// (addr, time_ns) and (duid, time_ns)) and history_state (one row: the
// floors floor_seq and floor_time the view filters on, next_seq, the
// current partition cur, its rows and oldest time). The writer assigns
// seq, inserts into the current partition, raises the floors as retention
// requires and, once the current partition holds a 20th of the records
// kept (or spans a 20th of the age limit), empties the next
// one, all of whose rows are below a floor, in one DELETE without WHERE
// (SQLite frees its pages whole) and writes there next
// (sqlite_history.go): deleting the oldest row of the table and of its
// three indexes for each new one was 15 % of the writer's CPU at the
// cap. Readers see the same rows as before; their queries on history use
// each partition's indexes. Operators' SQL reads history as before and
// never writes it. PostgreSQL keeps the history table, pruned per row.
//
// A new table is a new migration file per dialect, NNNN_….sql, and
// SchemaVersion follows. The operators' queries are doc/examples/*.sql.
package refserver
