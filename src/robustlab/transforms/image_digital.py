"""Digital image corruptions (pixelate, JPEG, saturate, elastic transform) with the reference severity tables.

From "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (Hendrycks &
Dietterich, ICLR 2019). Parameters per severity 1..5 come from the reference code
(hendrycks/robustness): ``make_cifar_c.py`` (``table="cifar"``, default, for small images) and
``imagenet_c/corruptions.py`` (``table="imagenet"``, for ~224×224 images). The conventions (shapes,
severity 0..5 with interpolation, dtype/device kept, output clipped to [0, 1], seeded draws) are
those of :mod:`robustlab.transforms.image`. Pixelate, JPEG and saturate are deterministic (no
generator needed); the elastic transform is random.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlab.core.errors import DataError
from robustlab.core.registry import register
from robustlab.transforms._common import check_severity, interpolate
from robustlab.transforms._jpeg import (  # noqa: F401 - jpeg_quant_table is public here; tests use the rest
    _CB_TO_B,
    _CB_TO_G,
    _CR_TO_G,
    _CR_TO_R,
    _RGB_TO_YCC,
    _YCC_OFFSET,
    _code_blocks,
    _code_chroma,
    _code_planes,
    _jpeg_code_matrices,
    jpeg_quant_table,
)
from robustlab.transforms.image import ImageCorruption

__all__ = [
    "DIGITAL_TABLES",
    "ELASTIC_REFERENCE_SIDE",
    "ElasticTransform",
    "JpegCompression",
    "Pixelate",
    "Saturate",
    "box_shrink_matrix",
    "jpeg_quant_table",
    "reflect_gaussian_matrix",
]

DIGITAL_TABLES: dict[str, dict[str, tuple]] = {
    "cifar": {
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
        "jpeg_compression": (80, 65, 58, 50, 40),
        "saturate": ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),
    },
    "imagenet": {
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (25, 18, 15, 10, 7),
        "saturate": ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2)),
    },
}


class _Digital(ImageCorruption):
    @property
    def levels(self) -> tuple:
        return DIGITAL_TABLES[self.table][self.name]


def box_shrink_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` float64 matrix of Pillow's ``Image.BOX`` shrink from ``n_in`` to ``n_out`` pixels.

    Output pixel i is the plain mean of the input pixels whose centres lie in
    ``(i·n_in/n_out, (i+1)·n_in/n_out]`` (Pillow's box filter: full weight inside, none outside).
    """
    i = torch.arange(n_out)[:, None]
    centre2 = (2 * torch.arange(n_in)[None, :] + 1) * n_out  # 2·(j + ½)·n_out, exact integers
    w = ((centre2 > 2 * i * n_in) & (centre2 <= 2 * (i + 1) * n_in)).double()
    return w / w.sum(dim=1, keepdim=True)


@register("transform", "pixelate")
@dataclass
class Pixelate(_Digital):
    """Pixelation: box-shrink to a fraction c of the size, then box-enlarge back (Hendrycks & Dietterich, 2019).

    c per severity 1..5 — CIFAR-10-C: 0.95, 0.9, 0.85, 0.75, 0.65; ImageNet-C: 0.6, 0.5, 0.4, 0.3,
    0.25 (level 0: c = 1). Like the reference's two Pillow ``BOX`` resizes: the small side is
    ``int(size·c)`` (at least 1); shrinking averages the pixels whose centres fall in each output
    pixel, enlarging takes the pixel under each output centre (both Pillow's box filter, computed in
    exact integer arithmetic, so Pillow's float rounding may break a rare tie the other way). Works on
    any H×W (each axis scaled by c).
    """

    name = "pixelate"
    identity = 1.0

    def _apply(self, x, severity, generator):
        c = self.parameter(severity)
        h, w = x.shape[-2:]
        sh, sw = max(1, int(h * c)), max(1, int(w * c))
        # shrink then enlarge = one (H, H) and one (W, W) matrix: the enlarge picks rows of the shrink
        rows = box_shrink_matrix(h, sh)[_box_enlarge_index(sh, h, torch.device("cpu"))]
        cols = box_shrink_matrix(w, sw)[_box_enlarge_index(sw, w, torch.device("cpu"))]
        rows, cols = rows.to(dtype=x.dtype, device=x.device), cols.to(dtype=x.dtype, device=x.device)
        n, c = x.shape[:2]
        y = (x.reshape(n * c * h, w) @ cols.T).reshape(n * c, h, w)
        return (rows @ y).reshape(n, c, h, w)


