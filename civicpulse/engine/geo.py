"""Geo cells: a plain-integer grid that an ordinary B-tree can index.

A cell is 0.0025 degrees of latitude by 0.0025 degrees of longitude (about 278 m north-south,
less east-west away from the equator). `cell_of` must match the SQL function
`civicpulse_cell` exactly; `cells_within` lists every cell a circle can touch.
"""

from __future__ import annotations

import math

CELL_DEGREES = 0.0025
COLUMNS = 200_000  # > 360 / CELL_DEGREES
EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE = math.pi * EARTH_RADIUS_M / 180
# (lat_lo, lat_hi, lon_lo, lon_hi)
Box = tuple[float, float, float, float]


def cell_of(lat: float, lon: float) -> int:
    row = math.floor((lat + 90.0) / CELL_DEGREES)
    col = math.floor((lon + 180.0) / CELL_DEGREES)
    return row * COLUMNS + col


def bbox(lat: float, lon: float, radius_m: float) -> Box:
    """(lat_lo, lat_hi, lon_lo, lon_hi) of a box holding the circle of `radius_m`."""
    dlat = radius_m / METRES_PER_DEGREE
    coslat = max(0.01, math.cos(math.radians(min(89.9, abs(lat) + dlat))))
    dlon = min(180.0, radius_m / (METRES_PER_DEGREE * coslat))
    return max(-90.0, lat - dlat), min(90.0, lat + dlat), lon - dlon, lon + dlon


def cells_within(lat: float, lon: float, radius_m: float) -> list[int]:
    """Every cell that a circle of `radius_m` around the point can reach."""
    lat_lo, lat_hi, lon_lo, lon_hi = bbox(lat, lon, radius_m)
    row_lo = math.floor((lat_lo + 90.0) / CELL_DEGREES)
    row_hi = math.floor((lat_hi + 90.0) / CELL_DEGREES)
    col_lo = math.floor((lon_lo + 180.0) / CELL_DEGREES)
    col_hi = math.floor((lon_hi + 180.0) / CELL_DEGREES)
    cols = range(max(0, col_lo), min(COLUMNS - 1, col_hi) + 1)  # no wrap at the antimeridian
    return [row * COLUMNS + c for row in range(row_lo, row_hi + 1) for c in cols]


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


REGION_CELLS = 16


def region_keys(lat: float, lon: float, radius_m: float) -> set[int]:
    """Coarse regions (16 x 16 cells, about 4.5 km) the search circle touches: what grouping
    locks, so two processes never decide about the same place at once."""
    return {
        (c // COLUMNS // REGION_CELLS) * 100_000 + (c % COLUMNS) // REGION_CELLS
        for c in cells_within(lat, lon, radius_m)
    }
