-- 0013: staff accounts (people, not machines) and their browser sessions.
-- See civicpulse/accounts.py (passwords, lockout) and civicpulse/api/sessions.py (routes).

-- A person who logs in to one tenant. Roles map onto the API-key scopes of the same name.
-- Users are disabled, never deleted: the audit log and the event log name them by login.
CREATE TABLE users (
    tenant_id            bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                   bigint GENERATED ALWAYS AS IDENTITY,
    -- A lower-cased email address or name (civicpulse/accounts.py, LOGIN holds the same rule).
    login                text NOT NULL CHECK (login ~ '^[a-z0-9][a-z0-9._%+@''-]{0,253}$'),
    display_name         text NOT NULL DEFAULT '' CHECK (length(display_name) <= 200),
    role                 text NOT NULL CHECK (role IN ('staff', 'admin')),
    -- Argon2id in its PHC string form ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
    password_hash        text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    created_at           timestamptz NOT NULL DEFAULT now(),
    password_changed_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at          timestamptz,
    -- Consecutive failed logins; at the service's limit the account is locked until
    -- locked_until. A successful login or a password reset sets both back.
    failed_logins        integer NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until         timestamptz,
    last_login_at        timestamptz,
    PRIMARY KEY (tenant_id, id),
    -- Serves user_by_login (every login attempt) and keeps a login unique in its tenant.
    UNIQUE (tenant_id, login)
);
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT, UPDATE ON users TO civicpulse_app;

-- A logged-in browser. Only the sha256 of the session token (the cookie's value) is stored,
-- so a copy of the table logs no one in. The CSRF token is stored as is: GET /session hands
-- it back to a page that lost it, and it is worth nothing without the cookie.
-- expires_at is the absolute end (CIVICPULSE_SESSION_MAX_HOURS after the login); the idle
-- end is last_seen_at plus CIVICPULSE_SESSION_IDLE_MINUTES, checked against the setting in
-- force, so changing it applies to live sessions too.
CREATE TABLE sessions (
    tenant_id     bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id            bigint GENERATED ALWAYS AS IDENTITY,
    user_id       bigint NOT NULL,
    token_hash    bytea NOT NULL,
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    PRIMARY KEY (tenant_id, id),
    -- Serves session_by_token (every request that comes with a session cookie).
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
-- Serves revoke_user_sessions (disabling a user, resetting a password) and
-- prune_user_sessions (each login drops the user's ended sessions).
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);
ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sessions
    USING (tenant_id = civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON sessions TO civicpulse_app;

-- A session ended (logout, a disabled user, a new password) or a user changed: announced on
-- civicpulse_auth like a revoked key (schema 0012), so every process ends the staff streams
-- that were opened with credentials which may no longer hold.
CREATE TRIGGER sessions_notify_auth AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION civicpulse_notify_auth();
CREATE TRIGGER users_notify_auth AFTER UPDATE OF disabled_at, role, password_hash ON users
    FOR EACH ROW EXECUTE FUNCTION civicpulse_notify_auth();
