"""Ready to distribute by tenant (ops/citus/distribute.sql): the migrated schema read from
the catalog agrees with the plan. Every table is in the plan once; every primary key,
unique index and foreign key of a distributed table includes tenant_id, and its foreign
keys point at colocated tables (by tenant) or reference tables; no named query joins a
distributed table without tenant_id in the join."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from civicpulse.db.queries import all_queries

PLAN = Path(__file__).resolve().parents[2] / "ops" / "citus" / "distribute.sql"
NOT_DISTRIBUTED = {"civicpulse_migrations"}  # the coordinator's own bookkeeping


def plan() -> tuple[set[str], set[str]]:
    text = PLAN.read_text()
    reference = set(re.findall(r"create_reference_table\('(\w+)'\)", text))
    distributed = set(re.findall(r"create_distributed_table\('(\w+)', 'tenant_id'", text))
    return reference, distributed


async def test_the_schema_keeps_to_the_distribution_plan(db_url: str) -> None:
    reference, distributed = plan()
    assert not reference & distributed
    conn = await asyncpg.connect(db_url)
    try:
        tables = {
            r["relname"]
            for r in await conn.fetch(
                """SELECT c.relname FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"""
            )
        }
        assert tables - NOT_DISTRIBUTED == reference | distributed, (
            "every table needs its place in ops/citus/distribute.sql"
        )
        keys = await conn.fetch(
            """SELECT c.relname AS tbl, i.relname AS idx,
                      bool_or(a.attname = 'tenant_id') AS has_tenant
                 FROM pg_index x
                 JOIN pg_class c ON c.oid = x.indrelid
                 JOIN pg_class i ON i.oid = x.indexrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(x.indkey)
                WHERE n.nspname = 'public' AND (x.indisunique OR x.indisprimary)
                GROUP BY 1, 2"""
        )
        foreign = await conn.fetch(
            """SELECT con.conrelid::regclass::text AS tbl, con.confrelid::regclass::text AS ref,
                      con.conname,
                      EXISTS (SELECT 1 FROM unnest(con.conkey) k
                                JOIN pg_attribute a ON a.attrelid = con.conrelid
                                                   AND a.attnum = k
                               WHERE a.attname = 'tenant_id') AS has_tenant
                 FROM pg_constraint con
                WHERE con.contype = 'f' AND con.connamespace = 'public'::regnamespace"""
        )
    finally:
        await conn.close()
    wrong = [f"{k['tbl']}.{k['idx']}" for k in keys
             if k["tbl"] in distributed and not k["has_tenant"]]  # fmt: skip
    assert not wrong, f"unique keys without tenant_id: {wrong}"
    for fk in foreign:
        if fk["tbl"] not in distributed:
            continue
        if fk["ref"] in reference:
            continue  # every worker holds a reference table
        assert fk["ref"] in distributed and fk["has_tenant"], (
            f"{fk['tbl']}.{fk['conname']} points across tenants"
        )


# `JOIN table alias ON condition`, up to the next clause.
_JOIN = re.compile(
    r"\bJOIN\s+(\w+)\s+(?:AS\s+)?(\w+)?\s*(ON\b.*?|USING\s*\(.*?\))"
    r"(?=\bJOIN\b|\bWHERE\b|\bGROUP\b|\bORDER\b|\bLIMIT\b|\bCROSS\b|\bLEFT\b|\bFULL\b|"
    r"\bRETURNING\b|\)\s*(?:SELECT|,|$)|$)",
    re.S | re.I,
)


def cross_tenant_joins(queries: dict[str, str], distributed: set[str]) -> tuple[int, list[str]]:
    """(joins of distributed tables seen, those without tenant_id in their condition)."""
    seen, wrong = 0, []
    for name, sql in queries.items():
        text = re.sub(r"--[^\n]*", "", sql)
        for table, _alias, condition in _JOIN.findall(text):
            if table in distributed:
                seen += 1
                if "tenant_id" not in condition:
                    wrong.append(f"{name}: JOIN {table} {condition.strip()[:80]}")
    return seen, wrong


def test_no_query_joins_a_distributed_table_across_tenants() -> None:
    _, distributed = plan()
    seen, wrong = cross_tenant_joins(dict(all_queries()), distributed)
    assert seen >= 12, seen  # the scan finds the project's joins (15 when written)
    assert not wrong, "\n".join(wrong)
    # And it would see one that forgot the tenant.
    bad = {"bad": "SELECT 1 FROM issues i JOIN reports r ON r.issue_id = i.id WHERE i.id = $1"}
    assert cross_tenant_joins(bad, distributed)[1] == ["bad: JOIN reports ON r.issue_id = i.id"]
