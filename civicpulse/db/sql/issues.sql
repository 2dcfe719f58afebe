-- Issues: grouping writes, aggregates, staff tools, resident lookups.

-- name: load_classified_reports
-- In submission order: grouping decides them in that order.
SELECT r.id, r.lat, r.lon, r.category, COALESCE(c.kind, 'other') AS kind, r.text,
       extract(epoch FROM r.submitted_at)::float8 AS t, COALESCE(r.severity, 2) AS severity,
       r.subtype, COALESCE(c.scope, 'local') AS scope, r.place_ref, r.alternatives,
       r.subtypes, r.address_key
  FROM reports r
  LEFT JOIN categories c ON c.tenant_id = r.tenant_id AND c.code = r.category
 WHERE r.tenant_id = $1 AND r.id = ANY($2::uuid[]) AND r.lease_owner = $3
   AND r.state = 'classified'
 ORDER BY r.received_at, r.id

-- name: grouping_settings
SELECT code, group_radius_m, group_lookback_hours * 3600 AS lookback_s
  FROM categories
 WHERE tenant_id = $1
   AND (group_radius_m IS NOT NULL OR group_lookback_hours IS NOT NULL)

-- name: lock_regions
-- Transaction-scoped locks on the coarse regions a batch searches, taken in ascending
-- order (the caller sorts), so two processes grouping the same place wait for each other
-- instead of both opening an issue.
SELECT count(pg_advisory_xact_lock($1::int, k)) FROM unnest($2::int[]) AS k

-- name: open_issue_candidates
-- The $12 nearest open issues in reach and look-back of each report, and every open issue at
-- the report's own place. One probe per (report, category, cell) the report may join, with
-- the report's own look-back ($11: an issue too old for this report must not take one of its
-- places). In a dense city a cell holds dozens of open issues of other categories, and none
-- of them is read. `near` reads only issues_open_category_cell (an index-only scan: the index
-- carries id, lat, lon and last_reported) and ranks the issues in each report's box by planar
-- distance; `placed` reads only issues_open_place (index-only too) for the (place key,
-- category) probes $13-$19: a registered place at any distance (indoors a pin is only good
-- to tens of metres), a place said in text ("~4b") within the report's box only. The heap is
-- read for the chosen few only. In a city with a
-- million open issues a report can have dozens in reach, and this keeps the rows sent,
-- decoded and scored per report flat; inside a building, where every issue is near, the
-- place probes find the one at the report's room however many others are nearer.
WITH probe AS (
    SELECT *
      FROM unnest($2::int[], $3::text[], $4::bigint[], $5::float8[], $6::float8[],
                  $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::timestamptz[])
           AS p (report, category, cell, lat, lon, lat_lo, lat_hi, lon_lo, lon_hi, since)
), near AS (
    SELECT i.id,
           row_number() OVER (
               PARTITION BY p.report
               ORDER BY (i.lat - p.lat) ^ 2 + ((i.lon - p.lon) * cos(radians(p.lat))) ^ 2
           ) AS rank
      FROM probe p
     -- Each probe a LATERAL subquery (OFFSET 0 keeps the planner from turning it back into a
     -- join): one index probe per (category, cell), whatever the statistics say of the
     -- tenant. Joined, with a tenant the statistics thought small, it read the tenant's
     -- every open issue once and filtered.
     CROSS JOIN LATERAL (
           SELECT i.id, i.lat, i.lon FROM issues i
            WHERE i.tenant_id = $1 AND i.category = p.category AND i.cell = p.cell
              AND civicpulse_is_open(i.status) AND i.last_reported >= p.since
              AND i.lat BETWEEN p.lat_lo AND p.lat_hi AND i.lon BETWEEN p.lon_lo AND p.lon_hi
           OFFSET 0) AS i
), placed AS (
    SELECT i.id
      FROM unnest($13::text[], $14::text[], $15::float8[], $16::float8[], $17::float8[],
                  $18::float8[], $19::timestamptz[])
           AS k (key, category, lat_lo, lat_hi, lon_lo, lon_hi, since)
     CROSS JOIN LATERAL (
           SELECT i.id FROM issues i
            WHERE i.tenant_id = $1 AND i.place_key = k.key
              AND civicpulse_is_open(i.status) AND i.place_key IS NOT NULL
              AND i.category = k.category AND i.last_reported >= k.since
              AND (left(k.key, 1) <> '~'
                   OR (i.lat BETWEEN k.lat_lo AND k.lat_hi
                       AND i.lon BETWEEN k.lon_lo AND k.lon_hi))
           OFFSET 0) AS i
), addressed AS (
    -- By normalised address ($20-$23, issues_open_address): every open issue at a report's
    -- address when the report has no point, only those without a point when it has one.
    SELECT i.id
      FROM unnest($20::text[], $21::text[], $22::timestamptz[], $23::boolean[])
           AS a (key, category, since, unlocated_only)
     CROSS JOIN LATERAL (
           SELECT i.id FROM issues i
            WHERE i.tenant_id = $1 AND i.address_key = a.key
              AND civicpulse_is_open(i.status) AND i.address_key IS NOT NULL
              AND i.category = a.category AND i.last_reported >= a.since
              AND (NOT a.unlocated_only OR i.lat IS NULL)
           OFFSET 0) AS i
), chosen AS (
    SELECT n.id FROM near n WHERE n.rank <= $12
    UNION
    SELECT pl.id FROM placed pl
    UNION
    SELECT ad.id FROM addressed ad
)
SELECT i.id, i.lat, i.lon, i.category, COALESCE(i.kind, 'other') AS kind,
       i.representative_text, extract(epoch FROM i.last_reported)::float8 AS last_t,
       i.report_count, i.subtype, i.scope, i.place_ref, i.alternatives, i.subtypes,
       i.address_key, i.located
  FROM chosen c
 CROSS JOIN LATERAL (SELECT * FROM issues i WHERE i.tenant_id = $1 AND i.id = c.id LIMIT 1) AS i

