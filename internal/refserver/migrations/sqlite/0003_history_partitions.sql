-- 0003: the history's rows in 21 partition tables, history_p0..history_p20,
-- behind a view named history (same columns; what readers see is the
-- same). Retention costs a page, not a row: the server writes into one
-- partition (history_state.cur) and, once it holds a 20th of the
-- records kept, empties the oldest (a DELETE without WHERE: SQLite frees
-- its pages whole) and writes there; deleting row by row cost each new
-- row an old one's delete from the table and its three indexes. The
-- view shows only the rows retention keeps (seq >= floor_seq, time_ns >=
-- floor_time): the others stay in the oldest partition until it is
-- emptied. seq stays global and increasing: the server assigns it
-- (next_seq). cur_rows and cur_min_ns: the current partition's rows and
-- oldest time. Only the server writes these tables (through the view's
-- partitions, never the view). Small partitions (5,000 records at the
-- default limit) keep the commit that empties one short (~2 ms).
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
CREATE TABLE history_p5 (
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
CREATE INDEX history_p5_time ON history_p5 (time_ns);
CREATE INDEX history_p5_addr ON history_p5 (addr, time_ns);
CREATE INDEX history_p5_duid ON history_p5 (duid, time_ns);
CREATE TABLE history_p6 (
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
CREATE INDEX history_p6_time ON history_p6 (time_ns);
CREATE INDEX history_p6_addr ON history_p6 (addr, time_ns);
CREATE INDEX history_p6_duid ON history_p6 (duid, time_ns);
CREATE TABLE history_p7 (
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
CREATE INDEX history_p7_time ON history_p7 (time_ns);
CREATE INDEX history_p7_addr ON history_p7 (addr, time_ns);
CREATE INDEX history_p7_duid ON history_p7 (duid, time_ns);
CREATE TABLE history_p8 (
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
CREATE INDEX history_p8_time ON history_p8 (time_ns);
CREATE INDEX history_p8_addr ON history_p8 (addr, time_ns);
CREATE INDEX history_p8_duid ON history_p8 (duid, time_ns);
CREATE TABLE history_p9 (
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
CREATE INDEX history_p9_time ON history_p9 (time_ns);
CREATE INDEX history_p9_addr ON history_p9 (addr, time_ns);
CREATE INDEX history_p9_duid ON history_p9 (duid, time_ns);
CREATE TABLE history_p10 (
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
CREATE INDEX history_p10_time ON history_p10 (time_ns);
CREATE INDEX history_p10_addr ON history_p10 (addr, time_ns);
CREATE INDEX history_p10_duid ON history_p10 (duid, time_ns);
CREATE TABLE history_p11 (
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
CREATE INDEX history_p11_time ON history_p11 (time_ns);
CREATE INDEX history_p11_addr ON history_p11 (addr, time_ns);
CREATE INDEX history_p11_duid ON history_p11 (duid, time_ns);
CREATE TABLE history_p12 (
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
CREATE INDEX history_p12_time ON history_p12 (time_ns);
CREATE INDEX history_p12_addr ON history_p12 (addr, time_ns);
CREATE INDEX history_p12_duid ON history_p12 (duid, time_ns);
CREATE TABLE history_p13 (
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
CREATE INDEX history_p13_time ON history_p13 (time_ns);
CREATE INDEX history_p13_addr ON history_p13 (addr, time_ns);
CREATE INDEX history_p13_duid ON history_p13 (duid, time_ns);
CREATE TABLE history_p14 (
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
CREATE INDEX history_p14_time ON history_p14 (time_ns);
CREATE INDEX history_p14_addr ON history_p14 (addr, time_ns);
CREATE INDEX history_p14_duid ON history_p14 (duid, time_ns);
CREATE TABLE history_p15 (
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
CREATE INDEX history_p15_time ON history_p15 (time_ns);
CREATE INDEX history_p15_addr ON history_p15 (addr, time_ns);
CREATE INDEX history_p15_duid ON history_p15 (duid, time_ns);
CREATE TABLE history_p16 (
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
CREATE INDEX history_p16_time ON history_p16 (time_ns);
CREATE INDEX history_p16_addr ON history_p16 (addr, time_ns);
CREATE INDEX history_p16_duid ON history_p16 (duid, time_ns);
CREATE TABLE history_p17 (
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
CREATE INDEX history_p17_time ON history_p17 (time_ns);
CREATE INDEX history_p17_addr ON history_p17 (addr, time_ns);
CREATE INDEX history_p17_duid ON history_p17 (duid, time_ns);
CREATE TABLE history_p18 (
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
CREATE INDEX history_p18_time ON history_p18 (time_ns);
CREATE INDEX history_p18_addr ON history_p18 (addr, time_ns);
CREATE INDEX history_p18_duid ON history_p18 (duid, time_ns);
CREATE TABLE history_p19 (
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
CREATE INDEX history_p19_time ON history_p19 (time_ns);
CREATE INDEX history_p19_addr ON history_p19 (addr, time_ns);
CREATE INDEX history_p19_duid ON history_p19 (duid, time_ns);
CREATE TABLE history_p20 (
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
CREATE INDEX history_p20_time ON history_p20 (time_ns);
CREATE INDEX history_p20_addr ON history_p20 (addr, time_ns);
CREATE INDEX history_p20_duid ON history_p20 (duid, time_ns);
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
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p5
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p6
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p7
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p8
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p9
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p10
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p11
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p12
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p13
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p14
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p15
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p16
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p17
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p18
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p19
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state)
	UNION ALL
	SELECT * FROM history_p20
	WHERE seq >= (SELECT floor_seq FROM history_state) AND time_ns >= (SELECT floor_time FROM history_state);
