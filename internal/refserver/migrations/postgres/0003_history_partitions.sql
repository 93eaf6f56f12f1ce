-- 0003: nothing on PostgreSQL. On SQLite the history's rows move into
-- partition tables behind a view named history (sqlite/0003); here the
-- table and its per-row prune stay. The number keeps one schema version
-- for both databases.
SELECT 1;
