-- Every address client (DUID) $1 held between $2 and $3, e.g. last week.
--   $1  the DUID in lower-case hex without separators, e.g. '000100012c3d4e5f020000000001'
--   $2  from, Unix seconds (last week: date -d '7 days ago' +%s)
--   $3  to, Unix seconds (date +%s)
-- One row per address: when the client was first and last seen with it in
-- the history, and how many registrations and refreshes it sent.
-- Works on SQLite and PostgreSQL (addrreg-refserver's schema, doc.go).
SELECT addr,
       MIN(time_ns) / 1000000000 AS first_seen_s,
       MAX(time_ns) / 1000000000 AS last_seen_s,
       COUNT(*) AS events
FROM history
WHERE duid = $1
  AND event IN ('register', 'refresh', 'move')
  AND (valid_s >= 4294967295 OR time_ns + valid_s * 1000000000 >= CAST($2 AS BIGINT) * 1000000000)
  AND time_ns <= CAST($3 AS BIGINT) * 1000000000
GROUP BY addr
ORDER BY addr;
