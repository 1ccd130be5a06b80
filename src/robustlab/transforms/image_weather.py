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
from robustlab.transforms._filters import _band_matrix, _conv_same, gaussian_kernel1d
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


# The water path below works on images stored row-major across the batch, ``(H, N, W)`` ("H-major"):
# a filter along W is a product with a W×W matrix or shifted slices of the last axis, one along H is a
# single product with an H×H matrix or shifted slices of whole (N, W) rows.

def _gauss_hnw(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """:func:`_gauss` of contiguous H-major images ``(H, N, W)``: one matrix product per axis (columns first)."""
    h, n, w = x.shape
    k = gaussian_kernel1d(sigma)
    bw, bh = (_band_matrix(k, m, "replicate").to(dtype=x.dtype, device=x.device) for m in (w, h))  # cached
    y = x.view(h * n, w) @ bw.T
    return (bh @ y.view(h, n * w)).view(h, n, w)


def _reflect1(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` with one sample of reflect-101 border (``cv2.BORDER_DEFAULT``) on both ends of ``dim`` (size ≥ 2)."""
    n = t.shape[dim]
    return torch.cat([t.narrow(dim, 1, 1), t, t.narrow(dim, n - 2, 1)], dim)


def _filter3(t: torch.Tensor, dim: int, weights: tuple[float, float, float]) -> torch.Tensor:
    """3-tap correlation ``Σ w_k·t[i + k − 1]`` along ``dim`` with reflect-101 borders, as shifted sums (new tensor)."""
    n = t.shape[dim]
    a, b, c = weights
    out = t * b if b else torch.zeros_like(t)
    if a:  # t[i − 1]; t[−1] reflects to t[1]
        out.narrow(dim, 1, n - 1).add_(t.narrow(dim, 0, n - 1), alpha=a)
        out.narrow(dim, 0, 1).add_(t.narrow(dim, 1, 1), alpha=a)
    if c:  # t[i + 1]; t[n] reflects to t[n − 2]
        out.narrow(dim, 0, n - 1).add_(t.narrow(dim, 1, n - 1), alpha=c)
        out.narrow(dim, n - 1, 1).add_(t.narrow(dim, n - 2, 1), alpha=c)
    return out


def _box3_hnw(x: torch.Tensor) -> torch.Tensor:
    """3×3 mean with reflect-101 borders (``cv2.blur(x, (3, 3))``) of H-major images; H, W ≥ 2."""
    return _filter3(_filter3(x, 2, (1.0, 1.0, 1.0)), 0, (1.0, 1.0, 1.0)).mul_(1 / 9)


def _box3(x: torch.Tensor) -> torch.Tensor:
    """3×3 mean with reflect-101 borders (``cv2.blur(x, (3, 3))``) of ``(N, 1, H, W)`` images; H, W ≥ 2."""
    return _box3_hnw(x[:, 0].transpose(0, 1)).transpose(0, 1)[:, None]


def _dilate3_flat(m: torch.Tensor, row: int, rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """3×3 binary dilation of a flat boolean mask whose rows are ``row`` long and padded with one False
    column on each side, into ``out`` (``rows``: scratch): neighbours are flat shifts by ±1 (across a
    padding column, never to another row's pixels) and ±``row``. The padding columns may come out
    True; the caller masks them."""
    rows.copy_(m)
    rows[1:] |= m[:-1]
    rows[:-1] |= m[1:]
    out.copy_(rows)
    out[row:] |= rows[:-row]
    out[:-row] |= rows[row:]
    return out


#: cv2.Canny's direction sectors: |gy| ≤ tan 22.5°·|gx| is horizontal, |gy| > tan 67.5°·|gx| vertical
_TAN22, _TAN67 = 0.41421356, 2.41421356


def _canny_hnw(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """:func:`canny` of H-major 8-bit-valued float32 images ``(H, N, W)``, as ``(H, N, W + 2)``: each row
    with one False column on each side.

    Every value is an exact integer in float32 (|Sobel| ≤ 1020). The sector tests ``|gy| ≤ |gx|·t``
    compare an integer with a product: for |gx|, |gy| ≤ 1020 no such product lies within 3e-4 of an
    integer (best rational approximations of √2 ∓ 1), far beyond float32's rounding of it, so the
    sectors are those of exact arithmetic (checked exhaustively in the tests).
    """
    h, n, w = img.shape
    # work on rows padded with one column on each side, flattened: a shift along W is a flat shift by
    # ±1 and one along H a flat shift by ±row, so every filter tap and neighbour is a contiguous slice
    row = n * (w + 2)
    size = h * row
    p = img.new_empty((h, n, w + 2))
    p[..., 1:-1] = img
    p[..., 0], p[..., -1] = img[..., 1], img[..., -2]  # reflect-101 columns for the Sobel taps
    pf = p.view(-1)
    d = img.new_zeros(size)  # [-1, 0, 1] along W (valid on the image columns)
    torch.sub(pf[2:], pf[:-2], out=d[1:-1])
    sm = img.new_zeros(size)  # [1, 2, 1] along W
    torch.add(pf[2:], pf[:-2], out=sm[1:-1]).add_(pf[1:-1], alpha=2.0)
    d, sm = d.view(h, row), sm.view(h, row)
    gx = torch.mul(d, 2.0, out=p.view(h, row))  # [1, 2, 1] along H, reflect-101 rows (p's memory is free)
    gx[1:] += d[:-1]
    gx[0] += d[1]
    gx[:-1] += d[1:]
    gx[-1] += d[-2]
    gy = d  # [-1, 0, 1] along H: 0 on the first and last rows (reflect-101); d's memory is free
    torch.sub(sm[2:], sm[:-2], out=gy[1:-1])
    gy[0], gy[-1] = 0.0, 0.0
    gx, gy, tmp = gx.view(-1), gy.view(-1), sm.view(-1)
    same_sign = torch.mul(gx, gy, out=tmp) > 0
    ax, ay = gx.abs_(), gy.abs_()
    horiz = ay <= torch.mul(ax, _TAN22, out=tmp)
    vert = ay > torch.mul(ax, _TAN67, out=tmp)
    vert &= ~horiz
    # magnitudes with a zero border all round (one zero more at each end of the flat array)
    flat = img.new_zeros((h + 2) * row + 2)
    centre = torch.add(ax, ay, out=flat[row + 1:row + 1 + size])
    cv = centre.view(h, n, w + 2)
    cv[..., 0], cv[..., -1] = 0.0, 0.0
    # the sector's two neighbours: magnitudes are integers, so m > a and m ≥ b ⟺ m > max(a, b − ½), one
    # comparison per sector (masks combined in place: torch.where on masks is slow on CPU)
    lower = flat - 0.5

    def local_max(dy: int, dx: int) -> torch.Tensor:
        o = row + 1 + dy * row + dx
        o2 = 2 * (row + 1) - o  # the opposite neighbour
        return torch.gt(centre, torch.maximum(flat[o:o + size], lower[o2:o2 + size], out=tmp))

    diag = horiz | vert
    diag.logical_not_()
    keep = local_max(0, -1)
    keep &= horiz
    for (dy, dx), sector in (((-1, 0), vert), ((-1, -1), diag & same_sign), ((-1, 1), diag & ~same_sign)):
        k = local_max(dy, dx)
        k &= sector
        keep |= k
    keep &= centre > low  # weak edges (False on the padding columns: magnitude 0)
    weak = keep
    edges = centre > high
    edges &= weak
    count = _count(edges)
    rows_buf, out_buf = torch.empty_like(edges), torch.empty_like(edges)
    while True:  # grow strong edges through weak pixels (8-connectivity); edges only ever grow
        _dilate3_flat(edges, row, rows_buf, out_buf)
        torch.logical_and(weak, out_buf, out=edges)
        grown = _count(edges)
        if grown == count:
            return edges.view(h, n, w + 2)
        count = grown


def _count(m: torch.Tensor) -> int:
    """A number that strictly increases when pixels are added to the boolean mask ``m``: its bytes summed
    two at a time as int16 words (each ≤ 257) into an int32 total (no overflow for up to 2²³ bytes)."""
    b = m.reshape(-1).view(torch.uint8)
    if b.numel() % 2 or b.storage_offset() % 2 or b.numel() > 1 << 23:
        return int(b.sum())
    return int(b.view(torch.int16).sum(dtype=torch.int32))


def canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Canny edges of 8-bit-valued images ``(N, 1, H, W)`` like ``cv2.Canny(img, low, high)`` (bool).

    3×3 Sobel gradients (reflect-101 borders), L1 magnitude, non-maximum suppression along the
    gradient direction quantised to 0°/45°/90°/135°, then hysteresis: pixels above ``high`` and the
    8-connected pixels above ``low`` reachable from them. Exact integer arithmetic in float32.
    """
    hnw = img[:, 0].transpose(0, 1).to(torch.float32)
    return _canny_hnw(hnw, low, high)[..., 1:-1].transpose(0, 1)[:, None]


def _scan_max(t: torch.Tensor, span: int, reverse: bool = False) -> torch.Tensor:
    """Running maximum of flat ``t`` over the last ``span`` positions up to each (from each onwards if
    ``reverse``), by doubling steps of shifted maxima of contiguous slices."""
    cur, nxt = t, torch.empty_like(t)
    s = 1
    while s < span:
        if reverse:
            nxt[-s:] = cur[-s:]
            torch.maximum(cur[:-s], cur[s:], out=nxt[:-s])
        else:
            nxt[:s] = cur[:s]
            torch.maximum(cur[s:], cur[:-s], out=nxt[s:])
        cur, nxt, s = nxt, cur, 2 * s
    return cur


_POSITIONS: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _row_positions(rows: int, w: int, cap: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Flat int32 positions ``row·(w + cap + 1) + column`` (rows farther apart than ``cap``), plus and minus
    2³⁰ (the last few shapes cached: they are as large as the batch)."""
    key = (rows, w, cap, torch.device(device))
    if key not in _POSITIONS:
        if len(_POSITIONS) >= 4:
            _POSITIONS.clear()
        pos = (torch.arange(rows, device=device, dtype=torch.int32)[:, None] * (w + cap + 1)
               + torch.arange(w, device=device, dtype=torch.int32)[None, :]).view(-1)
        _POSITIONS[key] = (pos, pos + (1 << 30), (1 << 30) - pos)
    return _POSITIONS[key]



def _edge_distance_sq_hnw(edges: torch.Tensor, cap: int) -> torch.Tensor:
    """Squared distance to the nearest edge of H-major ``edges (H, N, W)``, capped at ``cap²`` (int16, exact).

    Row pass: each pixel gets a position along its row, rows spaced more than ``cap`` apart, so the
    nearest edge at or before / after it in memory order (running maxima over ``cap + 1`` positions)
    is either in its own row or farther than ``cap``. Column pass: a min-plus pass over row offsets k
    (|k| ≤ cap), stopping once k² reaches every distance found (no later offset can lower any). All
    values are integers (int32, then int16 from the column pass), so everything is exact.
    """
    h, n, w = edges.shape
    big = 1 << 30
    pos, pos_up, pos_down = _row_positions(h * n, w, cap, edges.device)
    e = edges.reshape(-1)
    left = _scan_max(torch.mul(e, pos_up).sub_(big), cap + 1)  # nearest edge at or before (or −2³⁰)
    gap = torch.sub(pos, left, out=left)
    right = _scan_max(torch.mul(e, pos_down).sub_(big), cap + 1, reverse=True)  # −(nearest at or after)
    gap = torch.minimum(gap, right.add_(pos).neg_(), out=gap).clamp_(max=cap + 1)
    best = gap.mul_(gap).to(torch.int16).view(h, n, w)  # > cap² means "farther than cap"
    # column pass: min over row offsets k of best[row + k] + k², |k| ≤ cap (and < H)
    out = best.clone()
    r = min(cap, h - 1)
    pc = F.pad(best, (0, 0, 0, 0, r, r), value=(cap + 1) ** 2)
    tmp = torch.empty_like(out)
    for a in range(1, r + 1):
        if a % 4 == 1 and a * a >= int(out.max()):
            break
        for k in (-a, a):
            torch.minimum(out, torch.add(pc[r + k:r + k + h], a * a, out=tmp), out=out)
    return out.clamp_(max=cap * cap)


def edge_distance(edges: torch.Tensor, cap: int = 20) -> torch.Tensor:
    """Euclidean distance (pixels) of every pixel of ``edges (N, 1, H, W)`` to the nearest edge, capped at ``cap``.

    Exact within the cap: nearest edge per row by running maxima, then a min-plus pass over row
    offsets −cap..cap (squared distances are exact integers; the result is float64).
    """
    d2 = _edge_distance_sq_hnw(edges[:, 0].transpose(0, 1), cap)
    return d2.double().sqrt_().transpose(0, 1)[:, None]


def _equalise_hnw(img: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each image of H-major 8-bit-valued ``img (H, N, W)`` (``cv2.equalizeHist``)."""
    h, n, w = img.shape
    v = img.int().add_(256 * torch.arange(n, device=img.device, dtype=torch.int32)[None, :, None]).view(-1)
    hist = torch.bincount(v, minlength=256 * n).view(n, 256).double()
    cdf = hist.cumsum(1)
    first = hist.gather(1, (hist > 0).double().argmax(1, keepdim=True))
    total = float(h * w)
    denom = (total - first).clamp_min(1.0)
    lut = torch.round((cdf - first) * 255.0 / denom).clamp(0, 255)
    lut = torch.where(first == total, torch.arange(256, dtype=torch.float64, device=img.device).expand(n, -1), lut)
    return lut.to(img.dtype).view(-1).index_select(0, v).view(h, n, w)


def _equalise(img: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of 8-bit-valued images ``(N, 1, H, W)`` per image (``cv2.equalizeHist``)."""
    return _equalise_hnw(img[:, 0].transpose(0, 1)).transpose(0, 1)[:, None]


#: the reference's emboss kernel (cv2.filter2D correlation)
_EMBOSS = ((-2.0, -1.0, 0.0), (-1.0, 1.0, 1.0), (0.0, 1.0, 2.0))


def _emboss_hnw(x: torch.Tensor) -> torch.Tensor:
    """``cv2.filter2D(x, -1, emboss)`` of H-major images (reflect-101 borders), as shifted sums."""
    h, _, w = x.shape
    p = _reflect1(_reflect1(x, 0), 2)
    out = None
    for a, row in enumerate(_EMBOSS):
        for b, wk in enumerate(row):
            if wk:
                s = p[a:a + h, :, b:b + w]
                out = s * wk if out is None else out.add_(s, alpha=wk)
    return out


def _mean3_floor(t: torch.Tensor) -> torch.Tensor:
    """``floor(box3(x) + 1e-9)`` (float32) of H-major images ``t (H, N, W + 2)`` whose rows carry one spare
    column on each side: reflect-101 values are written there, so the sums along W are flat shifted
    slices; same additions in the same order as :func:`_box3_hnw`. The slack keeps exact integer means
    (e.g. nine capped 20s) whole whatever the float rounding."""
    h, n, w2 = t.shape
    t[..., 0], t[..., -1] = t[..., 2], t[..., -3]
    f = t.view(-1)
    rows = torch.empty_like(f)
    torch.add(f[1:-1], f[:-2], out=rows[1:-1]).add_(f[2:])
    rows = rows.view(h, n * w2)
    out = rows.clone()
    out[1:] += rows[:-1]
    out[0] += rows[1]
    out[:-1] += rows[1:]
    out[-1] += rows[-2]
    return out.mul_(1 / 9).add_(1e-9).floor_().view(h, n, w2)[..., 1:-1].float()


def _water_mask(z: torch.Tensor, mean: float, std: float, sigma: float, thresh: float) -> torch.Tensor:
    """The reference's water mask ``layer·dist`` (0..255², float32, H-major ``(H, N, W)``) from noise ``z``.

    The liquid layer (noise blurred with σ, zeroed under the threshold) is computed in float64 and
    taken to 8 bits exactly as before; from there every step is exact integer arithmetic in float32
    (Canny, squared distances, histogram equalisation, emboss, the 3×3 sums) except the square roots
    and their 3×3 means, which stay in float64 before being floored (with a 1e-9 slack so that exact
    integer means stay whole).
    """
    layer = _gauss_hnw(torch.add(torch.tensor(mean, dtype=z.dtype), z, alpha=std), sigma)
    keep = layer >= thresh  # zero under the threshold
    img = layer.mul_(255).clamp_(0, 255).floor_().float().mul_(keep)
    d2 = _edge_distance_sq_hnw(_canny_hnw(img, 50.0, 150.0), 20)  # rows padded by a column each side
    dist = _mean3_floor(d2.double().sqrt_())
    dist = _equalise_hnw(dist)
    dist = _emboss_hnw(dist).round_().clamp_(0, 255)
    dist = _box3_hnw(dist).round_()  # cv2.blur of 8-bit input stays 8-bit
    return img.mul_(dist)  # the reference multiplies the 8-bit layer


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
