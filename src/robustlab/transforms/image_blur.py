"""Motion, zoom and glass blur with the reference severity tables, in vectorised torch.

From "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (Hendrycks &
Dietterich, ICLR 2019). Parameters per severity 1..5 come from the reference code
(hendrycks/robustness): ``make_cifar_c.py`` (``table="cifar"``, default, for small images) and
``imagenet_c/corruptions.py`` (``table="imagenet"``, for ~224×224 images). The conventions (shapes,
severity 0..5 with interpolation, dtype/device kept, output clipped to [0, 1], seeded draws) are
those of :mod:`robustlab.transforms.image`. Glass blur's pixel swaps are vectorised, which changes
their order (see :func:`local_swaps`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlab.core.registry import register
from robustlab.transforms._common import check_severity, interpolate
from robustlab.transforms.image import ImageCorruption, _conv_same, gaussian_kernel1d

__all__ = ["BLUR_TABLES", "GlassBlur", "MotionBlur", "ZoomBlur", "clipped_zoom", "local_swaps", "motion_blur"]

#: motion_blur: (radius, sigma) in pixels of ImageMagick's MotionBlurImage; zoom_blur: (step, count)
#: of the zoom factors 1, 1 + step, ..., 1 + (count − 1)·step (``np.arange`` in the reference);
#: glass_blur: (Gaussian σ in pixels, largest shift d in pixels, swap passes).
BLUR_TABLES: dict[str, dict[str, tuple]] = {
    "cifar": {
        "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        "zoom_blur": ((0.01, 7), (0.01, 12), (0.01, 16), (0.01, 21), (0.01, 26)),
        "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    },
    "imagenet": {
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "zoom_blur": ((0.01, 12), (0.01, 16), (0.02, 11), (0.02, 13), (0.03, 11)),
        "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    },
}


class _Blur(ImageCorruption):
    @property
    def levels(self) -> tuple:
        return BLUR_TABLES[self.table][self.name]


#: motion_blur works on chunks of about this many pixels: each chunk's buffers stay small, since large
#: fresh allocations are page-faulted on every call (a memory bound, not a parameter)
MOTION_CHUNK_PIXELS = 1 << 17


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle: torch.Tensor) -> torch.Tensor:
    """ImageMagick-style motion blur of ``x (N, C, H, W)``, one direction per image.

    Output pixel = Σ_i k_i · x(p + round(i·(cos a, sin a))) for taps i = 0 .. 2·ceil(radius), with a
    one-sided Gaussian ``k_i ∝ exp(−i²/(2σ²))`` (normalised), ``a = angle[n]`` in degrees (0 = along
    +x, i.e. to the right; positive turns towards +y, down) and edge pixels repeated outside the image
    (ImageMagick's default virtual pixels). ``sigma = 0`` is the identity. Loops over taps only (and
    over chunks of images, to bound memory): each image is stored channels-last and edge-padded along
    x only as far as the taps reach, so each shifted copy is one ``index_select`` of whole pixel rows
    (C·W contiguous values; rows outside the image are clamped row indices), accumulated tap by tap.
    """
    width = 2 * math.ceil(radius) + 1 if radius > 0 else 1
    taps = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(taps**2) / (2 * sigma**2)) if sigma > 0 else (taps == 0).double()
    k = (k / k.sum()).tolist()
    used = [i for i, weight in enumerate(k) if weight >= 1e-12]  # negligible far taps of a narrow Gaussian
    n, c, h, w = x.shape
    dev = x.device
    theta = angle.to(device=dev, dtype=torch.float64) * (math.pi / 180)
    steps = torch.tensor(used, dtype=torch.float64, device=dev)[:, None]
    dx = torch.ceil(steps * torch.cos(theta) - 0.5).long()  # (taps, N)
    dy = torch.ceil(steps * torch.sin(theta) - 0.5).long()
    weights = [k[i] for i in used]
    out = torch.empty((n, c, h, w), dtype=x.dtype, device=dev)
    step = max(1, MOTION_CHUNK_PIXELS // (h * w))
    for j in range(0, n, step):
        _motion_chunk(x[j:j + step], dx[:, j:j + step], dy[:, j:j + step], weights, out[j:j + step])
    return out


def _motion_chunk(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, weights: list[float],
                  out: torch.Tensor) -> None:
    """:func:`motion_blur` of the images ``x`` with tap offsets ``dx, dy (taps, N)``, into ``out``."""
    n, c, h, w = x.shape
    dev = x.device
    left, right = max(0, -int(dx.min())), max(0, int(dx.max()))
    wq = w + left + right
    # channels-last, edge-padded along x: (N, H, Wq, C); a "row" is C·W contiguous values from any pixel
    xq = torch.empty((n, h, wq, c), dtype=x.dtype, device=dev)
    xc = x.permute(0, 2, 3, 1)
    xq[:, :, left:left + w].copy_(xc)
    if left:
        xq[:, :, :left].copy_(xc[:, :, :1])
    if right:
        xq[:, :, left + w:].copy_(xc[:, :, -1:])
    rows = xq.view(-1).as_strided((n * h * wq - w + 1, w * c), (c, 1))
    first_row = torch.arange(n, device=dev)[:, None] * h
    ys = torch.arange(h, device=dev)[None, :]

    def start(t: int) -> torch.Tensor:
        """Start pixel of the row read by output row y of image m at tap t (rows outside are clamped)."""
        src_y = (ys + dy[t][:, None]).clamp_(0, h - 1)
        return ((first_row + src_y) * wq + (left + dx[t])[:, None]).view(-1)

    out_cl = out.permute(0, 2, 3, 1)  # the result, written channels-last by the last tap
    if len(weights) == 1:
        out_cl.copy_(torch.index_select(rows, 0, start(0)).view(n, h, w, c).mul_(weights[0]))
        return
    acc = torch.index_select(rows, 0, start(0)).mul_(weights[0])
    buf = torch.empty_like(acc)
    for t in range(1, len(weights) - 1):
        acc.add_(torch.index_select(rows, 0, start(t), out=buf), alpha=weights[t])
    torch.index_select(rows, 0, start(len(weights) - 1), out=buf)
    torch.add(acc.view(n, h, w, c), buf.view(n, h, w, c), alpha=weights[-1], out=out_cl)


@register("transform", "motion_blur")
@dataclass
class MotionBlur(_Blur):
    """Camera-shake blur along a random direction per image (Hendrycks & Dietterich, ICLR 2019).

    (radius, σ) in pixels per severity 1..5 — CIFAR-10-C: (6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5);
    ImageNet-C: (10, 3), (15, 5), (15, 8), (15, 12), (20, 15) (level 0: (0, 0), fractions interpolate
    both). The angle is uniform in [−45°, 45°] per image, drawn from the generator. The reference
    calls ImageMagick's ``MotionImage``: a one-sided Gaussian line kernel of ``2·ceil(radius) + 1``
    taps (see :func:`motion_blur`), reproduced here as shifted sums; edges are repeated. The
    reference's PNG round trip through ImageMagick rounds to 8 bits; the result here stays float.
    """

    name = "motion_blur"
    stochastic = True

    def parameter(self, severity: float) -> tuple[float, float]:
        """(radius, σ) at ``severity``, interpolated per component; (0, 0) at 0."""
        s = check_severity(severity, self.name)
        return (interpolate((0.0, *(lv[0] for lv in self.levels)), s),
                interpolate((0.0, *(lv[1] for lv in self.levels)), s))

    def _apply(self, x, severity, generator):
        radius, sigma = self.parameter(severity)
        angle = torch.rand(x.shape[0], generator=generator, device=generator.device) * 90.0 - 45.0
        return motion_blur(x, radius, sigma, angle)


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom into the centre of ``x (N, C, H, W)`` by ``factor`` ≥ 1, keeping the size (reference helper).

    Crops the centred ``ceil(H/factor) × ceil(W/factor)`` window, enlarges it by ``factor`` with
    linear interpolation on aligned corners (``scipy.ndimage.zoom(order=1)``, output size
    ``round(side·factor)``) and trims the centre back to H × W.
    """
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top:top + ch, left:left + cw]
    zh, zw = max(h, round(ch * factor)), max(w, round(cw * factor))
    big = F.interpolate(crop, size=(zh, zw), mode="bilinear", align_corners=True)
    th, tw = (zh - h) // 2, (zw - w) // 2
    return big[..., th:th + h, tw:tw + w]


