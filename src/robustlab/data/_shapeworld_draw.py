"""ShapeWorld's drawing primitives: shape signed distances, extents, and background textures.

Shapes live in *shape units*: circumradius about 1, centred at the origin, y pointing down (screen).
Signed distances are exact (polygons after Quilez's sdPolygon; discs; unions of exact parts), so a
one-pixel linear ramp ``clamp(0.5 - sdf_px, 0, 1)`` is a good anti-aliased coverage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch

__all__ = ["EXTENT", "REACH", "SDF", "soft_stripes", "value_noise"]


# ----------------------------------------------------------------------------------- geometry
def _regular(k: int, r: float = 1.0, start_deg: float = -90.0) -> list[tuple[float, float]]:
    return [(r * math.cos(math.radians(start_deg + 360.0 * i / k)),
             r * math.sin(math.radians(start_deg + 360.0 * i / k))) for i in range(k)]


def _star(points: int = 5, inner: float = 0.42) -> list[tuple[float, float]]:
    out = []
    for i in range(2 * points):
        a = math.radians(-90.0 + 180.0 * i / points)
        r = 1.0 if i % 2 == 0 else inner
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


_W, _A = 0.3, 0.95  # cross arm half-width and reach
_CROSS = [(-_W, -_A), (_W, -_A), (_W, -_W), (_A, -_W), (_A, _W), (_W, _W), (_W, _A), (-_W, _A),
          (-_W, _W), (-_A, _W), (-_A, -_W), (-_W, -_W)]
_H = 0.75  # heart: a square of half-diagonal _H turned 45 degrees, two discs on its upper edges
_C0 = (_H * (0.5 + math.sqrt(0.5)) - _H) / 2.0  # centres the heart's bounding box vertically
_HEART_SQ = [(0.0, _C0 + _H), (_H, _C0), (0.0, _C0 - _H), (-_H, _C0)]
_HEART_DISCS = [(-_H / 2, _C0 - _H / 2, _H * math.sqrt(0.5)), (_H / 2, _C0 - _H / 2, _H * math.sqrt(0.5))]

_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": _regular(4, start_deg=45.0), "triangle": _regular(3), "star": _star(),
    "cross": _CROSS, "diamond": [(0.0, -1.0), (0.55, 0.0), (0.0, 1.0), (-0.55, 0.0)],
    "hexagon": _regular(6, start_deg=0.0), "pentagon": _regular(5),
}


def _sd_polygon(x: torch.Tensor, y: torch.Tensor, verts: list[tuple[float, float]]) -> torch.Tensor:
    """Exact signed distance to a simple polygon (negative inside), after Quilez's sdPolygon."""
    d = (x - verts[0][0]) ** 2 + (y - verts[0][1]) ** 2
    inside = torch.zeros_like(x, dtype=torch.bool)
    for i in range(len(verts)):
        (xi, yi), (xj, yj) = verts[i], verts[i - 1]
        ex, ey = xj - xi, yj - yi
        wx, wy = x - xi, y - yi
        t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0)
        d = torch.minimum(d, (wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        c1, c2, c3 = y >= yi, y < yj, ex * wy > ey * wx
        inside ^= (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
    return torch.where(inside, -1.0, 1.0) * d.sqrt()


def _sd_disc(x: torch.Tensor, y: torch.Tensor, cx: float = 0.0, cy: float = 0.0, r: float = 1.0) -> torch.Tensor:
    return ((x - cx) ** 2 + (y - cy) ** 2).sqrt() - r


def _sd_heart(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = _sd_polygon(x, y, _HEART_SQ)
    for cx, cy, r in _HEART_DISCS:
        d = torch.minimum(d, _sd_disc(x, y, cx, cy, r))
    return d


SDF: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "circle": _sd_disc, "ring": lambda x, y: (_sd_disc(x, y, r=0.75)).abs() - 0.25, "heart": _sd_heart,
    **{k: partial(_sd_polygon, verts=v) for k, v in _POLYGONS.items()},
}
# extreme points (x, y, radius) in shape units: the bounding box of their union is the shape's box
EXTENT: dict[str, list[tuple[float, float, float]]] = {
    "circle": [(0.0, 0.0, 1.0)], "ring": [(0.0, 0.0, 1.0)],
    "heart": [(x, y, 0.0) for x, y in _HEART_SQ] + _HEART_DISCS,
    **{k: [(x, y, 0.0) for x, y in v] for k, v in _POLYGONS.items()},
}
REACH = {k: max(math.hypot(x, y) + r for x, y, r in v) for k, v in EXTENT.items()}


# --------------------------------------------------------------------------------- textures
def _hash01(seed: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
    """A stateless integer hash of (seed, ix, iy) to [0, 1); int64 arithmetic that never overflows."""
    m = 0xFFFFFFFF
    h = ((seed & 0x7FFFFFFF) * 0x27D4EB2D + (ix & 0xFFFF) * 0x165667B1 + (iy & 0xFFFF) * 0x3C6EF372) & m
    h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & m
    h = ((h ^ (h >> 12)) * 0x297A2D39) & m
    return (h ^ (h >> 15)).to(torch.float32) / 4294967296.0


def value_noise(seed: torch.Tensor, u: torch.Tensor, cells: int) -> torch.Tensor:
    """Smooth value noise (N, S, S) on a ``cells``-per-side lattice at pixel centres ``u`` (S,)."""
    j = torch.arange(cells + 1)
    lat = _hash01(seed[:, None, None], j[None, None, :], j[None, :, None])  # (N, y, x)
    g = u * cells
    i0 = g.floor().long().clamp(max=cells - 1)
    f = g - i0
    f = f * f * (3 - 2 * f)
    iy, ix, fy, fx = i0[:, None], i0[None, :], f[:, None], f[None, :]
    top = lat[:, iy, ix] * (1 - fx) + lat[:, iy, ix + 1] * fx
    bot = lat[:, iy + 1, ix] * (1 - fx) + lat[:, iy + 1, ix + 1] * fx
    return top * (1 - fy) + bot * fy


def soft_stripes(proj: torch.Tensor, period: torch.Tensor, phase: torch.Tensor, pixels: int) -> torch.Tensor:
    """A square wave in [0, 1] with a ~1-pixel linear edge; ``proj`` and ``period`` in image units."""
    w = torch.sin(2 * math.pi * (proj / period + phase))
    return (0.5 + w * period * pixels / (2 * math.pi)).clamp(0.0, 1.0)
