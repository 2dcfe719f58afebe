-- Workflows: tenant configuration (teams, areas, calendars, SLA policies, rules), the issue
-- lifecycle with its SLA clock, timers, the staff list and SLA metrics.

-- name: list_teams
SELECT code, name FROM teams WHERE tenant_id = $1 ORDER BY code

-- name: upsert_team
INSERT INTO teams (tenant_id, code, name) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, code) DO UPDATE SET name = EXCLUDED.name
RETURNING code, name

-- name: list_areas
SELECT code, name, geometry FROM areas WHERE tenant_id = $1 ORDER BY code

-- name: areas_at
-- For each point (by position in the arrays), the areas whose bounding box holds it; the
-- exact polygon test follows in Python. A tenant has few areas: its primary key prefix
-- finds them.
SELECT u.i::int AS i, a.code, a.geometry
  FROM unnest($2::float8[], $3::float8[]) WITH ORDINALITY AS u (lat, lon, i)
  JOIN areas a ON a.tenant_id = $1 AND a.min_lat <= u.lat AND a.max_lat >= u.lat
              AND a.min_lon <= u.lon AND a.max_lon >= u.lon

-- name: upsert_area
INSERT INTO areas (tenant_id, code, name, geometry, min_lat, min_lon, max_lat, max_lon)
VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8)
ON CONFLICT (tenant_id, code) DO UPDATE
   SET name = EXCLUDED.name, geometry = EXCLUDED.geometry, min_lat = EXCLUDED.min_lat,
       min_lon = EXCLUDED.min_lon, max_lat = EXCLUDED.max_lat, max_lon = EXCLUDED.max_lon
RETURNING code, name, geometry

-- name: list_calendars
SELECT code, timezone, hours, holidays FROM calendars WHERE tenant_id = $1 ORDER BY code

-- name: upsert_calendar
INSERT INTO calendars (tenant_id, code, timezone, hours, holidays)
VALUES ($1, $2, $3, $4::jsonb, $5::date[])
ON CONFLICT (tenant_id, code) DO UPDATE
   SET timezone = EXCLUDED.timezone, hours = EXCLUDED.hours, holidays = EXCLUDED.holidays
RETURNING code, timezone, hours, holidays

-- name: list_policies
SELECT p.code, p.name, p.calendar, p.response_minutes, p.resolution_minutes, p.warn_ratio,
       p.pause_statuses, p.priorities, p.categories
  FROM sla_policies p
 WHERE p.tenant_id = $1
 ORDER BY p.code

-- name: upsert_policy
INSERT INTO sla_policies (tenant_id, code, name, calendar, response_minutes,
                          resolution_minutes, warn_ratio, pause_statuses, priorities,
                          categories)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text[], $9::smallint[], $10::text[])
ON CONFLICT (tenant_id, code) DO UPDATE
   SET name = EXCLUDED.name, calendar = EXCLUDED.calendar,
       response_minutes = EXCLUDED.response_minutes,
       resolution_minutes = EXCLUDED.resolution_minutes, warn_ratio = EXCLUDED.warn_ratio,
       pause_statuses = EXCLUDED.pause_statuses, priorities = EXCLUDED.priorities,
       categories = EXCLUDED.categories, updated_at = now()
RETURNING code

-- name: current_rules
-- The tenant's time zone and the rule set in force (NULLs when it has none).
SELECT t.timezone, r.version, r.mode, r.rules, r.created_by, r.created_at
  FROM tenants t
  LEFT JOIN LATERAL (SELECT * FROM rule_sets s WHERE s.tenant_id = t.id
                      ORDER BY s.version DESC LIMIT 1) r ON true
 WHERE t.id = $1

-- name: insert_rules
-- The next version; two concurrent uploads collide on the primary key and one retries.
INSERT INTO rule_sets (tenant_id, version, mode, rules, created_by)
SELECT $1, COALESCE(max(version), 0) + 1, $2, $3::jsonb, $4 FROM rule_sets WHERE tenant_id = $1
RETURNING version, created_at

-- name: lock_issue_workflow
-- A probe per id, locked in id order (the keys are sorted here, so every caller locks in
-- one order): a LATERAL probe by primary key whatever the statistics say of the tenant.
SELECT i.*
  FROM (SELECT DISTINCT k FROM unnest($2::uuid[]) AS k ORDER BY k) AS k (id)
 CROSS JOIN LATERAL (
       SELECT id, status, category, severity, priority, area, team, assignee, visibility,
              hazards, representative_text, report_count, lat, lon, version, manual_fields,
              opened_at, sla_policy, sla_cycle, sla_started_at, sla_running_since,
              sla_elapsed_s, response_target_s, resolution_target_s, acknowledged_at,
              response_business_s, resolved_at, resolution_business_s, sla_runs
         FROM issues
        WHERE tenant_id = $1 AND id = k.id
          FOR UPDATE) AS i

