-- Analytics: rollup maintenance, daily snapshots, dashboard reads, exports.

-- name: take_dirty_rollups
SELECT tenant_id, hour FROM civicpulse_take_dirty_rollups($1)

-- name: delete_rollup_hours
DELETE FROM rollup_hourly WHERE tenant_id = $1 AND hour = ANY($2::timestamptz[])

-- name: insert_rollup_hours
-- The rollup rows of the given hours ($2), computed from issues: opened in them (a range
-- scan of issues_opened between the first and the last hour), closed out in them (of
-- issues_resolved). Merged duplicates are left out; `resolved` counts every issue whose
-- clock stopped (resolved, closed, rejected), `resolution_*` only the resolved and closed.
WITH opened AS (
    SELECT date_trunc('hour', i.opened_at) AS hour, COALESCE(i.category, '') AS category,
           COALESCE(i.area, '') AS area, COALESCE(i.team, '') AS team, count(*) AS opened,
           count(*) FILTER (WHERE i.visibility = 'public') AS opened_public
      FROM issues i
     WHERE i.tenant_id = $1
       AND i.opened_at >= (SELECT min(h) FROM unnest($2::timestamptz[]) AS h)
       AND i.opened_at < (SELECT max(h) FROM unnest($2::timestamptz[]) AS h) + interval '1 hour'
       AND date_trunc('hour', i.opened_at) = ANY($2::timestamptz[])
       AND i.status <> 'duplicate'
     GROUP BY 1, 2, 3, 4
), resolved AS (
    SELECT date_trunc('hour', i.resolved_at) AS hour, COALESCE(i.category, '') AS category,
           COALESCE(i.area, '') AS area, COALESCE(i.team, '') AS team, count(*) AS resolved,
           count(*) FILTER (WHERE i.visibility = 'public') AS resolved_public,
           count(*) FILTER (WHERE i.status IN ('resolved', 'closed')
                              AND i.resolution_business_s IS NOT NULL
                              AND i.resolution_target_s IS NOT NULL) AS measured,
           count(*) FILTER (WHERE i.status IN ('resolved', 'closed')
                              AND i.resolution_business_s <= i.resolution_target_s) AS met,
           count(*) FILTER (WHERE i.status IN ('resolved', 'closed')
                              AND i.visibility = 'public'
                              AND i.resolution_business_s IS NOT NULL
                              AND i.resolution_target_s IS NOT NULL) AS measured_public,
           count(*) FILTER (WHERE i.status IN ('resolved', 'closed')
                              AND i.visibility = 'public'
                              AND i.resolution_business_s <= i.resolution_target_s) AS met_public,
           COALESCE(sum(extract(epoch FROM i.resolved_at - i.sla_started_at))
                    FILTER (WHERE i.status IN ('resolved', 'closed')), 0) AS wall_sum
      FROM issues i
     WHERE i.tenant_id = $1
       AND i.resolved_at >= (SELECT min(h) FROM unnest($2::timestamptz[]) AS h)
       AND i.resolved_at < (SELECT max(h) FROM unnest($2::timestamptz[]) AS h)
                           + interval '1 hour'
       AND date_trunc('hour', i.resolved_at) = ANY($2::timestamptz[])
       AND i.status <> 'duplicate'
     GROUP BY 1, 2, 3, 4
)
INSERT INTO rollup_hourly (tenant_id, hour, category, area, team, opened, opened_public,
                           resolved, resolved_public, resolution_measured, resolution_met,
                           resolution_measured_public, resolution_met_public,
                           resolve_wall_s_sum)
SELECT $1, hour, category, area, team, COALESCE(o.opened, 0), COALESCE(o.opened_public, 0),
       COALESCE(r.resolved, 0), COALESCE(r.resolved_public, 0), COALESCE(r.measured, 0),
       COALESCE(r.met, 0), COALESCE(r.measured_public, 0), COALESCE(r.met_public, 0),
       COALESCE(r.wall_sum, 0)
  FROM opened o
  FULL JOIN resolved r USING (hour, category, area, team)

