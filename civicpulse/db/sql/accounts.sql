-- Staff accounts and their sessions (schema 0013). Every query names its tenant ($1) and
-- runs under that tenant's row-level security; none ever returns a password hash except
-- user_by_login, which the login check needs.

-- name: create_user
INSERT INTO users (tenant_id, login, display_name, role, password_hash)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, login, display_name, role, created_at, password_changed_at, disabled_at,
          failed_logins, locked_until, last_login_at

-- name: list_users
SELECT id, login, display_name, role, created_at, password_changed_at, disabled_at,
       failed_logins, locked_until, last_login_at
  FROM users
 WHERE tenant_id = $1
 ORDER BY id

-- name: user_by_login
-- A login attempt: the user and the hash to check the password against.
SELECT id, login, display_name, role, password_hash, disabled_at, locked_until
  FROM users
 WHERE tenant_id = $1 AND login = $2

-- name: get_user
SELECT id, login, display_name, role, created_at, password_changed_at, disabled_at,
       failed_logins, locked_until, last_login_at
  FROM users
 WHERE tenant_id = $1 AND id = $2

-- name: lock_user
SELECT id, login, display_name, role, created_at, password_changed_at, disabled_at,
       failed_logins, locked_until, last_login_at
  FROM users
 WHERE tenant_id = $1 AND id = $2
   FOR UPDATE

-- name: lock_user_by_login
SELECT id, login, display_name, role, created_at, password_changed_at, disabled_at,
       failed_logins, locked_until, last_login_at
  FROM users
 WHERE tenant_id = $1 AND login = $2
   FOR UPDATE

-- name: update_user
-- Role and display name; NULL keeps the current value.
UPDATE users
   SET role = COALESCE($3, role), display_name = COALESCE($4, display_name)
 WHERE tenant_id = $1 AND id = $2
RETURNING id, login, display_name, role, created_at, password_changed_at, disabled_at,
          failed_logins, locked_until, last_login_at

-- name: set_user_disabled
-- Disabling keeps the first disabled_at; enabling clears it.
UPDATE users
   SET disabled_at = CASE WHEN $3 THEN COALESCE(disabled_at, now()) END
 WHERE tenant_id = $1 AND id = $2
RETURNING id, login, display_name, role, created_at, password_changed_at, disabled_at,
          failed_logins, locked_until, last_login_at

-- name: set_password
-- A new password also lifts a lockout: whoever set it knows the account is theirs.
UPDATE users
   SET password_hash = $3, password_changed_at = now(), failed_logins = 0, locked_until = NULL
 WHERE tenant_id = $1 AND id = $2
RETURNING id, login, display_name, role, created_at, password_changed_at, disabled_at,
          failed_logins, locked_until, last_login_at

-- name: record_login_failure
-- One more consecutive failure ($3: the limit, $4: the lock's length). Reaching the limit
-- locks the account; once a lock has run out the count starts again from this failure.
-- The CASEs read the row as it was (and, under a concurrent failure, as that one left it),
-- so racing failures each count. `locked` is true for the failure that set the lock.
UPDATE users
   SET failed_logins = CASE WHEN locked_until <= now() THEN 1 ELSE failed_logins + 1 END,
       locked_until = CASE
           WHEN (CASE WHEN locked_until <= now() THEN 1 ELSE failed_logins + 1 END) >= $3
           THEN now() + $4::interval
       END
 WHERE tenant_id = $1 AND id = $2
RETURNING failed_logins, locked_until, failed_logins = $3 AS locked

-- name: record_login_success
-- Only if the password checked ($3) is still the user's, and the user was not disabled or
-- locked meanwhile. $4: a stronger hash of the same password (NULL: keep the hash).
UPDATE users
   SET failed_logins = 0, locked_until = NULL, last_login_at = now(),
       password_hash = COALESCE($4, password_hash)
 WHERE tenant_id = $1 AND id = $2 AND password_hash = $3 AND disabled_at IS NULL
   AND (locked_until IS NULL OR locked_until <= now())
RETURNING id, login, display_name, role

-- name: create_session
-- $3: sha256 of the session token; $5: the absolute lifetime.
INSERT INTO sessions (tenant_id, user_id, token_hash, csrf_token, expires_at)
VALUES ($1, $2, $3, $4, now() + $5::interval)
RETURNING id, expires_at

-- name: prune_user_sessions
-- A login drops the user's sessions that have ended ($3: the idle timeout), so a user's
-- rows stay few however often they log in.
DELETE FROM sessions
 WHERE tenant_id = $1 AND user_id = $2
   AND (revoked_at IS NOT NULL OR expires_at <= now() OR last_seen_at <= now() - $3::interval)

-- name: session_by_token
-- A live session of a user who is not disabled ($3: the idle timeout). Its last_seen_at is
-- written only when older than $4, so most requests read and write nothing else.
WITH found AS (
    SELECT s.id, s.user_id, s.csrf_token, s.expires_at, s.last_seen_at,
           u.login, u.display_name, u.role
      FROM sessions s
      JOIN users u ON u.tenant_id = s.tenant_id AND u.id = s.user_id
     WHERE s.tenant_id = $1 AND s.token_hash = $2
       AND s.revoked_at IS NULL AND s.expires_at > now()
       AND s.last_seen_at > now() - $3::interval
       AND u.disabled_at IS NULL
), touched AS (
    UPDATE sessions s SET last_seen_at = now()
      FROM found f
     WHERE s.tenant_id = $1 AND s.id = f.id AND f.last_seen_at <= now() - $4::interval
)
SELECT id, user_id, csrf_token, expires_at, login, display_name, role FROM found

-- name: revoke_session
UPDATE sessions SET revoked_at = now()
 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL
RETURNING id

-- name: revoke_user_sessions
-- Every live session of a user (disabled, or their password reset): how many.
WITH revoked AS (
    UPDATE sessions SET revoked_at = now()
     WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL
    RETURNING 1
)
SELECT count(*) FROM revoked
