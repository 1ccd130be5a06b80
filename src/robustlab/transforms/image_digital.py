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


def _fix(v: float) -> int:
    """libjpeg's ``FIX``: a weight in 16-bit fixed point, rounded."""
    return int(v * 65536 + 0.5)


#: libjpeg's RGB → YCbCr (jccolor.c) and YCbCr → RGB (jdcolor.c) fixed-point weights (``FIX(...)``)
_RGB_TO_YCC = ((_fix(0.299), _fix(0.587), _fix(0.114)),
               (-_fix(0.16874), -_fix(0.33126), _fix(0.5)),
               (_fix(0.5), -_fix(0.41869), -_fix(0.08131)))
#: their rounding offsets, level shift included: Y − 128 and Cb, Cr − 128 (libjpeg's ONE_HALF − 1 for chroma)
_YCC_OFFSET = (32768.0 - 128.0 * 65536.0, 32767.0, 32767.0)
_CR_TO_R, _CB_TO_G, _CR_TO_G, _CB_TO_B = _fix(1.402), -_fix(0.34414), -_fix(0.71414), _fix(1.772)

_JPEG_CACHE: dict[tuple, tuple] = {}


def _cached(key: tuple, build) -> tuple:
    if key not in _JPEG_CACHE:
        if len(_JPEG_CACHE) > 256:
            _JPEG_CACHE.clear()
        _JPEG_CACHE[key] = build()
    return _JPEG_CACHE[key]


def _jpeg_code_matrices(quality: float, chroma: bool, dtype: torch.dtype, device: torch.device) -> tuple:
    """(forward, half step, step, table) for :func:`_code_blocks` at ``quality`` (cached per dtype and device).

    ``forward`` is √8 × the 8-point DCT matrix D, whose rows 0 and 4 are exactly ±1; applied along
    both block axes it gives 8× the 2-D DCT, and its transpose applied along both axes inverts that
    (Dᵀ D = I). ``half`` = 4q and ``step`` = 8q (shape (8, 8, 1)), ``table`` = q/8 (exact: q is an integer).
    """
    def build() -> tuple:
        d = _dct_matrix()
        fwd = math.sqrt(8.0) * d
        fwd[0::4] = fwd[0::4].round()  # exactly ±1 (√8·(±1/√8))
        q = jpeg_quant_table(quality, chroma)[:, :, None]
        return tuple(m.to(dtype=dtype, device=device) for m in (fwd, 4.0 * q, 8.0 * q, q / 8.0))

    return _cached(("code", float(quality), chroma, dtype, torch.device(device)), build)


def _code_blocks(blocks: torch.Tensor, mats: tuple, out_bias: float) -> torch.Tensor:
    """Baseline-JPEG DCT, quantisation and inverse DCT of level-shifted 8-bit blocks stored ``(8, 8, M)``.

    ``blocks[i, j, m]`` is sample (i, j) of block m. The separable DCT is four left products with 8×8
    matrices over all M blocks at once. Quantisation rounds ``coef/q`` half away from zero, as libjpeg
    does: ``floor(coef/q + ½)``, then a negative exact half (only possible for the four rational
    coefficients, see below) moves down by one. ``blocks`` is
    overwritten with the decoded samples ``floor(x + out_bias)`` (rounded, plus any level shift
    folded into ``out_bias``), not yet clamped, and returned.

    Exactness: libjpeg's integer DCT computes the four coefficients (u, v) ∈ {0, 4}² exactly (their
    basis values are ±1/8: sums and differences only, no fixed-point multipliers), and so its
    inverse for blocks with only those coefficients. They are the coefficients that are rational for
    every 8-bit block, so the ones whose exact ties (a half quantisation step, a half level) occur in
    practice, e.g. on flat or two-level blocks. Here the rows of √8·D for u = 0, 4 are exactly ±1, so
    the same values come out as exact integers (or exact eighths) in floating point and their ties
    are decided exactly as libjpeg decides them. The other coefficients go through irrational weights
    (in libjpeg fixed-point approximations of them), so near-ties there are decided by rounding, in
    libjpeg as here.
    """
    fwd, half, step, table = mats
    m = blocks.shape[-1]
    t = torch.mm(fwd, blocks.view(8, -1))  # along the block rows
    r = torch.baddbmm(half, fwd.expand(8, 8, 8), t.view(8, 8, m), out=blocks)  # 8·coef + 4q, (u, v, M)
    r.div_(step)  # coef/q + ½ (exact for the rational coefficients)
    s = r[0::4, 0::4]
    neg_tie = (s <= 0) & (s == s.floor())  # coef/q = −k − ½ exactly
    r.floor_()
    s.sub_(neg_tie.to(r.dtype))
    r.mul_(table)  # dequantised coefficients / 8 (exact)
    inv = fwd.T
    torch.mm(inv, r.view(8, -1), out=t)
    bias = torch.full((1, 1, 1), out_bias, dtype=r.dtype, device=r.device)
    return torch.baddbmm(bias, inv.expand(8, 8, 8), t.view(8, 8, m), out=blocks).floor_()  # the samples (r's memory)


