"""EXPLAIN guards for the accounts queries (schema 0013): on seeded, ANALYZEd data, every
lookup a login or a session request makes uses the index meant for it."""

from __future__ import annotations

import datetime as dt

import asyncpg

from civicpulse import accounts
from civicpulse.db.queries import q
from tests.integration.test_query_plans import assert_uses, explain
from tests.support import make_tenant

USERS_PER_TENANT = 2_000


async def test_account_queries_use_their_indexes(db_url: str, app_pool: asyncpg.Pool) -> None:
    tenants = [await make_tenant(db_url, f"acct-{i}") for i in range(3)]
    conn = await asyncpg.connect(db_url)
    try:
        for t in tenants:
            await conn.execute(
                """
                INSERT INTO users (tenant_id, login, role, password_hash)
                SELECT $1, 'user' || g || '@example.org', 'staff', '$argon2id$x'
                  FROM generate_series(1, $2) AS g""",
                t.id,
                USERS_PER_TENANT,
            )
            # Three sessions per user, a third of them ended.
            await conn.execute(
                """
                INSERT INTO sessions (tenant_id, user_id, token_hash, csrf_token, expires_at,
                                      revoked_at)
                SELECT u.tenant_id, u.id, sha256((u.id || '-' || g)::text::bytea), 'c',
                       now() + interval '1 hour', CASE WHEN g = 1 THEN now() END
                  FROM users u, generate_series(1, 3) AS g
                 WHERE u.tenant_id = $1""",
                t.id,
            )
        await conn.execute("ANALYZE users, sessions")
        some_user = await conn.fetchval(
            "SELECT id FROM users WHERE tenant_id = $1 LIMIT 1", tenants[1].id
        )
    finally:
        await conn.close()

    t = tenants[1].id
    hour, minute = dt.timedelta(hours=1), dt.timedelta(minutes=1)
    token_hash = accounts.hash_token("some token")
    cases: list[tuple[str, str, tuple[object, ...]]] = [
        ("user_by_login", "users_tenant_id_login_key", (t, "user7@example.org")),
        ("lock_user", "users_pkey", (t, some_user)),
        ("session_by_token", "sessions_tenant_id_token_hash_key", (t, token_hash, hour, minute)),
        ("revoke_user_sessions", "sessions_user", (t, some_user)),
        ("prune_user_sessions", "sessions_user", (t, some_user, hour)),
        ("record_login_failure", "users_pkey", (t, some_user, 5, hour)),
    ]
    for name, index, args in cases:
        nodes = await explain(app_pool, t, q(name), *args)
        assert_uses(nodes, index)
        scanned = {n.get("Relation Name") for n in nodes if n["Node Type"] == "Seq Scan"}
        assert not scanned & {"users", "sessions"}, (name, scanned)
