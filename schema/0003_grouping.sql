-- 0003: grouping reports into issues.

-- Geo cells (see civicpulse/engine/geo.py, which must agree): 0.0025 degree squares
-- numbered row * 200000 + column, so a plain B-tree finds the issues near a point.
CREATE FUNCTION civicpulse_cell(lat double precision, lon double precision) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT floor((lat + 90) / 0.0025)::bigint * 200000 + floor((lon + 180) / 0.0025)::bigint $$;

-- Open statuses: the issues grouping may attach reports to.
CREATE FUNCTION civicpulse_is_open(status text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT status IN ('new', 'triaged', 'assigned', 'in_progress', 'waiting', 'reopened') $$;

ALTER TABLE issues
    ADD COLUMN kind                text,
    ADD COLUMN cell                bigint,
    ADD COLUMN representative_text text NOT NULL DEFAULT '',
    ADD COLUMN priority            smallint NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),
    ADD COLUMN hazards             text[] NOT NULL DEFAULT '{}';
ALTER TABLE issues ADD CONSTRAINT issues_status_check CHECK (status IN (
    'new', 'triaged', 'assigned', 'in_progress', 'waiting', 'resolved', 'closed', 'reopened',
    'duplicate', 'rejected'));

-- Serves nearby_issues (residents, any category): open issues of a tenant by geo cell.
-- Partial, so closed history never slows the lookup down.
CREATE INDEX issues_open_cell ON issues (tenant_id, cell)
    INCLUDE (last_reported)
    WHERE civicpulse_is_open(status);
-- Serves open_issue_candidates (grouping): the same, narrowed to the batch's categories
-- first. With a million open issues in one city a cell holds dozens of issues of other
-- categories; reading only the right ones keeps the cost per report flat.
CREATE INDEX issues_open_category_cell ON issues (tenant_id, category, cell)
    INCLUDE (last_reported)
    WHERE civicpulse_is_open(status);

ALTER TABLE reports DROP CONSTRAINT reports_state_check;
ALTER TABLE reports ADD CONSTRAINT reports_state_check
    CHECK (state IN ('received', 'classified', 'grouped', 'imported', 'failed'));
ALTER TABLE reports ADD COLUMN grouping jsonb;

-- The pending-work index now covers both pipeline states; claims filter by state.
DROP INDEX reports_pending;
CREATE INDEX reports_pending ON reports (state, received_at)
    WHERE state IN ('received', 'classified');
-- Serves an issue's reports and the aggregate recomputation after each grouping batch.
CREATE INDEX reports_issue ON reports (tenant_id, issue_id) WHERE issue_id IS NOT NULL;

-- Per-category grouping settings; NULL means the engine's default for the category.
ALTER TABLE categories
    ADD COLUMN group_radius_m       real CHECK (group_radius_m BETWEEN 1 AND 1000),
    ADD COLUMN group_lookback_hours real CHECK (group_lookback_hours > 0);

-- Staff feedback: this report is not a duplicate of that issue. Grouping never attaches
-- the report to the issue again.
CREATE TABLE not_duplicates (
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    report_id   uuid NOT NULL,
    issue_id    uuid NOT NULL,
    actor       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, report_id, issue_id),
    FOREIGN KEY (tenant_id, report_id) REFERENCES reports (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, issue_id) REFERENCES issues (tenant_id, id) ON DELETE CASCADE
);
ALTER TABLE not_duplicates ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON not_duplicates
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT ON not_duplicates TO civicpulse_app;
GRANT EXECUTE ON FUNCTION civicpulse_cell(double precision, double precision) TO civicpulse_app;
GRANT EXECUTE ON FUNCTION civicpulse_is_open(text) TO civicpulse_app;

-- Claims now name the state they take work from.
DROP FUNCTION civicpulse_claim_reports(text, interval, integer);
CREATE FUNCTION civicpulse_claim_reports(p_state text, p_owner text, p_lease interval,
                                         p_limit integer)
RETURNS TABLE (tenant_id bigint, id uuid)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    UPDATE reports r
       SET lease_owner = p_owner,
           lease_until = now() + p_lease,
           attempts = r.attempts + 1
      FROM (SELECT p.tenant_id, p.id
              FROM reports p
             WHERE p.state = p_state
               AND p.state IN ('received', 'classified')
               AND (p.lease_until IS NULL OR p.lease_until < now())
             ORDER BY p.received_at
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED) AS c
     WHERE r.tenant_id = c.tenant_id AND r.id = c.id
 RETURNING r.tenant_id, r.id
$$;
REVOKE ALL ON FUNCTION civicpulse_claim_reports(text, text, interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION civicpulse_claim_reports(text, text, interval, integer)
    TO civicpulse_app;