-- name: not_duplicates_for
SELECT report_id, issue_id FROM not_duplicates
 WHERE tenant_id = $1 AND report_id = ANY($2::uuid[])

-- name: insert_issues
-- New issues start empty (count 0, no severity); add_to_issue_aggregates then folds in their
-- founding reports like any other.
INSERT INTO issues (tenant_id, id, category, kind, title, representative_text, lat, lon,
                    cell, first_reported, last_reported, opened_at, scope, subtype,
                    alternatives, place_ref, subtypes, address_key)
SELECT $1, u.id, u.category, u.kind, left(u.text, 120), u.text, u.lat, u.lon,
       civicpulse_cell(u.lat, u.lon), to_timestamp(u.t), to_timestamp(u.t), now(), u.scope,
       u.subtype, u.alternatives::jsonb, u.place_ref::jsonb, u.subtypes::jsonb, u.address_key
  FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::float8[],
              $8::float8[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
              $14::text[])
       AS u (id, category, kind, text, lat, lon, t, scope, subtype, alternatives, place_ref,
             subtypes, address_key)

-- name: set_issue_profiles
-- Where issues are (once a later report told more than the founding one) and their category
-- and subtype mixes (averaged over their reports), after a grouping batch or a staff merge or
-- split (which may also change the issue's founding report, hence its subtype).
UPDATE issues i
   SET place_ref = u.place_ref::jsonb,
       alternatives = u.alternatives::jsonb,
       subtypes = u.subtypes::jsonb,
       scope = u.scope,
       subtype = u.subtype
  FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
       AS u (id, place_ref, alternatives, subtypes, scope, subtype)
 WHERE i.tenant_id = $1 AND i.id = u.id

-- name: issue_profile_reports
-- The reports issues hold, in submission order, as grouping reads them: a staff merge or
-- split recomputes the issues' place and mixes from these.
SELECT r.issue_id, i.category AS issue_category, r.id, r.lat, r.lon, r.category,
       COALESCE(c.kind, 'other') AS kind, r.text,
       extract(epoch FROM r.submitted_at)::float8 AS t, COALESCE(r.severity, 2) AS severity,
       r.subtype, COALESCE(c.scope, 'local') AS scope, r.place_ref, r.alternatives,
       r.subtypes, r.address_key
  FROM reports r
  JOIN issues i ON i.tenant_id = r.tenant_id AND i.id = r.issue_id
  LEFT JOIN categories c ON c.tenant_id = r.tenant_id AND c.code = r.category
 WHERE r.tenant_id = $1 AND r.issue_id = ANY($2::uuid[])
 ORDER BY r.received_at, r.id

-- name: attach_reports
-- Only reports this process still leases; the caller checks every row was updated.
UPDATE reports r
   SET issue_id = u.issue_id,
       grouping = u.grouping::jsonb,
       state = 'grouped',
       lease_owner = NULL,
       lease_until = NULL,
       attempts = 0
  FROM unnest($2::uuid[], $3::uuid[], $4::text[]) AS u (id, issue_id, grouping)
 WHERE r.tenant_id = $1 AND r.id = u.id AND r.lease_owner = $5 AND r.state = 'classified'

-- name: add_to_issue_aggregates
-- Grouping adds reports to issues: fold the batch's reports into each issue's aggregates
-- (count, first/last, running-mean centroid, max severity, hazards) in O(batch), however
-- many reports an issue already has. Staff tools that move reports out recompute instead.
-- One pass over the batch: reports and issues found by primary key, a probe per key (the
-- reports as a LATERAL probe; the issues under keyed_plans), whatever the statistics say.
WITH batch AS MATERIALIZED (
    SELECT r.issue_id, r.submitted_at, r.lat, r.lon, r.severity, r.hazards
      FROM unnest($2::uuid[]) AS k (id)
     CROSS JOIN LATERAL (SELECT * FROM reports r
                          WHERE r.tenant_id = $1 AND r.id = k.id LIMIT 1) AS r
), hazards AS (
    SELECT b.issue_id, array_agg(DISTINCT h) AS hazards
      FROM batch b, unnest(b.hazards) AS h
     GROUP BY b.issue_id
), a AS (
    SELECT b.issue_id, count(*) AS n, min(b.submitted_at) AS first_reported,
           max(b.submitted_at) AS last_reported, count(b.lat) AS points,
           COALESCE(sum(b.lat), 0) AS lat_sum, COALESCE(sum(b.lon), 0) AS lon_sum,
           max(b.severity) AS severity,
           COALESCE(hz.hazards, '{}') AS hazards
      FROM batch b
      LEFT JOIN hazards hz ON hz.issue_id = b.issue_id
     GROUP BY b.issue_id, hz.hazards
)
UPDATE issues i
   SET report_count = i.report_count + a.n,
       first_reported = LEAST(i.first_reported, a.first_reported),
       last_reported = GREATEST(i.last_reported, a.last_reported),
       -- The centroid of the reports with a point (none: no point yet, NULL).
       located = i.located + a.points::int,
       lat = (COALESCE(i.lat, 0) * i.located + a.lat_sum) / NULLIF(i.located + a.points, 0),
       lon = (COALESCE(i.lon, 0) * i.located + a.lon_sum) / NULLIF(i.located + a.points, 0),
       cell = civicpulse_cell(
           (COALESCE(i.lat, 0) * i.located + a.lat_sum) / NULLIF(i.located + a.points, 0),
           (COALESCE(i.lon, 0) * i.located + a.lon_sum) / NULLIF(i.located + a.points, 0)),
       severity = GREATEST(i.severity, a.severity),
       hazards = ARRAY(SELECT DISTINCT h FROM unnest(i.hazards || a.hazards) AS h ORDER BY h),
       -- Staff-set priorities stay; rules run after this and may set it again.
       priority = CASE WHEN 'priority' = ANY(i.manual_fields) THEN i.priority
                  ELSE civicpulse_priority(GREATEST(i.severity, a.severity),
                                           i.report_count + a.n::int) END,
       updated_at = now()
  FROM a
 WHERE i.tenant_id = $1 AND i.id = a.issue_id

-- name: refresh_issue_aggregates
-- Aggregates are recomputed from the reports, never incremented, so they cannot drift. An
-- issue left without reports (merged away) keeps its place and counts zero.
UPDATE issues i
   SET report_count = a.n,
       first_reported = COALESCE(a.first_reported, i.first_reported),
       last_reported = COALESCE(a.last_reported, i.last_reported),
       lat = COALESCE(a.lat, i.lat),
       lon = COALESCE(a.lon, i.lon),
       located = a.points::int,
       cell = civicpulse_cell(COALESCE(a.lat, i.lat), COALESCE(a.lon, i.lon)),
       severity = COALESCE(a.severity, i.severity),
       hazards = a.hazards,
       priority = CASE WHEN 'priority' = ANY(i.manual_fields) THEN i.priority
                  ELSE civicpulse_priority(COALESCE(a.severity, i.severity), a.n::int) END,
       updated_at = now()
  FROM unnest($2::uuid[]) AS t (issue_id)
  CROSS JOIN LATERAL (
        SELECT count(*) AS n, min(r.submitted_at) AS first_reported,
               max(r.submitted_at) AS last_reported, avg(r.lat) AS lat, avg(r.lon) AS lon,
               count(r.lat) AS points,
               max(r.severity) AS severity,
               ARRAY(SELECT DISTINCT h FROM reports r2, unnest(r2.hazards) AS h
                      WHERE r2.tenant_id = $1 AND r2.issue_id = t.issue_id ORDER BY h)
                   AS hazards
          FROM reports r
         WHERE r.tenant_id = $1 AND r.issue_id = t.issue_id) AS a
 WHERE i.tenant_id = $1 AND i.id = t.issue_id

-- name: append_events
INSERT INTO issue_events (tenant_id, issue_id, report_id, kind, actor, to_status, data)
SELECT $1, u.issue_id, u.report_id, u.kind, $2, u.to_status, u.data::jsonb
  FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[])
       AS u (issue_id, report_id, kind, to_status, data)

