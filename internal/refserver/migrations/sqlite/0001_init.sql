-- 0001: bindings, registration history, server metadata (SQLite).
-- Times are Unix nanoseconds (INTEGER); lifetimes seconds; addresses in
-- their canonical text form (RFC 5952, as Go's netip prints them); DUIDs
-- and link-layer addresses lower-case hex / colon form.
CREATE TABLE bindings (
	addr        TEXT PRIMARY KEY,
	prefix64    TEXT NOT NULL,
	duid        TEXT NOT NULL,
	iface       TEXT NOT NULL DEFAULT '',
	link_addr   TEXT NOT NULL DEFAULT '',
	link_layer  TEXT NOT NULL DEFAULT '',
	fqdn        TEXT NOT NULL DEFAULT '',
	first_ns    INTEGER NOT NULL,
	last_ns     INTEGER NOT NULL,
	expires_ns  INTEGER,
	preferred_s INTEGER NOT NULL,
	valid_s     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX bindings_duid ON bindings (duid);
CREATE INDEX bindings_expires ON bindings (expires_ns) WHERE expires_ns IS NOT NULL;
-- No index on link_addr or prefix64: only a leasequery naming a link the
-- configuration does not know reads them, and every index costs each
-- registration a B-tree update.

CREATE TABLE history (
	seq         INTEGER PRIMARY KEY,
	time_ns     INTEGER NOT NULL,
	event       TEXT NOT NULL,
	duid        TEXT NOT NULL DEFAULT '',
	prev_duid   TEXT NOT NULL DEFAULT '',
	addr        TEXT NOT NULL DEFAULT '',
	iface       TEXT NOT NULL DEFAULT '',
	link_addr   TEXT NOT NULL DEFAULT '',
	link_layer  TEXT NOT NULL DEFAULT '',
	fqdn        TEXT NOT NULL DEFAULT '',
	preferred_s INTEGER NOT NULL DEFAULT 0,
	valid_s     INTEGER NOT NULL DEFAULT 0,
	reason      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX history_time ON history (time_ns);
CREATE INDEX history_addr ON history (addr, time_ns);
CREATE INDEX history_duid ON history (duid, time_ns);

CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
