-- 0007: dashboard widgets too costly to compute on every view of a large city's dashboard
-- (medians and recurring places over 30 days read some 10^5 issues there). They are kept
-- here, at most CIVICPULSE_DASHBOARD_WIDGET_SECONDS old, per tenant and view, and read with
-- one primary-key lookup. The analytics API computes them live.
CREATE TABLE dashboard_widgets (
    tenant_id    bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL,  -- e.g. 'rankings:area:30', 'hotspots:public:30'
    body         jsonb NOT NULL,
    computed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
ALTER TABLE dashboard_widgets ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON dashboard_widgets
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON dashboard_widgets TO civicpulse_app;
