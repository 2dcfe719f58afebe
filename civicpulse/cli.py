"""The `civicpulse` command. Thin: parse arguments, call the package, print the result."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from civicpulse import __version__
from civicpulse.config import Settings
from civicpulse.errors import CivicPulseError

DESCRIPTION = """\
CivicPulse Engine: civic and facility incident reports.

Every command uses CIVICPULSE_DATABASE_URL when it is set; otherwise it starts (or joins)
the embedded PostgreSQL kept in CIVICPULSE_DATA_DIR (default .civicpulse/).
"""


def resolve_dsn(settings: Settings) -> str:
    """The database URL: the configured one, or the embedded server's."""
    if settings.database_url is not None:
        return str(settings.database_url)
    from civicpulse.db import embedded

    return str(embedded.start(settings.data_dir))


async def _owner(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn)


@asynccontextmanager
async def _tenant_pool(
    settings: Settings, dsn: str, slug: str
) -> AsyncIterator[tuple[asyncpg.Pool, Any, list[Any]]]:
    """Migrate, open a small app-role pool, and resolve a tenant with its taxonomy."""
    from civicpulse.db import migrate, tenants
    from civicpulse.db.pool import create_pool, tenant_transaction

    await migrate.migrate(dsn, settings.schema_dir)
    pool = await create_pool(settings, dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            tenant = await tenants.tenant_by_slug(conn, slug)
        if tenant is None:
            raise CivicPulseError(f"no tenant {slug!r}", field="tenant")
        async with tenant_transaction(pool, tenant.id) as conn:
            categories = await tenants.list_categories(conn, tenant.id)
        yield pool, tenant, categories
    finally:
        await pool.close()


# -- commands -----------------------------------------------------------------------------


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from civicpulse.app import create_app
    from civicpulse.db import migrate

    embedded = settings.database_url is None
    dsn = resolve_dsn(settings)
    settings = settings.replace(database_url=dsn)
    asyncio.run(migrate.migrate(dsn, settings.schema_dir))
    demo = args.demo if args.demo is not None else embedded
    host = args.host or settings.host
    port = args.port or settings.port
    if demo:
        key = asyncio.run(_ensure_demo(dsn))
        where = f"embedded database in {settings.data_dir}" if embedded else "configured database"
        print(
            f"\nCivicPulse is starting on the {where}.\n"
            f"  demo tenant: demo\n  API key (admin, shown once): {key}\n"
            f"  try: curl -s -X POST http://{host}:{port}/v1/tenants/demo/reports \\\n"
            f"         -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
            '         -d \'{"text": "Pothole on Main St", "lat": 34.05, "lon": -118.25}\'\n'
            f"  dashboard: http://{host}:{port}/t/demo/dashboard\n"
            f"  API reference: http://{host}:{port}/docs\n",
            flush=True,
        )
    if embedded:
        # uvicorn re-raises SIGTERM after its graceful shutdown, and the default action would
        # end the process before the embedded server's exit hook could stop PostgreSQL (as
        # it does after Ctrl-C): make SIGTERM a normal exit instead.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
    )
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cmd_db_stop(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import embedded

    if settings.database_url is not None:
        print("CIVICPULSE_DATABASE_URL is set: there is no embedded server to stop")
        return 2
    pid = embedded.stop(settings.data_dir)
    where = settings.data_dir / "pgdata"
    print(f"stopped the embedded PostgreSQL in {where} (pid {pid})" if pid else
          f"the embedded PostgreSQL in {where} was not running")  # fmt: skip
    return 0


async def _ensure_demo(dsn: str) -> str:
    from civicpulse.db import tenants

    conn = await _owner(dsn)
    try:
        if await tenants.tenant_by_slug(conn, "demo") is None:
            await tenants.create_tenant(conn, "demo", "Demo City", "America/Los_Angeles")
        return await tenants.create_api_key(conn, "demo", "admin", label="demo")
    finally:
        await conn.close()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import migrate

    applied = asyncio.run(migrate.migrate(resolve_dsn(settings), settings.schema_dir))
    if applied:
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
    else:
        print("database is up to date")
    return 0


def cmd_tenant_create(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import migrate, tenants

    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise CivicPulseError(f"unknown time zone {args.timezone!r}", field="timezone") from None

    async def run(dsn: str) -> Any:
        await migrate.migrate(dsn, settings.schema_dir)
        conn = await _owner(dsn)
        try:
            return await tenants.create_tenant(
                conn, args.slug, args.name, args.timezone, args.template
            )
        finally:
            await conn.close()

    tenant = asyncio.run(run(resolve_dsn(settings)))
    print(
        f"created tenant {tenant.slug} (id {tenant.id}, {tenant.timezone}) "
        f"with the {args.template} template"
    )
    return 0


def cmd_tenant_list(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import tenants

    async def run(dsn: str) -> Any:
        conn = await _owner(dsn)
        try:
            return await tenants.list_tenants(conn)
        finally:
            await conn.close()

    for t in asyncio.run(run(resolve_dsn(settings))):
        print(f"{t.slug}\t{t.name}\t{t.timezone}")
    return 0


def cmd_tenant_delete(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import tenants

    if args.yes != args.slug:
        print(
            f"civicpulse: this deletes tenant {args.slug!r} and all its reports, issues, "
            f"keys and settings for good; to confirm, add --yes {args.slug}",
            file=sys.stderr,
        )
        return 2

    async def run(dsn: str) -> int | None:
        conn = await _owner(dsn)
        try:
            async with conn.transaction():
                return await tenants.delete_tenant(conn, args.slug)
        finally:
            await conn.close()

    if asyncio.run(run(resolve_dsn(settings))) is None:
        print(f"civicpulse: error (slug): no tenant {args.slug!r}", file=sys.stderr)
        return 2
    print(f"deleted tenant {args.slug} and all its data")
    return 0


_DURATION = re.compile(r"^([0-9]{1,6})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> dt.timedelta:
    """A duration written as a number and a unit: 90s, 15m, 1h, 30d."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 15m, 1h, 90d")
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _expiry(lasting: dt.timedelta | None) -> dt.datetime | None:
    return None if lasting is None else dt.datetime.now(dt.UTC) + lasting


def _print_new_key(key: str, scope: str, slug: str, row: Any) -> None:
    print(key)
    ends = "" if row["expires_at"] is None else f", expires {row['expires_at'].isoformat()}"
    print(
        f"(key {row['id']}: a {scope} key for {slug}{ends}; only its hash is stored, so it "
        "cannot be shown again)",
        file=sys.stderr,
    )


def cmd_key_create(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import audit, tenants

    async def run(dsn: str) -> tuple[str, Any]:
        async with _tenant_owner(dsn, args.tenant) as (conn, tenant):
            key, row = await tenants.issue_api_key(
                conn,
                tenant.id,
                args.scope,
                args.label,
                expires_at=_expiry(args.expires_in),
                created_by="cli",
            )
            await audit.record_audit(
                conn,
                tenant.id,
                "cli",
                "key.created",
                f"key:{row['id']}",
                {"scope": args.scope, "label": args.label, "expires_at": row["expires_at"]},
            )
            return key, row

    key, row = asyncio.run(run(resolve_dsn(settings)))
    _print_new_key(key, args.scope, args.tenant, row)
    return 0


def cmd_key_list(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import tenants

    async def run(dsn: str) -> list[Any]:
        async with _tenant_owner(dsn, args.tenant) as (conn, tenant):
            return await tenants.list_api_keys(conn, tenant.id)

    def when(value: dt.datetime | None) -> str:
        return "-" if value is None else value.isoformat(timespec="seconds")

    now = dt.datetime.now(dt.UTC)
    print("id\tprefix\tscope\tstatus\tcreated\texpires\tlast used\tlabel")
    for k in asyncio.run(run(resolve_dsn(settings))):
        print(
            f"{k['id']}\t{k['prefix']}\t{k['scope']}\t{tenants.key_status(k, now)}\t"
            f"{when(k['created_at'])}\t{when(k['expires_at'])}\t{when(k['last_used_at'])}\t"
            f"{k['label']}"
        )
    return 0


def cmd_key_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import audit, tenants

    async def run(dsn: str) -> bool:
        async with _tenant_owner(dsn, args.tenant) as (conn, tenant):
            row = await tenants.revoke_api_key(conn, tenant.id, args.key_id)
            if row is None:
                if await tenants.lock_api_key(conn, tenant.id, args.key_id) is None:
                    raise CivicPulseError(f"no key {args.key_id} in {args.tenant}", field="key_id")
                return False
            await audit.record_audit(conn, tenant.id, "cli", "key.revoked", f"key:{args.key_id}")
            return True

    if asyncio.run(run(resolve_dsn(settings))):
        print(f"revoked key {args.key_id} of {args.tenant}; every process refuses it now")
    else:
        print(f"key {args.key_id} of {args.tenant} was already revoked")
    return 0


def cmd_key_rotate(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import audit, tenants

    async def run(dsn: str) -> tuple[str, Any, Any]:
        async with _tenant_owner(dsn, args.tenant) as (conn, tenant):
            key, new, old = await tenants.rotate_api_key(
                conn,
                tenant.id,
                args.key_id,
                grace=args.grace,
                expires_at=_expiry(args.expires_in),
                actor="cli",
            )
            await audit.record_audit(
                conn,
                tenant.id,
                "cli",
                "key.rotated",
                f"key:{args.key_id}",
                {"new_key": new["id"], "grace_seconds": args.grace.total_seconds()},
            )
            return key, new, old

    key, new, old = asyncio.run(run(resolve_dsn(settings)))
    _print_new_key(key, new["scope"], args.tenant, new)
    ends = "now" if old["revoked_at"] is not None else old["expires_at"].isoformat()
    print(f"(key {args.key_id}, which it replaces, stops working {ends})", file=sys.stderr)
    return 0


def _new_password(settings: Settings) -> str:
    """The new password: CIVICPULSE_NEW_PASSWORD when set, else asked for twice (never taken
    from the command line, where other users and the shell history would see it)."""
    if settings.new_password:
        return str(settings.new_password)
    import getpass

    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise CivicPulseError("the two passwords differ", field="password")
    return first


@asynccontextmanager
async def _tenant_owner(dsn: str, slug: str) -> AsyncIterator[tuple[asyncpg.Connection, Any]]:
    """An owner connection in a transaction set to the tenant named by `slug`."""
    from civicpulse.db import tenants
    from civicpulse.db.pool import set_tenant

    conn = await _owner(dsn)
    try:
        async with conn.transaction():
            tenant = await tenants.tenant_by_slug(conn, slug)
            if tenant is None:
                raise CivicPulseError(f"no tenant {slug!r}", field="tenant")
            await set_tenant(conn, tenant.id)
            yield conn, tenant
    finally:
        await conn.close()


async def _locked_user(conn: asyncpg.Connection, tenant_id: int, login: str) -> Any:
    from civicpulse import accounts
    from civicpulse.db import accounts as accounts_repo
    from civicpulse.errors import NotFound

    name = accounts.normalize_login(login)
    user = None if name is None else await accounts_repo.lock_user_by_login(conn, tenant_id, name)
    if user is None:
        raise NotFound(f"no user {login!r} in this tenant", field="login")
    return user


def cmd_user_create(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse import accounts
    from civicpulse.db import accounts as accounts_repo
    from civicpulse.db import migrate
    from civicpulse.db.audit import record_audit

    login = accounts.check_login(args.login)
    password = _new_password(settings)
    accounts.check_password(password, login)

    async def run(dsn: str) -> Any:
        await migrate.migrate(dsn, settings.schema_dir)
        password_hash = await accounts.hash_in_thread(password)
        async with _tenant_owner(dsn, args.tenant) as (conn, tenant):
            user = await accounts_repo.create_user(
                conn, tenant.id, login, args.name, args.role, password_hash
            )
            await record_audit(
                conn,
                tenant.id,
                "cli",
                "user.created",
                f"user:{user.login}",
                {"id": user.id, "role": user.role, "display_name": user.display_name},
            )
            return user

    user = asyncio.run(run(resolve_dsn(settings)))
    print(f"created {user.role} user {user.login} (id {user.id}) in {args.tenant}")
    return 0


def cmd_user_reset_password(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse import accounts
    from civicpulse.db import accounts as accounts_repo

    password = _new_password(settings)
    accounts.check_password(password, accounts.normalize_login(args.login) or "")

    async def run(dsn: str) -> Any:
        password_hash = await accounts.hash_in_thread(password)
        async with _tenant_owner(dsn, args.tenant) as (conn, tenant):
            user = await _locked_user(conn, tenant.id, args.login)
            return await accounts_repo.change_user(
                conn, tenant.id, user, "cli", password_hash=password_hash
            )

    user = asyncio.run(run(resolve_dsn(settings)))
    print(f"set a new password for {user.login} in {args.tenant}; their sessions have ended")
    return 0


def cmd_user_disable(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import accounts as accounts_repo

    async def run(dsn: str) -> tuple[Any, bool]:
        async with _tenant_owner(dsn, args.tenant) as (conn, tenant):
            user = await _locked_user(conn, tenant.id, args.login)
            if user.disabled_at is not None:
                return user, False
            changed = await accounts_repo.change_user(conn, tenant.id, user, "cli", disabled=True)
            return changed, True

    user, changed = asyncio.run(run(resolve_dsn(settings)))
    if changed:
        print(f"disabled {user.login} in {args.tenant}; their sessions have ended")
    else:
        print(f"{user.login} in {args.tenant} was already disabled")
    return 0


def cmd_user_list(settings: Settings, args: argparse.Namespace) -> int:

    from civicpulse.db import accounts as accounts_repo

    async def run(dsn: str) -> list[Any]:
        async with _tenant_owner(dsn, args.tenant) as (conn, tenant):
            return list(await accounts_repo.list_users(conn, tenant.id))

    now = dt.datetime.now(dt.UTC)
    for u in asyncio.run(run(resolve_dsn(settings))):
        if u.disabled_at is not None:
            status = "disabled"
        elif u.locked_until is not None and u.locked_until > now:
            status = f"locked until {u.locked_until.isoformat(timespec='seconds')}"
        else:
            status = "active"
        print(f"{u.id}\t{u.login}\t{u.role}\t{status}\t{u.display_name}")
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from civicpulse import imports

    path = Path(args.file)
    if not path.is_file():
        raise CivicPulseError(f"no such file: {path}", field="file")
    # Records, not lines (a quoted field may hold line breaks): the bar ends at 100%.
    total = imports.count_records(path, args.format)

    async def run(dsn: str) -> imports.ImportResult:
        async with _tenant_pool(settings, dsn, args.tenant) as (pool, tenant, cats):
            codes = {c.code: c.code for c in cats} | {c.service_code: c.code for c in cats}
            with tqdm(total=total, unit="records", disable=args.quiet, file=sys.stderr) as bar:
                result = await imports.import_file(
                    pool,
                    tenant.id,
                    path,
                    args.format,
                    categories=codes,
                    timezone=tenant.timezone,
                    progress=bar.update,
                    expected=total,
                )
        if result.inserted:
            # A large import makes the planner's statistics wrong at once: analyse what it
            # grew now, not at the service's next round (or never, without autovacuum).
            from civicpulse.db import stats

            conn = await _owner(dsn)
            try:
                await stats.analyse_stale(conn, 0.1, 1)
            finally:
                await conn.close()
        return result

    started = time.perf_counter()
    result = asyncio.run(run(resolve_dsn(settings)))
    elapsed = time.perf_counter() - started
    print(f"layout: {result.layout}", file=sys.stderr)
    for line, field, message in result.errors[: args.max_errors]:
        print(f"{path}:{line}: {field}: {message}", file=sys.stderr)
    if len(result.errors) > args.max_errors:
        print(f"... and {len(result.errors) - args.max_errors} more row errors", file=sys.stderr)
    print(
        f"read {result.read} rows: {result.inserted} imported, "
        f"{result.skipped_existing} already present, {len(result.errors)} rejected "
        f"in {elapsed:.2f}s ({result.read / elapsed if elapsed else 0:,.0f} rows/s)"
    )
    for reason, count in result.rejections():
        print(f"  rejected {count}: {reason}")
    for reason, count in sorted(result.flagged.items()):
        print(f"  kept but flagged {count}: {reason} (left out of time-to-resolve figures)")
    if not result.inserted and not result.skipped_existing:
        print("nothing was imported", file=sys.stderr)
        return 1
    return 1 if result.errors and args.strict else 0


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    import random
    import tempfile

    from tqdm import tqdm

    from civicpulse import imports, seed
    from civicpulse.db import migrate, tenants
    from civicpulse.db.pool import create_pool, tenant_transaction

    sample_path = Path(args.sample)
    if not sample_path.is_file():
        raise CivicPulseError(f"no such sample file: {sample_path}", field="sample")
    sample = seed.load_sample(sample_path)
    sizes = seed.tenant_sizes(args.tenants, args.reports)
    rng = random.Random(args.seed)
    now = dt.datetime.now(dt.UTC)

    async def run(dsn: str) -> tuple[int, int]:
        await migrate.migrate(dsn, settings.schema_dir)
        conn = await _owner(dsn)
        try:
            ids = []
            for i in range(len(sizes)):
                slug = f"{args.prefix}-{i:04d}"
                tenant = await tenants.tenant_by_slug(conn, slug)
                if tenant is None:
                    tenant = await tenants.create_tenant(
                        conn, slug, f"Seeded city {i}", "America/Los_Angeles"
                    )
                ids.append((tenant.id, slug))
        finally:
            await conn.close()
        pool = await create_pool(settings, dsn, min_size=1, max_size=2)
        inserted = existing = 0
        try:
            with (
                tempfile.TemporaryDirectory() as tmp,
                tqdm(total=sum(sizes), unit="rows", disable=args.quiet, file=sys.stderr) as bar,
            ):
                for (tenant_id, slug), n in zip(ids, sizes, strict=True):
                    path = Path(tmp) / f"{slug}.csv"
                    seed.write_csv(path, seed.records(sample, rng, slug, n, args.days, now))
                    async with tenant_transaction(pool, tenant_id) as conn:
                        cats = await tenants.list_categories(conn, tenant_id)
                    codes = {c.code: c.code for c in cats}
                    result = await imports.import_file(
                        pool,
                        tenant_id,
                        path,
                        "csv",
                        categories=codes,
                        timezone="America/Los_Angeles",
                        progress=bar.update,
                    )
                    inserted += result.inserted
                    existing += result.skipped_existing
        finally:
            await pool.close()
        return inserted, existing

    started = time.perf_counter()
    inserted, existing = asyncio.run(run(resolve_dsn(settings)))
    elapsed = time.perf_counter() - started
    print(
        f"seeded {len(sizes)} tenants ({args.prefix}-0000 largest: {sizes[0]} reports, median "
        f"{sorted(sizes)[len(sizes) // 2]}): {inserted} reports and issues added, {existing} "
        f"already present, in {elapsed:.1f}s ({(inserted + existing) / elapsed:,.0f} rows/s)"
    )
    return 0


def cmd_classifier_train(settings: Settings, args: argparse.Namespace) -> int:
    from concurrent.futures import ProcessPoolExecutor

    from civicpulse.pipeline.models import ModelStore

    async def run(dsn: str) -> tuple[Any, float]:
        async with _tenant_pool(settings, dsn, args.tenant) as (pool, tenant, categories):
            with ProcessPoolExecutor(max_workers=1) as executor:
                store = ModelStore(pool, executor, retrain_after=settings.retrain_after_labels)
                started = time.perf_counter()
                model = await store.train(tenant.id, categories, reason="command")
                return model, time.perf_counter() - started

    model, elapsed = asyncio.run(run(resolve_dsn(settings)))
    print(
        f"trained model v{model.version} for {args.tenant} from {model.labels} labels, "
        f"the taxonomy and the default vocabulary in {elapsed:.2f}s (digest {model.digest}); "
        "the service classifies with it from its next batch"
    )
    return 0


def cmd_places_import(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import audit
    from civicpulse.db import places as places_repo
    from civicpulse.db.pool import tenant_transaction
    from civicpulse.placefile import read_places

    path = Path(args.file)
    if not path.is_file():
        raise CivicPulseError(f"no such file: {path}", field="file")
    found, errors = read_places(path)
    for line, field, message in errors[: args.max_errors]:
        print(f"{path}:{line}: {field}: {message}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} rows rejected; nothing imported", file=sys.stderr)
        return 1

    async def run(dsn: str) -> tuple[int, int]:
        async with (
            _tenant_pool(settings, dsn, args.tenant) as (pool, tenant, _),
            tenant_transaction(pool, tenant.id) as conn,
        ):
            created, updated = await places_repo.upsert_places(conn, tenant.id, found)
            await audit.record_audit(
                conn,
                tenant.id,
                "cli",
                "place.imported",
                str(path),
                {"created": created, "updated": updated},
            )
            return created, updated

    created, updated = asyncio.run(run(resolve_dsn(settings)))
    print(f"read {len(found)} places: {created} created, {updated} replaced")
    return 0


def cmd_reports_retry(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import reports as reports_repo
    from civicpulse.db.pool import tenant_transaction

    async def run(dsn: str) -> int:
        async with (
            _tenant_pool(settings, dsn, args.tenant) as (pool, tenant, _),
            tenant_transaction(pool, tenant.id) as conn,
        ):
            return await reports_repo.retry_failed_reports(conn, tenant.id)

    count = asyncio.run(run(resolve_dsn(settings)))
    print(f"{count} failed reports of {args.tenant} queued for grouping again")
    return 0


def cmd_rollups_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import analytics
    from civicpulse.db.pool import tenant_transaction

    async def run(dsn: str) -> tuple[int, int, float]:
        async with _tenant_pool(settings, dsn, args.tenant) as (pool, tenant, _):
            started = time.perf_counter()
            async with tenant_transaction(pool, tenant.id) as conn:
                hours = await analytics.rebuild_rollups(conn, tenant.id)
                rows = len(await analytics.rollup_rows(conn, tenant.id))
            return hours, rows, time.perf_counter() - started

    hours, rows, elapsed = asyncio.run(run(resolve_dsn(settings)))
    print(
        f"rebuilt the rollups of {args.tenant} from its issues: {hours} hourly rows, "
        f"{rows} rows in all, in {elapsed:.2f}s"
    )
    return 0


def cmd_explain(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse import explain
    from civicpulse.db import migrate
    from civicpulse.db.queries import q

    names = {h.name: h for h in explain.HOT_QUERIES}
    if args.query and args.query not in names:
        raise CivicPulseError(
            f"unknown query {args.query!r}; one of: {', '.join(names)}", field="query"
        )
    chosen = [names[args.query]] if args.query else list(explain.HOT_QUERIES)

    async def run(dsn: str) -> list[explain.Report]:
        await migrate.migrate(dsn, settings.schema_dir)
        conn = await _owner(dsn)
        try:
            row = await conn.fetchrow(q("tenant_for_explain"), args.tenant)
            if row is None:
                raise CivicPulseError(f"no tenant {args.tenant!r}", field="tenant")
            return await explain.explain(
                conn,
                row["id"],
                row["slug"],
                chosen,
                analyze=args.analyze,
                app_role=settings.db_app_role or None,
            )
        finally:
            await conn.close()

    reports = asyncio.run(run(resolve_dsn(settings)))
    render = {
        "text": explain.render_text,
        "json": explain.render_json,
        "markdown": explain.render_markdown,
    }[args.format]
    print(render(reports))
    return 0


def cmd_db_stats(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse import explain

    async def run(dsn: str) -> dict[str, Any]:
        conn = await _owner(dsn)
        try:
            return await explain.db_stats(conn, args.top)
        finally:
            await conn.close()

    stats = asyncio.run(run(resolve_dsn(settings)))
    if args.format == "json":
        print(json.dumps(stats, indent=2, default=str))
    else:
        print(explain.render_stats(stats), end="")
    return 0


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="civicpulse",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"civicpulse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the HTTP service and the pipeline",
        description="Run the HTTP service and the pipeline. Applies pending "
        "migrations first. With the embedded database (no "
        "CIVICPULSE_DATABASE_URL) it also ensures a 'demo' tenant and "
        "prints a fresh admin key for it.",
    )
    serve.add_argument("--host", help="address to bind (default CIVICPULSE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default CIVICPULSE_PORT or 8000)")
    serve.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ensure the demo tenant and print a key (default: on for the embedded database only)",
    )
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser(
        "migrate",
        help="apply pending schema migrations",
        description="Apply the numbered migrations in schema/ under an "
        "advisory lock; safe to run twice or from two processes.",
    )
    mig.set_defaults(func=cmd_migrate)

    tenant = sub.add_parser("tenant", help="manage tenants", description="Manage tenants.")
    tsub = tenant.add_subparsers(dest="tenant_command", required=True, metavar="ACTION")
    create = tsub.add_parser(
        "create",
        help="create a tenant from a template",
        description="Create a tenant from a template: 'city' (the civic taxonomy; problems "
        "told apart by place on the map) or 'facility' (hotels, campuses, offices: building "
        "trades, building-wide categories such as lifts and wifi, rooms told apart by number).",
    )
    create.add_argument("slug", help="URL name: lower-case letters, digits and '-'")
    create.add_argument("--name", required=True, help="display name")
    create.add_argument("--timezone", default="UTC", help="IANA time zone (default UTC)")
    create.add_argument(
        "--template", choices=["city", "facility"], default="city", help="default: city"
    )
    create.set_defaults(func=cmd_tenant_create)
    tlist = tsub.add_parser("list", help="list tenants", description="List tenants.")
    tlist.set_defaults(func=cmd_tenant_list)
    tdelete = tsub.add_parser(
        "delete",
        help="delete a tenant and all its data",
        description="Delete a tenant and everything it holds (reports, issues, events, keys, "
        "places, settings), for good. Asks for the slug twice: --yes SLUG.",
    )
    tdelete.add_argument("slug", help="the tenant's slug")
    tdelete.add_argument("--yes", metavar="SLUG", help="the slug again, to confirm")
    tdelete.set_defaults(func=cmd_tenant_delete)

    key = sub.add_parser("key", help="manage API keys", description="Manage API keys.")
    ksub = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    kcreate = ksub.add_parser(
        "create",
        help="create an API key and print it once",
        description="Create an API key; it is printed once and only its "
        "hash is stored. Scopes: submit (send and read reports), staff "
        "(submit plus staff work), admin (everything).",
    )
    kcreate.add_argument("--tenant", required=True, help="tenant slug")
    kcreate.add_argument("--scope", required=True, choices=["submit", "staff", "admin"])
    kcreate.add_argument("--label", default="", help="a note to recognise the key by")
    kcreate.add_argument(
        "--expires-in", type=duration, help="stop working after this long (30d, 12h, ...)"
    )
    kcreate.set_defaults(func=cmd_key_create)
    klist = ksub.add_parser(
        "list",
        help="list a tenant's API keys",
        description="List a tenant's API keys, id first on each line, with their prefix "
        "(the key's first characters after cp_), scope, status (active, expired, revoked), "
        "creation, expiry and last use (written at most once a minute). Keys themselves are "
        "never shown again.",
    )
    klist.add_argument("--tenant", required=True, help="tenant slug")
    klist.set_defaults(func=cmd_key_list)
    krevoke = ksub.add_parser(
        "revoke",
        help="revoke an API key",
        description="Revoke an API key: every service process refuses it within seconds.",
    )
    krevoke.add_argument("--tenant", required=True, help="tenant slug")
    krevoke.add_argument("key_id", type=int, metavar="KEY_ID", help="the key's id (key list)")
    krevoke.set_defaults(func=cmd_key_revoke)
    krotate = ksub.add_parser(
        "rotate",
        help="replace an API key with a new one, printed once",
        description="Make a new key with the old one's scope and label, print it once, and "
        "let the old one work for a grace period (default 1h; 0s revokes it at once).",
    )
    krotate.add_argument("--tenant", required=True, help="tenant slug")
    krotate.add_argument("key_id", type=int, metavar="KEY_ID", help="the key's id (key list)")
    krotate.add_argument(
        "--grace",
        type=duration,
        default=dt.timedelta(hours=1),
        help="how long the old key keeps working (default 1h)",
    )
    krotate.add_argument(
        "--expires-in", type=duration, help="the new key stops working after this long"
    )
    krotate.set_defaults(func=cmd_key_rotate)

    user = sub.add_parser(
        "user",
        help="manage staff accounts (people)",
        description="Manage staff accounts: people who log in with a password (POST "
        "/v1/tenants/{slug}/session) and then work with the role's rights, as a key of that "
        "scope would. A new password is read from CIVICPULSE_NEW_PASSWORD when it is set, "
        "else asked for twice; never from the command line. It needs at least 12 "
        "characters. Every change is in the tenant's audit log (actor: cli).",
    )
    usub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    ucreate = usub.add_parser(
        "create",
        help="create a user",
        description="Create a staff account. Roles: staff (staff work on reports and "
        "issues) or admin (everything, user management included).",
    )
    ucreate.add_argument("--tenant", required=True, help="tenant slug")
    ucreate.add_argument(
        "--login", required=True, help="an email address or a name (stored lower-cased)"
    )
    ucreate.add_argument("--name", default="", help="display name")
    ucreate.add_argument(
        "--role", choices=["staff", "admin"], default="staff", help="default: staff"
    )
    ucreate.set_defaults(func=cmd_user_create)
    ureset = usub.add_parser(
        "reset-password",
        help="set a user's password; ends their sessions",
        description="Set a new password for a user: their sessions end at once and a "
        "lockout after failed logins is lifted.",
    )
    ureset.add_argument("--tenant", required=True, help="tenant slug")
    ureset.add_argument("--login", required=True, help="the user's login")
    ureset.set_defaults(func=cmd_user_reset_password)
    udisable = usub.add_parser(
        "disable",
        help="disable a user; ends their sessions",
        description="Disable a user: their sessions end at once and they can no longer log "
        "in. An admin enables them again with PATCH /v1/tenants/{slug}/users/{id} "
        '{"disabled": false}.',
    )
    udisable.add_argument("--tenant", required=True, help="tenant slug")
    udisable.add_argument("--login", required=True, help="the user's login")
    udisable.set_defaults(func=cmd_user_disable)
    ulist = usub.add_parser(
        "list",
        help="list a tenant's users",
        description="List a tenant's staff accounts, one a line, tab-separated: id, login, "
        "role, state (active, disabled, or locked until a time), display name.",
    )
    ulist.add_argument("--tenant", required=True, help="tenant slug")
    ulist.set_defaults(func=cmd_user_list)

    clf = sub.add_parser(
        "classifier",
        help="manage the local classifier",
        description="Manage the per-tenant local classifier.",
    )
    csub = clf.add_subparsers(dest="classifier_command", required=True, metavar="ACTION")
    train = csub.add_parser(
        "train",
        help="retrain a tenant's model now",
        description="Train the tenant's local classifier from its taxonomy and labelled reports "
        "(imports and staff corrections) and store it as a new version. The service also "
        "retrains by itself after CIVICPULSE_RETRAIN_AFTER_LABELS new labels.",
    )
    train.add_argument("--tenant", required=True, help="tenant slug")
    train.set_defaults(func=cmd_classifier_train)

    places = sub.add_parser(
        "places", help="manage a tenant's places", description="Manage a tenant's places."
    )
    psub = places.add_subparsers(dest="places_command", required=True, metavar="ACTION")
    pimport = psub.add_parser(
        "import",
        help="create or replace places from a CSV or JSON file",
        description="Create or replace a tenant's places (sites, buildings, floors, rooms, "
        "units, spaces, assets) from a file, all or nothing. CSV: a header with code, kind, "
        "name and optionally aliases ('|'-separated), parent, lat, lon. JSON: an array of "
        "objects with the same fields (aliases as a list), as POST /v1/tenants/{slug}/places "
        "takes. A row's parent may come later in the file.",
    )
    pimport.add_argument("file", help="a .csv or .json file")
    pimport.add_argument("--tenant", required=True, help="tenant slug")
    pimport.add_argument(
        "--max-errors", type=int, default=20, help="row errors to print (default 20)"
    )
    pimport.set_defaults(func=cmd_places_import)

    reports = sub.add_parser(
        "reports", help="manage a tenant's reports", description="Manage a tenant's reports."
    )
    rsub_reports = reports.add_subparsers(dest="reports_command", required=True, metavar="ACTION")
    retry = rsub_reports.add_parser(
        "retry",
        help="group the reports that failed to group again",
        description="Put a tenant's reports whose grouping failed too often (status failed, "
        "the reason in their grouping record) back in the grouping queue.",
    )
    retry.add_argument("--tenant", required=True, help="tenant slug")
    retry.set_defaults(func=cmd_reports_retry)

    rollups = sub.add_parser(
        "rollups",
        help="manage the analytics rollups",
        description="Manage the hourly rollups that dashboards and analytics read.",
    )
    rsub = rollups.add_subparsers(dest="rollups_command", required=True, metavar="ACTION")
    rebuild = rsub.add_parser(
        "rebuild",
        help="recompute a tenant's rollups from its issues",
        description="Delete a tenant's hourly rollups and recompute them from its issues, in "
        "one transaction (the service keeps them current by itself; this is for after a "
        "restore or a manual fix). Daily snapshots of closed days are never changed.",
    )
    rebuild.add_argument("--tenant", required=True, help="tenant slug")
    rebuild.set_defaults(func=cmd_rollups_rebuild)

    exp = sub.add_parser(
        "explain",
        help="EXPLAIN the hot queries",
        description="Run EXPLAIN for the service's hot queries exactly as it sends them (the "
        "application role under row-level security, the tenant's setting, parameters taken "
        "from the tenant's own data), each in a transaction that is rolled back, and print "
        "the plan tree with estimated and actual rows, buffers and time, the indexes used, "
        "and warnings: misestimates over 10x, sequential scans of large tables.",
    )
    exp.add_argument("--tenant", help="tenant slug (default: the one with the most issues)")
    which = exp.add_mutually_exclusive_group()
    which.add_argument("--query", help="one hot query by name")
    which.add_argument("--all", action="store_true", help="every hot query (the default)")
    exp.add_argument("--analyze", action="store_true", help="run them: EXPLAIN ANALYZE, BUFFERS")
    exp.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    exp.set_defaults(func=cmd_explain)

    db = sub.add_parser(
        "db", help="database reports; stop the embedded server", description="Database tools."
    )
    dsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    stats = dsub.add_parser(
        "stats",
        help="table and index sizes, index usage, top statements",
        description="Table and index sizes, index usage counts (pg_stat_user_indexes), "
        "indexes never used since the statistics were reset, and the top statements from "
        "pg_stat_statements when that extension is installed.",
    )
    stats.add_argument("--top", type=int, default=10, help="statements to list (10)")
    stats.add_argument("--format", choices=["text", "json"], default="text")
    stats.set_defaults(func=cmd_db_stats)
    dstop = dsub.add_parser(
        "stop",
        help="stop the embedded PostgreSQL",
        description="Stop the embedded PostgreSQL in CIVICPULSE_DATA_DIR (fast shutdown: "
        "open sessions are ended, nothing committed is lost), even if processes that used "
        "it were killed. The next command that needs it starts it again.",
    )
    dstop.set_defaults(func=cmd_db_stop)

    sd = sub.add_parser(
        "seed",
        help="generate realistic multi-tenant data",
        description="Generate realistic data for benchmarks and demos: tenants PREFIX-0000.. "
        "whose sizes fall off like cities' (a few large, many small), and reports drawn from "
        "the real records of a 311 sample (category, text, location jittered by ~50 m, time "
        "of day, time to close) on days within the last --days. Loaded with the importer "
        "(COPY, each record an issue of its own). The same --seed gives the same records; "
        "seeding again adds nothing.",
    )
    sd.add_argument("--reports", type=int, required=True, help="reports in all")
    sd.add_argument("--tenants", type=int, default=100, help="tenants (100)")
    sd.add_argument("--prefix", default="seed", help="tenant slug prefix (seed)")
    sd.add_argument("--seed", type=int, default=1, help="random seed (1)")
    sd.add_argument("--days", type=int, default=365, help="spread over this many days (365)")
    sd.add_argument(
        "--sample",
        default="../shared/data/la311_2020-01-01_to_03.csv",
        help="a MyLA311 export to draw records from",
    )
    sd.add_argument("--quiet", action="store_true", help="no progress bar")
    sd.set_defaults(func=cmd_seed)

    imp = sub.add_parser(
        "import",
        help="bulk-import a 311 export or an Open311 dump",
        description="Bulk-import reports from a file. Formats: la311 "
        "(MyLA311 export), sf311 (SF311 export: coordinates from Lat/Long, "
        "Latitude/Longitude or Point, times ISO 8601 or MM/DD/YYYY hh:mm:ss AM; the layout "
        "found is printed), nyc311 (NYC 311, in the portal's or the API's column naming, "
        "times read in New York), open311 (a GeoReport v2 requests.json or requests.xml; "
        "a closed request closes at its updated_datetime), csv (columns source_id, text, "
        "lat, lon, submitted_at and optional category, address, closed_at). Each record "
        "becomes an issue of its own with its real open and close times; a record without "
        "coordinates is kept when it has an address (grouped and geocoded by it). "
        "Re-importing a file adds nothing; bad rows are reported with their line numbers, "
        "and counted per reason; rows that close before they open are kept, flagged and "
        "left out of time-to-resolve figures. Exits 1 when nothing was imported (and with "
        "--strict, when any row was rejected).",
    )
    imp.add_argument("file", help="path of the file")
    imp.add_argument("--tenant", required=True, help="tenant slug")
    imp.add_argument(
        "--format", required=True, choices=["la311", "sf311", "nyc311", "open311", "csv"]
    )
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.add_argument("--strict", action="store_true", help="exit 1 when any row was rejected")
    imp.add_argument("--max-errors", type=int, default=20, help="row errors to print (20)")
    imp.set_defaults(func=cmd_import)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from civicpulse.logs import configure

    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure(settings.log_level, settings.log_format)
        func: Callable[[Settings, argparse.Namespace], int] = args.func
        return func(settings, args)
    except CivicPulseError as exc:
        where = f" ({exc.field})" if exc.field else ""
        print(f"civicpulse: error{where}: {exc.message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`civicpulse tenant list | head -1`): stop quietly, as other
        # command-line tools do, and keep Python from complaining about stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"civicpulse: database error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
