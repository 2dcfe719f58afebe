-- 0001: tenants, taxonomy, reports, issues, the event log, API keys.
--
-- Design rules
-- * Every tenant-owned table has tenant_id first in its primary key and in every foreign key,
--   so the schema can be distributed by tenant (Citus) without redesign.
-- * Row-level security on every tenant-owned table, keyed by the transaction-local setting
--   civicpulse.tenant_id. An unset (NULL) or reset ('') setting matches no row.
-- * The service runs as civicpulse_app (NOLOGIN, no BYPASSRLS); migrations run as the owner.
-- * Only PostgreSQL 15 core features: no extension, so Amazon RDS works as is.

DO $$
BEGIN
    CREATE ROLE civicpulse_app NOLOGIN NOBYPASSRLS;
EXCEPTION WHEN duplicate_object THEN
    NULL;  -- roles are cluster-wide; another database of this cluster created it
END
$$;

-- The login role must be able to SET ROLE civicpulse_app (the pool does so at connect time).
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'civicpulse_app', 'MEMBER') THEN
        EXECUTE format('GRANT civicpulse_app TO %I', current_user);
    END IF;
END
$$;

CREATE FUNCTION civicpulse_current_tenant() RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(current_setting('civicpulse.tenant_id', true), '')::bigint $$;

-- UUIDv7 in SQL (PostgreSQL 15 has no uuidv7()): 48 bits of Unix milliseconds over a random
-- v4 UUID, whose version bits are then turned from 4 to 7. Used where rows are made in bulk.
CREATE FUNCTION civicpulse_uuid7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                      FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- The tenant registry is not tenant-owned: the app resolves a slug before it knows a tenant.
-- The app role may read it; only the owner (CLI, migrations) writes it.
CREATE TABLE tenants (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    timezone    text NOT NULL DEFAULT 'UTC',
    config      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE categories (
    tenant_id     bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    code          text NOT NULL CHECK (code ~ '^[a-z0-9_]{1,64}$'),
    service_code  text NOT NULL CHECK (length(service_code) BETWEEN 1 AND 64),
    name          text NOT NULL,
    description   text NOT NULL DEFAULT '',
    keywords      text[] NOT NULL DEFAULT '{}',
    kind          text NOT NULL DEFAULT 'other',
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code),
    -- Open311 clients address a category by service_code.
    UNIQUE (tenant_id, service_code)
);

CREATE TABLE api_keys (
    tenant_id    bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    -- sha256 of the whole key; the key itself is never stored.
    key_hash     bytea NOT NULL,
    prefix       text NOT NULL,
    scope        text NOT NULL CHECK (scope IN ('submit', 'staff', 'admin')),
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, key_hash)
);
-- Serves civicpulse_authenticate: a request's key is looked up by hash before the tenant
-- is trusted (a key used on another tenant's URL must be told apart from a bad key).
CREATE INDEX api_keys_hash ON api_keys (key_hash) WHERE revoked_at IS NULL;

CREATE TABLE issues (
    tenant_id       bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id              uuid NOT NULL,
    status          text NOT NULL DEFAULT 'new',
    category        text,
    severity        smallint CHECK (severity BETWEEN 1 AND 5),
    title           text NOT NULL DEFAULT '',
    lat             double precision,
    lon             double precision,
    report_count    integer NOT NULL DEFAULT 0,
    first_reported  timestamptz,
    last_reported   timestamptz,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, category) REFERENCES categories (tenant_id, code)
);

-- reports is the high-volume append table, so it carries no foreign key to tenants or
-- categories: each costs a trigger call per inserted row (measured: about 40% of bulk-import
-- time). Tenant ids come only from the tenants table through the RLS setting (WITH CHECK
-- refuses any other), categories are checked against the tenant's taxonomy at intake and
-- import, and categories are retired (active = false), never deleted.
CREATE TABLE reports (
    tenant_id        bigint NOT NULL,
    -- Time-ordered (UUIDv7) ids generated by the service, so an id is known before commit.
    id               uuid NOT NULL,
    text             text NOT NULL CHECK (length(text) BETWEEN 1 AND 4000),
    lat              double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon              double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    address          text,
    requested_category text,
    submitted_at     timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    channel          text NOT NULL DEFAULT 'api',
    reporter         jsonb,
    attributes       jsonb NOT NULL DEFAULT '{}'::jsonb,
    media_urls       jsonb NOT NULL DEFAULT '[]'::jsonb,
    idempotency_key  text,
    -- sha256 of the request body: same key + same body replays, same key + other body is 409.
    body_hash        bytea,
    source           text,
    source_id        text,
    -- Processing state: received -> classified; imported records skip the pipeline.
    state            text NOT NULL DEFAULT 'received'
                     CHECK (state IN ('received', 'classified', 'imported', 'failed')),
    lease_owner      text,
    lease_until      timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    category         text,
    severity         smallint CHECK (severity BETWEEN 1 AND 5),
    classification   jsonb,
    issue_id         uuid,
    processed_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, issue_id) REFERENCES issues (tenant_id, id)
);