-- name: save_issues_workflow
-- Writes what the workflow decided for one issue or a batch, in one statement: the columns
-- as arrays ($2..$22; manual fields comma-joined), $23 the versions the plans were made
-- from (a row whose version moved on is not written: the caller answers 412), $24 how
-- much each version goes up (staff-visible changes), $25 the time, $26 the clocks' runs.
UPDATE issues i
   SET status = u.status, priority = u.priority, area = u.area, team = u.team,
       assignee = u.assignee, visibility = u.visibility,
       manual_fields = string_to_array(u.manual, ',')::text[], sla_policy = u.policy,
       sla_cycle = u.cycle, sla_started_at = u.started, sla_running_since = u.running,
       sla_elapsed_s = u.elapsed, response_target_s = u.response_target,
       resolution_target_s = u.resolution_target, acknowledged_at = u.acknowledged,
       response_business_s = u.response_s, resolved_at = u.resolved,
       resolution_business_s = u.resolution_s, response_due_at = u.response_due,
       resolution_due_at = u.resolution_due, sla_runs = u.runs::jsonb,
       closed_at = CASE WHEN civicpulse_is_open(u.status) THEN NULL
                        WHEN i.status = u.status THEN i.closed_at ELSE $25 END,
       updated_at = $25,
       version = i.version + u.bump
  FROM (SELECT u.*, p.at
          FROM unnest($2::uuid[], $3::text[], $4::smallint[], $5::text[], $6::text[],
                      $7::text[], $8::text[], $9::text[], $10::text[], $11::int[],
                      $12::timestamptz[], $13::timestamptz[], $14::float8[], $15::float8[],
                      $16::float8[], $17::timestamptz[], $18::float8[], $19::timestamptz[],
                      $20::float8[], $21::timestamptz[], $22::timestamptz[], $23::int[],
                      $24::int[], $26::text[])
               AS u (id, status, priority, area, team, assignee, visibility, manual, policy,
                     cycle, started, running, elapsed, response_target, resolution_target,
                     acknowledged, response_s, resolved, resolution_s, response_due,
                     resolution_due, expected, bump, runs)
         -- A primary-key probe per row, finding where the row is: the update then goes
         -- there directly. Joined on the unnest alone, the planner guessed its size and
         -- hashed the whole table (measured 230 ms per batch at 1M issues); with the ids as
         -- an ANY() list it read the tenant's whole key range when the statistics had too
         -- few of its rows. A LATERAL probe (its LIMIT keeps the planner from turning it
         -- back into a join) is the one plan whatever they say.
         CROSS JOIN LATERAL (SELECT ctid AS at FROM issues
                              WHERE tenant_id = $1 AND id = u.id AND version = u.expected
                              LIMIT 1) AS p
       ) AS u
 WHERE i.ctid = u.at AND i.tenant_id = $1

-- name: replace_timers
-- A clock change rewrites each issue's unfired timers; fired ones stay fired. One row per
-- (issue, cycle, target, kind) wanted; a NULL time deletes (target met, clock paused or
-- stopped), and timers of an earlier cycle go.
WITH wanted AS (
    SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::text[], $6::timestamptz[])
           AS w (issue_id, cycle, target, kind, fire_at)
), dropped AS (
    -- ANY() over the distinct issue ids ($7) lets the primary key find the issues' timers:
    -- the planner cannot see how many rows unnest gives (joined on it alone it scanned the
    -- table per row), and given $2, where each issue comes once per timer, it judged a
    -- tenant with 38,000 timers cheaper to read whole (measured: 109 ms per grouping claim
    -- at a million open issues).
    DELETE FROM sla_timers t
     USING wanted w
     WHERE t.tenant_id = $1 AND t.issue_id = ANY($7::uuid[]) AND t.issue_id = w.issue_id
       AND t.target = w.target AND t.kind = w.kind AND t.fired_at IS NULL
       AND (w.fire_at IS NULL OR t.cycle <> w.cycle)
)
INSERT INTO sla_timers (tenant_id, issue_id, cycle, target, kind, fire_at)
SELECT $1, w.issue_id, w.cycle, w.target, w.kind, w.fire_at FROM wanted w
 WHERE w.fire_at IS NOT NULL
ON CONFLICT (tenant_id, issue_id, cycle, target, kind) DO UPDATE
   SET fire_at = EXCLUDED.fire_at
 WHERE sla_timers.fired_at IS NULL