-- name: insert_all_rollup_hours
-- Every rollup row of a tenant in one pass over its issues (a rebuild): the same rows
-- insert_rollup_hours makes hour by hour.
WITH opened AS (
    SELECT date_trunc('hour', i.opened_at) AS hour, COALESCE(i.category, '') AS category,
           COALESCE(i.area, '') AS area, COALESCE(i.team, '') AS team, count(*) AS opened,
           count(*) FILTER (WHERE i.visibility = 'public') AS opened_public
      FROM issues i
     WHERE i.tenant_id = $1 AND i.status <> 'duplicate'
     GROUP BY 1, 2, 3, 4
), resolved AS (
    SELECT date_trunc('hour', i.resolved_at) AS hour, COALESCE(i.category, '') AS category,
           COALESCE(i.area, '') AS area, COALESCE(i.team, '') AS team, count(*) AS resolved,
           count(*) FILTER (WHERE i.visibility = 'public') AS resolved_public,
           count(*) FILTER (WHERE i.status IN ('resolved', 'closed')
                              AND i.resolution_business_s IS NOT NULL
                              AND i.resolution_target_s IS NOT NULL) AS measured,
           count(*) FILTER (WHERE i.status IN ('resolved', 'closed')
                              AND i.resolution_business_s <= i.resolution_target_s) AS met,
           count(*) FILTER (WHERE i.status IN ('resolved', 'closed')
                              AND i.visibility = 'public'
                              AND i.resolution_business_s IS NOT NULL
                              AND i.resolution_target_s IS NOT NULL) AS measured_public,
           count(*) FILTER (WHERE i.status IN ('resolved', 'closed')
                              AND i.visibility = 'public'
                              AND i.resolution_business_s <= i.resolution_target_s) AS met_public,
           COALESCE(sum(extract(epoch FROM i.resolved_at - i.sla_started_at))
                    FILTER (WHERE i.status IN ('resolved', 'closed')), 0) AS wall_sum
      FROM issues i
     WHERE i.tenant_id = $1 AND i.resolved_at IS NOT NULL AND i.status <> 'duplicate'
     GROUP BY 1, 2, 3, 4
)
INSERT INTO rollup_hourly (tenant_id, hour, category, area, team, opened, opened_public,
                           resolved, resolved_public, resolution_measured, resolution_met,
                           resolution_measured_public, resolution_met_public,
                           resolve_wall_s_sum)
SELECT $1, hour, category, area, team, COALESCE(o.opened, 0), COALESCE(o.opened_public, 0),
       COALESCE(r.resolved, 0), COALESCE(r.resolved_public, 0), COALESCE(r.measured, 0),
       COALESCE(r.met, 0), COALESCE(r.measured_public, 0), COALESCE(r.met_public, 0),
       COALESCE(r.wall_sum, 0)
  FROM opened o
  FULL JOIN resolved r USING (hour, category, area, team)

-- name: delete_rollup_days
DELETE FROM rollup_daily WHERE tenant_id = $1 AND day = ANY($2::date[])

-- name: insert_rollup_days
-- The daily rows of the given tenant-local days ($3 is the zone), summed from the hourly
-- rows of those days.
INSERT INTO rollup_daily (tenant_id, day, category, area, team, opened, opened_public,
                          resolved, resolved_public, resolution_measured, resolution_met,
                          resolution_measured_public, resolution_met_public,
                          resolve_wall_s_sum)
SELECT $1, (r.hour AT TIME ZONE $3)::date, r.category, r.area, r.team, sum(r.opened),
       sum(r.opened_public), sum(r.resolved), sum(r.resolved_public),
       sum(r.resolution_measured), sum(r.resolution_met), sum(r.resolution_measured_public),
       sum(r.resolution_met_public), sum(r.resolve_wall_s_sum)
  FROM rollup_hourly r
 WHERE r.tenant_id = $1
   AND r.hour >= ((SELECT min(d) FROM unnest($2::date[]) AS d)::timestamp AT TIME ZONE $3)
   AND r.hour < (((SELECT max(d) FROM unnest($2::date[]) AS d) + 1)::timestamp AT TIME ZONE $3)
   AND (r.hour AT TIME ZONE $3)::date = ANY($2::date[])
 GROUP BY 2, 3, 4, 5