-- name: get_issue
SELECT id, status, category, kind, severity, priority, title, representative_text, lat, lon,
       report_count, first_reported, last_reported, opened_at, closed_at, hazards, version,
       updated_at, area, team, assignee, visibility, sla_policy, sla_cycle, place_ref, scope,
       subtype,
       acknowledged_at, resolved_at, response_due_at, resolution_due_at,
       response_target_s, resolution_target_s, response_business_s, resolution_business_s,
       sla_running_since IS NOT NULL AS sla_running
  FROM issues
 WHERE tenant_id = $1 AND id = $2

-- name: issue_reports
SELECT id, text, lat, lon, address, category, subtype, severity, submitted_at, grouping,
       channel, place, place_ref, media_urls::text
  FROM reports
 WHERE tenant_id = $1 AND issue_id = $2
 ORDER BY submitted_at, id

-- name: issue_events
SELECT id, kind, actor, report_id, from_status, to_status, note, data, created_at
  FROM issue_events
 WHERE tenant_id = $1 AND issue_id = $2
 ORDER BY id

-- name: nearby_issues
-- Open issues in the cells $2 that the view ($4, $5, $6; civicpulse.visibility) sees.
SELECT id, status, category, area, title, lat, lon, report_count, opened_at, first_reported,
       last_reported
  FROM issues
 WHERE tenant_id = $1 AND cell = ANY($2::bigint[]) AND civicpulse_is_open(status)
   AND ($3::text IS NULL OR category = $3)
   AND civicpulse_shown($4, $5::text[], $6::text[], visibility, category, area)