-- Serves insert_reports' ON CONFLICT: a retried request finds its original by key.
CREATE UNIQUE INDEX reports_idempotency_key ON reports (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Serves the importer's ON CONFLICT: re-importing a file adds nothing.
CREATE UNIQUE INDEX reports_source_record ON reports (tenant_id, source, source_id)
    WHERE source_id IS NOT NULL;
-- Serves claim_reports: only unfinished rows are in it, so it stays small however large
-- reports grows, and the claim scans it in arrival order.
CREATE INDEX reports_pending ON reports (received_at)
    WHERE state = 'received';

-- Append-only: the app role may INSERT and SELECT, and a trigger refuses UPDATE and DELETE
-- for everyone (tenant deletion cascades through TRUNCATE-free ON DELETE only for the owner).
CREATE TABLE issue_events (
    tenant_id    bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    issue_id     uuid NOT NULL,
    kind         text NOT NULL,
    actor        text NOT NULL,
    from_status  text,
    to_status    text,
    note         text,
    data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, issue_id) REFERENCES issues (tenant_id, id) ON DELETE CASCADE
);
-- Serves an issue's history, newest last.
CREATE INDEX issue_events_issue ON issue_events (tenant_id, issue_id, id);

CREATE FUNCTION issue_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_user = 'civicpulse_app' THEN
        RAISE EXCEPTION 'issue_events is append-only' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER issue_events_append_only BEFORE UPDATE OR DELETE ON issue_events
    FOR EACH ROW EXECUTE FUNCTION issue_events_append_only();

-- Row-level security: one policy per tenant-owned table, the same predicate everywhere.
ALTER TABLE categories   ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys     ENABLE ROW LEVEL SECURITY;
ALTER TABLE issues       ENABLE ROW LEVEL SECURITY;
ALTER TABLE reports      ENABLE ROW LEVEL SECURITY;
ALTER TABLE issue_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON categories
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON issues
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON reports
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
CREATE POLICY tenant_isolation ON issue_events
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());

-- The pipeline claims work across tenants. Rather than let the app role bypass RLS, this one
-- audited function (running as the owner) hands out (tenant_id, id) pairs under a lease;
-- the worker then reads each report under that tenant's setting.
CREATE FUNCTION civicpulse_claim_reports(p_owner text, p_lease interval, p_limit integer)
RETURNS TABLE (tenant_id bigint, id uuid)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    UPDATE reports r
       SET lease_owner = p_owner,
           lease_until = now() + p_lease,
           attempts = r.attempts + 1
      FROM (SELECT p.tenant_id, p.id
              FROM reports p
             WHERE p.state = 'received'
               AND (p.lease_until IS NULL OR p.lease_until < now())
             ORDER BY p.received_at
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED) AS c
     WHERE r.tenant_id = c.tenant_id AND r.id = c.id
 RETURNING r.tenant_id, r.id
$$;
REVOKE ALL ON FUNCTION civicpulse_claim_reports(text, interval, integer) FROM PUBLIC;

-- Authentication needs the key's own tenant before any tenant setting exists: this function
-- answers only "which tenant and scope does this live key hash belong to".
CREATE FUNCTION civicpulse_authenticate(p_hash bytea)
RETURNS TABLE (tenant_id bigint, scope text, key_id bigint, prefix text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT k.tenant_id, k.scope, k.id, k.prefix FROM api_keys k
     WHERE k.key_hash = p_hash AND k.revoked_at IS NULL
$$;
REVOKE ALL ON FUNCTION civicpulse_authenticate(bytea) FROM PUBLIC;

GRANT USAGE ON SCHEMA public TO civicpulse_app;
GRANT SELECT ON tenants TO civicpulse_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON categories, issues TO civicpulse_app;
GRANT SELECT, INSERT, UPDATE ON api_keys, reports TO civicpulse_app;
GRANT SELECT, INSERT ON issue_events TO civicpulse_app;
GRANT EXECUTE ON FUNCTION civicpulse_current_tenant() TO civicpulse_app;
GRANT EXECUTE ON FUNCTION civicpulse_uuid7() TO civicpulse_app;
GRANT EXECUTE ON FUNCTION civicpulse_claim_reports(text, interval, integer) TO civicpulse_app;
GRANT EXECUTE ON FUNCTION civicpulse_authenticate(bytea) TO civicpulse_app;