-- name: insert_all_rollup_days
-- Every daily row of a tenant from its hourly rows (a rebuild).
INSERT INTO rollup_daily (tenant_id, day, category, area, team, opened, opened_public,
                          resolved, resolved_public, resolution_measured, resolution_met,
                          resolution_measured_public, resolution_met_public,
                          resolve_wall_s_sum)
SELECT $1, (r.hour AT TIME ZONE $2)::date, r.category, r.area, r.team, sum(r.opened),
       sum(r.opened_public), sum(r.resolved), sum(r.resolved_public),
       sum(r.resolution_measured), sum(r.resolution_met), sum(r.resolution_measured_public),
       sum(r.resolution_met_public), sum(r.resolve_wall_s_sum)
  FROM rollup_hourly r
 WHERE r.tenant_id = $1
 GROUP BY 2, 3, 4, 5

-- name: delete_all_rollup_days
DELETE FROM rollup_daily WHERE tenant_id = $1

-- name: rollup_day_rows
SELECT day, category, area, team, opened, opened_public, resolved, resolved_public,
       resolution_measured, resolution_met, resolution_measured_public,
       resolution_met_public, resolve_wall_s_sum
  FROM rollup_daily
 WHERE tenant_id = $1
 ORDER BY day, category, area, team

-- name: delete_all_rollups
DELETE FROM rollup_hourly WHERE tenant_id = $1

-- name: rollup_rows
SELECT hour, category, area, team, opened, opened_public, resolved, resolved_public,
       resolution_measured, resolution_met, resolution_measured_public,
       resolution_met_public, resolve_wall_s_sum
  FROM rollup_hourly
 WHERE tenant_id = $1
 ORDER BY hour, category, area, team

-- name: snapshot_cursor
-- The last day with a snapshot, and the first hour with any rollup.
SELECT (SELECT max(day) FROM daily_snapshots WHERE tenant_id = $1) AS last_day,
       (SELECT min(hour) FROM rollup_hourly WHERE tenant_id = $1) AS first_hour

-- name: snapshot_days
-- Closed days [$3, $4] in zone $2, per category and area, with the backlog at each day's
-- end (everything opened minus everything closed out, up to then). Rows only for days with
-- activity in that group; a reader carries the backlog forward. Existing days stay as
-- they are.
INSERT INTO daily_snapshots (tenant_id, day, category, area, opened, resolved,
                             resolution_measured, resolution_met, backlog_end)
SELECT $1, d.day, d.category, d.area, d.opened, d.resolved, d.measured, d.met, d.backlog_end
  FROM (SELECT (r.hour AT TIME ZONE $2)::date AS day, r.category, r.area,
               sum(r.opened) AS opened, sum(r.resolved) AS resolved,
               sum(r.resolution_measured) AS measured, sum(r.resolution_met) AS met,
               sum(sum(r.opened) - sum(r.resolved)) OVER (
                   PARTITION BY r.category, r.area
                   ORDER BY (r.hour AT TIME ZONE $2)::date) AS backlog_end
          FROM rollup_hourly r
         WHERE r.tenant_id = $1
           AND r.hour < (($4::date + 1)::timestamp AT TIME ZONE $2)
         GROUP BY 1, 2, 3) AS d
 WHERE d.day >= $3
ON CONFLICT DO NOTHING

-- name: dashboard_settings
SELECT public, widgets, public_categories, public_areas, title, updated_at
  FROM dashboards WHERE tenant_id = $1

-- name: upsert_dashboard
INSERT INTO dashboards (tenant_id, public, widgets, public_categories, public_areas, title)
VALUES ($1, $2, $3::text[], $4::text[], $5::text[], $6)
ON CONFLICT (tenant_id) DO UPDATE
   SET public = EXCLUDED.public, widgets = EXCLUDED.widgets,
       public_categories = EXCLUDED.public_categories, public_areas = EXCLUDED.public_areas,
       title = EXCLUDED.title, updated_at = now()

