-- 0004: workflows. Teams and areas, per-tenant rules, SLA policies on business calendars,
-- SLA clocks and timers on issues. See docs/ARCHITECTURE.md ("Workflows and SLAs").

CREATE TABLE teams (
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    code        text NOT NULL CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code)
);

-- Areas are GeoJSON polygons (a district, a building wing). The bounding box is kept beside
-- the geometry so the lookup for a point reads only the areas whose box holds it; the exact
-- point-in-polygon test runs in the service (plain PostgreSQL has no geometry type).
CREATE TABLE areas (
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    code        text NOT NULL CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name        text NOT NULL,
    geometry    jsonb NOT NULL,
    min_lat     double precision NOT NULL,
    min_lon     double precision NOT NULL,
    max_lat     double precision NOT NULL,
    max_lon     double precision NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code)
);

-- Business calendars: IANA zone, opening ranges per weekday ({"0": [[540, 1020]], ...} in
-- local minutes, Monday = 0), holidays as local dates.
CREATE TABLE calendars (
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    code        text NOT NULL CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    timezone    text NOT NULL,
    hours       jsonb NOT NULL,
    holidays    date[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, code)
);

-- SLA policies: targets in business minutes on a calendar. A policy applies when a rule
-- names it, or else when the issue's priority or category is listed (the first such policy
-- by code).
CREATE TABLE sla_policies (
    tenant_id          bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    code               text NOT NULL CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name               text NOT NULL,
    calendar           text NOT NULL,
    response_minutes   integer CHECK (response_minutes > 0),
    resolution_minutes integer CHECK (resolution_minutes > 0),
    warn_ratio         real NOT NULL DEFAULT 0.75 CHECK (warn_ratio > 0 AND warn_ratio < 1),
    pause_statuses     text[] NOT NULL DEFAULT '{waiting}',
    priorities         smallint[] NOT NULL DEFAULT '{}',
    categories         text[] NOT NULL DEFAULT '{}',
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code),
    FOREIGN KEY (tenant_id, calendar) REFERENCES calendars (tenant_id, code)
);

-- Rule sets are versioned: an upload adds a version, the highest is in force, and an event
-- names the version and rule that decided it.
CREATE TABLE rule_sets (
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    version     integer NOT NULL,
    mode        text NOT NULL CHECK (mode IN ('first', 'all')),
    rules       jsonb NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);

-- Issues gain workflow fields and an SLA clock. The clock banks business seconds while it
-- runs (sla_elapsed_s up to sla_running_since); a pause or stop banks and clears
-- sla_running_since. Targets are copied from the policy when a cycle starts, so a later
-- policy edit does not rewrite history. Due times are stored so overdue lists are indexed.
ALTER TABLE issues
    ADD COLUMN team                text,
    ADD COLUMN assignee            text,
    ADD COLUMN area                text,
    ADD COLUMN visibility          text NOT NULL DEFAULT 'public'
                                   CHECK (visibility IN ('public', 'private')),
    -- Fields staff set by hand; rules do not overwrite them.
    ADD COLUMN manual_fields       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN sla_policy          text,
    ADD COLUMN sla_cycle           integer NOT NULL DEFAULT 1,
    ADD COLUMN sla_started_at      timestamptz,
    ADD COLUMN sla_running_since   timestamptz,
    ADD COLUMN sla_elapsed_s       double precision NOT NULL DEFAULT 0,
    ADD COLUMN response_target_s   double precision,
    ADD COLUMN resolution_target_s double precision,
    ADD COLUMN acknowledged_at     timestamptz,
    ADD COLUMN response_business_s double precision,
    ADD COLUMN resolved_at         timestamptz,
    ADD COLUMN resolution_business_s double precision,
    ADD COLUMN response_due_at     timestamptz,
    ADD COLUMN resolution_due_at   timestamptz,
    ADD CONSTRAINT issues_team_fk FOREIGN KEY (tenant_id, team) REFERENCES teams (tenant_id, code),
    ADD CONSTRAINT issues_area_fk FOREIGN KEY (tenant_id, area) REFERENCES areas (tenant_id, code),
    ADD CONSTRAINT issues_sla_policy_fk
        FOREIGN KEY (tenant_id, sla_policy) REFERENCES sla_policies (tenant_id, code);

