-- Work that fails is retried with backoff and, after a bounded number of attempts, set
-- aside with its reason, in both pipeline stages (issue 13: no report stays unprocessed).

-- Why a report was set aside (state 'failed'), or the last error of a failed attempt.
ALTER TABLE reports ADD COLUMN failure text;

-- Classification claims now set aside a report that has been claimed p_max_attempts times
-- without being classified (its worker crashed or its lease ran out each time; a failure the
-- worker saw is set aside by release_failed_claim directly). The set-aside step reads the
-- partial index reports_pending (state, received_at), so it costs what the queue holds.
DROP FUNCTION civicpulse_claim_reports(text, text, interval, integer);
CREATE FUNCTION civicpulse_claim_reports(p_state text, p_owner text, p_lease interval,
                                         p_limit integer, p_max_attempts integer)
RETURNS TABLE (tenant_id bigint, id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    UPDATE reports f
       SET state = 'failed',
           lease_owner = NULL,
           lease_until = NULL,
           failure = 'classification did not finish in ' || f.attempts || ' attempts'
                     || COALESCE(' (last error: ' || f.failure || ')', '')
     WHERE f.state = 'received' AND p_state = 'received' AND f.attempts >= p_max_attempts
       AND (f.lease_until IS NULL OR f.lease_until < now());
    RETURN QUERY
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
    RETURNING r.tenant_id, r.id;
END
$$;
REVOKE ALL ON FUNCTION civicpulse_claim_reports(text, text, interval, integer, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION civicpulse_claim_reports(text, text, interval, integer, integer)
    TO civicpulse_app;

-- Grouping claims: unchanged, except that a report set aside keeps its reason in `failure`
-- too (as the classification claims above do).
CREATE OR REPLACE FUNCTION civicpulse_claim_grouping(
    p_owner text, p_lease interval, p_limit integer, p_wait interval, p_max_attempts integer)
RETURNS TABLE (tenant_id bigint, id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('civicpulse_claim_grouping'));
    UPDATE reports f
       SET state = 'failed',
           lease_owner = NULL,
           lease_until = NULL,
           grouping = jsonb_build_object(
               'rule', 'failed: grouping did not finish in ' || f.attempts || ' attempts'),
           failure = 'grouping did not finish in ' || f.attempts || ' attempts'
                     || COALESCE(' (last error: ' || f.failure || ')', '')
     WHERE f.state = 'classified' AND f.attempts >= p_max_attempts
       AND (f.lease_until IS NULL OR f.lease_until < now());
    RETURN QUERY
    WITH waiting AS (
        SELECT DISTINCT ON (w.tenant_id) w.tenant_id, w.received_at, w.id
          FROM reports w
         WHERE w.state = 'received' AND w.received_at > now() - p_wait
         ORDER BY w.tenant_id, w.received_at, w.id
    ), busy AS (
        SELECT DISTINCT b.tenant_id
          FROM reports b
         WHERE b.state = 'classified' AND b.lease_until >= now()
    ), ready AS (
        SELECT p.tenant_id, p.id, p.received_at, p.attempts
          FROM reports p
          LEFT JOIN waiting w ON w.tenant_id = p.tenant_id
         WHERE p.state = 'classified'
           AND (p.lease_until IS NULL OR p.lease_until < now())
           AND NOT EXISTS (SELECT 1 FROM busy b WHERE b.tenant_id = p.tenant_id)
           AND (w.tenant_id IS NULL OR (p.received_at, p.id) < (w.received_at, w.id))
         ORDER BY p.received_at, p.id
         LIMIT p_limit
           FOR UPDATE OF p SKIP LOCKED
    ), head AS (
        SELECT DISTINCT ON (h.tenant_id) h.tenant_id, h.id, h.attempts
          FROM ready h
         ORDER BY h.tenant_id, h.received_at, h.id
    )
    UPDATE reports r
       SET lease_owner = p_owner,
           lease_until = now() + p_lease,
           attempts = r.attempts + 1
      FROM ready c
      JOIN head h ON h.tenant_id = c.tenant_id
     WHERE r.tenant_id = c.tenant_id AND r.id = c.id
       AND (h.attempts <= 1 OR c.id = h.id)
    RETURNING r.tenant_id, r.id;
END
$$;

-- A tenant's own rate limits (PUT /v1/tenants/{slug}/rate-limits); a NULL column, or no
-- row, takes the service default (CIVICPULSE_RATE_LIMIT_*). Read with the tenant, by key.
CREATE TABLE tenant_rate_limits (
    tenant_id          bigint PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    key_per_second     float8 CHECK (key_per_second >= 0),
    key_burst          float8 CHECK (key_burst >= 1),
    public_per_second  float8 CHECK (public_per_second >= 0),
    public_burst       float8 CHECK (public_burst >= 1),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tenant_rate_limits ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_rate_limits
    USING (tenant_id = civicpulse_current_tenant())
    WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_rate_limits TO civicpulse_app;

-- Old classifier model versions are pruned when a new one is stored (a tenant editing its
-- taxonomy retrains each time; every version kept would grow the table for good).
GRANT DELETE ON classifier_models TO civicpulse_app;

-- The intervals an issue's SLA clock has run in its current cycle, [[start, end], ...] as
-- JSON (the running one is sla_running_since). A new policy measures the whole cycle on its
-- own calendar from these (the clock runs from the opening, pauses left out), instead of
-- keeping what the old calendar counted: a night on a business calendar is nothing, and on
-- an around-the-clock one it is hours. NULL for clocks from before this column (they keep
-- the old rule: time so far counted on the old calendar).
ALTER TABLE issues ADD COLUMN sla_runs jsonb;