-- name: trend_rows
-- Opened and closed out per period and group, from the daily rollups. $2 is day|week|month,
-- $3 the group (category|area|team|none), [$4, $5) the range (whole tenant-local days: the
-- day of $4 up to the day of the instant before $5), $6 the tenant's zone, ($7, $8, $9) the
-- view (civicpulse.visibility): staff count everything, the public their public counts in
-- the groups civicpulse_shown lets them see.
SELECT date_trunc($2, r.day::timestamp) AS period,
       CASE $3 WHEN 'category' THEN r.category WHEN 'area' THEN r.area
               WHEN 'team' THEN r.team ELSE '' END AS key,
       sum(CASE WHEN $7 THEN r.opened ELSE r.opened_public END)::bigint AS opened,
       sum(CASE WHEN $7 THEN r.resolved ELSE r.resolved_public END)::bigint AS resolved,
       sum(CASE WHEN $7 THEN r.resolution_measured
                ELSE r.resolution_measured_public END)::bigint AS measured,
       sum(CASE WHEN $7 THEN r.resolution_met ELSE r.resolution_met_public END)::bigint AS met
  FROM rollup_daily r
 WHERE r.tenant_id = $1
   AND r.day >= ($4::timestamptz AT TIME ZONE $6)::date
   AND r.day <= (($5::timestamptz - interval '1 microsecond') AT TIME ZONE $6)::date
   AND civicpulse_shown($7, $8::text[], $9::text[], 'public', NULLIF(r.category, ''),
                        NULLIF(r.area, ''))
 GROUP BY 1, 2
 ORDER BY 1, 2

-- name: backlog_before
-- Open issues (opened minus closed out) before the tenant-local day of $2 ($6 the zone) in
-- the view ($3, $4, $5); the backlog series starts from it.
SELECT COALESCE(sum(CASE WHEN $3 THEN r.opened - r.resolved
                         ELSE r.opened_public - r.resolved_public END), 0)::bigint
  FROM rollup_daily r
 WHERE r.tenant_id = $1 AND r.day < ($2::timestamptz AT TIME ZONE $6)::date
   AND civicpulse_shown($3, $4::text[], $5::text[], 'public', NULLIF(r.category, ''),
                        NULLIF(r.area, ''))

-- name: first_rollup_day
-- The tenant's first day with anything in it: a long backlog series starts there.
SELECT min(day) FROM rollup_daily WHERE tenant_id = $1

-- name: ranking_rows
-- Areas or teams over issues closed out in [$3, $4) that the view ($5, $6, $7) sees: median
-- wall time to resolve and the share within SLA. Reads issues through issues_resolved.
SELECT CASE $2 WHEN 'area' THEN i.area ELSE i.team END AS key,
       count(*) AS resolved,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM i.resolved_at - i.sla_started_at)) AS median_s,
       count(*) FILTER (WHERE i.resolution_business_s IS NOT NULL
                          AND i.resolution_target_s IS NOT NULL) AS measured,
       count(*) FILTER (WHERE i.resolution_business_s <= i.resolution_target_s) AS met
  FROM issues i
 WHERE i.tenant_id = $1 AND i.resolved_at >= $3 AND i.resolved_at < $4
   AND i.resolved_at IS NOT NULL AND i.status IN ('resolved', 'closed')
   AND civicpulse_shown($5, $6::text[], $7::text[], i.visibility, i.category, i.area)
 GROUP BY 1

-- name: hotspot_rows
-- Places that keep coming back: issues opened in [$2, $3) that the view ($4, $5, $6) sees,
-- by geo cell. A cell is named by
-- its most severe issue's category (one gas leak beside one water leak is a gas hotspot,
-- not the alphabetically first), and carries its whole mix of categories.
SELECT i.cell, count(*) AS issues, sum(i.report_count)::bigint AS reports,
       avg(i.lat) AS lat, avg(i.lon) AS lon,
       (array_agg(i.category ORDER BY i.severity DESC NULLS LAST, i.report_count DESC,
                  i.category))[1] AS category,
       array_agg(i.category ORDER BY i.category) AS categories
  FROM issues i
 WHERE i.tenant_id = $1 AND i.opened_at >= $2 AND i.opened_at < $3
   AND i.cell IS NOT NULL AND i.status <> 'duplicate'
   AND civicpulse_shown($4, $5::text[], $6::text[], i.visibility, i.category, i.area)
 GROUP BY i.cell
