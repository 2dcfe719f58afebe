"""The group stage: attach each classified report to an open issue, or open a new one.

One transaction per claim (one tenant): lock the coarse regions the batch searches, fetch
the open issues in reach of the batch's reports and at their places, let the process pool
decide (engine.grouping), then insert new issues, link the reports, recompute the touched
issues' aggregates and log the events. Claims come in submission order, one per tenant at a
time (civicpulse_claim_grouping), so a tenant's reports are decided in the order they
arrived whatever order classification finished in. The region locks keep grouping race-safe
across processes even if a lease runs out mid-claim.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import msgspec
import structlog

from civicpulse import workflow
from civicpulse.db import issues as issues_repo
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.engine import grouping
from civicpulse.ids import uuid7
from civicpulse.metrics import Metrics
from civicpulse.pipeline.claimer import Claim
from civicpulse.pipeline.pressure import Share
from civicpulse.pipeline.stage import Retry, run_claims

log = structlog.get_logger(__name__)
STAGE = "group"
ACTOR = "system:grouping"
_json = msgspec.json.Encoder()


class LeaseLost(RuntimeError):
    """Another process took over some of this claim: roll the whole batch back."""


@dataclass(frozen=True, slots=True)
class GroupContext:
    pool: asyncpg.Pool
    executor: Executor
    metrics: Metrics
    owner: str
    retry: Retry | None = None
    on_done: Callable[[], None] = lambda: None
    share: Share | None = None  # rest between claims while intake needs the process


async def run(inbox: asyncio.Queue[Claim | None], ctx: GroupContext) -> None:
    """Group claims until a None sentinel arrives."""
    retry = ctx.retry or Retry(ctx.pool, ctx.owner)
    await run_claims(
        STAGE,
        inbox,
        lambda claim: group_claim(ctx, claim),
        ctx.metrics,
        ctx.on_done,
        retry,
        ctx.share,
    )


def stored_profile(c: grouping.Candidate) -> tuple[object, ...]:
    """What set_issue_profiles stores: where the issue is, its probability mixes, subtype."""
    return (c.place, c.alternatives, c.subtypes, c.scope, c.subtype)


async def group_claim(ctx: GroupContext, claim: Claim) -> int:
    """Group one claim; returns how many reports were linked to issues."""
    tenant_id = claim.tenant_id
    loop = asyncio.get_running_loop()
    async with tenant_transaction(ctx.pool, tenant_id) as conn:
        await issues_repo.keyed_plans(conn)
        reports = await issues_repo.load_classified_reports(conn, tenant_id, claim.ids, ctx.owner)
        if not reports:
            return 0
        overrides = await issues_repo.grouping_settings(conn, tenant_id)
        config = await tenants_repo.tenant_config(conn, tenant_id)
        nearest = int(config.get("grouping", {}).get("nearest", grouping.NEAREST))
        search = grouping.search_for(reports, overrides)
        await issues_repo.lock_regions(conn, tenant_id, sorted(search.regions))
        candidates = await issues_repo.open_issue_candidates(conn, tenant_id, search, nearest)
        not_dup = await issues_repo.not_duplicates_for(conn, tenant_id, [r.id for r in reports])
        decisions = await loop.run_in_executor(
            ctx.executor,
            grouping.group_batch,
            reports,
            candidates,
            overrides,
            not_dup,
            grouping.THRESHOLD,
            nearest,
        )

        by_id = {r.id: r for r in reports}
        # Each issue as it stands after the batch: a later report may complete its place
        # ("the TV", then "the TV in 412"), and its category and subtype mix follow its reports.
        final: dict[str, grouping.Candidate] = {}
        for d in decisions:
            assert d.after is not None
            final[d.issue] = d.after
        new_ids: dict[str, str] = {}
        founders: list[tuple[str, grouping.Report, grouping.Candidate]] = []
        for d in decisions:
            if d.created:
                new_ids[d.issue] = str(uuid7())
                founders.append((new_ids[d.issue], by_id[d.report_id], final[d.issue]))
        if founders:
            await issues_repo.insert_issues(conn, tenant_id, founders)
        before = {c.id: c for c in candidates}
        changed = [
            after
            for issue, after in final.items()
            if issue in before and stored_profile(after) != stored_profile(before[issue])
        ]
        if changed:
            await issues_repo.set_issue_profiles(conn, tenant_id, changed)
        links = []
        events = []
        for d in decisions:
            issue_id = new_ids.get(d.issue, d.issue)
            record: dict[str, object] = {
                "rule": d.rule,
                "created": d.created,
                "by": ctx.owner,
                "scores": None if d.scores is None else d.scores._asdict(),
            }
            if d.why_not is not None:
                # The best issue it did not join: staff see why it stands alone.
                record["why_not"] = {
                    "issue_id": new_ids.get(d.why_not.issue, d.why_not.issue),
                    "reason": d.why_not.reason,
                    "scores": d.why_not.scores._asdict(),
                }
            payload = _json.encode(record).decode()
            links.append((d.report_id, issue_id, payload))
            events.append(
                (
                    issue_id,
                    d.report_id,
                    "issue_created" if d.created else "report_attached",
                    "new" if d.created else None,
                    payload,
                )
            )
        if await issues_repo.attach_reports(conn, tenant_id, links, ctx.owner) != len(links):
            raise LeaseLost(f"claim of {len(links)} reports is no longer fully ours")
        await issues_repo.add_to_issue_aggregates(conn, tenant_id, [r for r, _, _ in links])
        await issues_repo.append_events(conn, tenant_id, ACTOR, events)
        created = set(new_ids.values())
        touched = {issue for _, issue, _ in links} - created
        await workflow.apply_to_issues(
            conn, tenant_id, sorted(created), sorted(touched), ACTOR, datetime.now(UTC)
        )
    ctx.metrics.grouped.labels("created").inc(len(founders))
    ctx.metrics.grouped.labels("attached").inc(len(links) - len(founders))
    return len(links)