def _edge_pad(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """``t`` extended along ``dim`` to ``size`` by repeating its last slice (itself if already that long)."""
    n = t.shape[dim]
    if n == size:
        return t
    return t.index_select(dim, torch.arange(size, device=t.device).clamp_max(n - 1))


def _code_planes(planes: torch.Tensor, mats: tuple, out_bias: float, lo: float, hi: float,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """Code level-shifted 8-bit planes stored row-major as ``(H, P, W)`` (P planes), edge-padded to whole
    blocks; decoded samples ``floor(x + out_bias)`` clamped to [lo, hi], same layout and size (into ``out``)."""
    h, p, w = planes.shape
    hp, wp = 8 * -(-h // 8), 8 * -(-w // 8)
    padded = _edge_pad(_edge_pad(planes, 0, hp), 2, wp)
    blocks = torch.empty((8, 8, hp // 8, p, wp // 8), dtype=planes.dtype, device=planes.device)
    blocks.copy_(padded.reshape(hp // 8, 8, p, wp // 8, 8).permute(1, 4, 0, 2, 3))
    dec = _code_blocks(blocks.view(8, 8, -1), mats, out_bias).view(blocks.shape).permute(2, 0, 3, 4, 1)
    if out is None:
        out = planes.new_empty((h, p, w))
    if (hp, wp) == (h, w):
        return torch.clamp(dec, lo, hi, out=out.view(hp // 8, 8, p, wp // 8, 8)).view(h, p, w)
    return torch.clamp(dec.reshape(hp, p, wp)[:h, :, :w], lo, hi, out=out)


def _down_sum_matrix(n: int) -> torch.Tensor:
    """``(n, 8·ceil(n/16))`` float64 0/1 matrix summing sample pairs ``(2j, 2j+1)``, the last sample repeated.

    libjpeg's h2v2 downsampling reads the full-size component edge-padded to twice the subsampled
    component's whole blocks; each output is the rounded mean of a 2×2 cell (see :func:`_code_chroma`).
    """
    cols = torch.arange(8 * -(-n // 16))
    m = torch.zeros(n, cols.numel(), dtype=torch.float64)
    for off in (0, 1):
        m.index_put_(((2 * cols + off).clamp_max(n - 1), cols), torch.ones(cols.numel(), dtype=torch.float64),
                     accumulate=True)
    return m


def _fancy_up_matrix(n_pad: int, n_in: int, n_out: int) -> torch.Tensor:
    """``(n_pad, n_out)`` float64 matrix of libjpeg's 2× triangle ("fancy") upsampling, times 4.

    Output ``2i`` is ``3·x[i] + x[i−1]`` and ``2i + 1`` is ``3·x[i] + x[i+1]`` (edges repeated) of the
    ``n_in`` real samples; the ``n_pad − n_in`` padding samples get no weight.
    """
    i = torch.arange(n_out)
    src = i // 2
    nb = torch.where(i % 2 == 0, (src - 1).clamp_min(0), (src + 1).clamp_max(n_in - 1))
    m = torch.zeros(n_pad, n_out, dtype=torch.float64)
    m.index_put_((src, i), torch.full((n_out,), 3.0, dtype=torch.float64), accumulate=True)
    m.index_put_((nb, i), torch.ones(n_out, dtype=torch.float64), accumulate=True)
    return m


def _code_chroma(planes: torch.Tensor, quality: float) -> torch.Tensor:
    """Code level-shifted chroma planes ``(H, P, W)`` at 4:2:0 like libjpeg; decoded, level-shifted, ``(H, P, W)``.

    Downsampling (jcsample.c ``h2v2_downsample``): ``(sum of the 2×2 cell + bias) >> 2`` with bias
    1, 2, 1, 2, ... along each row. Upsampling (jdsample.c ``h2v2_fancy_upsample``): the triangle
    filter in integers, ``(16·mean + 8) >> 4`` on even and ``(16·mean + 7) >> 4`` on odd columns.
    Downsampled rows are pair sums, everything else matrix products (exact on these integers).
    """
    h, p, w = planes.shape
    dt, dev = planes.dtype, planes.device

    def build() -> tuple:
        sw = _down_sum_matrix(w)
        uw = _fancy_up_matrix(sw.shape[1], -(-w // 2), w)
        uh = _fancy_up_matrix(8 * -(-h // 16), -(-h // 2), h).T.contiguous()
        down_bias = 1.0 + (torch.arange(sw.shape[1]) % 2).double()
        up_bias = 8.0 - (torch.arange(w) % 2).double()
        return tuple(m.to(dtype=dt, device=dev) for m in (sw, down_bias, uw, uh, up_bias))

    sw, down_bias, uw, uh, up_bias = _cached(("chroma", h, w, dt, torch.device(dev)), build)
    hp, wp = 8 * -(-h // 16), sw.shape[1]
    # row pairs (2j, 2j + 1); rows past the image repeat the last one (twice it, as a pair sum)
    k = h // 2
    pairs = torch.empty((hp, p, w), dtype=dt, device=dev)
    torch.add(planes[0:2 * k:2], planes[1:2 * k:2], out=pairs[:k])
    if hp > k:
        torch.mul(planes[h - 1], 2.0, out=pairs[k])
        pairs[k + 1:].copy_(pairs[k])
    small = (pairs.view(hp * p, w) @ sw).view(hp, p, wp)  # 2×2 sums, padded to whole blocks
    small = small.add_(down_bias).mul_(0.25).floor_()
    dec = _code_planes(small, _jpeg_code_matrices(quality, True, dt, dev), 0.5, -128.0, 127.0)
    c = dec.reshape(hp * p, wp) @ uw  # 4 × the column-filtered samples, (Hp, P, W)
    big = uh @ c.view(hp, p * w)  # 16 × the triangle-filtered samples, (H, P, W)
    return big.view(h, p, w).add_(up_bias).mul_(1 / 16).floor_()


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
