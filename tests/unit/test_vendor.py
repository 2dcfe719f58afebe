"""The vendored browser libraries are the ones ops/vendor.sh checked against the npm
registry's integrity: each folder's files match its SHA256SUMS, no file is unlisted, and
every file the lock names is there."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lock() -> list[tuple[str, list[str]]]:
    out = []
    for line in (ROOT / "ops" / "vendor.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            _, _, _, dest, *files = line.split()
            out.append((dest, [f.split(":")[1] for f in files]))
    return out


def test_vendored_files_match_their_sums_and_the_lock() -> None:
    folders: dict[str, set[str]] = {}
    for dest, files in lock():
        folders.setdefault(dest, set()).update(files)
    assert "civicpulse/api/static/vendor" in folders
    for dest, named in folders.items():
        folder = ROOT / dest
        sums = {}
        for line in (folder / "SHA256SUMS").read_text().splitlines():
            digest, name = line.split(maxsplit=1)
            sums[name.strip()] = digest
        present = {p.name for p in folder.iterdir() if p.name != "SHA256SUMS"}
        assert set(sums) == present == named, dest
        for name, digest in sums.items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