-- name: insert_timers
-- The first timers of issues whose clock has just started (new issues): they have none to
-- replace, so this is a plain insert, without replace_timers' delete.
INSERT INTO sla_timers (tenant_id, issue_id, cycle, target, kind, fire_at)
SELECT $1, w.issue_id, w.cycle, w.target, w.kind, w.fire_at
  FROM unnest($2::uuid[], $3::int[], $4::text[], $5::text[], $6::timestamptz[])
       AS w (issue_id, cycle, target, kind, fire_at)
 WHERE w.fire_at IS NOT NULL

-- name: fire_sla_timers
SELECT tenant_id, issue_id, kind, target, cycle, fire_at
  FROM civicpulse_fire_sla_timers($1, $2)

-- name: append_workflow_events
INSERT INTO issue_events (tenant_id, issue_id, kind, actor, from_status, to_status, note, data)
SELECT $1, e.issue_id, e.kind, e.actor, e.from_status, e.to_status, e.note, e.data::jsonb
  FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
              $8::text[]) WITH ORDINALITY AS e (issue_id, kind, actor, from_status, to_status,
                                               note, data, n)
 ORDER BY e.n

-- name: list_issues
-- Staff list, newest first, keyset-paginated on (opened_at, id) < ($10, $11). Every filter
-- is optional (NULL). Serves from issues_list; the overdue filter from issues_resolution_due
-- when the planner prefers it.
SELECT id, status, category, severity, priority, title, area, team, assignee, visibility,
       report_count, lat, lon, opened_at, last_reported, resolution_due_at, response_due_at,
       acknowledged_at, resolved_at, version
  FROM issues
 WHERE tenant_id = $1
   AND ($2::text[] IS NULL OR status = ANY($2::text[]))
   AND ($3::text[] IS NULL OR category = ANY($3::text[]))
   AND ($4::text[] IS NULL OR area = ANY($4::text[]))
   AND ($5::text[] IS NULL OR team = ANY($5::text[]))
   AND ($6::smallint[] IS NULL OR priority = ANY($6::smallint[]))
   AND (NOT $7::boolean OR (civicpulse_is_open(status) AND resolution_due_at < now()))
   AND ($8::text IS NULL OR representative_text ILIKE $8 OR title ILIKE $8)
   AND ($10::timestamptz IS NULL OR (opened_at, id) < ($10, $11::uuid))
 ORDER BY opened_at DESC, id DESC
 LIMIT $9

-- name: sla_metrics
-- Per group: issues opened in [$3, $4) and how they fared. Business durations come from the
-- SLA clock; wall durations from the timestamps; percentiles are continuous (interpolated).
SELECT CASE $2 WHEN 'category' THEN i.category WHEN 'area' THEN i.area ELSE i.team END
           AS key,
       count(*) AS opened,
       count(*) FILTER (WHERE civicpulse_is_open(i.status)) AS backlog,
       count(*) FILTER (WHERE civicpulse_is_open(i.status)
                          AND (i.resolution_due_at < now()
                               OR (i.acknowledged_at IS NULL AND i.response_due_at < now())))
           AS overdue_now,
       count(*) FILTER (WHERE i.status IN ('resolved', 'closed')) AS resolved,
       count(*) FILTER (WHERE i.response_business_s IS NOT NULL
                          AND i.response_target_s IS NOT NULL) AS response_measured,
       count(*) FILTER (WHERE i.response_business_s <= i.response_target_s) AS response_met,
       count(*) FILTER (WHERE i.resolution_business_s IS NOT NULL
                          AND i.resolution_target_s IS NOT NULL
                          AND i.status IN ('resolved', 'closed')) AS resolution_measured,
       count(*) FILTER (WHERE i.resolution_business_s <= i.resolution_target_s
                          AND i.status IN ('resolved', 'closed')) AS resolution_met,
       percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY i.response_business_s)
           AS ack_business_s,
       percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (
           ORDER BY extract(epoch FROM i.acknowledged_at - i.sla_started_at)) AS ack_wall_s,
       percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (
           ORDER BY CASE WHEN i.status IN ('resolved', 'closed')
                         THEN i.resolution_business_s END) AS resolve_business_s,
       percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (
           ORDER BY CASE WHEN i.status IN ('resolved', 'closed')
                         THEN extract(epoch FROM i.resolved_at - i.sla_started_at) END)
           AS resolve_wall_s
  FROM issues i
 WHERE i.tenant_id = $1 AND i.opened_at >= $3 AND i.opened_at < $4
   AND i.status <> 'duplicate'
 GROUP BY 1
 ORDER BY 1 NULLS LAST
