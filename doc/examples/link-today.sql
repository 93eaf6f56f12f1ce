-- What registered on link $1 since $2 (e.g. today)?
--   $1  the link: a relay's link-address as the server's --prefix names it
--       (e.g. '2001:db8:2::1'), or, for clients on the server's own links,
--       the interface name (e.g. 'eth0')
--   $2  since, Unix seconds (today: date -d 'today 00:00' +%s)
-- One row per registration of a new address or a move to another client,
-- oldest first; refreshes are left out.
-- Works on SQLite and PostgreSQL (addrreg-refserver's schema, doc.go).
SELECT time_ns / 1000000000 AS time_s, event, addr, duid, prev_duid,
       iface, link_addr, link_layer, fqdn
FROM history
WHERE (link_addr = $1 OR (link_addr = '' AND iface = $1))
  AND time_ns >= CAST($2 AS BIGINT) * 1000000000
  AND event IN ('register', 'move')
ORDER BY seq;
