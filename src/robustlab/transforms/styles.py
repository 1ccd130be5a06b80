"""Natural style shifts in the spirit of COCO-O: sketch, cartoon, painting, weather, handmade, tattoo, texture.

From "COCO-O: A Benchmark for Object Detectors under Natural Distribution Shifts" (Mao et al., ICCV
2023), whose six domains are sketch, cartoon, painting, weather, handmake and tattoo. COCO-O collects
real images of each domain; robustlab cannot ship those, so each domain is a procedural, vectorised
stand-in applied to any image (meant for ShapeWorld and digits), graded by severity:

=====================  ===================================================================================
name                   what it does (severity 1..5; 0 is the identity; fractions interpolate)
=====================  ===================================================================================
``style_sketch``       colour Sobel edge magnitude (relative to the image's strongest edge), soft-
                       thresholded, dark strokes on white; blended with the image, weight .4 .. 1
``style_cartoon``      blur, colour posterisation to 8 .. 3 levels per channel, bold black edges
                       (dilated at severity 5 on large images), weight .5 .. 1
``style_painting``     Kuwahara filter (radius 1 .. 3 px at 32 px, scaled with the side) plus seeded
                       low-frequency colour jitter (brush colour variation), amplitude .05 .. .15
``style_weather``      per image, seeded: fog or snow (:mod:`robustlab.transforms.image_weather`,
                       Hendrycks & Dietterich 2019) at the same severity; CIFAR table up to 64 px
``style_handmade``     smooth random elastic warp (bicubic-upsampled 4x4 displacement grid, amplitude
                       2 .. 10 % of the side) through ``grid_sample``, with a slight wobbly line blur
``style_tattoo``       ink drawing on skin (COCO-O's tattoo): dark, edge-weighted ink in a blue-black
                       tone over a seeded skin tone with pore texture, weight .4 .. 1
``style_texture``      a seeded procedural texture (oriented grating + value noise, random colour)
                       alpha-blended over object and background, alpha .15 .. .55
=====================  ===================================================================================

Conventions (those of :mod:`robustlab.transforms.image`): float images in [0, 1], ``(N, C, H, W)`` or
one ``(C, H, W)`` image, any N, C (grey images get grey styles; colour ones work on RGB, other channel
counts per channel), H, W >= 8 (smaller sides work too), CPU or CUDA; the output keeps shape, dtype and
device and is clipped to [0, 1]. Everything is batched (no loop over images). Random styles draw from
the given ``torch.Generator`` (float32, on the generator's device), so the same seed gives the same
images; sketch and cartoon are deterministic. Pixel sizes are defined at a 32-pixel side and scale
with ``min(H, W) / 32``.

Use :func:`shift_dataset` for a styled copy of a dataset (``shift_dataset("shapeworld", "sketch")``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.probe import Transform
from robustlab.core.registry import register
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.data.base import Dataset
from robustlab.transforms._common import check_severity, interpolate
from robustlab.transforms.image import _conv_same, apply_to_images, gaussian_kernel1d
from robustlab.transforms.image_weather import Fog, Snow

__all__ = [
    "STYLES",
    "STYLE_LEVELS",
    "Style",
    "StyleCartoon",
    "StyleHandmade",
    "StylePainting",
    "StyleSketch",
    "StyleTattoo",
    "StyleTexture",
    "StyleWeather",
    "kuwahara",
    "shift_dataset",
    "sobel_magnitude",
    "style_images",
]

#: severity 1..5 parameters of each style (level 0 is the identity; see the module table)
STYLE_LEVELS: dict[str, tuple[float, ...]] = {
    "sketch": (0.4, 0.55, 0.7, 0.85, 1.0),  # blend weight of the drawing
    "cartoon": (0.5, 0.625, 0.75, 0.875, 1.0),  # blend weight; levels 6..2 and edge width follow
    "painting": (1.0, 1.5, 2.0, 2.5, 3.0),  # Kuwahara radius r (px at 32 px); colour jitter .05·r
    "weather": (1.0, 2.0, 3.0, 4.0, 5.0),  # severity passed to fog / snow
    "handmade": (0.02, 0.04, 0.06, 0.08, 0.10),  # warp amplitude, fraction of the side
    "tattoo": (0.4, 0.55, 0.7, 0.85, 1.0),  # blend weight of the tattoo
    "texture": (0.15, 0.25, 0.35, 0.45, 0.55),  # texture alpha
}
STYLES: tuple[str, ...] = tuple(STYLE_LEVELS)
_REF_SIDE = 32
_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)


# ------------------------------------------------------------------------------------------- helpers
def _scale(x: torch.Tensor) -> float:
    return min(x.shape[-2:]) / _REF_SIDE


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images, channel mean otherwise, ``(N, 1, H, W)``."""
    if x.shape[1] == 3:
        return 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]
    return x.mean(dim=1, keepdim=True)


