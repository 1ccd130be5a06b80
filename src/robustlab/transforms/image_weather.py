"""Weather image corruptions (fog, snow, spatter, frost) with the reference severity tables, in vectorised torch.

From "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (Hendrycks &
Dietterich, ICLR 2019). Parameters per severity 1..5 come from the reference code
(hendrycks/robustness): ``make_cifar_c.py`` (``table="cifar"``, default, for small images) and
``imagenet_c/corruptions.py`` (``table="imagenet"``, for ~224×224 images). The conventions (shapes,
severity 0..5 with interpolation, dtype/device kept, output clipped to [0, 1], seeded draws) are
those of :mod:`robustlab.transforms.image`. Frost overlays a procedural frost texture that
robustlab draws itself (the reference blends photographs of frost that robustlab does not ship).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from robustlab.core.registry import register
from robustlab.transforms._common import check_severity, interpolate
from robustlab.transforms._filters import _conv_same, gaussian_kernel1d
from robustlab.transforms._spatter import (  # noqa: F401 - canny / edge_distance are public here; tests use the rest
    _EMBOSS,
    _TAN22,
    _TAN67,
    _box3,
    _equalise,
    _water_mask,
    canny,
    edge_distance,
)
from robustlab.transforms.image import ImageCorruption
from robustlab.transforms.image_blur import clipped_zoom, motion_blur

__all__ = ["FOG_MAP_SIZE", "WEATHER_TABLES", "Fog", "Frost", "Snow", "Spatter", "canny", "edge_distance",
           "frost_texture", "plasma_fractal"]

#: fog: (thickness c, wibble decay); snow: (noise mean, noise std, zoom, threshold, motion-blur
#: radius, motion-blur σ, blend of the image with its whitened version)
WEATHER_TABLES: dict[str, dict[str, tuple]] = {
    "cifar": {
        "fog": ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),
        "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                 (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                 (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    },
    "imagenet": {
        "fog": ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
        "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                 (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                 (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    },
}

#: side of the plasma map the reference draws (then crops to the image) per table
FOG_MAP_SIZE = {"cifar": 32, "imagenet": 256}


class _Weather(ImageCorruption):
    stochastic = True
    identity_params: ClassVar[tuple] = ()  # the parameters of level 0 (no corruption)

    @property
    def levels(self) -> tuple:
        return WEATHER_TABLES[self.table][self.name]

    def parameter(self, severity: float) -> tuple[float, ...]:
        """The parameter tuple at ``severity``, each component interpolated (``identity_params`` at 0)."""
        s = check_severity(severity, self.name)
        return tuple(interpolate((self.identity_params[i], *(lv[i] for lv in self.levels)), s)
                     for i in range(len(self.identity_params)))


def plasma_fractal(n: int, size: int, decay: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` seeded diamond-square height maps ``(n, size, size)`` in [0, 1] (float64, generator's device).

    ``size`` must be a power of two. Starting from a zero corner, each round sets square centres to
    the mean of their 4 corners and then edge midpoints to the mean of their 4 neighbours (wrapping
    around), each plus uniform noise of amplitude w² (w = 100 at first, divided by ``decay`` per
    round); the map is then rescaled to [0, 1]. Larger ``decay`` gives smoother maps.
    """
    if size < 2 or size & (size - 1):
        raise ValueError(f"plasma_fractal needs a power-of-two size, got {size}")
    dev = generator.device
    a = torch.zeros(n, size, size, dtype=torch.float64, device=dev)
    step, wibble = size, 100.0

    def noisy_mean(total: torch.Tensor) -> torch.Tensor:
        u = torch.rand(total.shape, generator=generator, device=dev, dtype=torch.float32).double()
        return total / 4 + wibble * wibble * (2 * u - 1)

    while step >= 2:
        half = step // 2
        corners = a[:, ::step, ::step]
        total = corners + corners.roll(-1, dims=1)
        a[:, half::step, half::step] = noisy_mean(total + total.roll(-1, dims=2))
        centres, corners = a[:, half::step, half::step], a[:, ::step, ::step]
        a[:, ::step, half::step] = noisy_mean(centres + centres.roll(1, dims=1)
                                              + corners + corners.roll(-1, dims=2))
        a[:, half::step, ::step] = noisy_mean(centres + centres.roll(1, dims=2)
                                              + corners + corners.roll(-1, dims=1))
        step, wibble = half, wibble / decay
    lo = a.amin(dim=(1, 2), keepdim=True)
    a = a - lo
    return a / a.amax(dim=(1, 2), keepdim=True).clamp_min(1e-300)


