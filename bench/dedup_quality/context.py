"""Machine context printed first by the dedup benchmarks (and recorded in their results)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def _first(path: str, key: str) -> str:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def git_state() -> dict[str, str]:
    """The commit, whether the tree is dirty, and a hash of the service's files on disk."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    digest = hashlib.sha1()
    for path in [
        ROOT / "pyproject.toml",
        *sorted((ROOT / "civicpulse").rglob("*")),
        *sorted((ROOT / "schema").rglob("*")),
    ]:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return {"commit": head or "-", "service_files_sha1": digest.hexdigest()[:12]}


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "-"


def machine_context(extra: dict[str, object] | None = None) -> dict[str, object]:
    mem_kb = int(_first("/proc/meminfo", "MemTotal").split()[0] or 0)
    out: dict[str, object] = {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "load_average_1_5_15": load_average(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": ", ".join(
            f"{m} {_version(m)}" for m in ("civicpulse", "asyncpg", "msgspec", "matplotlib")
        ),
        "git": git_state(),
    }
    out.update(extra or {})
    return out


def print_context(ctx: dict[str, object]) -> None:
    print("== machine context")
    for key, value in ctx.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        print(f"  {key:<22} {value}")
    print(flush=True)
