"""ShapeWorld v1: robustlab's own seeded procedural image world, with every attribute known.

An image is one shape (the class label) of a known size, position, rotation and colour, drawn over a
background of a known kind and colours. Because every attribute is recorded and the renderer is a pure
function of the attributes, edits are exact (change one attribute, re-render), natural shifts are
controllable (fix or re-range an attribute), spurious features can be planted (tie a background to a
class) and detection boxes are known. Nothing is downloaded: the same seed gives the same images.

Rendering is vectorised torch on a pixel-centre grid: each shape is a signed distance function (exact
polygon distance, circles, unions of exact parts), turned into coverage with a one-pixel linear edge
(anti-aliasing). All images of a batch render at once; Python loops run only over classes, background
kinds and memory chunks.

Attributes (``sample_attributes`` returns them; ``render`` reads them), one entry per image:

=================  ==========  ============================================================
key                shape        meaning
=================  ==========  ============================================================
``shape``          (N,) int64  class index into ``world.classes`` (this is the label ``y``)
``size``           (N,) float  shape circumradius as a fraction of the image side
``cx``, ``cy``     (N,) float  shape centre as fractions of the image width / height (y down)
``rotation``       (N,) float  rotation in radians (clockwise on screen)
``color``          (N, 3)      foreground RGB in [0, 1]
``background``     (N,) int64  background kind, index into the module constant ``BACKGROUNDS``
``bg_color``       (N, 3)      first background RGB (the only one for ``"solid"``)
``bg_color2``      (N, 3)      second background RGB (gradient end, stripe/checker/noise colour)
``bg_angle``       (N,) float  orientation of gradient / stripes / checker, radians
``bg_period``      (N,) float  stripe / checker period as a fraction of the image side
``bg_phase``       (N,) float  stripe / checker phase in [0, 1)
``texture_seed``   (N,) int64  seed of the value-noise texture (``"noise"`` background)
``bbox``           (N, 4)      derived, not settable: x0, y0, x1, y1 in pixels, including the
                               half-pixel anti-aliased edge, clipped to the image
=================  ==========  ============================================================
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.data._shapeworld_draw import EXTENT, REACH, SDF, soft_stripes, value_noise
from robustlab.data.base import Dataset

__all__ = ["ALL_SHAPES", "ATTRIBUTES", "BACKGROUNDS", "SHAPES", "ShapeWorld", "load_shapeworld"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "heart")
ALL_SHAPES: tuple[str, ...] = SHAPES + ("hexagon", "pentagon")  # extras: close to a circle at 32 px
BACKGROUNDS: tuple[str, ...] = ("solid", "gradient", "stripes", "checker", "noise")
ATTRIBUTES: tuple[str, ...] = ("shape", "size", "cx", "cy", "rotation", "color", "background", "bg_color",
                               "bg_color2", "bg_angle", "bg_period", "bg_phase", "texture_seed")
_COLORS = ("color", "bg_color", "bg_color2")
_INTS = ("shape", "background", "texture_seed")
SOURCE = "ShapeWorld v1: robustlab's procedural generator (seeded, no download)"
_SPLIT_SIZES = {"train": 20000, "val": 2000, "test": 2000}


# ----------------------------------------------------------------------------------- helpers
def _index(value: Any, names: tuple[str, ...], key: str, n: int) -> torch.Tensor:
    """Names or indices (one, or one per image) -> (n,) int64 indices into ``names``."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    scalar = isinstance(value, (str, int))
    out = []
    for v in [value] if scalar else list(value):
        if isinstance(v, str):
            if v not in names:
                close = difflib.get_close_matches(v, names, n=3)
                raise ConfigError(f"ShapeWorld: unknown {key} {v!r}" + (f" (did you mean {close}?)" if close else ""),
                                  fix=f"use one of {list(names)}")
            out.append(names.index(v))
        elif isinstance(v, int) and 0 <= v < len(names):
            out.append(v)
        else:
            raise ConfigError(f"ShapeWorld: {key} {v!r} is not a name or an index in range",
                              fix=f"use one of {list(names)} or an index 0..{len(names) - 1}")
    t = torch.tensor(out, dtype=torch.long)
    return _broadcast(t[0] if scalar else t, key, n, ())