@register("transform", "fog")
@dataclass
class Fog(_Weather):
    """Fog: add a plasma-fractal haze, then rescale to the original maximum (Hendrycks & Dietterich, 2019).

    (thickness c, decay) per severity 1..5 — CIFAR-10-C: (0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2),
    (1.5, 1.75); ImageNet-C: (1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4) (level 0: c = 0).
    ``x' = (x + c·map)·m/(m + c)`` with m the image's maximum and one diamond-square map per image
    (see :func:`plasma_fractal`), shared by the channels. Like the reference the map is drawn at
    32×32 (CIFAR) or 256×256 (ImageNet) and its top-left corner cropped to the image; larger images
    get the next power of two that covers them.
    """

    name = "fog"

    @property
    def identity_params(self) -> tuple[float, float]:  # no haze; level 1's decay
        return (0.0, self.levels[0][1])

    def _apply(self, x, severity, generator):
        c, decay = self.parameter(severity)
        n, _, h, w = x.shape
        size = FOG_MAP_SIZE[self.table]
        while size < max(h, w):
            size *= 2
        haze = plasma_fractal(n, size, decay, generator)[:, None, :h, :w].to(device=x.device, dtype=x.dtype)
        m = x.amax(dim=(1, 2, 3), keepdim=True)
        return (x + c * haze) * m / (m + c)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B`` of RGB images; the channel mean otherwise (a grey image itself)."""
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    return 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]


@register("transform", "snow")
@dataclass
class Snow(_Weather):
    """Snow: motion-blurred flakes from thresholded zoomed noise over a whitened image (Hendrycks & Dietterich, 2019).

    Per severity (mean, std, zoom, threshold, radius, σ, blend) — CIFAR-10-C: (0.1, 0.2, 1, 0.6, 8,
    3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3,
    2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8); ImageNet-C: (0.1, 0.3, 3, 0.5,
    10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5,
    0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55). Per image: Gaussian noise(mean, std)
    is zoomed into the centre, values under the threshold zeroed, clipped and taken to 8 bits, then
    motion-blurred (ImageMagick kernel, :func:`~robustlab.transforms.image_blur.motion_blur`) at an
    angle uniform in [−135°, −45°]; the image becomes ``blend·x + (1 − blend)·max(x, 1.5·grey + 0.5)``
    and gets the flakes plus the flakes rotated 180°. Level 0 has no flakes and blend 1.
    """

    name = "snow"
    identity_params = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0)

    def _apply(self, x, severity, generator):
        mean, std, zoom, thresh, radius, sigma, blend = self.parameter(severity)
        n, _, h, w = x.shape
        dev = generator.device
        noise = torch.randn((n, 1, h, w), generator=generator, device=dev, dtype=torch.float32)
        angle = torch.rand(n, generator=generator, device=dev) * 90.0 - 135.0
        flakes = noise.to(device=x.device, dtype=x.dtype) * std + mean
        flakes = clipped_zoom(flakes, zoom) if zoom > 1 else flakes
        flakes = torch.where(flakes < thresh, torch.zeros_like(flakes), flakes)
        flakes = torch.floor(flakes.clamp(0.0, 1.0) * 255.0) / 255.0
        flakes = motion_blur(flakes, radius, sigma, angle)
        x = blend * x + (1 - blend) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
        return x + flakes + flakes.flip(-2, -1)


WEATHER_TABLES["cifar"]["spatter"] = (
    (0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
    (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1))
WEATHER_TABLES["imagenet"]["spatter"] = (
    (0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
    (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1))
_WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise
_MUD = (63 / 255, 42 / 255, 20 / 255)  # mud brown


def _gauss(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with repeated edges, truncated at 4σ (``skimage.filters.gaussian``)."""
    k = gaussian_kernel1d(sigma)
    return _conv_same(_conv_same(x, k[None, :], "replicate"), k[:, None], "replicate")