@register("transform", "zoom_blur")
@dataclass
class ZoomBlur(_Blur):
    """Zoom blur: the mean of the image and centre zooms of it (Hendrycks & Dietterich, ICLR 2019).

    Zoom factors per severity 1..5 — CIFAR-10-C: 1.00..1.06, 1.00..1.11, 1.00..1.15, 1.00..1.20,
    1.00..1.25 in steps of 0.01; ImageNet-C: 1.00..1.11 and 1.00..1.15 by 0.01, 1.00..1.20 and
    1.00..1.24 by 0.02, 1.00..1.30 by 0.03 (the counts the reference's float ``np.arange`` gives).
    Output = (x + Σ_f zoom(x, f)) / (count + 1), see :func:`clipped_zoom`. A fractional severity
    interpolates the largest zoom and uses the upper level's step. Deterministic (no generator).
    """

    name = "zoom_blur"

    def factors(self, severity: float) -> list[float]:
        """The zoom factors at ``severity`` (``[]`` at 0)."""
        s = check_severity(severity, self.name)
        if s == 0:
            return []
        top = interpolate((0.0, *(st * (cnt - 1) for st, cnt in self.levels)), s)
        step = self.levels[min(math.ceil(s), 5) - 1][0]
        count = int(math.floor(top / step + 1e-9)) + 1
        return [1.0 + i * step for i in range(count)]

    def _apply(self, x, severity, generator):
        zs = self.factors(severity)
        out = x.clone()
        for f in zs:
            out = out + clipped_zoom(x, f)
        return out / (len(zs) + 1)


