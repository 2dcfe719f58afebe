"""The `civicpulse` command. Thin: parse arguments, call the package, print the result."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


def cmd_key_create(settings: Settings, args: argparse.Namespace) -> int:
    from civicpulse.db import tenants

    async def run(dsn: str) -> str:
        conn = await _owner(dsn)
        try:
            return await tenants.create_api_key(conn, args.tenant, args.scope, args.label)
        finally:
            await conn.close()

    key = asyncio.run(run(resolve_dsn(settings)))
    print(key)
    print(
        f"(a {args.scope} key for {args.tenant}; only its hash is stored, so it cannot be "
        "shown again)",
        file=sys.stderr,
    )
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from civicpulse import imports

    path = Path(args.file)
    if not path.is_file():
        raise CivicPulseError(f"no such file: {path}", field="file")
    with path.open("rb") as fh:
        total = max(0, sum(1 for _ in fh) - 1)

    async def run(dsn: str) -> imports.ImportResult:
        async with _tenant_pool(settings, dsn, args.tenant) as (pool, tenant, cats):
            codes = {c.code: c.code for c in cats} | {c.service_code: c.code for c in cats}
            with tqdm(total=total, unit="rows", disable=args.quiet, file=sys.stderr) as bar:
                result = await imports.import_file(
                    pool,
                    tenant.id,
                    path,
                    args.format,
                    categories=codes,
                    timezone=tenant.timezone,
                    progress=bar.update,
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
    for line, field, message in result.errors[: args.max_errors]:
        print(f"{path}:{line}: {field}: {message}", file=sys.stderr)
    if len(result.errors) > args.max_errors:
        print(f"... and {len(result.errors) - args.max_errors} more row errors", file=sys.stderr)
    print(
        f"read {result.read} rows: {result.inserted} imported, "
        f"{result.skipped_existing} already present, {len(result.errors)} rejected "
        f"in {elapsed:.2f}s ({result.read / elapsed if elapsed else 0:,.0f} rows/s)"
    )
    return 0 if not result.errors or not args.strict else 1


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    import datetime as dt
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
            return await places_repo.upsert_places(conn, tenant.id, found)

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
    kcreate.set_defaults(func=cmd_key_create)

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
        help="bulk-import a CSV export",
        description="Bulk-import reports from a CSV file. Formats: la311 "
        "(MyLA311 export), sf311 (SF311 export), csv (columns source_id, text, "
        "lat, lon, submitted_at and optional category, address, closed_at). Each "
        "record becomes an issue of its own with its real open and close times. "
        "Re-importing a file adds nothing; bad rows are reported with their line numbers.",
    )
    imp.add_argument("file", help="path of the CSV file")
    imp.add_argument("--tenant", required=True, help="tenant slug")
    imp.add_argument("--format", required=True, choices=["la311", "sf311", "csv"])
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
