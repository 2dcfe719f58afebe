"""Replay a labelled stream through the engine as the service runs it, without a database.

The same pure functions the pipeline's stages call, in the same order: the classify stage's
`textmodel.classify` (the tenant's local model from its template taxonomy, the default
vocabulary and any labels) and place resolution (`places.resolve` against the tenant's
registered places), the group stage's scope (`grouping.report_scope`), then
`grouping.group_batch` on claims of `batch` reports in submission order, with the open issues
carried forward between claims as the database holds them. `tests/e2e` and `run.py
--service` check that the service itself gives the same decisions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import NamedTuple

from bench.judgement.streams import Item, PlaceNode, Stream
from civicpulse.engine import geo, grouping, places, textmodel
from civicpulse.engine.grouping import Candidate, Report

TEMPLATES = {"city": "taxonomy.json", "facility": "taxonomy_facility.json"}
LONGEST_LOOKBACK_S = max(
    grouping.FALLBACK_LOOKBACK_S,
    *grouping.CATEGORY_LOOKBACK_S.values(),
    *grouping.KIND_LOOKBACK_S.values(),
)


class Category(NamedTuple):
    code: str
    kind: str
    scope: str
    entry: textmodel.TaxonomyEntry


def taxonomy(template: str) -> dict[str, Category]:
    raw = json.loads(resources.files("civicpulse.data").joinpath(TEMPLATES[template]).read_text())
    return {
        t["code"]: Category(
            t["code"],
            t["kind"],
            t.get("scope", "local"),
            textmodel.TaxonomyEntry(
                t["code"], t["name"], t["description"], tuple(t["keywords"]), t["kind"]
            ),
        )
        for t in raw
    }


def place_index(nodes: Sequence[PlaceNode]) -> places.Index:
    return places.compile_index(
        [places.Node(n.code, n.kind, n.name, n.aliases, n.parent, n.lat, n.lon) for n in nodes]
    )


@dataclass
class Tenant:
    """What the service knows about a tenant: its model, categories, places and settings."""

    categories: dict[str, Category]
    model: textmodel.Model
    index: places.Index
    rooms_by_number: bool
    nearest: int

    @classmethod
    def of(cls, stream: Stream, labelled: Sequence[tuple[str, str]] = ()) -> Tenant:
        categories = taxonomy(stream.taxonomy)
        blob, _ = textmodel.train([c.entry for c in categories.values()], labelled)
        return cls(
            categories,
            textmodel.load(blob),
            place_index(stream.places),
            stream.taxonomy == "facility",
            grouping.FACILITY_NEAREST if stream.taxonomy == "facility" else grouping.NEAREST,
        )


def as_report(tenant: Tenant, item: Item) -> Report:
    """A report as the group stage loads it: classified, placed and scoped."""
    names = {c: c for c in tenant.categories}
    pred, _ = textmodel.classify(tenant.model, item.text, None, names)
    category = tenant.categories.get(pred.category) or tenant.categories["other"]
    scope = grouping.report_scope(category.code, category.scope, pred.subtype)
    where = places.resolve(
        item.text, None, item.place, item.lat, item.lon, tenant.index, tenant.rooms_by_number
    )
    return Report(
        item.id,
        item.lat,
        item.lon,
        category.code,
        category.kind,
        item.text,
        item.t,
        pred.severity,
        pred.subtype,
        scope,
        where,
        pred.alternatives,
        pred.subtypes,
        grouping.building_likelihood(category.code, category.scope, pred.subtypes, pred.subtype),
    )


class Outcome(NamedTuple):
    issue_of: dict[str, str]  # report id -> issue id
    reports: list[Report]
    decisions: list[grouping.Decision]


def run_engine(
    stream: Stream,
    tenant: Tenant,
    batch: int = 200,
    threshold: float = grouping.THRESHOLD,
    reports: list[Report] | None = None,
) -> Outcome:
    """Group the stream as the service would, claim by claim."""
    reports = reports if reports is not None else [as_report(tenant, i) for i in stream.items]
    issues: dict[str, Candidate] = {}
    issue_of: dict[str, str] = {}
    decisions: list[grouping.Decision] = []
    made = 0
    for start in range(0, len(reports), batch):
        claim = reports[start : start + batch]
        search = grouping.search_for(claim, {})
        wanted = {p.category for p in search.probes}
        lo = min(r.t for r in claim) - LONGEST_LOOKBACK_S
        # A superset of what open_issue_candidates returns: group_batch keeps the nearest
        # few and the same-place ones of whatever it is given, as it does with the database's.
        cands = [c for c in issues.values() if c.category in wanted and c.last_t >= lo]
        out = grouping.group_batch(claim, cands, {}, set(), threshold, tenant.nearest)
        real: dict[str, str] = {}
        for d in out:
            if d.created:
                made += 1
                real[d.issue] = f"i{made}"
        for d in out:
            issue = real.get(d.issue, d.issue)
            issue_of[d.report_id] = issue
            # The issue as the database holds it after the claim (group stage: insert_issues,
            # add_to_issue_aggregates, set_issue_profiles).
            assert d.after is not None
            issues[issue] = d.after._replace(id=issue)
            decisions.append(d._replace(issue=issue))
    return Outcome(issue_of, reports, decisions)


def baseline(stream: Stream, reports: Sequence[Report], radius_m: float = 250.0) -> dict[str, str]:
    """Today's practice: same category (the service's own), an open issue (last report under
    30 days old) within 250 m of the issue's first report, the nearest."""
    open_issues: list[tuple[str, str, float, float, float]] = []  # id, category, lat, lon, last
    issue_of: dict[str, str] = {}
    for r in reports:
        best, best_d = None, radius_m
        for n, (_, cat, lat, lon, last) in enumerate(open_issues):
            if cat != r.category or r.t - last > 30 * 86400:
                continue
            d = geo.distance_m(r.lat, r.lon, lat, lon)
            if d <= best_d:
                best, best_d = n, d
        if best is None:
            open_issues.append((f"b{len(open_issues)}", r.category, r.lat, r.lon, r.t))
            issue_of[r.id] = open_issues[-1][0]
        else:
            iid, cat, lat, lon, _ = open_issues[best]
            open_issues[best] = (iid, cat, lat, lon, r.t)
            issue_of[r.id] = iid
    return issue_of
