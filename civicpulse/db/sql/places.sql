-- Places: a tenant's sites, buildings, floors, rooms, units, spaces and assets.

-- name: list_places
SELECT code, kind, name, aliases, parent, lat, lon, geometry
  FROM places
 WHERE tenant_id = $1
 ORDER BY code

-- name: get_place
SELECT code, kind, name, aliases, parent, lat, lon, geometry
  FROM places
 WHERE tenant_id = $1 AND code = $2

-- name: upsert_places
-- Create or replace many places at once (an import, or one PUT). The parent foreign key is
-- checked at commit, so children may come before their parents.
INSERT INTO places (tenant_id, code, kind, name, aliases, parent, lat, lon, geometry)
SELECT $1, u.code, u.kind, u.name, string_to_array(u.aliases, '|'), u.parent, u.lat, u.lon,
       u.geometry::jsonb
  FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[],
              $8::float8[], $9::text[])
       AS u (code, kind, name, aliases, parent, lat, lon, geometry)
ON CONFLICT (tenant_id, code) DO UPDATE
   SET kind = EXCLUDED.kind, name = EXCLUDED.name, aliases = EXCLUDED.aliases,
       parent = EXCLUDED.parent, lat = EXCLUDED.lat, lon = EXCLUDED.lon,
       geometry = EXCLUDED.geometry, updated_at = now()
RETURNING code, (xmax = 0) AS created

-- name: lock_places
-- A tenant's place writes take turns: an import, a PUT and a DELETE touching the same rows
-- and the tree's version row in different orders would otherwise deadlock.
SELECT pg_advisory_xact_lock(hashtextextended('civicpulse_places:' || $1::bigint, 0))

-- name: delete_place
DELETE FROM places WHERE tenant_id = $1 AND code = $2
RETURNING code

-- name: place_version
SELECT version FROM place_versions WHERE tenant_id = $1

-- name: place_codes
SELECT code FROM places WHERE tenant_id = $1

-- name: place_exists
SELECT EXISTS (SELECT 1 FROM places WHERE tenant_id = $1 AND code = $2)

-- name: check_places
-- The parent foreign key is deferred (an import may list children first); this checks it
-- now, so a bad parent fails the statement that caused it, not some later commit.
SET CONSTRAINTS ALL IMMEDIATE
