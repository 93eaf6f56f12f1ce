-- 0003: the history's rows in 5 partition tables, history_p0..history_p4,
-- behind a view named history (same columns; what readers see is the
-- same). Retention costs a page, not a row: the server writes into one
-- partition (history_state.cur) and, once it holds a quarter of the
-- records kept, empties the oldest (a DELETE without WHERE: SQLite frees
-- its pages whole) and writes there; deleting row by row cost each new
-- row an old one's delete from the table and its three indexes. The
-- view shows only the rows retention keeps (seq >= floor_seq, time_ns >=
-- floor_time): the others stay in the oldest partition until it is
-- emptied. seq stays global and increasing: the server assigns it
-- (next_seq). cur_rows and cur_min_ns: the current partition's rows and
-- oldest time. Only the server writes these tables (through the view's
-- partitions, never the view).
CREATE TABLE history_state (
	id         INTEGER PRIMARY KEY CHECK (id = 0),
	floor_seq  INTEGER NOT NULL,
	floor_time INTEGER NOT NULL,
	next_seq   INTEGER NOT NULL,
	cur        INTEGER NOT NULL,
	cur_rows   INTEGER NOT NULL,
	cur_min_ns INTEGER NOT NULL
);
CREATE TABLE history_p0 (
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
CREATE INDEX history_p0_time ON history_p0 (time_ns);
CREATE INDEX history_p0_addr ON history_p0 (addr, time_ns);
CREATE INDEX history_p0_duid ON history_p0 (duid, time_ns);
CREATE TABLE history_p1 (
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
CREATE INDEX history_p1_time ON history_p1 (time_ns);
CREATE INDEX history_p1_addr ON history_p1 (addr, time_ns);
CREATE INDEX history_p1_duid ON history_p1 (duid, time_ns);
CREATE TABLE history_p2 (
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
CREATE INDEX history_p2_time ON history_p2 (time_ns);
CREATE INDEX history_p2_addr ON history_p2 (addr, time_ns);
CREATE INDEX history_p2_duid ON history_p2 (duid, time_ns);
CREATE TABLE history_p3 (
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
CREATE INDEX history_p3_time ON history_p3 (time_ns);
CREATE INDEX history_p3_addr ON history_p3 (addr, time_ns);
CREATE INDEX history_p3_duid ON history_p3 (duid, time_ns);
CREATE TABLE history_p4 (
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
CREATE INDEX history_p4_time ON history_p4 (time_ns);
CREATE INDEX history_p4_addr ON history_p4 (addr, time_ns);
CREATE INDEX history_p4_duid ON history_p4 (duid, time_ns);
INSERT INTO history_p0 SELECT * FROM history;
INSERT INTO history_state
	SELECT 0, 0, -9223372036854775808, COALESCE(MAX(seq), 0) + 1, 0, COUNT(*), COALESCE(MIN(time_ns), 9223372036854775807)
	FROM history;
DROP TABLE history;
CREATE VIEW history AS
	SELECT * FROM history_p0
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p1
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p2
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p3
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p4
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state);
