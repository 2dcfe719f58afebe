-- 0006: daily rollups. Hourly rows are too fine for a year's trend (a large city has up to
-- 8,760 hours x categories x areas per year, as many rows as a small city has issues);
-- dashboards read days. rollup_daily is derived from rollup_hourly: the aggregator
-- recomputes the tenant-local days its dirty hours fall in, in the same transaction.
CREATE TABLE rollup_daily (
    tenant_id           bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day                 date NOT NULL,  -- in the tenant's time zone
    category            text NOT NULL,
    area                text NOT NULL,
    team                text NOT NULL,
    opened              integer NOT NULL DEFAULT 0,
    opened_public       integer NOT NULL DEFAULT 0,
    resolved            integer NOT NULL DEFAULT 0,
    resolved_public     integer NOT NULL DEFAULT 0,
    resolution_measured integer NOT NULL DEFAULT 0,
    resolution_met      integer NOT NULL DEFAULT 0,
    resolve_wall_s_sum  double precision NOT NULL DEFAULT 0,
    -- Serves every dashboard trend and backlog read: one tenant's days in a range.
    PRIMARY KEY (tenant_id, day, category, area, team)
);
ALTER TABLE rollup_daily ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rollup_daily
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON rollup_daily TO civicpulse_app;