def _box_enlarge_index(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """Input pixel under each output centre when enlarging ``n_in`` → ``n_out`` (Pillow's box filter).

    Output pixel i takes input ``floor((i + ½)·n_in/n_out)``, in exact integer arithmetic.
    """
    i = torch.arange(n_out, device=device)
    return (2 * i + 1) * n_in // (2 * n_out)


#: JPEG is coded on chunks of about this many pixels per channel: each chunk's buffers stay small (large
#: fresh allocations are page-faulted on every call; small ones stay in cache), a memory bound, not a parameter
JPEG_CHUNK_PIXELS = 1 << 18


@register("transform", "jpeg_compression")
@dataclass
class JpegCompression(_Digital):
    """Baseline JPEG encode/decode at an IJG quality q, in vectorised torch (Hendrycks & Dietterich, 2019).

    q per severity 1..5 — CIFAR-10-C: 80, 65, 58, 50, 40; ImageNet-C: 25, 18, 15, 10, 7 (level 0 is
    the identity; a fractional severity interpolates q, used unrounded in the IJG table scaling).
    The reference saves with Pillow (libjpeg); here, as libjpeg's defaults do, with libjpeg's integer
    arithmetic wherever it is exact: the image is taken to 8 bits, converted to 8-bit full-range
    YCbCr (JFIF; libjpeg's 16-bit fixed-point weights and rounding), the chroma planes downsampled
    over 2×2 cells (4:2:0, libjpeg's rounding), all planes edge-padded to whole 8×8 blocks, each
    block DCT'd (separable 8×8 matrix products over all blocks at once), quantised with the scaled
    standard tables (rounding halves away from zero) and decoded to 8-bit samples (rounding halves
    up); chroma is enlarged back with libjpeg's integer triangle ("fancy") filter and converted back
    to RGB with its fixed-point weights. Grey (1-channel) images are coded as one luma plane, as
    Pillow does; images with another channel count code every channel as a luma plane. Deviation: a
    floating-point DCT instead of libjpeg's default integer one (``JDCT_ISLOW``), so pixels differ
    from Pillow's output by well under one 8-bit level on average (mean |Δ| ≈ 0.0004–0.0007 on
    ShapeWorld at qualities 25 / 15 / 7; a few pixels by several levels).

    Computed in float32 (float64 on a GPU whose float32 matrix products may use TF32). Every stage
    but the DCT is exact integer arithmetic there (all values stay below 2²⁴): the colour weights,
    the 2×2 sums and the triangle filter act on integers, and the DCT coefficients (u, v) ∈ {0, 4}²,
    the ones that tie exactly at half a quantisation step in practice, come out exact, as in
    libjpeg, so their ties and those of the samples decoded from them are decided as libjpeg decides
    them (see :func:`_code_blocks`). Elsewhere float32 rounding (~1e-6 of a step) replaces libjpeg's
    fixed-point rounding, a far smaller difference than the one between the two DCTs.
    """

    name = "jpeg_compression"
    identity = 100.0

    def _apply(self, x, severity, generator):
        q = self.parameter(severity)
        n, c, h, w = x.shape
        exact32 = x.device.type == "cpu" or torch.get_float32_matmul_precision() == "highest"
        dt = torch.float32 if exact32 else torch.float64
        out = torch.empty((n, c, h, w), dtype=dt, device=x.device)
        step = max(1, JPEG_CHUNK_PIXELS // (h * w))  # images are coded independently: bound the buffers
        for j in range(0, n, step):
            self._code(x[j:j + step], q, out[j:j + step])
        return out.to(x.dtype)

    @staticmethod
    def _code(x: torch.Tensor, q: float, out: torch.Tensor) -> None:
        """JPEG round trip of ``x (N, C, H, W)`` at quality ``q`` into ``out`` (float32 or float64)."""
        n, c, h, w = x.shape
        dt = out.dtype
        # 8-bit samples, row-major across all planes: (H, C, N, W), so that the block split is one copy
        # and the filters over rows are shifted sums of whole rows
        luma = _jpeg_code_matrices(q, False, dt, x.device)
        v = torch.empty((h, c, n, w), dtype=x.dtype, device=x.device)
        torch.mul(x.permute(2, 1, 0, 3), 255.0, out=v)
        v = v.clamp_(0.0, 255.0).round_().to(dt)
        if c != 3:
            planes = v.view(h, c * n, w)
            _code_planes(planes.sub_(128.0), luma, 128.5, 0.0, 255.0, out=planes)
            torch.div(planes.view(h, c, n, w).permute(2, 1, 0, 3), 255.0, out=out)
            return
        # RGB → level-shifted YCbCr in libjpeg's fixed point, floor((Σ w·s + offset) / 2¹⁶), with the weights
        # and offsets pre-divided by 2¹⁶: every product and partial sum is a multiple of 2⁻¹⁶ below 2⁸ in
        # magnitude, exact in float32
        ycc = torch.empty_like(v)
        for i, (wr, wg, wb) in enumerate(_RGB_TO_YCC):
            o = torch.add(torch.tensor(_YCC_OFFSET[i] / 65536, dtype=dt), v[:, 0], alpha=wr / 65536, out=ycc[:, i])
            o.add_(v[:, 1], alpha=wg / 65536).add_(v[:, 2], alpha=wb / 65536)
        ycc.floor_()
        y = _code_planes(ycc[:, 0], luma, 128.5, 0.0, 255.0, out=ycc[:, 0])  # decoded 8-bit luma (H, N, W)
        chroma = _code_chroma(ycc[:, 1:].reshape(h, 2 * n, w), q)  # decoded, enlarged, level-shifted
        cb, cr = chroma.view(h, 2, n, w).unbind(1)
        # YCbCr → RGB: Y + floor(Σ w·chroma / 2¹⁶ + ½) per channel (weights pre-divided: exact), clamped,
        # into v's memory
        half = torch.tensor(0.5, dtype=dt)
        torch.add(half, cr, alpha=_CR_TO_R / 65536, out=v[:, 0])
        torch.add(half, cb, alpha=_CB_TO_G / 65536, out=v[:, 1]).add_(cr, alpha=_CR_TO_G / 65536)
        torch.add(half, cb, alpha=_CB_TO_B / 65536, out=v[:, 2])
        v.floor_().add_(y[:, None]).clamp_(0.0, 255.0)
        torch.div(v.permute(2, 1, 0, 3), 255.0, out=out)


@register("transform", "saturate")
@dataclass
class Saturate(_Digital):
    """Change colour saturation: HSV ``S ← clip(S·a + b)``, hue and value kept (Hendrycks & Dietterich, 2019).

    (a, b) per severity 1..5 — CIFAR-10-C: (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2);
    ImageNet-C: (0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2) (level 0: (1, 0)). Note the table
    first desaturates (levels 1–2) then oversaturates (3–5), so the size of the change is not
    monotone in severity. With V = max over channels and S = (V − min)/V, the HSV round trip equals
    ``x' = V − (V − x)·S'/S``; grey pixels (S = 0) have hue 0 (red) like ``skimage.color.rgb2hsv``,
    so ``b > 0`` tints them red as in the reference. Needs RGB (3 channels); a one-channel image has
    no saturation and is returned unchanged.
    """

    name = "saturate"

    def parameter(self, severity: float) -> tuple[float, float]:
        """(a, b) at ``severity``, interpolated per component; (1, 0) at 0."""
        s = check_severity(severity, self.name)
        a = interpolate((1.0, *(lv[0] for lv in self.levels)), s)
        b = interpolate((0.0, *(lv[1] for lv in self.levels)), s)
        return a, b

    def _apply(self, x, severity, generator):
        if x.shape[1] == 1:
            return x.clone()
        if x.shape[1] != 3:
            raise DataError(f"saturate needs RGB images (3 channels), got {x.shape[1]} channels",
                            fix="pass RGB images of shape (N, 3, H, W) (grey images are returned unchanged)")
        a, b = self.parameter(severity)
        x = x.clamp(0.0, 1.0)
        v = x.amax(dim=1, keepdim=True)
        span = v - x.amin(dim=1, keepdim=True)
        tiny = torch.finfo(x.dtype).tiny
        sat = torch.where(v > 0, span / v.clamp_min(tiny), torch.zeros_like(v))
        new_sat = (sat * a + b).clamp(0.0, 1.0)
        coloured = v - (v - x) * new_sat / sat.clamp_min(tiny)
        grey = torch.cat([v, v * (1 - new_sat), v * (1 - new_sat)], dim=1)  # hue 0 = red
        return torch.where(sat > 0, coloured, grey)


#: (α, σ, affine jitter) in pixels at the reference side (32 for CIFAR, 224 for ImageNet); the
#: ImageNet-C values are the reference's 244·(...) (its comment: 244 was meant as 224, kept as is).
ELASTIC_REFERENCE_SIDE = {"cifar": 32, "imagenet": 224}
DIGITAL_TABLES["cifar"]["elastic_transform"] = tuple(
    tuple(32 * f for f in lv)
    for lv in ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)))
