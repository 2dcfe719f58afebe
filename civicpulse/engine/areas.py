"""Areas as GeoJSON polygons: validation, bounding boxes and point-in-polygon.

GeoJSON positions are [longitude, latitude]. A Polygon is an outer ring and optional holes;
a MultiPolygon is several polygons. A point on an edge counts as inside. Areas of a tenant
may overlap; the smallest (by bounding-box area) that contains the point wins, so a
building wing inside a campus is chosen over the campus.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Ring = list[tuple[float, float]]  # (lon, lat)
MAX_VERTICES = 100_000


class GeometryError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Area:
    code: str
    polygons: tuple[tuple[Ring, ...], ...]  # each: outer ring, then holes

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(min_lat, min_lon, max_lat, max_lon)."""
        lons = [p[0] for poly in self.polygons for p in poly[0]]
        lats = [p[1] for poly in self.polygons for p in poly[0]]
        return min(lats), min(lons), max(lats), max(lons)


def _ring(raw: Any, field: str) -> Ring:
    if not isinstance(raw, list) or len(raw) < 4:
        raise GeometryError(field, "a linear ring needs at least 4 positions")
    ring: Ring = []
    for i, pos in enumerate(raw):
        if (
            not isinstance(pos, list)
            or len(pos) < 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pos[:2])
        ):
            raise GeometryError(f"{field}[{i}]", "a position is [longitude, latitude]")
        lon, lat = float(pos[0]), float(pos[1])
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise GeometryError(f"{field}[{i}]", "longitude or latitude out of range")
        ring.append((lon, lat))
    if ring[0] != ring[-1]:
        raise GeometryError(field, "a linear ring must end where it starts")
    return ring


def parse(code: str, geometry: Any, field: str = "geometry") -> Area:
    """Validate a GeoJSON Polygon or MultiPolygon (or a Feature holding one)."""
    if isinstance(geometry, dict) and geometry.get("type") == "Feature":
        geometry = geometry.get("geometry")
        field = f"{field}.geometry"
    if not isinstance(geometry, dict):
        raise GeometryError(field, "expected a GeoJSON Polygon or MultiPolygon object")
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        raw_polygons = [coords]
    elif kind == "MultiPolygon" and isinstance(coords, list):
        raw_polygons = coords
    else:
        raise GeometryError(f"{field}.type", "expected Polygon or MultiPolygon")
    polygons = []
    vertices = 0
    for p, raw in enumerate(raw_polygons):
        at = f"{field}.coordinates" + (f"[{p}]" if kind == "MultiPolygon" else "")
        if not isinstance(raw, list) or not raw:
            raise GeometryError(at, "a polygon is a list of linear rings")
        rings = tuple(_ring(r, f"{at}[{i}]") for i, r in enumerate(raw))
        vertices += sum(len(r) for r in rings)
        polygons.append(rings)
    if not polygons:
        raise GeometryError(f"{field}.coordinates", "a MultiPolygon needs a polygon")
    if vertices > MAX_VERTICES:
        raise GeometryError(field, f"at most {MAX_VERTICES} positions")
    return Area(code, tuple(polygons))


def _in_ring(lon: float, lat: float, ring: Sequence[tuple[float, float]]) -> bool | None:
    """Even-odd rule; None when the point lies on the ring's boundary."""
    inside = False
    for (x1, y1), (x2, y2) in itertools.pairwise(ring):
        # On the segment?
        cross = (x2 - x1) * (lat - y1) - (y2 - y1) * (lon - x1)
        if (
            abs(cross) < 1e-12
            and min(x1, x2) <= lon <= max(x1, x2)
            and min(y1, y2) <= lat <= max(y1, y2)
        ):
            return None
        if (y1 > lat) != (y2 > lat):
            x = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < x:
                inside = not inside
    return inside


def contains(area: Area, lat: float, lon: float) -> bool:
    for outer, *holes in area.polygons:
        where = _in_ring(lon, lat, outer)
        if where is None:
            return True
        if not where:
            continue
        if not any(_in_ring(lon, lat, hole) for hole in holes):
            return True
    return False


def locate(areas: Iterable[Area], lat: float, lon: float) -> str | None:
    """The code of the smallest area holding the point, or None."""
    best: tuple[float, str] | None = None
    for area in areas:
        if contains(area, lat, lon):
            a, b, c, d = area.bbox
            size = (c - a) * (d - b)
            if best is None or (size, area.code) < best:
                best = (size, area.code)
    return None if best is None else best[1]