HAVING count(*) >= 2
 ORDER BY count(*) DESC, i.cell
 LIMIT $7

-- name: recent_issues
-- The newest issues the view ($2, $3, $4) sees, for a dashboard table, opened since $6 (the
-- dashboard's period): a view that sees few issues reads at most the period's, never the
-- tenant's whole history, walking issues_list.
SELECT id, status, category, area, title, report_count, opened_at, resolved_at, closed_at,
       visibility
  FROM issues
 WHERE tenant_id = $1 AND status <> 'duplicate' AND opened_at >= $6
   AND civicpulse_shown($2, $3::text[], $4::text[], visibility, category, area)
 ORDER BY opened_at DESC, id DESC
 LIMIT $5

-- name: open_issue_points
-- The dashboard's map: the $5 newest open issues with a point that the view ($2, $3, $4)
-- sees: issues_list walked newest first, or issues_open_cell (only open issues are in it)
-- and a top-N sort, as the share of open issues makes cheaper.
SELECT id, category, status, lat, lon
  FROM issues
 WHERE tenant_id = $1 AND civicpulse_is_open(status) AND lat IS NOT NULL
   AND civicpulse_shown($2, $3::text[], $4::text[], visibility, category, area)
 ORDER BY opened_at DESC, id DESC
 LIMIT $5

-- name: export_issues
-- Issues opened in [$2, $3) that the view ($4, $5, $6) sees, for the CSV export, read
-- through a cursor (the caller drops the columns the public may not see).
SELECT id, status, category, area, team, priority, severity, report_count, lat, lon,
       opened_at, acknowledged_at, resolved_at, closed_at, sla_policy,
       response_business_s, response_target_s, resolution_business_s, resolution_target_s,
       visibility, title
  FROM issues
 WHERE tenant_id = $1 AND opened_at >= $2 AND opened_at < $3
   AND civicpulse_shown($4, $5::text[], $6::text[], visibility, category, area)
 ORDER BY opened_at, id

-- name: events_after
-- The streams: a tenant's events after a sequence number, in commit order (see schema 0011),
-- with what a stream may show. Serves live fan-out, resume and slow subscribers' catch-up.
SELECT e.seq, e.issue_id, e.report_id, e.kind, e.from_status, e.to_status, e.created_at,
       e.data, i.status, i.category, i.area, i.visibility, i.title, i.report_count
  FROM issue_events e
  JOIN issues i ON i.tenant_id = e.tenant_id AND i.id = e.issue_id
 WHERE e.tenant_id = $1 AND e.seq > $2
 ORDER BY e.seq
 LIMIT $3

-- name: last_event_seq
-- Where a new stream starts: the tenant's newest event number (0 for none).
SELECT COALESCE(max(seq), 0) FROM issue_events WHERE tenant_id = $1

-- name: widget_get
-- A stored dashboard widget no older than $3 seconds (primary key lookup).
SELECT body FROM dashboard_widgets
 WHERE tenant_id = $1 AND name = $2 AND computed_at > now() - make_interval(secs => $3)

-- name: forget_widgets
-- The dashboard's settings changed: no stored widget may outlive the view it was made for.
DELETE FROM dashboard_widgets WHERE tenant_id = $1

-- name: notify_view
-- Delivered on commit: every process re-reads the tenant's public view, and its open public
-- streams end (a dashboard turned private stops streaming at once).
SELECT pg_notify('civicpulse_events', json_build_object('t', $1::bigint, 'k', 'view')::text)

-- name: widget_put
INSERT INTO dashboard_widgets (tenant_id, name, body, computed_at)
VALUES ($1, $2, $3::jsonb, now())
ON CONFLICT (tenant_id, name) DO UPDATE SET body = EXCLUDED.body, computed_at = now()

-- name: notify_rollup
-- Delivered on commit to every process's LISTEN connection (civicpulse.live).
SELECT pg_notify('civicpulse_events', json_build_object('t', $1::bigint, 'k', 'rollup')::text)
