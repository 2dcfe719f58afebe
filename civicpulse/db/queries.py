"""Named SQL blocks, parsed once from the .sql files beside the repositories.

A file holds blocks that start with a line `-- name: some_query`; the text up to the next
such line is the query. Repositories look queries up by their own function's name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path

_SQL_DIR = Path(__file__).parent / "sql"
_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split a file's text into {name: query}."""
    out: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = match.group(1)
        if name in out:
            raise ValueError(f"query {name} is defined twice")
        if not body:
            raise ValueError(f"query {name} is empty")
        out[name] = body
    return out


@cache
def all_queries() -> Mapping[str, str]:
    """Every named query of the package, loaded once."""
    out: dict[str, str] = {}
    for path in sorted(_SQL_DIR.glob("*.sql")):
        for name, body in parse(path.read_text()).items():
            if name in out:
                raise ValueError(f"query {name} is defined in two files")
            out[name] = body
    return out


def q(name: str) -> str:
    """The query text for a name; a KeyError names a missing query at first use."""
    return all_queries()[name]
