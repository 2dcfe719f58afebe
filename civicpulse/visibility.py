"""What the public may see: one rule for every public surface.

A `View` is who is looking at a tenant's data. Staff see everything of their tenant. The
public (no key, or a `submit` key such as a resident app holds) see:

- an issue only when it is public and in the dashboard's public categories and areas
  (`shows`; in SQL the same rule is `civicpulse_shown`, schema 0012, and a test proves the
  two agree on every combination);
- of such an issue only its public facts (`public_issue`): never a report's words (an
  issue's title is its first report's text), an address, a reporter, a note or who on
  the staff handles it.

Every public surface takes its view from `View.public(settings)` and passes `sql_args` to
its query or filters rows with `shows`: the dashboard's data and its stored widgets (keyed
by `cache_key`, so staff and public, or two settings, never share one), the live stream
(live and replayed), exports, nearby issues, a single issue, Open311.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# An issue's public facts: what it is and where it stands. (Callers may add where it is:
# the place of a public issue is public, as in Open311.)
PUBLIC_ISSUE_FIELDS = (
    "id",
    "status",
    "category",
    "area",
    "report_count",
    "opened_at",
    "resolved_at",
    "closed_at",
)


@dataclass(frozen=True, slots=True)
class View:
    staff: bool
    categories: frozenset[str] | None = None  # None: every category
    areas: frozenset[str] | None = None  # None: every area

    @classmethod
    def public(cls, settings: Mapping[str, Any] | None) -> View:
        """The public view the tenant's dashboard settings describe (None: the defaults)."""
        if settings is None:
            return cls(False)
        cats = settings.get("public_categories")
        areas = settings.get("public_areas")
        return cls(
            False,
            None if cats is None else frozenset(cats),
            None if areas is None else frozenset(areas),
        )

    def shows(self, visibility: str | None, category: str | None, area: str | None) -> bool:
        """May this view see an issue with this visibility, category and area?"""
        if self.staff:
            return True
        return (
            visibility == "public"
            and (self.categories is None or (category is not None and category in self.categories))
            and (self.areas is None or (area is not None and area in self.areas))
        )

    def shows_row(self, row: Mapping[str, Any]) -> bool:
        """`shows` for a row with visibility, category and area columns."""
        return self.shows(row["visibility"], row["category"], row["area"])

    @property
    def sql_args(self) -> tuple[bool, list[str] | None, list[str] | None]:
        """The arguments of `civicpulse_shown` (staff, categories, areas), sorted so equal
        views bind equal values."""
        return (
            self.staff,
            None if self.categories is None else sorted(self.categories),
            None if self.areas is None else sorted(self.areas),
        )

    @property
    def cache_key(self) -> str:
        """Names this view in stored widgets: "staff", or "public-" and a digest of its
        categories and areas, so a settings change never serves an older view's widget."""
        if self.staff:
            return "staff"
        digest = hashlib.sha256(repr(self.sql_args).encode()).hexdigest()[:16]
        return f"public-{digest}"

    def public_issue(self, row: Mapping[str, Any], extra: Iterable[str] = ()) -> dict[str, Any]:
        """An issue's public facts (plus `extra` columns the caller vouches for)."""
        out: dict[str, Any] = {}
        for name in (*PUBLIC_ISSUE_FIELDS, *extra):
            if name in row:
                value = row[name]
                out[name] = str(value) if name == "id" and value is not None else value
        return out


STAFF = View(True)
