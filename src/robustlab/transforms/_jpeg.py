"""Baseline JPEG coding in libjpeg's arithmetic: quantisation tables (IJG scaling), the fixed-point colour
transform, 8×8 DCT coding with libjpeg's rounding, 2×2 chroma down-sampling and its "fancy" up-sampling.
Used by :class:`robustlab.transforms.image_digital.JpegCompression`.
"""

from __future__ import annotations

import math

import torch

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
