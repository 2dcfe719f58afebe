-- 0014: Open311 service attributes and incremental reads; reports located by address only.
-- See civicpulse/api/open311.py, civicpulse/engine/addresses.py and civicpulse/geocoder.py.

-- A service's Open311 attributes (GET /services/{code}: the questions a client asks before
-- posting): a list of {code, datatype, required, description, order, variable,
-- datatype_description, values: [{key, name}]}, checked by the API before it is stored.
ALTER TABLE categories
    ADD COLUMN attributes jsonb NOT NULL DEFAULT '[]'::jsonb
        CHECK (jsonb_typeof(attributes) = 'array');

-- Serves Open311 incremental sync (GET /requests with updated_after / updated_before): a
-- tenant's issues changed in a period, in the order they changed. updated_at already
-- changes with every grouping and workflow write, and those writes already touch indexed
-- columns (cell, last_reported, status), so this index costs no HOT updates that were
-- being made.
CREATE INDEX issues_updated ON issues (tenant_id, updated_at, id);

-- Serves mySociety's GET /servicerequestupdates: a tenant's status changes in a period.
-- Partial: comments, edits and SLA timers are most of the log and none of this feed.
CREATE INDEX issue_events_status_changes ON issue_events (tenant_id, created_at, id)
    WHERE to_status IS NOT NULL;

-- Reports located by address only (Open311's address_string, exports' rows without a
-- point). Coordinates come in pairs, and a report without them has an address.
-- address_key is the normalised address (house number, street, unit) it is grouped by.
-- geocoded_at says when coordinates came from the tenant's geocoder rather than the
-- reporter; geocode_attempts counts the geocoder's tries for a report still without them.
ALTER TABLE reports
    ALTER COLUMN lat DROP NOT NULL,
    ALTER COLUMN lon DROP NOT NULL,
    ADD COLUMN address_key text,
    ADD COLUMN geocoded_at timestamptz,
    ADD COLUMN geocode_attempts smallint NOT NULL DEFAULT 0,
    ADD CONSTRAINT reports_located
        CHECK ((lat IS NULL) = (lon IS NULL) AND (lat IS NOT NULL OR address IS NOT NULL));
-- Serves the geocoder's queue (geocode_pending): only reports still without coordinates
-- are in it, so it stays as small as the queue however large reports grows.
CREATE INDEX reports_unlocated ON reports (tenant_id, received_at, id)
    WHERE lat IS NULL;

-- Issues: address_key is the founding report's normalised address; located counts the
-- reports with coordinates (the centroid is their mean; an issue whose reports all lack
-- them has no point until one has). Every report so far had coordinates.
ALTER TABLE issues
    ADD COLUMN address_key text,
    ADD COLUMN located integer NOT NULL DEFAULT 0 CHECK (located >= 0);
UPDATE issues SET located = report_count WHERE lat IS NOT NULL;
-- Serves open_issue_candidates' address probes: the open issues at a report's normalised
-- address, for a report without coordinates (any of them) or with (those without).
-- Partial: open issues that know an address.
CREATE INDEX issues_open_address ON issues (tenant_id, address_key)
    INCLUDE (category, last_reported, id)
    WHERE civicpulse_is_open(status) AND address_key IS NOT NULL;

-- A tenant's geocoder (a Nominatim-compatible search endpoint); no row, no geocoder. Reports
-- without coordinates get them from it later, asynchronously.
CREATE TABLE geocoders (
    tenant_id     bigint PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    url           text NOT NULL CHECK (url ~ '^https?://'),
    -- Nominatim's usage policy asks for a contact address; sent as the `email` parameter.
    email         text,
    -- ISO 3166-1 alpha-2 codes, comma-separated: results outside them are not taken.
    countrycodes  text,
    -- Appended to every query ("San Francisco, CA"): exports give a street, not a city.
    suffix        text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE geocoders ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON geocoders
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON geocoders TO civicpulse_app;

-- What the geocoder said of an address (found or not), so an address is asked once.
CREATE TABLE geocodes (
    tenant_id    bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    address_key  text NOT NULL,
    lat          double precision CHECK (lat BETWEEN -90 AND 90),
    lon          double precision CHECK (lon BETWEEN -180 AND 180),
    display_name text,
    fetched_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, address_key)
);
ALTER TABLE geocodes ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON geocodes
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON geocodes TO civicpulse_app;

-- The tenants with a geocoder and reports still waiting for one (the geocoder task's round;
-- reports_unlocated per tenant). SECURITY DEFINER: it reads across tenants, and answers only
-- their ids.
CREATE FUNCTION civicpulse_geocoding_tenants(p_max_attempts integer) RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT g.tenant_id FROM geocoders g
     WHERE EXISTS (SELECT 1 FROM reports r
                    WHERE r.tenant_id = g.tenant_id AND r.lat IS NULL
                      AND r.geocode_attempts < p_max_attempts)
     ORDER BY g.tenant_id
$$;
REVOKE ALL ON FUNCTION civicpulse_geocoding_tenants(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION civicpulse_geocoding_tenants(integer) TO civicpulse_app;

-- Hours are marked dirty in ascending order. Two transactions marking overlapping hours
-- then wait for each other in one order and never deadlock (an import measures each chunk's
-- history in the chunk's transaction while the other writer's chunk moves; with the hash
-- aggregate's arbitrary order, two chunks of one city's days deadlocked).
CREATE OR REPLACE FUNCTION civicpulse_mark_rollups() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rollup_dirty (tenant_id, hour)
        SELECT DISTINCT n.tenant_id, date_trunc('hour', h)
          FROM new_rows n, LATERAL (VALUES (n.opened_at), (n.resolved_at)) AS v (h)
         WHERE h IS NOT NULL
         ORDER BY 1, 2
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
         ORDER BY 1, 2
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
