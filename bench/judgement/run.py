"""Judgement: how well the engine groups and classifies, on streams nobody tuned on.

    .venv/bin/python -m bench.judgement.run                       # replay, about 2 minutes
    .venv/bin/python -m bench.judgement.run --service             # + the real service, ~10 min
    .venv/bin/python -m bench.judgement.run --help

Every set is a labelled stream (streams.py) drawn with the scoring seed, which no fitting
used. Sets are named by tenant, city or building, and wording family; the tuning split is LA,
the hotel and the resort worded by families a and b. Everything else is held out: family c
(never read by anyone tuning), San Francisco (another city), the campus and the office (other
kinds of tenant). For each set:

* grouping: pairwise and B-cubed precision, recall and F1 of the engine, as the service runs
  it (replay.py: the stages' own functions, claims of 200 in submission order); beside it
  today's practice, "same category within 250 m" on the service's own categories, and the
  same rule on the true categories (a diagnostic: what the rule would do with a perfect
  classifier);
* classification: accuracy and macro-F1 of the tenant's model without training (taxonomy and
  default vocabulary), and with tenant training: labels from half the set's wordings (each
  family's even-numbered ones, as a tenant's staff corrections would be), scored on the other
  half, so no scored text was trained on; the untrained model is scored on that same half;
* calibration on the held-out wordings: confidence bins against accuracy.

With `--service`, the held-out sets also run through the real service as a new user would:
a fresh database, `civicpulse serve` as a separate process, tenants and keys from the CLI,
places through `civicpulse places import`, every report POSTed in order, each report's
issue read back over HTTP. Results: bench/results/judgement.{md,json,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.dedup_quality.context import RESULTS, machine_context, print_context
from bench.judgement import metrics, replay
from bench.judgement.streams import (
    CityConfig,
    FacilityConfig,
    Item,
    Stream,
    city_stream,
    facility_stream,
)
from civicpulse.engine import grouping, textmodel

SCORING_SEED = 201
TUNING = ("a", "b")
HELD_OUT = ("c",)
TARGET_F1 = 0.90
TARGET_PRECISION = 0.95
TARGET_ACCURACY = 0.90


@dataclass
class Set:
    name: str
    split: str  # tuning | held-out
    stream: Stream


def build_sets(seed: int) -> list[Set]:
    def fam(f: tuple[str, ...]) -> str:
        return "+".join(f)

    out: list[Set] = []
    for city, families, split in (
        ("la", TUNING, "tuning"),
        ("la", HELD_OUT, "held-out wording"),
        ("sf", TUNING, "held-out city"),
        ("sf", HELD_OUT, "held-out city and wording"),
    ):
        s = city_stream(CityConfig(city, families, seed))
        out.append(Set(f"city {city.upper()} · {fam(families)}", split, s))
    for tenant, families, split in (
        ("hotel", TUNING, "tuning"),
        ("hotel", HELD_OUT, "held-out wording"),
        ("campus", TUNING, "held-out tenant"),
        ("campus", HELD_OUT, "held-out tenant and wording"),
        ("office", TUNING, "held-out tenant"),
        ("office", HELD_OUT, "held-out tenant and wording"),
    ):
        for registered in (True, False):
            s = facility_stream(
                FacilityConfig(
                    tenant, families, seed + (0 if registered else 1000), registered=registered
                )
            )
            places = "places registered" if registered else "no places"
            out.append(Set(f"{tenant} · {fam(families)} · {places}", split, s))
    return out


# -- classification ----------------------------------------------------------------------------


def classification(st: Stream, reports: Sequence[grouping.Report]) -> dict[str, Any]:
    truth = [i.truth.category for i in st.items]
    untrained = metrics.classification_scores(truth, [r.category for r in reports])
    train_items = [i for i in st.items if i.wording % 2 == 0]
    test_idx = [n for n, i in enumerate(st.items) if i.wording % 2 == 1]
    tenant = replay.Tenant.of(st, [(i.text, i.truth.category) for i in train_items])
    names = {c: c for c in tenant.categories}
    trained_pred = [
        textmodel.classify(tenant.model, st.items[n].text, None, names)[0].category
        for n in test_idx
    ]
    test_truth = [truth[n] for n in test_idx]
    return {
        "untrained": untrained,
        "untrained_on_test_half": metrics.classification_scores(
            test_truth, [reports[n].category for n in test_idx]
        ),
        "trained": metrics.classification_scores(test_truth, trained_pred)
        | {"labels": len(train_items)},
    }


def calibration(
    items: Sequence[Item], reports: Sequence[grouping.Report], tenant: replay.Tenant
) -> list[dict[str, float]]:
    bins: dict[int, list[tuple[float, bool]]] = {}
    for item, r in zip(items, reports, strict=True):
        conf = dict(r.alternatives).get(r.category, 0.0)
        bins.setdefault(min(9, int(conf * 10)), []).append(
            (conf, r.category == item.truth.category)
        )
    return [
        {
            "bin": b / 10,
            "reports": len(xs),
            "confidence": round(sum(c for c, _ in xs) / len(xs), 3),
            "accuracy": round(sum(1 for _, ok in xs if ok) / len(xs), 3),
        }
        for b, xs in sorted(bins.items())
    ]


# -- grouping ----------------------------------------------------------------------------------


def with_true_categories(st: Stream, reports: Sequence[grouping.Report]) -> list[grouping.Report]:
    return [r._replace(category=i.truth.category) for i, r in zip(st.items, reports, strict=True)]


def score_set(s: Set) -> dict[str, Any]:
    started = time.perf_counter()
    tenant = replay.Tenant.of(s.stream)
    reports = [replay.as_report(tenant, i) for i in s.stream.items]
    engine = replay.run_engine(s.stream, tenant, reports=reports)
    base = replay.baseline(s.stream, reports)
    base_true = replay.baseline(s.stream, with_true_categories(s.stream, reports))
    out = {
        "name": s.name,
        "split": s.split,
        "tenant": s.stream.tenant,
        "reports": len(s.stream.items),
        "problems": len({i.truth.problem for i in s.stream.items}),
        "engine": metrics.grouping_scores(s.stream.items, engine.issue_of),
        "baseline": metrics.grouping_scores(s.stream.items, base),
        "baseline_true_categories": metrics.grouping_scores(s.stream.items, base_true),
        "classification": classification(s.stream, reports),
        "seconds": round(time.perf_counter() - started, 1),
    }
    e, b = out["engine"], out["baseline"]
    out["meets_target"] = (
        e["pair_precision"] >= TARGET_PRECISION
        and e["pair_f1"] >= TARGET_F1
        and e["pair_f1"] > b["pair_f1"]
    )
    out["_reports"] = reports
    out["_tenant"] = tenant
    return out


# -- the real service --------------------------------------------------------------------------


def _run(cmd: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


async def _create_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def through_service(sets: Sequence[Set], admin_url: str) -> dict[str, dict[str, Any]]:
    """Run sets through `civicpulse serve` on a fresh database, as a new user would."""
    name = f"bench_judgement_{int(time.time())}"
    asyncio.run(_create_database(admin_url, name))
    dsn = admin_url.rsplit("/", 1)[0] + f"/{name}"
    exe = str(Path(sys.executable).parent / "civicpulse")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVICPULSE_")}
    env |= {
        "CIVICPULSE_DATABASE_URL": dsn,
        "CIVICPULSE_AUTH_CACHE_SECONDS": "0",
        "CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND": "0",
    }
    port = 18_000 + os.getpid() % 1000
    keys: dict[str, str] = {}
    scratch = Path(tempfile.mkdtemp(prefix="judgement-"))
    for n, s in enumerate(sets):
        slug = f"j{n}-{s.stream.tenant}"
        template = "city" if s.stream.taxonomy == "city" else "facility"
        _run([exe, "tenant", "create", slug, "--name", s.name, "--template", template], env)
        created = _run([exe, "key", "create", "--tenant", slug, "--scope", "admin"], env)
        keys[slug] = created.split()[0]
        if s.stream.places:
            path = scratch / f"{slug}.json"
            path.write_text(json.dumps([
                {"code": p.code, "kind": p.kind, "name": p.name, "aliases": list(p.aliases),
                 **({"parent": p.parent} if p.parent else {}),
                 **({"lat": p.lat, "lon": p.lon} if p.lat is not None else {})}
                for p in s.stream.places
            ]))  # fmt: skip
            _run([exe, "places", "import", str(path), "--tenant", slug], env)
    server = subprocess.Popen(
        [exe, "serve", "--no-demo", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return asyncio.run(_drive(sets, keys, port))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        shutil.rmtree(scratch, ignore_errors=True)


async def _drive(sets: Sequence[Set], keys: dict[str, str], port: int) -> dict[str, Any]:
    import httpx

    results: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for _ in range(300):
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        for n, s in enumerate(sets):
            slug = f"j{n}-{s.stream.tenant}"
            started = time.perf_counter()
            results[s.name] = await _post_and_read(client, slug, keys[slug], s.stream)
            results[s.name]["seconds"] = round(time.perf_counter() - started, 1)
            print(f"  service: {s.name}: {results[s.name]['engine']}", flush=True)
    return results


async def _post_and_read(client: Any, slug: str, key: str, st: Stream) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    ids: dict[str, str] = {}
    for item in st.items:
        body: dict[str, Any] = {
            "text": item.text,
            "lat": item.lat,
            "lon": item.lon,
            "submitted_at": datetime.fromtimestamp(item.t, UTC).isoformat(),
        }
        if item.place:
            body["place"] = item.place
        r = await client.post(f"/v1/tenants/{slug}/reports", json=body, headers=headers)
        if r.status_code != 202:
            raise RuntimeError(f"POST refused: {r.status_code} {r.text}")
        ids[r.json()["id"]] = item.id
    issue_of: dict[str, str] = {}
    deadline = time.monotonic() + 600
    while len(issue_of) < len(ids) and time.monotonic() < deadline:
        issue_of.clear()
        cursor = None
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            page = (
                await client.get(f"/v1/tenants/{slug}/reports", params=params, headers=headers)
            ).json()
            for row in page["items"]:
                if row["status"] == "grouped" and row["issue_id"]:
                    issue_of[ids[row["id"]]] = row["issue_id"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if len(issue_of) < len(ids):
            await asyncio.sleep(1.0)
    if len(issue_of) < len(ids):
        raise RuntimeError(f"{len(ids) - len(issue_of)} reports never grouped")
    return {"engine": metrics.grouping_scores(st.items, issue_of)}


# -- report ------------------------------------------------------------------------------------


def _pr(m: dict[str, float]) -> str:
    return f"{m['pair_precision']:.3f} / {m['pair_recall']:.3f} / **{m['pair_f1']:.3f}**"


def render(payload: dict[str, Any]) -> str:
    lines = [
        "# Judgement: grouping and classification on streams nobody tuned on",
        "",
        f"Command: `{payload['command']}`",
        "",
        "How the sets are built, what is held out and why: `bench/judgement/README.md`. "
        f"Targets: pairwise F1 >= {TARGET_F1} at pairwise precision >= {TARGET_PRECISION}, "
        "above the 250 m baseline on each set; classification accuracy >= "
        f"{TARGET_ACCURACY} on held-out wordings without tenant training.",
        "",
        "## Machine",
        "",
    ]
    for k, v in payload["machine"].items():
        lines.append(f"- {k}: {v}")
    lines += ["", "## Findings", ""]
    lines += [f"- {f}" for f in payload["findings"]]
    lines += [
        "",
        "## Grouping (pairwise P / R / **F1**)",
        "",
        "| set | split | reports | problems | engine | B3 F1 | baseline: same category, 250 m "
        "| B3 F1 | baseline on true categories | target |",
        "|---|---|---:|---:|---|---:|---|---:|---|---|",
    ]
    for r in payload["sets"]:
        e, b, t = r["engine"], r["baseline"], r["baseline_true_categories"]
        lines.append(
            f"| {r['name']} | {r['split']} | {r['reports']} | {r['problems']} | {_pr(e)} | "
            f"{e['bcubed_f1']:.3f} | {_pr(b)} | {b['bcubed_f1']:.3f} | {_pr(t)} | "
            f"{'met' if r['meets_target'] else 'missed'} |"
        )
    if payload.get("service"):
        lines += [
            "",
            "## Through the real service (`--service`)",
            "",
            "A fresh database, `civicpulse serve` in its own process, tenants, keys and places "
            "from the CLI, every report POSTed in submission order, each report's issue read "
            "back over HTTP.",
            "",
            "| set | service: pairwise P / R / **F1** | B3 F1 "
            "| replay: pairwise P / R / **F1** | seconds |",
            "|---|---|---:|---|---:|",
        ]
        by_name = {r["name"]: r for r in payload["sets"]}
        for name, r in payload["service"].items():
            lines.append(
                f"| {name} | {_pr(r['engine'])} | {r['engine']['bcubed_f1']:.3f} | "
                f"{_pr(by_name[name]['engine'])} | {r['seconds']} |"
            )
    lines += [
        "",
        "## Classification",
        "",
        "Without training: the tenant's model from its template taxonomy and the default "
        "vocabulary, on every report of the set. With training: labels from half the set's "
        "wordings, scored on the other half (no scored text was trained on); the untrained "
        "model on that same half beside it.",
        "",
        "| set | split | untrained accuracy | untrained macro-F1 | same half, untrained | "
        "trained (labels) | trained macro-F1 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in payload["sets"]:
        c = r["classification"]
        lines.append(
            f"| {r['name']} | {r['split']} | {c['untrained']['accuracy']:.3f} | "
            f"{c['untrained']['macro_f1']:.3f} | {c['untrained_on_test_half']['accuracy']:.3f} | "
            f"{c['trained']['accuracy']:.3f} ({c['trained']['labels']}) | "
            f"{c['trained']['macro_f1']:.3f} |"
        )
    lines += [
        "",
        "## Calibration on held-out wordings (family c, every set)",
        "",
        "| confidence | reports | mean confidence | accuracy |",
        "|---|---:|---:|---:|",
    ]
    for b in payload["calibration_held_out"]:
        lines.append(
            f"| {b['bin']:.1f}-{b['bin'] + 0.1:.1f} | {b['reports']} | {b['confidence']:.3f} | "
            f"{b['accuracy']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def findings(payload: dict[str, Any]) -> list[str]:
    out = []
    held = [r for r in payload["sets"] if r["split"] != "tuning"]
    for group, test in (
        ("city", lambda r: r["tenant"] == "city"),
        ("facility", lambda r: r["tenant"] != "city"),
    ):
        rows = [r for r in held if test(r)]
        met = sum(1 for r in rows if r["meets_target"])
        f1 = sorted(r["engine"]["pair_f1"] for r in rows)
        p = sorted(r["engine"]["pair_precision"] for r in rows)
        above = sum(1 for r in rows if r["engine"]["pair_f1"] > r["baseline"]["pair_f1"])
        out.append(
            f"Held-out {group} sets: target met on {met} of {len(rows)}; pairwise F1 "
            f"{f1[0]:.3f}-{f1[-1]:.3f} (median {f1[len(f1) // 2]:.3f}), precision "
            f"{p[0]:.3f}-{p[-1]:.3f}; above the 250 m baseline on {above} of {len(rows)}."
        )
    acc = [
        r["classification"]["untrained"]["accuracy"]
        for r in held
        if "c" in r["name"].split(" · ")[1].split("+")
    ]
    out.append(
        "Classification on held-out wordings (family c) without tenant training: accuracy "
        f"{min(acc):.3f}-{max(acc):.3f} over {len(acc)} sets (target {TARGET_ACCURACY})."
    )
    return out


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["sets"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 0.42 * len(rows) + 2))
    y = list(range(len(rows)))[::-1]
    for offset_, key, label in (
        (0.2, "engine", "engine"),
        (-0.2, "baseline", "same category, 250 m"),
    ):
        ax1.barh(
            [v + offset_ for v in y], [r[key]["pair_f1"] for r in rows], height=0.38, label=label
        )
    ax1.scatter(
        [r["engine"]["pair_precision"] for r in rows],
        [v + 0.2 for v in y],
        marker="|",
        color="k",
        s=120,
        label="engine precision",
        zorder=3,
    )
    ax1.axvline(TARGET_F1, ls="--", c="gray", lw=0.8)
    ax1.set_yticks(y, [f"{r['name']} ({r['split']})" for r in rows], fontsize=8)
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("pairwise F1")
    ax1.set_title("Grouping", pad=28)
    ax1.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, frameon=False)
    ax2.barh(
        [v + 0.2 for v in y],
        [r["classification"]["untrained"]["accuracy"] for r in rows],
        height=0.38,
        label="no tenant training",
    )
    ax2.barh(
        [v - 0.2 for v in y],
        [r["classification"]["trained"]["accuracy"] for r in rows],
        height=0.38,
        label="trained on half the wordings",
    )
    ax2.axvline(TARGET_ACCURACY, ls="--", c="gray", lw=0.8)
    ax2.set_yticks(y, ["" for _ in rows])
    ax2.set_xlim(0, 1)
    ax2.set_xlabel("classification accuracy")
    ax2.set_title("Classification", pad=28)
    ax2.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.judgement.run",
        description="Score grouping and classification on held-out labelled streams "
        "(see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--seed", type=int, default=SCORING_SEED, help="scoring seed")
    ap.add_argument(
        "--service", action="store_true", help="also run the held-out sets through the real service"
    )
    ap.add_argument(
        "--admin-url",
        default=os.environ.get(
            "CIVICPULSE_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server to create the --service database on",
    )
    ap.add_argument(
        "--out", type=Path, default=RESULTS / "judgement", help="results path, without suffix"
    )
    args = ap.parse_args(argv)

    ctx = machine_context({"scoring_seed": args.seed})
    print_context(ctx)
    sets = build_sets(args.seed)
    scored = []
    held_items: list[Item] = []
    held_reports: list[grouping.Report] = []
    for s in sets:
        r = score_set(s)
        if s.name.split(" · ")[1] == "c":
            held_items.extend(s.stream.items)
            held_reports.extend(r["_reports"])
        e, b = r["engine"], r["baseline"]
        print(
            f"{s.name:42} {s.split:28} engine P {e['pair_precision']:.3f} R {e['pair_recall']:.3f} "
            f"F1 {e['pair_f1']:.3f} | baseline F1 {b['pair_f1']:.3f} | class. acc "
            f"{r['classification']['untrained']['accuracy']:.3f} ({r['seconds']}s)",
            flush=True,
        )
        scored.append(r)
    payload: dict[str, Any] = {
        "command": "python -m bench.judgement.run" + (" --service" if args.service else ""),
        "machine": ctx,
        "threshold": grouping.THRESHOLD,
        "model": grouping.MODEL.trained,
        "sets": [{k: v for k, v in r.items() if not k.startswith("_")} for r in scored],
        "calibration_held_out": calibration(held_items, held_reports, scored[0]["_tenant"]),
    }
    if args.service:
        chosen = [s for s in sets if s.split != "tuning" and s.name.split(" · ")[1] == "c"]
        payload["service"] = through_service(chosen, args.admin_url)
    payload["findings"] = findings(payload)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    args.out.with_suffix(".md").write_text(render(payload))
    plot(payload, args.out.with_suffix(".png"))
    print("\n".join(payload["findings"]))
    print(f"wrote {args.out}.md, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