-- name: issue_reported_with
-- Has any of the keys $3 sent a report that joined issue $2? (reports_issue)
SELECT EXISTS (SELECT 1 FROM reports
                WHERE tenant_id = $1 AND issue_id = $2 AND key_id = ANY($3::bigint[]))

-- name: issue_points
SELECT lat, lon, address_key FROM issues WHERE tenant_id = $1 AND id = ANY($2::uuid[])

-- name: lock_issue
SELECT id, status, category, version FROM issues
 WHERE tenant_id = $1 AND id = $2
 FOR UPDATE

-- name: move_reports
-- Merge: every report of one issue moves to another.
UPDATE reports SET issue_id = $3
 WHERE tenant_id = $1 AND issue_id = $2
RETURNING id

-- name: detach_report
UPDATE reports SET issue_id = $3
 WHERE tenant_id = $1 AND id = $2 AND issue_id = $4
RETURNING lat, lon, category, text, extract(epoch FROM submitted_at)::float8 AS t

-- name: insert_not_duplicate
INSERT INTO not_duplicates (tenant_id, report_id, issue_id, actor)
VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING

-- name: issue_from_report
-- Split: a new issue founded by one report of another issue (nothing when the report is not
-- part of that issue).
INSERT INTO issues (tenant_id, id, category, kind, title, representative_text, lat, lon,
                    cell, first_reported, last_reported, opened_at, scope, subtype,
                    alternatives, place_ref, subtypes, address_key)
SELECT $1, $2, r.category, COALESCE(c.kind, 'other'), left(r.text, 120), r.text, r.lat, r.lon,
       civicpulse_cell(r.lat, r.lon), r.submitted_at, r.submitted_at, now(),
       COALESCE(c.scope, 'local'), r.subtype, r.alternatives, r.place_ref, r.subtypes,
       r.address_key
  FROM reports r
  LEFT JOIN categories c ON c.tenant_id = r.tenant_id AND c.code = r.category
 WHERE r.tenant_id = $1 AND r.id = $3 AND r.issue_id = $4
RETURNING id

-- name: keyed_plans
-- For the rest of a grouping claim's transaction: nested loops of key probes, never a scan
-- of the tenant. Every statement of a claim touches O(batch) rows found by primary key; the
-- planner's estimates of a tenant's rows are only as good as its statistics (none before
-- the first ANALYZE, far too few for a tenant analysed while it was new), and with a low
-- estimate one read of the whole tenant, kept aside for a join, looks cheaper than a probe
-- per key. With hash and merge joins, materialised inner sides, bitmap and sequential scans
-- priced out, a nested loop that rescans the tenant per key costs far more than one that
-- probes the primary key: what is left are key probes.
SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true),
       set_config('enable_material', 'off', true), set_config('enable_bitmapscan', 'off', true),
       set_config('enable_seqscan', 'off', true)
