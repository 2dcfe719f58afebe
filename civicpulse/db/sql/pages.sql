-- The resident pages (civicpulse/api/pages.py).

-- name: public_tenants
SELECT slug, name FROM civicpulse_public_tenants()

-- name: web_form_token
-- The tenant's web form token, made on first use (a concurrent first use keeps one).
WITH made AS (
    INSERT INTO web_forms (tenant_id, token) VALUES ($1, $2)
    ON CONFLICT (tenant_id) DO NOTHING
    RETURNING token, enabled
)
SELECT token, enabled FROM made
UNION ALL
SELECT token, enabled FROM web_forms WHERE tenant_id = $1
LIMIT 1

-- name: set_web_form
-- An admin turns the web form on or off, and with $3 gives it a new token ($4): pages
-- loaded before then can no longer post.
INSERT INTO web_forms (tenant_id, token, enabled) VALUES ($1, $4, $2)
ON CONFLICT (tenant_id) DO UPDATE
   SET enabled = EXCLUDED.enabled,
       token = CASE WHEN $3 THEN EXCLUDED.token ELSE web_forms.token END
RETURNING enabled

-- name: web_form
-- The tenant's web form token as it stands (a post never makes one: no page, no token).
SELECT token, enabled FROM web_forms WHERE tenant_id = $1

-- name: tracked_report
-- A report and its issue, for its tracking link (primary keys); the caller compares the
-- link's secret with track_hash.
SELECT r.id, r.state, r.text, r.category, r.submitted_at, r.track_hash, r.issue_id,
       i.status AS issue_status, i.category AS issue_category, i.visibility, i.area,
       i.report_count, i.opened_at, i.closed_at, i.updated_at AS issue_updated_at
  FROM reports r
  LEFT JOIN issues i ON i.tenant_id = r.tenant_id AND i.id = r.issue_id
 WHERE r.tenant_id = $1 AND r.id = $2

-- name: map_center
-- Where the report form's map opens: the middle of the tenant's newest 200 located issues
-- (issues_list), or nowhere yet.
SELECT avg(lat) AS lat, avg(lon) AS lon
  FROM (SELECT lat, lon FROM issues
         WHERE tenant_id = $1
         ORDER BY opened_at DESC, id DESC
         LIMIT 200) AS newest
