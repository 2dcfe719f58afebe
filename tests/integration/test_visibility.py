"""The public-view rule has two spellings, Python (civicpulse.visibility.View.shows, for rows
in hand: stream frames, single issues) and SQL (civicpulse_shown, for queries). They must
be one rule: every combination is asked of both."""

from __future__ import annotations

import itertools
import json

import asyncpg

from civicpulse.visibility import STAFF, View

VISIBILITIES = ("public", "private", None)
CATEGORIES = ("pothole", "graffiti", None)
AREAS = ("north", "south", None)
VIEWS = (
    STAFF,
    View(False),
    View(False, frozenset({"pothole"})),
    View(False, None, frozenset({"north"})),
    View(False, frozenset({"pothole", "graffiti"}), frozenset({"north"})),
    View(False, frozenset(), None),  # no category is public
)


async def test_python_and_sql_agree_on_every_combination(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        cases = list(itertools.product(VIEWS, VISIBILITIES, CATEGORIES, AREAS))
        rows = await conn.fetch(
            """SELECT civicpulse_shown(c.staff, c.categories::text[], c.areas::text[],
                                       c.visibility, c.category, c.area) AS shown
                 FROM jsonb_to_recordset($1::jsonb)
                      AS c (n int, staff boolean, categories text[], areas text[],
                            visibility text, category text, area text)
                ORDER BY c.n""",
            _as_json(cases),
        )
    finally:
        await conn.close()
    assert len(rows) == len(cases)
    disagreements = [
        (view, visibility, category, area, row["shown"])
        for (view, visibility, category, area), row in zip(cases, rows, strict=True)
        if view.shows(visibility, category, area) is not row["shown"]
    ]
    assert not disagreements
    # The rule itself, spot-checked: private is never public, an unlisted category hides.
    assert not View(False).shows("private", "pothole", "north")
    assert not View(False, frozenset({"pothole"})).shows("public", "graffiti", "north")
    assert not View(False, frozenset({"pothole"})).shows("public", None, "north")
    assert View(False, frozenset({"pothole"})).shows("public", "pothole", None)
    assert STAFF.shows("private", None, None)


def _as_json(cases: list[tuple[View, str | None, str | None, str | None]]) -> str:

    return json.dumps(
        [
            {
                "n": n,
                "staff": view.staff,
                "categories": view.sql_args[1],
                "areas": view.sql_args[2],
                "visibility": visibility,
                "category": category,
                "area": area,
            }
            for n, (view, visibility, category, area) in enumerate(cases)
        ]
    )


def test_views_with_other_settings_never_share_a_cache_key() -> None:
    keys = {view.cache_key for view in VIEWS}
    assert len(keys) == len(VIEWS)
    assert View.public({"public_categories": ["b", "a"]}).cache_key == (
        View.public({"public_categories": ["a", "b"]}).cache_key
    )
