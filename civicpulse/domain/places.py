"""Place wire types: what clients and place files send, and the checks msgspec cannot make."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from civicpulse.domain import limits
from civicpulse.domain.reports import PlaceCode
from civicpulse.errors import ValidationFailed

Kind = Literal["site", "building", "floor", "room", "unit", "space", "asset"]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Alias = Annotated[str, Meta(min_length=1, max_length=100)]


@dataclass(frozen=True, slots=True)
class Place:
    """A place as stored."""

    code: str
    kind: str
    name: str
    aliases: tuple[str, ...] = ()
    parent: str | None = None
    lat: float | None = None
    lon: float | None = None
    geometry: dict[str, Any] | None = None


class PlaceIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Kind
    name: Name
    aliases: Annotated[list[Alias], Meta(max_length=50)] = []
    parent: PlaceCode | None = None
    lat: Annotated[float, Meta(ge=-90.0, le=90.0)] | None = None
    lon: Annotated[float, Meta(ge=-180.0, le=180.0)] | None = None
    # GeoJSON Polygon or MultiPolygon of the place's outline, kept as given.
    geometry: dict[str, Any] | None = None


class PlaceWithCode(PlaceIn, frozen=True, kw_only=True, forbid_unknown_fields=True):
    code: PlaceCode


class PlaceOut(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    kind: str
    name: str
    aliases: list[str]
    parent: str | None
    lat: float | None
    lon: float | None
    geometry: dict[str, Any] | None


def to_place(code: str, item: PlaceIn) -> Place:
    """Checks msgspec cannot make: a point has both coordinates, a place is not its own
    parent, a geometry is a polygon."""
    if (item.lat is None) != (item.lon is None):
        raise ValidationFailed("give both lat and lon, or neither", field="lat")
    if item.parent == code:
        raise ValidationFailed("a place cannot be its own parent", field="parent")
    if item.geometry is not None and item.geometry.get("type") not in ("Polygon", "MultiPolygon"):
        raise ValidationFailed(
            "geometry must be a GeoJSON Polygon or MultiPolygon", field="geometry"
        )
    return Place(
        code, item.kind, item.name, tuple(item.aliases), item.parent,
        limits.coordinate_or_none(item.lat), limits.coordinate_or_none(item.lon), item.geometry,
    )  # fmt: skip


def place_out(p: Place) -> PlaceOut:
    return PlaceOut(
        code=p.code,
        kind=p.kind,
        name=p.name,
        aliases=list(p.aliases),
        parent=p.parent,
        lat=p.lat,
        lon=p.lon,
        geometry=p.geometry,
    )