-- Serves the staff issue list: newest first with keyset pagination on (opened_at, id), any
-- filter applied on the way (a tenant's list is read a page at a time).
CREATE INDEX issues_list ON issues (tenant_id, opened_at DESC, id DESC);
-- Serves "overdue now" and the SLA due-soon view: open issues by resolution due time. Only
-- open issues with a running clock carry a due time, so the index stays small.
CREATE INDEX issues_resolution_due ON issues (tenant_id, resolution_due_at)
    WHERE resolution_due_at IS NOT NULL AND civicpulse_is_open(status);
-- Serves the SLA metrics: issues opened in a period, per tenant.
CREATE INDEX issues_opened ON issues (tenant_id, opened_at)
    INCLUDE (category, area, team, status);

-- One row per (issue, cycle, target, kind) that is due to fire. Rewritten when the clock
-- changes; fired_at marks it done, so a warning or breach fires once per cycle.
CREATE TABLE sla_timers (
    tenant_id   bigint NOT NULL,
    issue_id    uuid NOT NULL,
    cycle       integer NOT NULL,
    target      text NOT NULL CHECK (target IN ('response', 'resolution')),
    kind        text NOT NULL CHECK (kind IN ('warning', 'breach')),
    fire_at     timestamptz NOT NULL,
    fired_at    timestamptz,
    PRIMARY KEY (tenant_id, issue_id, cycle, target, kind),
    FOREIGN KEY (tenant_id, issue_id) REFERENCES issues (tenant_id, id) ON DELETE CASCADE
);
-- Serves the scheduler: unfired timers in due order across tenants; fired rows leave it.
CREATE INDEX sla_timers_due ON sla_timers (fire_at) WHERE fired_at IS NULL;

-- A second guard for "exactly once": the log itself refuses a second warning or breach of
-- the same target in the same cycle.
CREATE UNIQUE INDEX issue_events_sla_once ON issue_events (
    tenant_id, issue_id, kind, (data ->> 'cycle'), (data ->> 'target'))
    WHERE kind IN ('sla_warning', 'sla_breached');

ALTER TABLE teams        ENABLE ROW LEVEL SECURITY;
ALTER TABLE areas        ENABLE ROW LEVEL SECURITY;
ALTER TABLE calendars    ENABLE ROW LEVEL SECURITY;
ALTER TABLE sla_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE rule_sets    ENABLE ROW LEVEL SECURITY;
ALTER TABLE sla_timers   ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON teams
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON areas
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON calendars
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON sla_policies
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON rule_sets
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON sla_timers
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON teams, areas, calendars, sla_policies, sla_timers
    TO civicpulse_app;
GRANT SELECT, INSERT ON rule_sets TO civicpulse_app;

-- The scheduler fires due timers across tenants. Like the claim, one audited function runs
-- as the owner: it marks a batch of due timers fired and logs their events in the same
-- statement, so a timer fires exactly once however many processes run it (SKIP LOCKED, and
-- a row already fired no longer matches when its lock is granted).
CREATE FUNCTION civicpulse_fire_sla_timers(p_actor text, p_limit integer)
RETURNS TABLE (tenant_id bigint, issue_id uuid, kind text, target text, cycle integer,
               fire_at timestamptz)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    WITH due AS (
        SELECT t.tenant_id, t.issue_id, t.cycle, t.target, t.kind
          FROM sla_timers t
         WHERE t.fired_at IS NULL AND t.fire_at <= now()
         ORDER BY t.fire_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), fired AS (
        UPDATE sla_timers t
           SET fired_at = now()
          FROM due
         WHERE t.tenant_id = due.tenant_id AND t.issue_id = due.issue_id
           AND t.cycle = due.cycle AND t.target = due.target AND t.kind = due.kind
        RETURNING t.tenant_id, t.issue_id, t.kind, t.target, t.cycle, t.fire_at
    ), logged AS (
        INSERT INTO issue_events (tenant_id, issue_id, kind, actor, data)
        SELECT f.tenant_id, f.issue_id,
               CASE f.kind WHEN 'warning' THEN 'sla_warning' ELSE 'sla_breached' END, p_actor,
               jsonb_build_object('target', f.target, 'cycle', f.cycle::text,
                                  'due', f.fire_at)
          FROM fired f
        ON CONFLICT DO NOTHING
    )
    SELECT f.tenant_id, f.issue_id, f.kind, f.target, f.cycle, f.fire_at FROM fired f
$$;
REVOKE ALL ON FUNCTION civicpulse_fire_sla_timers(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION civicpulse_fire_sla_timers(text, integer) TO civicpulse_app;
