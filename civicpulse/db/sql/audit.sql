-- The audit log: append-only (schema 0012).

-- name: record_audit
INSERT INTO audit_log (tenant_id, actor, action, target, data)
VALUES ($1, $2, $3, $4, $5::jsonb)

-- name: audit_entries
-- A page of a tenant's entries, newest first, before id $2 (NULL: from the newest),
-- optionally of one action ($3) or actor ($4). Walks the primary key backwards.
SELECT id, at, actor, action, target, data
  FROM audit_log
 WHERE tenant_id = $1
   AND ($2::bigint IS NULL OR id < $2)
   AND ($3::text IS NULL OR action = $3)
   AND ($4::text IS NULL OR actor = $4)
 ORDER BY id DESC
 LIMIT $5
