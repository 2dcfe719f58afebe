-- Open311 GeoReport v2 (civicpulse/api/open311.py): a service request is an issue; a POST
-- makes a report, whose id is the request's token until it has joined an issue.

-- name: open311_requests
-- Requests opened in [$2, $3) (issues_opened, newest first), or those named by $4 (their
-- primary keys; the other filters do not apply then), that the view ($7, $8, $9) sees, of
-- the categories $5 (NULL: all) and statuses $6 (open, closed; NULL: both); a page of $10
-- after $11 skipped. A merged duplicate names the issue it was merged into.
SELECT i.id, i.status, i.category, c.service_code, c.name AS service_name,
       i.representative_text, i.lat, i.lon, i.opened_at, i.updated_at, i.resolution_due_at,
       t.name AS agency, m.target AS duplicate_of, f.address, f.media_urls
  FROM issues i
  LEFT JOIN categories c ON c.tenant_id = i.tenant_id AND c.code = i.category
  LEFT JOIN teams t ON t.tenant_id = i.tenant_id AND t.code = i.team
  LEFT JOIN LATERAL (SELECT e.data->>'target' AS target FROM issue_events e
                      WHERE e.tenant_id = i.tenant_id AND e.issue_id = i.id
                        AND e.kind = 'merged_into' AND i.status = 'duplicate'
                      ORDER BY e.id DESC LIMIT 1) m ON true
  -- Staff only ($7): the founding report's address and media (reports_issue).
  LEFT JOIN LATERAL (SELECT r.address, r.media_urls FROM reports r
                      WHERE $7 AND r.tenant_id = i.tenant_id AND r.issue_id = i.id
                        AND r.issue_id IS NOT NULL
                      ORDER BY r.submitted_at, r.id LIMIT 1) f ON true
 WHERE i.tenant_id = $1
   AND (CASE WHEN $4::uuid[] IS NULL
             THEN i.opened_at >= $2 AND i.opened_at < $3
                  AND ($5::text[] IS NULL OR i.category = ANY($5::text[]))
                  AND ($6::text[] IS NULL
                       OR (CASE WHEN civicpulse_is_open(i.status) THEN 'open' ELSE 'closed' END)
                          = ANY($6::text[]))
             ELSE i.id = ANY($4::uuid[]) END)
   AND civicpulse_shown($7, $8::text[], $9::text[], i.visibility, i.category, i.area)
 ORDER BY i.opened_at DESC, i.id DESC
 LIMIT $10 OFFSET $11

-- name: open311_token
-- What a token (a report id) has become: its issue, once grouped (primary-key lookup).
SELECT id, issue_id, key_id FROM reports WHERE tenant_id = $1 AND id = $2

-- name: open311_requests_updated
-- Incremental sync (updated_after / updated_before, the v2.1 draft): the requests changed in
-- [$2, $3) that the view ($5, $6, $7) sees, of the categories $4 and statuses $10 (open,
-- closed; NULL: all), oldest change
-- first (a client resumes from the last updated_datetime it saw); a page of $8 after $9
-- skipped. issues_updated finds them in order.
SELECT i.id, i.status, i.category, c.service_code, c.name AS service_name,
       i.representative_text, i.lat, i.lon, i.opened_at, i.updated_at, i.resolution_due_at,
       t.name AS agency, m.target AS duplicate_of, f.address, f.media_urls
  FROM issues i
  LEFT JOIN categories c ON c.tenant_id = i.tenant_id AND c.code = i.category
  LEFT JOIN teams t ON t.tenant_id = i.tenant_id AND t.code = i.team
  LEFT JOIN LATERAL (SELECT e.data->>'target' AS target FROM issue_events e
                      WHERE e.tenant_id = i.tenant_id AND e.issue_id = i.id
                        AND e.kind = 'merged_into' AND i.status = 'duplicate'
                      ORDER BY e.id DESC LIMIT 1) m ON true
  LEFT JOIN LATERAL (SELECT r.address, r.media_urls FROM reports r
                      WHERE $5 AND r.tenant_id = i.tenant_id AND r.issue_id = i.id
                        AND r.issue_id IS NOT NULL
                      ORDER BY r.submitted_at, r.id LIMIT 1) f ON true
 WHERE i.tenant_id = $1 AND i.updated_at >= $2 AND i.updated_at < $3
   AND ($4::text[] IS NULL OR i.category = ANY($4::text[]))
   AND ($10::text[] IS NULL
        OR (CASE WHEN civicpulse_is_open(i.status) THEN 'open' ELSE 'closed' END)
           = ANY($10::text[]))
   AND civicpulse_shown($5, $6::text[], $7::text[], i.visibility, i.category, i.area)
 ORDER BY i.updated_at, i.id
 LIMIT $8 OFFSET $9

-- name: open311_notes
-- The update history of requests $2 (the notes[] extension): status changes, and for staff
-- ($3) comments too, oldest first (issue_events_issue).
SELECT e.issue_id, e.created_at, e.kind, e.to_status, e.note
  FROM unnest($2::uuid[]) AS k (id)
 CROSS JOIN LATERAL (SELECT * FROM issue_events e
                      WHERE e.tenant_id = $1 AND e.issue_id = k.id
                        AND (e.to_status IS NOT NULL OR ($3 AND e.kind = 'comment'))
                      ORDER BY e.id
                      LIMIT 200) AS e

-- name: open311_updates
-- mySociety's servicerequestupdates: status changes made in [$2, $3) to requests the view
-- ($4, $5, $6) sees, oldest first, at most $7 (issue_events_status_changes).
SELECT e.seq, e.issue_id, e.created_at, e.kind, e.to_status, e.note
  FROM issue_events e
  JOIN issues i ON i.tenant_id = e.tenant_id AND i.id = e.issue_id
 WHERE e.tenant_id = $1 AND e.created_at >= $2 AND e.created_at < $3
   AND e.to_status IS NOT NULL
   AND civicpulse_shown($4, $5::text[], $6::text[], i.visibility, i.category, i.area)
 ORDER BY e.created_at, e.id
 LIMIT $7
