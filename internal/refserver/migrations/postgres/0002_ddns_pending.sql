-- 0002: the DNS updates not yet done (internal/ddns's journal), per
-- server and address. A server loads and sends only the rows it wrote
-- (instance: empty with SQLite, the host name with PostgreSQL), so servers
-- sharing a database never take each other's work. The work is what
-- ddns.Pending holds: the records the address should have (want_*: an
-- AAAA under want_name and a PTR to it; want_name '' for none, the PTR
-- goes too) and the names whose AAAA for the address must go (drops: a
-- JSON array of {"name", "duid" (hex)}). Outcomes go to history (event
-- 'dns', fqdn the name, reason "RECORD RESULT").
CREATE TABLE ddns_pending (
	instance  TEXT NOT NULL,
	addr      TEXT NOT NULL,
	want_name TEXT NOT NULL DEFAULT '',
	want_duid TEXT NOT NULL DEFAULT '',
	want_ttl  BIGINT NOT NULL DEFAULT 0,
	drops     TEXT NOT NULL DEFAULT '[]',
	since_ns  BIGINT NOT NULL,
	PRIMARY KEY (instance, addr)
);

-- The binding changes a commit hands the DNS updater, written in the
-- commit's transaction (so a crash loses none), until the updater has
-- merged them into ddns_pending (and deletes them in that transaction).
-- seq: the change's number, increasing per instance. name/duid: the
-- name now registered ('' none); prev_name/prev_duid: the name published
-- before; valid_s: the binding's valid lifetime.
CREATE TABLE ddns_intake (
	instance  TEXT NOT NULL,
	seq       BIGINT NOT NULL,
	addr      TEXT NOT NULL,
	name      TEXT NOT NULL DEFAULT '',
	duid      TEXT NOT NULL DEFAULT '',
	valid_s   BIGINT NOT NULL DEFAULT 0,
	prev_name TEXT NOT NULL DEFAULT '',
	prev_duid TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (instance, seq)
);
