-- 0015: the resident pages (civicpulse/api/pages.py): a per-tenant public submit token for
-- the web form, tracking links for what residents send, and the landing page's list.

-- The token the tenant's public report page carries (it is in the page: public by design).
-- The web form's posts must send it, so a script has to load the page first, and an admin
-- can rotate it to cut off one that learned it. One per tenant, made with the first page.
CREATE TABLE web_forms (
    tenant_id   bigint PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    token       text NOT NULL CHECK (length(token) >= 20),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE web_forms ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON web_forms
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT, UPDATE ON web_forms TO civicpulse_app;

-- A report sent from the web form is followed by a link holding a secret; only its sha256
-- is kept. Looked up with the report's primary key: no index of its own.
ALTER TABLE reports ADD COLUMN track_hash bytea;

-- The landing page: tenants whose dashboard is public (a tenant without dashboard settings
-- is public, as the dashboard's defaults say). SECURITY DEFINER: it reads every tenant's
-- settings and answers only slugs and names.
CREATE FUNCTION civicpulse_public_tenants()
RETURNS TABLE (slug text, name text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT t.slug, t.name FROM tenants t
      LEFT JOIN dashboards d ON d.tenant_id = t.id
     WHERE COALESCE(d.public, true)
     ORDER BY t.name, t.slug
$$;
REVOKE ALL ON FUNCTION civicpulse_public_tenants() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION civicpulse_public_tenants() TO civicpulse_app;
