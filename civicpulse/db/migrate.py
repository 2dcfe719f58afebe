"""Apply the numbered plain-SQL migrations in schema/.

All pending migrations run in one transaction under an advisory lock, so two processes
starting at once apply each migration exactly once; an applied file whose text changed is
an error rather than a silent drift.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from civicpulse.errors import CivicPulseError

# Any constant shared by every CivicPulse process; chosen once, never changed.
MIGRATION_LOCK_KEY = 0x43_69_76_69_63_50  # "CivicP"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(CivicPulseError):
    code = "migration"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def schema_dir(override: Path | None = None) -> Path:
    """Where the migrations are: the override, or schema/ beside the package."""
    if override is not None:
        return override
    return Path(__file__).resolve().parents[2] / "schema"


def load(directory: Path) -> list[Migration]:
    """The migrations in version order; gaps and duplicates are errors."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {expected:04d} is missing in {directory}")
    if not found:
        raise MigrationError(f"no migrations found in {directory}")
    return found


async def apply(conn: asyncpg.Connection, migrations: list[Migration]) -> list[Migration]:
    """Apply what is pending; return the migrations applied by this call."""
    applied_now: list[Migration] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS civicpulse_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = await conn.fetch("SELECT version, checksum FROM civicpulse_migrations")
        done = {row["version"]: row["checksum"] for row in rows}
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} changed after "
                        "it was applied; add a new migration instead"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO civicpulse_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration)
    return applied_now


async def migrate(dsn: str, directory: Path | None = None) -> list[Migration]:
    """Connect as the owner (no role switch) and apply pending migrations."""
    conn = await asyncpg.connect(dsn)
    try:
        return await apply(conn, load(schema_dir(directory)))
    finally:
        await conn.close()
