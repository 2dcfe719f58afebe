-- 0005: analytics. Hourly rollups kept fresh by the aggregator stage, daily snapshots that
-- never change once their day has closed, dashboard settings, and change notifications for
-- live streams. See docs/ARCHITECTURE.md ("Analytics and live dashboards").

-- One row per (tenant, hour, category, area, team): issues opened in that hour, and issues
-- resolved in that hour with how they fared. Dashboards read these, never raw rows.
CREATE TABLE rollup_hourly (
    tenant_id          bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    hour               timestamptz NOT NULL,
    category           text NOT NULL,  -- '' when the issue has none
    area               text NOT NULL,
    team               text NOT NULL,
    opened             integer NOT NULL DEFAULT 0,
    opened_public      integer NOT NULL DEFAULT 0,
    resolved           integer NOT NULL DEFAULT 0,
    resolved_public    integer NOT NULL DEFAULT 0,
    resolution_measured integer NOT NULL DEFAULT 0,
    resolution_met     integer NOT NULL DEFAULT 0,
    resolve_wall_s_sum double precision NOT NULL DEFAULT 0,
    -- Also serves every dashboard query: one tenant's hours in a range.
    PRIMARY KEY (tenant_id, hour, category, area, team)
);

-- Hours whose rollup rows must be recomputed. A statement trigger on issues adds them; the
-- aggregator takes them (SKIP LOCKED) and recomputes those hours from issues, in one
-- transaction, so a failed recompute leaves them to be taken again.
CREATE TABLE rollup_dirty (
    tenant_id  bigint NOT NULL,
    hour       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, hour)
);

-- Serves the rollup recompute: issues resolved in an hour (opened ones come from
-- issues_opened).
CREATE INDEX issues_resolved ON issues (tenant_id, resolved_at) WHERE resolved_at IS NOT NULL;

-- A closed day per (tenant, day, category, area): written once after the day ends in the
-- tenant's time zone, never updated (a trigger refuses it for the app role).
CREATE TABLE daily_snapshots (
    tenant_id          bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day                date NOT NULL,
    category           text NOT NULL,
    area               text NOT NULL,
    opened             integer NOT NULL,
    resolved           integer NOT NULL,
    resolution_measured integer NOT NULL,
    resolution_met     integer NOT NULL,
    backlog_end        integer NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day, category, area)
);
CREATE FUNCTION civicpulse_frozen() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_user = 'civicpulse_app' THEN
        RAISE EXCEPTION '% rows never change', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER daily_snapshots_frozen BEFORE UPDATE OR DELETE ON daily_snapshots
    FOR EACH ROW EXECUTE FUNCTION civicpulse_frozen();

-- Dashboard settings; a tenant without a row has the defaults (public, every widget,
-- every category and area).
CREATE TABLE dashboards (
    tenant_id          bigint PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    public             boolean NOT NULL DEFAULT true,
    widgets            text[] NOT NULL DEFAULT '{}',
    public_categories  text[],
    public_areas       text[],
    title              text,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION civicpulse_mark_rollups() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rollup_dirty (tenant_id, hour)
        SELECT DISTINCT n.tenant_id, date_trunc('hour', h)
          FROM new_rows n, LATERAL (VALUES (n.opened_at), (n.resolved_at)) AS v (h)
         WHERE h IS NOT NULL
        ON CONFLICT DO NOTHING;
    ELSE
        -- Only changes a rollup can see; grouping's aggregate updates mark nothing.
        INSERT INTO rollup_dirty (tenant_id, hour)
        SELECT DISTINCT n.tenant_id, date_trunc('hour', h)
          FROM new_rows n
          JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
         CROSS JOIN LATERAL (VALUES (n.opened_at), (n.resolved_at), (o.opened_at),
                                    (o.resolved_at)) AS v (h)
         WHERE h IS NOT NULL
           AND (n.status, n.category, n.area, n.team, n.opened_at, n.resolved_at,
                n.visibility, n.resolution_business_s)
               IS DISTINCT FROM
               (o.status, o.category, o.area, o.team, o.opened_at, o.resolved_at,
                o.visibility, o.resolution_business_s)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER issues_mark_rollups_insert AFTER INSERT ON issues
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION civicpulse_mark_rollups();
CREATE TRIGGER issues_mark_rollups_update AFTER UPDATE ON issues
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION civicpulse_mark_rollups();

-- Live streams: every logged issue event is announced on channel civicpulse_events, so
-- each service process (one LISTEN connection each) fans it out to its stream clients.
-- The payload is small and carries no text: the stream reads what it may show by id.
CREATE FUNCTION civicpulse_notify_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('civicpulse_events',
                      json_build_object('t', e.tenant_id, 'id', e.id, 'k', e.kind)::text)
       FROM new_rows e;
    RETURN NULL;
END
$$;
CREATE TRIGGER issue_events_notify AFTER INSERT ON issue_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION civicpulse_notify_events();

ALTER TABLE rollup_hourly   ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollup_dirty    ENABLE ROW LEVEL SECURITY;
ALTER TABLE daily_snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE dashboards      ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rollup_hourly
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON rollup_dirty
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON daily_snapshots
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON dashboards
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON rollup_hourly, rollup_dirty, dashboards TO civicpulse_app;
GRANT SELECT, INSERT ON daily_snapshots TO civicpulse_app;

-- The aggregator works across tenants: this hands out dirty hours (oldest first) and
-- removes them in the caller's transaction; the caller recomputes each under its tenant.
CREATE FUNCTION civicpulse_take_dirty_rollups(p_limit integer)
RETURNS TABLE (tenant_id bigint, hour timestamptz)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    DELETE FROM rollup_dirty d
     USING (SELECT x.tenant_id, x.hour FROM rollup_dirty x
             ORDER BY x.tenant_id, x.hour
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED) AS c
     WHERE d.tenant_id = c.tenant_id AND d.hour = c.hour
 RETURNING d.tenant_id, d.hour
$$;
REVOKE ALL ON FUNCTION civicpulse_take_dirty_rollups(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION civicpulse_take_dirty_rollups(integer) TO civicpulse_app;