DIGITAL_TABLES["imagenet"]["elastic_transform"] = tuple(
    tuple(244 * f for f in lv)
    for lv in ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02)))


def reflect_gaussian_matrix(n: int, sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """``(n, n)`` float64 matrix of a 1-D Gaussian filter with half-sample-symmetric borders.

    Equals ``scipy.ndimage.gaussian_filter1d(mode="reflect", truncate=truncate)`` for any ``sigma``,
    even one whose kernel is wider than the signal (indices fold back as often as needed).
    """
    if sigma <= 0:
        return torch.eye(n, dtype=torch.float64)
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1)
    k = torch.exp(-0.5 * (t.double() / sigma) ** 2)
    k = k / k.sum()
    idx = (torch.arange(n)[:, None] + t[None, :]) % (2 * n)
    idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
    return torch.zeros(n, n, dtype=torch.float64).scatter_add_(1, idx, k.expand(n, -1).contiguous())


@register("transform", "elastic_transform")
@dataclass
class ElasticTransform(_Digital):
    """Elastic distortion: random affine jitter plus a smooth random displacement field (Hendrycks & Dietterich, 2019).

    (α, σ, jitter) in pixels per severity 1..5 — CIFAR-10-C (32-pixel images): 32·(0, 0, 0.08),
    32·(0.05, 0.2, 0.07), 32·(0.08, 0.06, 0.06), 32·(0.1, 0.04, 0.05), 32·(0.1, 0.03, 0.03);
    ImageNet-C (224-pixel images): 244·(2, 0.7, 0.1), 244·(2, 0.08, 0.2), 244·(0.05, 0.01, 0.02),
    244·(0.07, 0.01, 0.02), 244·(0.12, 0.01, 0.02) (level 0: all 0). On other sizes all three scale
    with ``min(H, W) / reference side``. As in the reference, per image: three points around the
    centre (± side//3) are each moved by uniform(±jitter) and the affine map between the two triangles
    is applied; then pixel p samples the warped image at ``p + α·(G_σ * u)`` with u uniform(−1, 1)
    per pixel and axis and ``G_σ`` a Gaussian truncated at 3σ. Deviation: both steps are composed
    into one bilinear ``grid_sample`` with reflection about the edge pixels (the reference resamples
    twice, its second step reflecting about the edges themselves), so there is no double blurring.
    The reference's difficulty is not monotone in severity (level 1 is affine only).
    """

    name = "elastic_transform"
    stochastic = True

    def parameter(self, severity: float) -> tuple[float, float, float]:
        """(α, σ, jitter) in pixels at the reference side, at ``severity``; (0, 0, 0) at 0."""
        s = check_severity(severity, self.name)
        return tuple(interpolate((0.0, *(lv[i] for lv in self.levels)), s) for i in range(3))

    def _apply(self, x, severity, generator):
        n, _, h, w = x.shape
        scale = min(h, w) / ELASTIC_REFERENCE_SIDE[self.table]
        alpha, sigma, jitter = (v * scale for v in self.parameter(severity))
        dev = generator.device
        moves = torch.rand((n, 3, 2), generator=generator, device=dev, dtype=torch.float32)
        noise = torch.rand((n, 2, h, w), generator=generator, device=dev, dtype=torch.float32)
        moves = (2 * moves.double() - 1).to(x.device) * jitter
        noise = (2 * noise.double() - 1).to(x.device)
        # the affine map sending the triangle pts (x, y) to pts + moves; we need its inverse
        cy, cx, sq = float(h // 2), float(w // 2), float(max(min(h, w) // 3, 1))  # ≥ 1: tiny images
        pts = torch.tensor([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]],
                           dtype=torch.float64, device=x.device)
        homog = torch.cat([pts, torch.ones(3, 1, dtype=torch.float64, device=x.device)], 1)
        fwd = torch.linalg.solve(homog, pts + moves)  # (N, 3, 2): [x y 1] @ fwd = [x' y']
        lin, shift = fwd[:, :2], fwd[:, 2]
        # displacement field (rows: dy, cols: dx), then source = A⁻¹ (p + d − t)
        gr = reflect_gaussian_matrix(h, sigma).to(x.device)
        gc = reflect_gaussian_matrix(w, sigma).to(x.device)
        disp = alpha * (gr @ noise @ gc.T)
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=x.device),
                                torch.arange(w, dtype=torch.float64, device=x.device), indexing="ij")
        q = torch.stack([xx + disp[:, 0], yy + disp[:, 1]], dim=-1) - shift[:, None, None, :]
        src = q.reshape(n, h * w, 2) @ torch.linalg.inv(lin)  # row vectors: p = (q − t) A⁻¹
        grid = torch.stack([2 * src[..., 0] / max(w - 1, 1) - 1, 2 * src[..., 1] / max(h - 1, 1) - 1], -1)
        grid = grid.reshape(n, h, w, 2).to(x.dtype)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