def _broadcast(value: Any, key: str, n: int, tail: tuple[int, ...]) -> torch.Tensor:
    t = torch.as_tensor(value)
    t = t.long() if key in _INTS else t.to(torch.float32)
    if tuple(t.shape) == tail:
        return t.expand(n, *tail).clone()
    if tuple(t.shape) == (n, *tail):
        return t.clone()
    raise ConfigError(f"ShapeWorld: attribute {key!r} has shape {tuple(t.shape)}",
                      fix=f"give one value of shape {tail or 'scalar'} or one per image, shape {(n, *tail)}")


def _seg_dist(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (N,) from RGB points ``p`` to the segments [a, b] (all (N, 3))."""
    e = b - a
    t = ((p - a) * e).sum(-1) / (e * e).sum(-1).clamp_min(1e-12)
    return (p - a - e * t.clamp(0, 1)[:, None]).norm(dim=-1)


def _take(attrs: dict[str, Any], idx: slice) -> dict[str, torch.Tensor]:
    return {k: attrs[k][idx] for k in ATTRIBUTES}


@dataclass(frozen=True)
class ShapeWorld:
    """Config and renderer of ShapeWorld v1 (robustlab's procedural shapes-on-backgrounds world).

    Args:
        size: image side in pixels (square images, any size >= 8).
        classes: shape classes, a subset of ``ALL_SHAPES``; the label is the index into this tuple.
        backgrounds: background kinds sampled, a subset of ``BACKGROUNDS``.
        size_range: circumradius range as a fraction of the image side (uniform).
        rotation_range: rotation range in radians (uniform).
        period_range: stripe / checker period range as a fraction of the image side.
        min_contrast: least RGB distance between the foreground colour and every background colour
            (the segment between the two background colours), so the shape stays visible.
        texture_contrast: least RGB distance between the two colours of a non-solid background.
        noise_cells: lattice cells per side of the coarsest value-noise octave.

    Example:
        >>> world = ShapeWorld(size=32)
        >>> ds = world.generate(100, seed=0, background="checker")
        >>> moved = world.render(world.edit(ds.attrs, cx=0.4))   # the same images, shapes moved
    """

    size: int = 32
    classes: tuple[str, ...] = SHAPES
    backgrounds: tuple[str, ...] = BACKGROUNDS
    size_range: tuple[float, float] = (0.22, 0.40)
    rotation_range: tuple[float, float] = (0.0, 2 * math.pi)
    period_range: tuple[float, float] = (0.12, 0.30)
    min_contrast: float = 0.4
    texture_contrast: float = 0.3
    noise_cells: int = 3
    chunk: int = field(default=2048, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "backgrounds", tuple(self.backgrounds))
        for key, got, allowed in (("class", self.classes, ALL_SHAPES), ("background", self.backgrounds, BACKGROUNDS)):
            for name in got:
                _index(name, allowed, key, 1)
            if not got or len(set(got)) != len(got):
                raise ConfigError(f"ShapeWorld: {key} list {list(got)} is empty or repeats a name",
                                  fix=f"give distinct names from {list(allowed)}")
        if int(self.size) < 8:
            raise ConfigError(f"ShapeWorld: size={self.size} is too small",
                              fix="use an image side of at least 8 pixels")
        lo, hi = self.size_range
        if not 0 < lo <= hi <= 0.5:
            raise ConfigError(f"ShapeWorld: size_range={self.size_range} is invalid",
                              fix="give 0 < low <= high <= 0.5 (circumradius as a fraction of the image side)")

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    # ------------------------------------------------------------------------------ sampling
    def sample_attributes(self, n: int, generator: torch.Generator, **fixed: Any) -> dict[str, torch.Tensor]:
        """Draw the attributes of ``n`` images; any attribute in ``fixed`` is set instead of drawn.

        Args:
            n: number of images.
            generator: the ``torch.Generator`` all randomness comes from.
            **fixed: attribute name -> one value or one per image (names allowed for ``shape`` and
                ``background``, e.g. ``shape="star"``, ``background=["solid", "noise", ...]``).

        Every random draw happens whatever is fixed, so two calls with the same seed that fix
        different attributes agree on the others (counterfactual pairs), except colours, which are
        redrawn until they meet the contrast rules.
        Returns: the attribute dict described in the module docstring, ``bbox`` included.
        """
        bad = sorted(set(fixed) - set(ATTRIBUTES))
        if bad:
            close = {b: difflib.get_close_matches(b, ATTRIBUTES, n=2) for b in bad}
            raise ConfigError(f"ShapeWorld: unknown attribute(s) {bad} (close: {close})",
                              fix=f"set only {list(ATTRIBUTES)}; bbox is derived from the others")
        n, g = int(n), generator
        u = torch.rand(n, 8, generator=g)
        a: dict[str, torch.Tensor] = {}
        a["shape"] = torch.randperm(n, generator=g) % len(self.classes)  # balanced classes
        kinds = torch.tensor([BACKGROUNDS.index(b) for b in self.backgrounds])
        a["background"] = kinds[torch.randperm(n, generator=g) % len(kinds)]
        a["texture_seed"] = torch.randint(0, 2**31 - 1, (n,), generator=g)
        lo, hi = self.size_range
        a["size"] = lo + (hi - lo) * u[:, 0]
        a["rotation"] = self.rotation_range[0] + (self.rotation_range[1] - self.rotation_range[0]) * u[:, 3]
        a["bg_angle"] = math.pi * u[:, 4]
        a["bg_period"] = self.period_range[0] + (self.period_range[1] - self.period_range[0]) * u[:, 5]
        a["bg_phase"] = u[:, 6]
        for key in ("shape", "background"):
            if key in fixed:
                a[key] = _index(fixed[key], self.classes if key == "shape" else BACKGROUNDS, key, n)
        for key in ("texture_seed", "size", "rotation", "bg_angle", "bg_period", "bg_phase"):
            if key in fixed:
                a[key] = _broadcast(fixed[key], key, n, ())
        reach = torch.tensor([REACH[c] for c in self.classes])[a["shape"]] * a["size"]
        for key, col in (("cx", 1), ("cy", 2)):  # keep the whole shape inside the image when possible
            free = (1 - 2 * reach).clamp_min(0)
            a[key] = _broadcast(fixed[key], key, n, ()) if key in fixed else 0.5 - free / 2 + free * u[:, col]
        a.update(self._sample_colors(n, g, a["background"], fixed))
        a["bbox"] = self.bbox(a)
        return a

    def _sample_colors(self, n: int, g: torch.Generator, background: torch.Tensor,
                       fixed: dict[str, Any]) -> dict[str, torch.Tensor]:
        given = {k: _broadcast(fixed[k], k, n, (3,)) for k in _COLORS if k in fixed}
        for k, v in given.items():
            if float(v.min()) < 0 or float(v.max()) > 1:
                raise ConfigError(f"ShapeWorld: {k} must be RGB in [0, 1]", fix="scale colours to [0, 1]")
        solid = background == BACKGROUNDS.index("solid")
        cols = {k: given.get(k, torch.rand(n, 3, generator=g)) for k in _COLORS}
        todo = torch.ones(n, dtype=torch.bool)
        for _ in range(200):
            if "bg_color2" not in given:
                cols["bg_color2"] = torch.where(solid[:, None], cols["bg_color"], cols["bg_color2"])
            ok = _seg_dist(cols["color"], cols["bg_color"], cols["bg_color2"]) >= self.min_contrast
            ok &= solid | ((cols["bg_color"] - cols["bg_color2"]).norm(dim=-1) >= self.texture_contrast)
            todo = ~ok
            if not todo.any():
                return cols
            redraw = torch.rand(n, 3, 3, generator=g)
            for i, k in enumerate(_COLORS):
                if k not in given:
                    cols[k] = torch.where(todo[:, None], redraw[:, i], cols[k])
        raise ConfigError(f"ShapeWorld: {int(todo.sum())} image(s) cannot meet min_contrast={self.min_contrast} / "
                          f"texture_contrast={self.texture_contrast} with the fixed colours",
                          fix="fix colours further apart, or lower min_contrast / texture_contrast in ShapeWorld(...)")

    def edit(self, attrs: dict[str, Any], **changes: Any) -> dict[str, torch.Tensor]:
        """A copy of ``attrs`` with ``changes`` applied (names allowed as in ``sample_attributes``), bbox redone."""
        bad = sorted(set(changes) - set(ATTRIBUTES))
        if bad:
            raise ConfigError(f"ShapeWorld.edit: unknown attribute(s) {bad}", fix=f"edit only {list(ATTRIBUTES)}")
        n = len(attrs["shape"])
        out = {k: torch.as_tensor(attrs[k]).clone() for k in ATTRIBUTES}
        for k, v in changes.items():
            if k in ("shape", "background"):
                out[k] = _index(v, self.classes if k == "shape" else BACKGROUNDS, k, n)
            else:
                out[k] = _broadcast(v, k, n, (3,) if k in _COLORS else ())
        out["bbox"] = self.bbox(out)
        return out

    # ----------------------------------------------------------------------------- geometry
    def bbox(self, attrs: dict[str, Any]) -> torch.Tensor:
        """Pixel bounding boxes (N, 4) = x0, y0, x1, y1 of every shape, anti-aliased edge included."""
        shape = torch.as_tensor(attrs["shape"])
        out = torch.zeros(len(shape), 4)
        size, cx, cy, rot = (torch.as_tensor(attrs[k], dtype=torch.float32) for k in ("size", "cx", "cy", "rotation"))
        for ci, name in enumerate(self.classes):
            idx = (shape == ci).nonzero().flatten()
            if idx.numel() == 0:
                continue
            p = torch.tensor(EXTENT[name])  # (P, 3)
            c, s, r = rot[idx, None].cos(), rot[idx, None].sin(), size[idx, None]
            wx = cx[idx, None] + r * (c * p[:, 0] - s * p[:, 1])
            wy = cy[idx, None] + r * (s * p[:, 0] + c * p[:, 1])
            rad = r * p[:, 2]
            out[idx] = torch.stack([(wx - rad).amin(1), (wy - rad).amin(1), (wx + rad).amax(1), (wy + rad).amax(1)], 1)
        s = float(self.size)
        return (out * s + torch.tensor([-0.5, -0.5, 0.5, 0.5])).clamp(0.0, s)

    # ------------------------------------------------------------------------------ render
    def render(self, attrs: dict[str, Any]) -> torch.Tensor:
        """Images (N, 3, S, S) float32 in [0, 1] drawn from ``attrs`` (a pure function of them)."""
        return self._chunked(attrs, lambda a: self._compose(a)[0])

    def mask(self, attrs: dict[str, Any]) -> torch.Tensor:
        """Foreground coverage (N, 1, S, S) in [0, 1]: 1 on the shape, 0 on the background."""
        return self._chunked(attrs, lambda a: self._coverage(a)[:, None])

    def background_image(self, attrs: dict[str, Any]) -> torch.Tensor:
        """The background alone (N, 3, S, S), as it would look with the shape removed."""
        return self._chunked(attrs, self._background)

    def _chunked(self, attrs: dict[str, Any], fn: Callable[[dict], torch.Tensor]) -> torch.Tensor:
        missing = [k for k in ATTRIBUTES if k not in attrs]
        if missing:
            raise ConfigError(f"ShapeWorld.render: attributes {missing} are missing",
                              fix="start from sample_attributes(...) or a ShapeWorld dataset's .attrs")
        n = len(attrs["shape"])
        a = {k: torch.as_tensor(attrs[k]) for k in ATTRIBUTES}
        for k in ATTRIBUTES:
            if k not in _INTS:
                a[k] = a[k].to(torch.float32)
        parts = [fn(_take(a, slice(i, i + self.chunk))) for i in range(0, n, self.chunk)]
        return torch.cat(parts) if parts else torch.zeros(0, 3, self.size, self.size)

    def _grid(self) -> torch.Tensor:
        return (torch.arange(self.size, dtype=torch.float32) + 0.5) / self.size

    def _coverage(self, a: dict[str, torch.Tensor]) -> torch.Tensor:
        u = self._grid()
        alpha = torch.zeros(len(a["shape"]), self.size, self.size)
        for ci, name in enumerate(self.classes):
            idx = (a["shape"] == ci).nonzero().flatten()
            if idx.numel() == 0:
                continue
            r = a["size"][idx, None, None]
            dx = u[None, None, :] - a["cx"][idx, None, None]
            dy = u[None, :, None] - a["cy"][idx, None, None]
            c, s = a["rotation"][idx, None, None].cos(), a["rotation"][idx, None, None].sin()
            sdf = SDF[name]((c * dx + s * dy) / r, (c * dy - s * dx) / r) * r * self.size  # pixels
            alpha[idx] = (0.5 - sdf).clamp(0.0, 1.0)
        return alpha

    def _background(self, a: dict[str, torch.Tensor]) -> torch.Tensor:
        u = self._grid()
        x, y = u[None, None, :], u[None, :, None]
        n, s = len(a["shape"]), self.size
        t = torch.zeros(n, s, s)
        for bi, kind in enumerate(BACKGROUNDS):
            idx = (a["background"] == bi).nonzero().flatten()
            if idx.numel() == 0 or kind == "solid":
                continue
            ang = a["bg_angle"][idx, None, None]
            c, sn = ang.cos(), ang.sin()
            period, phase = a["bg_period"][idx, None, None], a["bg_phase"][idx, None, None]
            if kind == "gradient":
                t[idx] = ((x - 0.5) * c + (y - 0.5) * sn) / (c.abs() + sn.abs()) + 0.5
            elif kind == "stripes":
                t[idx] = soft_stripes(x * c + y * sn, period, phase, s)
            elif kind == "checker":
                p = soft_stripes(x * c + y * sn, period, phase, s)
                q = soft_stripes(y * c - x * sn, period, phase, s)
                t[idx] = p + q - 2 * p * q
            else:  # value noise, two octaves, stretched to the full [0, 1] range per image
                seed = a["texture_seed"][idx].long()
                v = (0.65 * value_noise(seed, u, self.noise_cells)
                     + 0.35 * value_noise(seed + 7919, u, 2 * self.noise_cells))
                lo, hi = v.amin((1, 2), keepdim=True), v.amax((1, 2), keepdim=True)
                t[idx] = (v - lo) / (hi - lo).clamp_min(1e-6)
        shape = (n, 3, s, s)
        c1, c2 = a["bg_color"][:, :, None, None].expand(shape), a["bg_color2"][:, :, None, None].expand(shape)
        return torch.lerp(c1, c2, t.clamp_(0.0, 1.0)[:, None].expand(shape))

    def _compose(self, a: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self._coverage(a)[:, None]
        bg = self._background(a)
        img = bg.lerp_(a["color"][:, :, None, None].expand_as(bg), alpha.expand_as(bg))  # exact at 0 and 1
        return img.clamp_(0.0, 1.0), alpha

    # ----------------------------------------------------------------------------- datasets
    def dataset(self, attrs: dict[str, Any], name: str = "shapeworld") -> Dataset:
        """Render ``attrs`` into a labelled :class:`Dataset` (attrs kept, plus readable names)."""
        a = {k: torch.as_tensor(attrs[k]) for k in ATTRIBUTES}
        a["bbox"] = self.bbox(a)
        a["shape_name"] = [self.classes[i] for i in a["shape"].tolist()]
        a["background_name"] = [BACKGROUNDS[i] for i in a["background"].tolist()]
        return Dataset(x=self.render(a), y=a["shape"].clone(), modality="image", class_names=self.class_names,
                       name=name, source=SOURCE, attrs=a)

    def generate(self, n: int, seed: int = 0, **fixed: Any) -> Dataset:
        """``n`` images drawn with ``torch_generator(seed)``; ``fixed`` as in ``sample_attributes``."""
        return self.dataset(self.sample_attributes(n, torch_generator(seed), **fixed))


def load_shapeworld(split: str = "train", n: int | None = None, seed: int = 0, size: int = 32, *,
                    world: ShapeWorld | None = None, **fixed: Any) -> Dataset:
    """A ShapeWorld split: train / val / test draw from seeds derived from (seed, "shapeworld", split).

    Args:
        split: "train" (20,000 images by default), "val" (2,000) or "test" (2,000).
        n: number of images (default by split).
        seed: base seed; the splits never share a generator seed.
        size: image side in pixels (ignored when ``world`` is given).
        world: a configured :class:`ShapeWorld` (classes, ranges, contrast); default ``ShapeWorld(size)``.
        **fixed: attributes to fix, as in :meth:`ShapeWorld.sample_attributes`.
    """
    if split not in _SPLIT_SIZES:
        raise ConfigError(f"ShapeWorld: unknown split {split!r}", fix=f"use one of {list(_SPLIT_SIZES)}")
    world = world or ShapeWorld(size=int(size))
    count = _SPLIT_SIZES[split] if n is None else int(n)
    if count < 0:
        raise ConfigError(f"ShapeWorld: n={n} is negative", fix="ask for n >= 0 images")
    return world.generate(count, derive_seed(seed, "shapeworld", split), **fixed)