@register("transform", "spatter")
@dataclass
class Spatter(_Weather):
    """Spatter: water drops (levels 1–3) or mud (levels 4–5) over the image (Hendrycks & Dietterich, 2019).

    Per severity (mean, std, σ, threshold, strength, mud?) — CIFAR-10-C: (0.62, 0.1, 0.7, 0.7,
    0.5, water), (0.65, 0.1, 0.8, 0.7, 0.5, water), (0.65, 0.3, 1, 0.69, 0.5, water), (0.65, 0.1,
    0.7, 0.69, 0.6, mud), (0.65, 0.1, 0.5, 0.68, 0.6, mud); ImageNet-C: (0.65, 0.3, 4, 0.69, 0.6,
    water), (0.65, 0.3, 3, 0.68, 0.6, water), (0.65, 0.3, 2, 0.68, 0.5, water), (0.65, 0.3, 1,
    0.65, 1.5, mud), (0.67, 0.4, 1, 0.65, 1.5, mud). A liquid layer is Gaussian noise(mean, std)
    blurred with σ, zeroed under the threshold. Water, as the reference's OpenCV chain: Canny edges
    (50, 150) of the 8-bit layer, distance to them capped at 20, 3×3 mean, histogram equalisation,
    an emboss filter (8-bit saturating), 3×3 mean; ``m = layer·that``, scaled to max ``strength``,
    adds ``m·(175, 238, 238)/255``. Mud: the mask ``layer > threshold`` blurred with σ = strength,
    zeroed under 0.8, blends towards (63, 42, 20)/255. Grey images use the luma of those colours.
    Deviations: exact Euclidean distances (OpenCV uses a 5×5 chamfer approximation); the 8-bit
    layer is clipped where the reference's ``astype(uint8)`` would wrap; the blurred distances are
    floored with a 1e-9 slack, so a mean that is exactly an integer (e.g. nine capped 20s) stays
    that integer whatever the float summation order; a fractional severity
    blends the outputs of its two neighbouring levels (same noise), as the two kinds do not mix.

    Precision: the layer blur and the distances' 3×3 means, where rounding decides a floor, are
    float64; the rest of the water chain is exact integer arithmetic (float32 / int16 / int32, see
    :func:`_water_mask`) and the final blend is in the image's dtype, so the output equals an
    all-float64 computation up to that dtype's rounding.
    """

    name = "spatter"

    def parameter(self, severity: float) -> tuple[float, ...]:
        """The parameters of level ``ceil(severity)`` (level 1's for severities in (0, 1])."""
        return self.levels[max(math.ceil(check_severity(severity, self.name)), 1) - 1]

    def _apply(self, x, severity, generator):
        n, _, h, w = x.shape
        z = torch.randn((n, 1, h, w), generator=generator, device=generator.device, dtype=torch.float32)
        # float64 noise, stored H-major (H, N, W) for the water path
        z = torch.empty((h, n, w), dtype=torch.float64, device=x.device).copy_(z[:, 0].transpose(0, 1))
        hi = max(math.ceil(severity), 1)
        t = severity - (hi - 1)
        out = self._level(x, z, self.levels[hi - 1])
        if t < 1:
            below = x if hi == 1 else self._level(x, z, self.levels[hi - 2])
            out = (1 - t) * below + t * out
        return out

    @staticmethod
    def _colour(rgb: tuple[float, float, float], c: int, like: torch.Tensor) -> torch.Tensor:
        vals = rgb if c == 3 else (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2],) * c
        return torch.tensor(vals, dtype=like.dtype, device=like.device).view(1, c, 1, 1)

    def _level(self, x: torch.Tensor, z: torch.Tensor, p: tuple) -> torch.Tensor:
        mean, std, sigma, thresh, strength, mud = p
        c = x.shape[1]
        if mud:
            layer = _gauss(z.transpose(0, 1)[:, None] * std + mean, sigma)
            layer = torch.where(layer < thresh, torch.zeros_like(layer), layer)
            m = _gauss((layer > thresh).double(), strength)
            m = torch.where(m < 0.8, torch.zeros_like(m), m)
            return (x.double() * (1 - m) + self._colour(_MUD, c, m) * m).to(x.dtype)
        if min(x.shape[-2:]) < 2:  # the 3×3 reflect filters need 2 pixels a side
            return x.clone()
        h, n, w = z.shape
        step = max(1, SPATTER_CHUNK_PIXELS // (h * w))  # images are independent: bound the buffers
        if n <= step:
            m = _water_mask(z, mean, std, sigma, thresh)
        else:
            m = torch.empty((h, n, w), dtype=torch.float32, device=z.device)
            for i in range(0, n, step):
                m[:, i:i + step] = _water_mask(z[:, i:i + step].contiguous(), mean, std, sigma, thresh)
        m = m.to(x.dtype)
        m = m.mul_(strength / m.amax(dim=(0, 2), keepdim=True).clamp_min(1e-12))
        return torch.addcmul(x, m.transpose(0, 1)[:, None], self._colour(_WATER, c, x))


#: spatter's water path runs on chunks of about this many pixels: each chunk's buffers stay small (large
#: fresh allocations are page-faulted on every call; small ones stay in cache), a memory bound, not a parameter
SPATTER_CHUNK_PIXELS = 1 << 18

#: frost: (image weight, frost weight) per severity, from make_cifar_c.py and imagenet_c/corruptions.py
WEATHER_TABLES["cifar"]["frost"] = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))
WEATHER_TABLES["imagenet"]["frost"] = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
_FROST_TINT = (0.86, 0.96, 1.04)  # R, G, B multipliers: bluish white, like the reference photographs


