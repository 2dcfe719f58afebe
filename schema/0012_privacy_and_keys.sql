-- 0012: what the public may see, the key lifecycle, and the audit log.
-- See docs/ARCHITECTURE.md ("Who sees what").

-- The one rule of the public view, in SQL (civicpulse/visibility.py holds the same rule for
-- rows already in hand; tests/integration/test_visibility.py proves the two agree on every
-- combination). Staff see everything. The public see an issue only when it is public and
-- in the dashboard's public categories and areas (NULL: all); an issue without a category
-- or an area is outside any list. A single SQL expression, so the planner inlines it.
CREATE FUNCTION civicpulse_shown(p_staff boolean, p_categories text[], p_areas text[],
                                 p_visibility text, p_category text, p_area text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT p_staff
        OR (COALESCE(p_visibility = 'public', false)
            AND (p_categories IS NULL OR COALESCE(p_category = ANY (p_categories), false))
            AND (p_areas IS NULL OR COALESCE(p_area = ANY (p_areas), false)))
$$;
GRANT EXECUTE ON FUNCTION civicpulse_shown(boolean, text[], text[], text, text, text)
    TO civicpulse_app;

-- The public's "% within SLA" counts public issues only: rollups keep the public share of
-- the measured and met counts beside the totals. Every existing hour is marked dirty, so
-- the aggregator recomputes the new columns (and the days above them) from issues.
ALTER TABLE rollup_hourly
    ADD COLUMN resolution_measured_public integer NOT NULL DEFAULT 0,
    ADD COLUMN resolution_met_public      integer NOT NULL DEFAULT 0;
ALTER TABLE rollup_daily
    ADD COLUMN resolution_measured_public integer NOT NULL DEFAULT 0,
    ADD COLUMN resolution_met_public      integer NOT NULL DEFAULT 0;
INSERT INTO rollup_dirty (tenant_id, hour)
SELECT DISTINCT tenant_id, hour FROM rollup_hourly
ON CONFLICT DO NOTHING;

-- Key lifecycle. A key may expire (a rotated key's grace period ends, or it was made to
-- last a while); last_used_at is written at most once a minute per key and process.
ALTER TABLE api_keys
    ADD COLUMN expires_at    timestamptz,
    ADD COLUMN last_used_at  timestamptz,
    ADD COLUMN rotated_from  bigint,
    ADD COLUMN created_by    text NOT NULL DEFAULT '';

DROP FUNCTION civicpulse_authenticate(bytea);
CREATE FUNCTION civicpulse_authenticate(p_hash bytea)
RETURNS TABLE (tenant_id bigint, scope text, key_id bigint, prefix text,
               expires_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT k.tenant_id, k.scope, k.id, k.prefix, k.expires_at FROM api_keys k
     WHERE k.key_hash = p_hash AND k.revoked_at IS NULL
       AND (k.expires_at IS NULL OR k.expires_at > now())
$$;
REVOKE ALL ON FUNCTION civicpulse_authenticate(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION civicpulse_authenticate(bytea) TO civicpulse_app;

-- Usage stamps come from the request path, where no tenant is set: this writes only
-- last_used_at, only forward, and at most once a minute per key.
CREATE FUNCTION civicpulse_touch_api_keys(p_ids bigint[], p_at timestamptz)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    UPDATE api_keys k SET last_used_at = p_at
     WHERE k.id = ANY (p_ids)
       AND (k.last_used_at IS NULL OR k.last_used_at < p_at - interval '1 minute')
$$;
REVOKE ALL ON FUNCTION civicpulse_touch_api_keys(bigint[], timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION civicpulse_touch_api_keys(bigint[], timestamptz) TO civicpulse_app;
-- Serves civicpulse_touch_api_keys (keys by id alone, across tenants).
CREATE UNIQUE INDEX api_keys_id ON api_keys (id);

-- Every process caches keys for a few seconds; a revoked, expired or re-scoped key is
-- announced on civicpulse_auth so each process drops its cache at once (the cache's
-- time-to-live is the backstop when a listener is reconnecting).
CREATE FUNCTION civicpulse_notify_auth() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('civicpulse_auth', json_build_object('t', NEW.tenant_id)::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER api_keys_notify_auth AFTER UPDATE OF revoked_at, expires_at, scope ON api_keys
    FOR EACH ROW EXECUTE FUNCTION civicpulse_notify_auth();

-- Which API key sent a report: a `submit` key (a resident app) reads back only its own
-- reports. Nullable and without a default, so adding it rewrites nothing.
ALTER TABLE reports ADD COLUMN key_id bigint;

-- Append-only record of admin and staff changes (keys, users, rules, policies, dashboards,
-- merges, ...), with who made them. The service may add and read, never change or remove
-- (civicpulse_frozen refuses it); only deleting the tenant removes its log.
CREATE TABLE audit_log (
    tenant_id  bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    action     text NOT NULL CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    target     text NOT NULL DEFAULT '',
    data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Also serves the audit listing: a tenant's entries newest first, paged by id.
    PRIMARY KEY (tenant_id, id)
);
CREATE TRIGGER audit_log_frozen BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION civicpulse_frozen();
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT ON audit_log TO civicpulse_app;