def _pad_mode(x: torch.Tensor, pad: int) -> str:
    return "reflect" if pad < min(x.shape[-2:]) else "replicate"


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, truncate=3.0)
    r = min(k.numel() // 2, min(x.shape[-2:]) - 1)
    k = k[k.numel() // 2 - r:k.numel() // 2 + r + 1]
    k = k / k.sum()
    return _conv_same(_conv_same(x, k[None, :], "replicate"), k[:, None], "replicate")


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Colour Sobel gradient magnitude ``sqrt(sum_c gx² + gy²)`` of ``(N, C, H, W)`` images -> ``(N, 1, H, W)``."""
    mode = _pad_mode(x, 1)
    gx, gy = _conv_same(x, _SOBEL, mode), _conv_same(x, _SOBEL.T, mode)
    return (gx.square() + gy.square()).sum(1, keepdim=True).sqrt()


def _edges(x: torch.Tensor, lo: float = 0.12, hi: float = 0.35) -> torch.Tensor:
    """Soft edge strength in [0, 1]: Sobel magnitude relative to the image's strongest edge, ramped lo..hi."""
    mag = sobel_magnitude(x)
    rel = mag / mag.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return ((rel - lo) / (hi - lo)).clamp(0.0, 1.0)


def _dilate(e: torch.Tensor, radius: int) -> torch.Tensor:
    if radius < 1:
        return e
    return F.max_pool2d(e, 2 * radius + 1, stride=1, padding=radius)


def kuwahara(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Kuwahara filter: each pixel takes the mean of the least-variant of its 4 (r+1)² quadrants.

    Vectorised with stride-1 average pooling on a replicate-padded image; the variance is that of the
    luma (channel mean for non-RGB). ``radius = 0`` returns ``x``.
    """
    r = int(radius)
    if r < 1:
        return x
    h, w = x.shape[-2:]
    xp = F.pad(x, (r, r, r, r), mode="replicate")
    gp = _grey(xp)
    mean = F.avg_pool2d(xp, r + 1, stride=1)  # (N, C, H + r, W + r)
    gmean = F.avg_pool2d(gp, r + 1, stride=1)
    gvar = F.avg_pool2d(gp * gp, r + 1, stride=1) - gmean * gmean
    offs = ((0, 0), (0, r), (r, 0), (r, r))
    means = torch.stack([mean[..., i:i + h, j:j + w] for i, j in offs])  # (4, N, C, H, W)
    vars_ = torch.stack([gvar[..., i:i + h, j:j + w] for i, j in offs])  # (4, N, 1, H, W)
    best = vars_.argmin(0, keepdim=True).expand(1, *means.shape[1:])
    return means.gather(0, best)[0]


def _smooth_field(n: int, channels: int, h: int, w: int, cells: int, generator: torch.Generator,
                  like: torch.Tensor) -> torch.Tensor:
    """Seeded smooth noise ``(n, channels, h, w)`` in about [-1, 1]: a (cells+1)² uniform grid, bicubic-upsampled."""
    g = torch.rand((n, channels, cells + 1, cells + 1), generator=generator, device=generator.device,
                   dtype=torch.float32)
    g = (2 * g - 1).to(device=like.device, dtype=like.dtype)
    return F.interpolate(g, size=(h, w), mode="bicubic", align_corners=True)


def _rand(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return u.to(device=like.device, dtype=like.dtype)


def _as_channels(rgb: torch.Tensor, c: int) -> torch.Tensor:
    """An RGB (N, 3, H, W) rendering as ``c`` channels: itself for 3, its luma repeated otherwise."""
    return rgb if c == 3 else _grey(rgb).expand(-1, c, -1, -1)


# --------------------------------------------------------------------------------------------- base
@dataclass
class Style(Transform):
    """Base of the style shifts: checks inputs and severity, maps severity to ``STYLE_LEVELS[style]``."""

    modality: ClassVar[str] = "image"
    group: ClassVar[str] = "style"
    style: ClassVar[str] = ""
    stochastic: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return f"style_{self.style}"

    def parameter(self, severity: float) -> float:
        """The level parameter at ``severity`` (0 at severity 0; linear between levels)."""
        return interpolate((0.0, *STYLE_LEVELS[self.style]), check_severity(severity, self.name))

    def __call__(self, x: torch.Tensor, *, severity: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Styled copy of ``x`` (same shape, dtype, device), clipped to [0, 1]."""
        return apply_to_images(x, severity, generator, name=self.name, stochastic=self.stochastic,
                               apply=self._apply, clamp_input=True)

    def _apply(self, x: torch.Tensor, severity: float, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


@register("transform", "style_sketch")
@dataclass
class StyleSketch(Style):
    """Pencil sketch: dark strokes where the colour Sobel magnitude is strong, on white paper (COCO-O sketch).

    Strokes are ``ramp(|∇x| / max|∇x|, .12, .35)`` of the image lightly blurred (σ = .5 px at 32 px),
    the drawing ``1 - .9·strokes`` is grey; the output is ``(1-t)·x + t·drawing`` with t = .4 .. 1.
    """

    style = "sketch"
    stochastic = False

    def _apply(self, x, severity, generator):
        t = self.parameter(severity)
        strokes = _edges(_blur(x, 0.5 * _scale(x)))
        drawing = (1.0 - 0.9 * strokes).expand_as(x)
        return torch.lerp(x, drawing, t)


@register("transform", "style_cartoon")
@dataclass
class StyleCartoon(Style):
    """Cartoon: smoothed colours posterised to few levels, bold black outlines (COCO-O cartoon).

    Levels per channel 8, 6, 5, 4, 3 at severity 1..5 (nearest level for fractions); one-pixel outlines
    (Sobel edges of the smoothed image, ramp .15 .. .3), dilated by ``round(side / 64)`` px at
    severity 5; blend weight .5 .. 1 as in ``STYLE_LEVELS``.
    """

    style = "cartoon"
    stochastic = False

    def _apply(self, x, severity, generator):
        t = self.parameter(severity)
        k = max(1, min(5, round(severity)))
        levels = (8, 6, 5, 4, 3)[k - 1]
        flat = _blur(x, 0.7 * _scale(x))
        poster = torch.round(flat * (levels - 1)) / (levels - 1)
        width = round(0.5 * _scale(x)) if k == 5 else 0
        outline = _dilate(_edges(flat, 0.15, 0.3), width)
        toon = poster * (1.0 - outline)
        return torch.lerp(x, toon, t)


@register("transform", "style_painting")
@dataclass
class StylePainting(Style):
    """Painting: Kuwahara brush smoothing plus seeded low-frequency colour jitter (COCO-O painting).

    Kuwahara radius ``round(r·side/32)`` (at least 1) with r = 1, 1.5, 2, 2.5, 3; the colour jitter is
    a per-channel smooth field (4x4 cells, bicubic) of amplitude ``.05·r`` plus a per-image colour cast
    of ``.03·r`` (uniform ±), added to the filtered image.
    """

    style = "painting"

    def _apply(self, x, severity, generator):
        r = self.parameter(severity)
        n, c, h, w = x.shape
        field = _smooth_field(n, c, h, w, 4, generator, x)
        cast = 2 * _rand((n, c, 1, 1), generator, x) - 1
        out = kuwahara(x, max(1, round(r * _scale(x))))
        return out + 0.05 * r * field + 0.03 * r * cast


@register("transform", "style_weather")
@dataclass
class StyleWeather(Style):
    """Weather: fog or snow per image (seeded, even odds), at the same severity (COCO-O weather).

    Uses :class:`~robustlab.transforms.image_weather.Fog` and ``Snow`` (Hendrycks & Dietterich,
    2019) with the CIFAR table for sides up to 64 px and the ImageNet table above.
    """

    style = "weather"

    def _apply(self, x, severity, generator):
        table = "cifar" if max(x.shape[-2:]) <= 64 else "imagenet"
        s = self.parameter(severity)
        pick = _rand((x.shape[0], 1, 1, 1), generator, x) < 0.5
        fog = Fog(table=table)(x, severity=s, generator=generator)
        snow = Snow(table=table)(x, severity=s, generator=generator)
        return torch.where(pick, fog, snow)


@register("transform", "style_handmade")
@dataclass
class StyleHandmade(Style):
    """Handmade: a smooth random elastic warp (hand-drawn wobble) via ``grid_sample`` (COCO-O handmake).

    The displacement is a seeded 4x4-cell uniform grid per axis, bicubic-upsampled, times the amplitude
    a = 2, 4, 6, 8, 10 % of the side; sampling is bilinear with border padding, then a light blur
    (σ = .4 px at 32 px) softens the lines like a crayon drawing.
    """

    style = "handmade"

    def _apply(self, x, severity, generator):
        a = self.parameter(severity)
        n, _, h, w = x.shape
        disp = _smooth_field(n, 2, h, w, 4, generator, x) * (2 * a)  # normalised coords span 2
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2) as (x, y)
        grid = base + disp.permute(0, 2, 3, 1)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return _blur(out, 0.4 * _scale(x))


@register("transform", "style_tattoo")
@dataclass
class StyleTattoo(Style):
    """Tattoo: the image as dark ink on skin (COCO-O tattoo).

    Ink density ``max(edges, .6·(1 - luma))`` (edges as in the sketch); skin is a seeded per-image tone
    (light to dark, uniform) with multiplicative pore texture (smooth 8x8-cell field, ±6 %); ink colour
    is a dark blue-black. Blend weight .4 .. 1. Grey images get the luma of the result.
    """

    style = "tattoo"

    def _apply(self, x, severity, generator):
        t = self.parameter(severity)
        n, c, h, w = x.shape
        tone = _rand((n, 1, 1, 1), generator, x)
        light = torch.tensor([0.96, 0.80, 0.69], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        dark = torch.tensor([0.55, 0.38, 0.26], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        skin = torch.lerp(light, dark, tone) * (1 + 0.06 * _smooth_field(n, 1, h, w, 8, generator, x))
        ink_col = torch.tensor([0.10, 0.12, 0.22], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        ink = torch.maximum(_edges(_blur(x, 0.5 * _scale(x))), 0.6 * (1 - _grey(x)))
        tattoo = _as_channels(torch.lerp(skin, ink_col.expand_as(skin), ink), c)
        return torch.lerp(x, tattoo, t)


@register("transform", "style_texture")
@dataclass
class StyleTexture(Style):
    """Texture overlay: a seeded procedural texture alpha-blended over object and background.

    Texture per image: an oriented grating ``.5 + .5·sin(2π f u + 3·noise)`` (f = 2 .. 6 cycles per
    image, random angle, the phase warped by a smooth 6x6-cell field: wood/marble-like) mixed with
    value noise, coloured by a random RGB colour; alpha .15, .25, .35, .45, .55.
    """

    style = "texture"

    def _apply(self, x, severity, generator):
        alpha = self.parameter(severity)
        n, c, h, w = x.shape
        u = _rand((n, 5), generator, x)
        colour = _rand((n, 3, 1, 1), generator, x)
        warp = _smooth_field(n, 1, h, w, 6, generator, x)
        grain = _smooth_field(n, 1, h, w, 12, generator, x)
        ys = torch.linspace(0, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
        xs = torch.linspace(0, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
        ang = math.pi * u[:, 0].view(n, 1, 1, 1)
        freq = (2 + 4 * u[:, 1]).view(n, 1, 1, 1)
        proj = xs * ang.cos() + ys * ang.sin()
        pattern = 0.5 + 0.5 * torch.sin(2 * math.pi * freq * proj + 3 * warp + 2 * math.pi * u[:, 2].view(n, 1, 1, 1))
        tex = (0.75 * pattern + 0.25 * (0.5 + 0.5 * grain)) * (0.4 + 0.6 * colour)
        return torch.lerp(x, _as_channels(tex, c), alpha)


_CLASSES: dict[str, type[Style]] = {cls.style: cls for cls in (StyleSketch, StyleCartoon, StylePainting,
                                                               StyleWeather, StyleHandmade, StyleTattoo,
                                                               StyleTexture)}


def _check_style(style: str) -> str:
    key = str(style).removeprefix("style_")
    if key not in _CLASSES:
        raise ConfigError(f"unknown style {style!r}", fix=f"use one of {list(STYLES)}")
    return key


def style_images(x: torch.Tensor, style: str, severity: float = 5, *, seed: int = 0) -> torch.Tensor:
    """``x`` in ``style`` (a name of ``STYLES``, with or without ``style_``) at ``severity``, seeded by ``seed``."""
    return _CLASSES[_check_style(style)]()(x, severity=severity, generator=torch_generator(seed))


def shift_dataset(name: str | Dataset = "shapeworld", style: str = "sketch", *, n: int | None = None,
                  seed: int = 0, severity: float = 5, split: str = "test", **options: Any) -> Dataset:
    """A styled copy of a dataset (labels, ids and attributes kept, ``attrs["style"]`` added).

    Args:
        name: a :func:`~robustlab.data.load_dataset` name (``"shapeworld"``, ``"digits"``) or a Dataset.
        style: one of ``STYLES`` (``"sketch"`` or ``"style_sketch"``).
        n, seed, split, **options: passed to ``load_dataset`` (ignored for a Dataset, except seed);
            ``n=None`` keeps the split's default size.
        severity: style level in [0, 5]; the default 5 is the full style.
        seed: also seeds the style (through ``derive_seed(seed, "style", style)``).
    """
    key = _check_style(style)
    if isinstance(name, Dataset):
        ds = name
    else:
        from robustlab.data import load_dataset

        ds = load_dataset(name, split=split, n=n, seed=seed, **options)
    if ds.modality != "image" or not isinstance(ds.x, torch.Tensor):
        raise DataError(f"shift_dataset: dataset {ds.name!r} is {ds.modality}, styles need images",
                        fix="use an image dataset such as 'shapeworld' or 'digits'")
    x = style_images(ds.x, key, severity, seed=derive_seed(seed, "style", key))
    attrs = dict(ds.attrs)
    attrs["style"] = [f"{key}@{severity:g}"] * len(ds)
    return Dataset(x=x, y=ds.y.clone(), modality="image", class_names=list(ds.class_names),
                   name=f"{ds.name}+{key}", source=ds.source, ids=ds.ids.clone(), attrs=attrs)