def _value_noise(n: int, h: int, w: int, cell: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, 1, h, w)`` smooth noise: uniform values on a grid of ``cell``-pixel squares, bilinearly joined."""
    gh, gw = -(-h // cell) + 1, -(-w // cell) + 1
    grid = torch.rand((n, 1, gh, gw), generator=generator, device=generator.device, dtype=torch.float32)
    big = F.interpolate(grid, size=((gh - 1) * cell + 1, (gw - 1) * cell + 1), mode="bilinear", align_corners=True)
    return big[..., :h, :w]


def _standardise(t: torch.Tensor) -> torch.Tensor:
    m = t.mean(dim=(1, 2, 3), keepdim=True)
    return (t - m) / t.std(dim=(1, 2, 3), keepdim=True, correction=0).clamp_min(1e-6)


def frost_texture(n: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` seeded procedural frost textures ``(n, 3, h, w)`` in [0, 1] (float32, generator's device).

    A stand-in for ImageNet-C's frost photographs, matched to their statistics (means 0.35–0.8,
    standard deviations ≈ 0.1–0.17, bluish white with B > G > R): per image a base brightness uniform
    in [0.4, 0.75]; multi-scale value noise (2, 4, 8, 16 and 32-pixel cells, larger cells weighted
    more) of standard deviation 0.09; thin bright crystalline veins, the ridges ``(1 − |2f − 1|)⁸`` of
    two further noise fields f (4 and 8-pixel cells), up to +0.35; then an RGB tint (0.86, 0.96, 1.04).
    """
    base = sum(math.sqrt(c) * _value_noise(n, h, w, c, generator) for c in (2, 4, 8, 16, 32))
    base = _standardise(base)
    veins = torch.zeros((n, 1, h, w), device=generator.device)
    for c in (4, 8):
        f = _value_noise(n, h, w, c, generator)
        f = (f - f.amin(dim=(2, 3), keepdim=True)) / (f.amax(dim=(2, 3), keepdim=True)
                                                     - f.amin(dim=(2, 3), keepdim=True)).clamp_min(1e-6)
        veins = torch.maximum(veins, (1 - (2 * f - 1).abs()) ** 8)
    level = 0.4 + 0.35 * torch.rand((n, 1, 1, 1), generator=generator, device=generator.device)
    frost = level + 0.09 * base + 0.35 * veins
    tint = torch.tensor(_FROST_TINT, device=generator.device).view(1, 3, 1, 1)
    return (frost * tint).clamp(0.0, 1.0)


@register("transform", "frost")
@dataclass
class Frost(_Weather):
    """Frost: ``c0·x + c1·frost`` with a procedural frost texture per image (after Hendrycks & Dietterich, 2019).

    (c0, c1) per severity 1..5 — CIFAR-10-C: (1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75,
    0.45); ImageNet-C: (1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75) (level 0: (1, 0);
    fractions interpolate both), then clipped. Deviation: the reference blends a random crop of one
    of six frost photographs shipped with it; robustlab ships no photographs and downloads nothing,
    so the frost layer is :func:`frost_texture`, a seeded procedural texture matched to the
    photographs' brightness, contrast and tint. Numbers are therefore not comparable to ImageNet-C's
    or CIFAR-10-C's frost. Grey (1-channel) images get the texture's luma; other channel counts
    its channel mean.
    """

    name = "frost"
    identity_params = (1.0, 0.0)

    def _apply(self, x, severity, generator):
        c0, c1 = self.parameter(severity)
        n, c, h, w = x.shape
        frost = frost_texture(n, h, w, generator).to(device=x.device, dtype=x.dtype)
        if c != 3:
            frost = _grey(frost).expand(n, c, h, w)
        return c0 * x + c1 * frost
