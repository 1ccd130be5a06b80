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

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlab.core.errors import DataError
from robustlab.core.registry import register
from robustlab.transforms._common import check_severity, interpolate
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


_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA = ((17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99),
           (24, 26, 56, 99, 99, 99, 99, 99), (47, 66, 99, 99, 99, 99, 99, 99)) + ((99,) * 8,) * 4


def jpeg_quant_table(quality: float, chroma: bool = False) -> torch.Tensor:
    """The 8×8 JPEG quantisation table at ``quality`` (1..100) by the IJG (libjpeg) scaling (float64).

    The standard tables of the JPEG spec (ITU T.81, Annex K) scaled by ``5000/q`` below 50 and
    ``200 - 2q`` from 50, each entry ``floor((t·scale + 50) / 100)`` clamped to [1, 255] (baseline).
    """
    q = min(max(float(quality), 1.0), 100.0)
    scale = 5000.0 / q if q < 50 else 200.0 - 2.0 * q
    t = torch.tensor(_CHROMA if chroma else _LUMA, dtype=torch.float64)
    return torch.floor((t * scale + 50.0) / 100.0).clamp(1.0, 255.0)


def _dct_matrix() -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix (JPEG's forward DCT is ``D @ block @ D.T``)."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * 0.5
    d[0] /= math.sqrt(2.0)
    return d


_DCT2: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _dct2_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``kron(D, D)`` (64×64): a row-major flattened 8×8 block ``b`` has 2-D DCT ``b @ K.T`` (cached)."""
    key = (dtype, torch.device(device))
    if key not in _DCT2:
        d = _dct_matrix()
        _DCT2[key] = torch.kron(d, d).to(dtype=dtype, device=device)
    return _DCT2[key]


def _quantise_blocks(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """DCT → quantise → dequantise → inverse DCT of every 8×8 block of ``plane (N, P, H, W)``, H, W % 8 == 0.

    Each block is flattened to 64 values and transformed by one GEMM with the 64×64 separable DCT.
    """
    n, p, h, w = plane.shape
    k = _dct2_matrix(plane.dtype, plane.device)
    q = table.to(dtype=plane.dtype, device=plane.device).reshape(64)
    blocks = plane.reshape(n, p, h // 8, 8, w // 8, 8).transpose(3, 4).reshape(-1, 64)
    coef = blocks @ k.T
    # libjpeg rounds half away from zero; the 1e-9 slack makes exact ties robust to float rounding
    r = coef / q
    coef = r.abs().add_(0.5 + 1e-9).floor_().copysign_(r).mul_(q)
    blocks = coef @ k
    return blocks.reshape(n, p, h // 8, w // 8, 8, 8).transpose(3, 4).reshape(n, p, h, w)


def _fancy_upsample_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """``(n_out, n_in)`` float64 matrix of the 2× triangle ("fancy") enlargement, edges repeated, cropped.

    Output ``2i`` is ``¾·x[i] + ¼·x[i−1]`` and ``2i + 1`` is ``¾·x[i] + ¼·x[i+1]`` (``bilinear``
    with unaligned corners); sums of quarter multiples of integers, so exact in floating point.
    """
    i = torch.arange(2 * n_in)
    src = i // 2
    nb = torch.where(i % 2 == 0, (src - 1).clamp_min(0), (src + 1).clamp_max(n_in - 1))
    m = torch.zeros(2 * n_in, n_in, dtype=torch.float64)
    m[i, src] += 0.75
    m.index_put_((i, nb), torch.full((2 * n_in,), 0.25, dtype=torch.float64), accumulate=True)
    return m[:n_out]


def _pool_pad_matrix(n_in: int) -> torch.Tensor:
    """``(8·ceil(s/8), n_in)`` float64 matrix: 2-sample means (last sample repeated), s = ceil(n_in/2) of
    them, then the last mean repeated up to whole 8-sample blocks (JPEG's edge padding)."""
    s = -(-n_in // 2)
    rows = torch.arange(8 * -(-s // 8)).clamp_max(s - 1)
    m = torch.zeros(rows.numel(), n_in, dtype=torch.float64)
    r = torch.arange(rows.numel())
    m.index_put_((r, (2 * rows).clamp_max(n_in - 1)), torch.full((r.numel(),), 0.5, dtype=torch.float64),
                 accumulate=True)
    m.index_put_((r, (2 * rows + 1).clamp_max(n_in - 1)), torch.full((r.numel(),), 0.5, dtype=torch.float64),
                 accumulate=True)
    return m


@register("transform", "jpeg_compression")
@dataclass
class JpegCompression(_Digital):
    """Baseline JPEG encode/decode at an IJG quality q, in vectorised torch (Hendrycks & Dietterich, 2019).

    q per severity 1..5 — CIFAR-10-C: 80, 65, 58, 50, 40; ImageNet-C: 25, 18, 15, 10, 7 (level 0 is
    the identity; a fractional severity interpolates q, used unrounded in the IJG table scaling).
    The reference saves with Pillow (libjpeg); here, as libjpeg's defaults do: the image is taken to
    8 bits, converted to 8-bit full-range YCbCr (JFIF), the chroma planes averaged over 2×2 (4:2:0),
    edge-padded to whole 8×8 blocks, each block DCT'd (one 64×64 matrix product for all blocks),
    quantised with the scaled standard tables (rounding halves away from zero, as libjpeg does) and
    decoded to 8-bit samples; chroma is enlarged back with the triangle ("fancy") filter, and the
    decoded RGB is rounded to 8 bits. Grey (1-channel) images are coded as one luma plane, as Pillow
    does; images with another channel count code every channel as a luma plane. Floating-point DCT
    instead of libjpeg's integer one (and slightly different chroma rounding), so pixels differ from
    Pillow's output by well under one 8-bit level on average (a few by several levels).
    """

    name = "jpeg_compression"
    identity = 100.0

    def _apply(self, x, severity, generator):
        q = self.parameter(severity)
        work = x.double()
        v = torch.round(work.clamp(0, 1) * 255.0)
        n, c, h, w = v.shape
        if c != 3:
            return self._code(v - 128.0, jpeg_quant_table(q), 1).add(128.0).div(255.0).to(x.dtype)
        r, g, b = v.unbind(1)
        # 8-bit YCbCr samples (Cb, Cr offset by 128), as libjpeg stores them
        y = (0.299 * r + 0.587 * g + 0.114 * b).round()
        cb = (-0.168736 * r - 0.331264 * g + 0.5 * b).round().clamp(-128.0, 127.0)
        cr = (0.5 * r - 0.418688 * g - 0.081312 * b).round().clamp(-128.0, 127.0)
        y = self._code((y - 128.0)[:, None], jpeg_quant_table(q), 1)[:, 0] + 128.0
        chroma = self._code(torch.stack([cb, cr], 1), jpeg_quant_table(q, chroma=True), 2)
        cb, cr = chroma.round().clamp(-128.0, 127.0).unbind(1)
        rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
        return rgb.clamp(0.0, 255.0).round().div(255.0).to(x.dtype)

    @staticmethod
    def _code(plane: torch.Tensor, table: torch.Tensor, sub: int) -> torch.Tensor:
        """Code level-shifted planes ``(N, P, H, W)`` subsampled by ``sub`` in each direction; same shape out."""
        h, w = plane.shape[-2:]
        if sub == 2:  # 2×2 cell means and edge padding to whole blocks as two small matrix products
            sh, sw = -(-h // 2), -(-w // 2)
            ph = _pool_pad_matrix(h).to(dtype=plane.dtype, device=plane.device)
            pw = _pool_pad_matrix(w).to(dtype=plane.dtype, device=plane.device)
            padded = ph @ plane @ pw.T
        else:
            if sub > 1:  # edge-pad to whole sub×sub cells, then average each cell
                ph, pw = -h % sub, -w % sub
                plane = F.pad(plane, (0, pw, 0, ph), mode="replicate") if ph or pw else plane
                plane = F.avg_pool2d(plane, sub)
            sh, sw = plane.shape[-2:]
            ph, pw = -sh % 8, -sw % 8
            padded = F.pad(plane, (0, pw, 0, ph), mode="replicate") if ph or pw else plane
        out = _quantise_blocks(padded, table)[..., :sh, :sw].round().clamp(-128.0, 127.0)  # 8-bit samples
        if sub == 2:
            uh = _fancy_upsample_matrix(h, sh).to(dtype=plane.dtype, device=plane.device)
            uw = _fancy_upsample_matrix(w, sw).to(dtype=plane.dtype, device=plane.device)
            out = uh @ out @ uw.T
        elif sub > 1:
            out = F.interpolate(out, scale_factor=sub, mode="bilinear", align_corners=False)[..., :h, :w]
        return out


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