def local_swaps(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """One pass of the reference's local pixel shuffle on ``x (N, C, H, W)``, vectorised (a new tensor).

    Every pixel (h, w) with ``d < h ≤ H − d`` and ``d < w ≤ W − d`` (d = ``max_shift``) swaps with
    (h + dy, w + dx), dy, dx uniform integers in [−d, d − 1] (``np.random.randint(-d, d)``), drawn
    per image. The reference swaps one pixel at a time in reverse raster order; here the pixels are
    split into (2d + 1)² classes by (h mod 2d + 1, w mod 2d + 1), whose swaps touch distinct pixels,
    and each class is swapped at once, classes in reverse order. Same swaps per pixel, but a pixel
    carried along by several swaps follows a different chain than in strict raster order.
    """
    n, c, h, w = x.shape
    d, period = max_shift, 2 * max_shift + 1
    out = x.reshape(n, c, h * w).clone()
    dev = generator.device
    shifts = torch.randint(-d, d, (n, 2, h, w), generator=generator, device=dev).to(x.device)
    rows_all = torch.arange(d + 1, max(d + 1, h - d + 1), device=x.device)
    cols_all = torch.arange(d + 1, max(d + 1, w - d + 1), device=x.device)
    for a in reversed(range(period)):
        rows = rows_all[rows_all % period == a]
        for b in reversed(range(period)):
            cols = cols_all[cols_all % period == b]
            if rows.numel() == 0 or cols.numel() == 0:
                continue
            dy = shifts[:, 0][:, rows[:, None], cols[None, :]]
            dx = shifts[:, 1][:, rows[:, None], cols[None, :]]
            src = (rows[:, None] * w + cols[None, :]).expand(n, -1, -1).reshape(n, 1, -1).expand(n, c, -1)
            tgt = ((rows[:, None] + dy) * w + cols[None, :] + dx).reshape(n, 1, -1).expand(n, c, -1)
            v_src, v_tgt = out.gather(2, src), out.gather(2, tgt)
            out.scatter_(2, src, v_tgt)
            out.scatter_(2, tgt, v_src)
    return out.reshape(n, c, h, w)


@register("transform", "glass_blur")
@dataclass
class GlassBlur(_Blur):
    """Frosted-glass blur: Gaussian blur, local pixel swaps, Gaussian blur again (Hendrycks & Dietterich, 2019).

    (σ, d, passes) per severity 1..5 — CIFAR-10-C: (0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25,
    1, 2), (0.4, 1, 2); ImageNet-C: (0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2).
    As the reference: blur with σ (edges repeated, truncated at 4σ), take to 8 bits (truncating),
    swap each interior pixel with a random neighbour within d (see :func:`local_swaps`) ``passes``
    times, blur with σ again. Deviation: the swaps are done in conflict-free classes, vectorised,
    not one by one in raster order. A fractional severity interpolates σ and uses the next level's
    d and passes. The CIFAR table is not monotone in effect (level 4 has a smaller σ than level 3).
    """

    name = "glass_blur"
    stochastic = True

    def parameter(self, severity: float) -> tuple[float, int, int]:
        """(σ, d, passes) at ``severity``: σ interpolated (0 at level 0), d and passes of the next level."""
        s = check_severity(severity, self.name)
        sigma = interpolate((0.0, *(lv[0] for lv in self.levels)), s)
        _, d, passes = self.levels[max(math.ceil(s), 1) - 1]
        return sigma, int(d), int(passes)

    def _apply(self, x, severity, generator):
        sigma, d, passes = self.parameter(severity)
        k = gaussian_kernel1d(sigma)

        def blur(t: torch.Tensor) -> torch.Tensor:
            return _conv_same(_conv_same(t, k[None, :], "replicate"), k[:, None], "replicate")

        y = torch.floor(blur(x).clamp(0.0, 1.0) * 255.0) / 255.0
        for _ in range(passes):
            y = local_swaps(y, d, generator)
        return blur(y)
