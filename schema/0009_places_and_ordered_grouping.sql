-- 0009: places (sites, buildings, floors, rooms, units, spaces, assets), category scope,
-- classifier alternatives and subtypes for grouping, grouping in submission order, and the
-- priority convention of the SLA policies and rules (1 = most urgent) everywhere.
--
-- On a large database: the stored generated column rewrites `issues` under an exclusive lock,
-- and the priority update touches every issue; run it in a quiet period. Open issues whose
-- priority this migration flips keep their SLA policy until their next change (the policy is
-- chosen by the workflow, in Python): re-plan them with any staff action, or leave them.

-- Priority from severity (1-5, 5 = most severe) and the number of reports: 1 is the most
-- urgent, as in the default SLA policies and the rules. Three reports raise it one step, ten
-- two. One definition for every statement that derives it.
CREATE FUNCTION civicpulse_priority(severity integer, report_count integer) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT LEAST(5, GREATEST(1, 6 - COALESCE(severity, 2)
                 - CASE WHEN report_count >= 10 THEN 2 WHEN report_count >= 3 THEN 1 ELSE 0 END))::smallint
$$;
GRANT EXECUTE ON FUNCTION civicpulse_priority(integer, integer) TO civicpulse_app;

-- Issues whose priority is still the old derived one (5 = most urgent) get the new one.
-- Staff-set priorities, and those a rule set to something else, followed the SLA convention
-- already and stay.
UPDATE issues
   SET priority = civicpulse_priority(severity, report_count)
 WHERE NOT ('priority' = ANY(manual_fields))
   AND priority = LEAST(5, GREATEST(1, COALESCE(severity, 2)
                   + CASE WHEN report_count >= 10 THEN 2 WHEN report_count >= 3 THEN 1 ELSE 0 END));

-- A category's scope: 'local' problems are at one spot, room or unit (reports in different
-- rooms are different problems); 'building' problems span the building (a lift, the wifi, the
-- power, the heating plant, the fire alarm) and group across its rooms and floors.
ALTER TABLE categories
    ADD COLUMN scope text NOT NULL DEFAULT 'local' CHECK (scope IN ('local', 'building'));

-- A tenant's places: a tree of sites, buildings, floors, rooms, units, shared spaces and
-- assets (lifts, boilers). Reports name one (`place`) or mention one in their text; grouping
-- never merges problems of different rooms, units or assets.
CREATE TABLE places (
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    code        text NOT NULL CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    kind        text NOT NULL
                CHECK (kind IN ('site', 'building', 'floor', 'room', 'unit', 'space', 'asset')),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    aliases     text[] NOT NULL DEFAULT '{}',
    parent      text,
    lat         double precision CHECK (lat BETWEEN -90 AND 90),
    lon         double precision CHECK (lon BETWEEN -180 AND 180),
    geometry    jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code),
    -- Deferred, so an import may list children before their parents.
    FOREIGN KEY (tenant_id, parent) REFERENCES places (tenant_id, code)
        DEFERRABLE INITIALLY DEFERRED,
    CHECK (parent IS DISTINCT FROM code),
    CHECK ((lat IS NULL) = (lon IS NULL))
);
-- Serves the foreign key's check when a place is deleted (are there children?).
CREATE INDEX places_parent ON places (tenant_id, parent) WHERE parent IS NOT NULL;

-- Every change to a tenant's places bumps its version, so workers keep a compiled place index
-- per (tenant, version) and notice a change with one primary-key read per claim.
CREATE TABLE place_versions (
    tenant_id  bigint PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    version    bigint NOT NULL DEFAULT 1
);

CREATE FUNCTION places_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO place_versions AS v (tenant_id) VALUES (COALESCE(NEW.tenant_id, OLD.tenant_id))
    ON CONFLICT (tenant_id) DO UPDATE SET version = v.version + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER places_bump_version AFTER INSERT OR UPDATE OR DELETE ON places
    FOR EACH ROW EXECUTE FUNCTION places_bump_version();

ALTER TABLE places ENABLE ROW LEVEL SECURITY;
ALTER TABLE place_versions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON places
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON place_versions
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON places TO civicpulse_app;
GRANT SELECT, INSERT, UPDATE ON place_versions TO civicpulse_app;

-- Reports: the place the client named, the place the classify stage resolved (from that code,
-- the text and the address), and the classifier's subtype with the probabilities of its
-- categories and of the category's subtypes.
ALTER TABLE reports
    ADD COLUMN place        text,
    ADD COLUMN place_ref    jsonb,
    ADD COLUMN subtype      text,
    ADD COLUMN alternatives jsonb,
    ADD COLUMN subtypes     jsonb;
-- Issues: where the problem is (the founding report's place, or the first one a later report
-- gives), its scope, and the founding report's subtype and category mix. place_key is what
-- a report at the same place finds the issue by: its asset, room, unit or space, or for a
-- building-wide problem its building (see civicpulse/engine/grouping.py, issue_place_key).
ALTER TABLE issues
    ADD COLUMN place_ref    jsonb,
    ADD COLUMN scope        text NOT NULL DEFAULT 'local' CHECK (scope IN ('local', 'building')),
    ADD COLUMN subtype      text,
    ADD COLUMN alternatives jsonb,
    ADD COLUMN subtypes     jsonb;
ALTER TABLE issues
    ADD COLUMN place_key text GENERATED ALWAYS AS (
        CASE WHEN scope = 'building'
             THEN COALESCE(place_ref ->> 'asset', place_ref ->> 'building')
             ELSE COALESCE(place_ref ->> 'asset', place_ref ->> 'unit', place_ref ->> 'space')
        END) STORED;
-- Serves open_issue_candidates' place probes: the open issues at a report's own room, unit,
-- space or asset (or its building, for building-wide problems), however many issues are
-- nearer. Inside a building every issue is "near", so distance cannot pick the right one.
-- Partial: only open issues that know their place. Carries what the probe filters on, so
-- the lookup is an index-only scan.
CREATE INDEX issues_open_place ON issues (tenant_id, place_key)
    INCLUDE (category, last_reported, lat, lon, id)
    WHERE civicpulse_is_open(status) AND place_key IS NOT NULL;

-- Grouping claims in submission order. For each tenant it hands out the reports received
-- before the tenant's oldest report still waiting for classification (one that has waited
-- longer than p_wait no longer holds the others back), and only while no other grouping claim
-- of the tenant is live. So reports of one tenant are grouped one claim at a time in the order
-- they arrived, whatever order classification finished in. The advisory lock makes the
-- "no live claim" check and the claim one step across processes. A report whose grouping has
-- failed p_max_attempts times is set aside first (state 'failed', with the reason in its
-- grouping record; `civicpulse reports retry` puts it back), so one report that always fails
-- cannot stop its tenant's grouping. A claim that failed is retried whole once (a crash or a
-- restart fails a claim, not its reports); after that, while the tenant's first ready report
-- has been tried more than once, it is claimed alone, so only a report that itself fails
-- reaches the limit, never the good reports claimed with it.
CREATE FUNCTION civicpulse_claim_grouping(p_owner text, p_lease interval, p_limit integer,
                                          p_wait interval, p_max_attempts integer)
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
               'rule', 'failed: grouping did not finish in ' || f.attempts || ' attempts')
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
REVOKE ALL ON FUNCTION civicpulse_claim_grouping(text, interval, integer, interval, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION civicpulse_claim_grouping(text, interval, integer, interval, integer)
    TO civicpulse_app;
