-- Which host held address $1 at time $2?
--   $1  the address, in canonical text form (RFC 5952: lower case, :: for
--       the longest run of zeros), e.g. '2001:db8:1::4f2a'
--   $2  the time, Unix seconds, e.g. 1764938580 (date -d '2025-12-05 14:03' +%s)
-- One row (the client's DUID, where and how it registered, when last seen
-- and the valid lifetime it gave), or none when nobody held it then.
-- Works on SQLite and PostgreSQL (addrreg-refserver's schema, doc.go). The
-- history keeps --history-max records (default 100,000) and none older than
-- --history-max-age.
SELECT duid, addr, iface, link_addr, link_layer, fqdn, event,
       time_ns / 1000000000 AS seen_s, valid_s
FROM (
	SELECT * FROM history
	WHERE addr = $1
	  AND time_ns <= CAST($2 AS BIGINT) * 1000000000
	  AND event IN ('register', 'refresh', 'move', 'deregister', 'expire')
	ORDER BY seq DESC
	LIMIT 1
) AS last
WHERE event IN ('register', 'refresh', 'move')
  AND (valid_s >= 4294967295 OR time_ns + valid_s * 1000000000 > CAST($2 AS BIGINT) * 1000000000);
