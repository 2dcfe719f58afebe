-- Reports located by address only, and the tenant's geocoder that gives them coordinates
-- later (civicpulse/geocoder.py).

-- name: geocoding_tenants
SELECT t AS tenant_id FROM civicpulse_geocoding_tenants($1) AS t

-- name: get_geocoder
SELECT url, email, countrycodes, suffix, updated_at FROM geocoders WHERE tenant_id = $1

-- name: put_geocoder
INSERT INTO geocoders (tenant_id, url, email, countrycodes, suffix)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant_id) DO UPDATE
   SET url = EXCLUDED.url, email = EXCLUDED.email, countrycodes = EXCLUDED.countrycodes,
       suffix = EXCLUDED.suffix, updated_at = now()
RETURNING (xmax = 0) AS created

-- name: delete_geocoder
DELETE FROM geocoders WHERE tenant_id = $1 RETURNING tenant_id

-- name: geocode_lock
-- One process geocodes a tenant at a time: two would ask the geocoder twice for the same
-- addresses. A session lock, held by a connection of its own while the geocoder is asked
-- (no transaction stays open across those requests); geocode_unlock ends it.
SELECT pg_try_advisory_lock(hashtext('civicpulse_geocode'), $1::int)

-- name: geocode_unlock
SELECT pg_advisory_unlock(hashtext('civicpulse_geocode'), $1::int)

-- name: geocode_pending
-- Reports without coordinates that the geocoder has not given up on, oldest first
-- (reports_unlocated).
SELECT id, address, address_key
  FROM reports
 WHERE tenant_id = $1 AND lat IS NULL AND geocode_attempts < $2
 ORDER BY received_at, id
 LIMIT $3

-- name: cached_geocodes
-- What the geocoder said before of these queries (primary key); a NULL point: not found.
SELECT address_key, lat, lon FROM geocodes WHERE tenant_id = $1 AND address_key = ANY($2::text[])

-- name: store_geocodes
INSERT INTO geocodes (tenant_id, address_key, lat, lon, display_name)
SELECT $1, u.k, u.lat, u.lon, u.name
  FROM unnest($2::text[], $3::float8[], $4::float8[], $5::text[]) AS u (k, lat, lon, name)
ON CONFLICT (tenant_id, address_key) DO UPDATE
   SET lat = EXCLUDED.lat, lon = EXCLUDED.lon, display_name = EXCLUDED.display_name,
       fetched_at = now()

-- name: set_geocoded
-- Reports get their coordinates (only those still without: a report never loses the point
-- its reporter gave). Returns the issues they are in, whose points then follow.
UPDATE reports r
   SET lat = u.lat, lon = u.lon, geocoded_at = now()
  FROM unnest($2::uuid[], $3::float8[], $4::float8[]) AS u (id, lat, lon)
 WHERE r.tenant_id = $1 AND r.id = u.id AND r.lat IS NULL
RETURNING r.issue_id

-- name: geocode_missed
-- The geocoder could not place these reports: $3 more attempts counted (the limit at once
-- when it said the address does not exist; one when it failed).
UPDATE reports SET geocode_attempts = least(geocode_attempts + $3, 32767)
 WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND lat IS NULL
