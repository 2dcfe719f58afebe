-- Tenants, their taxonomy and API keys.

-- name: tenant_by_slug
SELECT id, slug, name, timezone FROM tenants WHERE slug = $1

-- name: create_tenant
INSERT INTO tenants (slug, name, timezone, config) VALUES ($1, $2, $3, $4::jsonb)
RETURNING id, slug, name, timezone

-- name: list_tenants
SELECT id, slug, name, timezone FROM tenants ORDER BY slug

-- name: tenant_config
SELECT config FROM tenants WHERE id = $1

-- name: insert_categories
INSERT INTO categories (tenant_id, code, service_code, name, description, keywords, kind,
                        scope)
SELECT $1, u.code, u.service_code, u.name, u.description,
       string_to_array(u.keywords, '|'), u.kind, u.scope
  FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
              $8::text[])
       AS u (code, service_code, name, description, keywords, kind, scope)
ON CONFLICT DO NOTHING

-- name: list_categories
SELECT code, service_code, name, description, keywords, kind, scope, attributes::text
  FROM categories
 WHERE tenant_id = $1 AND active
 ORDER BY code

-- name: all_categories
SELECT code, service_code, name, description, keywords, kind, scope, active,
       group_radius_m, group_lookback_hours, attributes::text
  FROM categories
 WHERE tenant_id = $1
 ORDER BY code

-- name: upsert_category
-- Categories are never deleted (reports point at them): retiring one sets active = false.
INSERT INTO categories (tenant_id, code, service_code, name, description, keywords, kind,
                        scope, active, group_radius_m, group_lookback_hours, attributes)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb)
ON CONFLICT (tenant_id, code) DO UPDATE
   SET service_code = EXCLUDED.service_code, name = EXCLUDED.name,
       description = EXCLUDED.description, keywords = EXCLUDED.keywords,
       kind = EXCLUDED.kind, scope = EXCLUDED.scope, active = EXCLUDED.active,
       group_radius_m = EXCLUDED.group_radius_m,
       group_lookback_hours = EXCLUDED.group_lookback_hours,
       attributes = EXCLUDED.attributes
RETURNING (xmax = 0) AS created

-- name: create_api_key
INSERT INTO api_keys (tenant_id, key_hash, prefix, scope, label, expires_at, created_by,
                      rotated_from)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id, prefix, scope, label, created_at, created_by, expires_at, revoked_at,
          last_used_at, rotated_from

-- name: list_api_keys
-- Never the hash: a listing names keys by id and prefix.
SELECT id, prefix, scope, label, created_at, created_by, expires_at, revoked_at,
       last_used_at, rotated_from
  FROM api_keys
 WHERE tenant_id = $1
 ORDER BY id

-- name: lock_api_key
SELECT id, prefix, scope, label, created_at, created_by, expires_at, revoked_at,
       last_used_at, rotated_from
  FROM api_keys
 WHERE tenant_id = $1 AND id = $2
   FOR UPDATE

-- name: api_key_successor
-- The key that replaced key $2, if any (rare enough to read the tenant's keys).
SELECT id FROM api_keys WHERE tenant_id = $1 AND rotated_from = $2 LIMIT 1

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = now()
 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL
RETURNING id, prefix, scope, label, created_at, created_by, expires_at, revoked_at,
          last_used_at, rotated_from

-- name: expire_api_key
-- A key stops working at $3 (a rotated key's grace period): never later than it would have.
UPDATE api_keys SET expires_at = LEAST(COALESCE(expires_at, $3), $3)
 WHERE tenant_id = $1 AND id = $2
RETURNING id, prefix, scope, label, created_at, created_by, expires_at, revoked_at,
          last_used_at, rotated_from

-- name: authenticate
SELECT tenant_id, scope, key_id, prefix, expires_at FROM civicpulse_authenticate($1)

-- name: touch_api_keys
SELECT civicpulse_touch_api_keys($1::bigint[], now())

-- name: rate_limits
-- Primary-key lookup, read with the tenant (auth cache miss).
SELECT key_per_second, key_burst, public_per_second, public_burst
  FROM tenant_rate_limits
 WHERE tenant_id = $1

-- name: put_rate_limits
INSERT INTO tenant_rate_limits (tenant_id, key_per_second, key_burst, public_per_second,
                                public_burst)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant_id) DO UPDATE
   SET key_per_second = EXCLUDED.key_per_second, key_burst = EXCLUDED.key_burst,
       public_per_second = EXCLUDED.public_per_second, public_burst = EXCLUDED.public_burst,
       updated_at = now()
RETURNING key_per_second, key_burst, public_per_second, public_burst

-- name: delete_tenant_reports
-- First, because a report's link to its issue does not cascade (an issue is never deleted
-- under its reports otherwise), and the cascade from tenants would reach issues first.
DELETE FROM reports WHERE tenant_id = (SELECT id FROM tenants WHERE slug = $1)

-- name: delete_tenant
-- Every other tenant table references tenants ON DELETE CASCADE, so this removes the rest
-- (tests/e2e/test_tenant_delete.py checks every table with a tenant_id, from the catalog).
DELETE FROM tenants WHERE slug = $1 RETURNING id
