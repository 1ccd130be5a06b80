"""Common image corruptions (noise, blur, contrast, brightness) with the reference severity tables.

From "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (Hendrycks &
Dietterich, ICLR 2019). Each corruption has five severities whose parameters come from the reference
code (hendrycks/robustness): ``make_cifar_c.py`` for the CIFAR-10-C table (``table="cifar"``, the
default, meant for small images such as 32×32 — we also use it for 8×8 digits and 16×16 images) and
``imagenet_c/corruptions.py`` for the ImageNet-C table (``table="imagenet"``, for ~224×224 images).

Conventions shared by every corruption here:

- inputs are float images in [0, 1], shape ``(N, C, H, W)`` (or one ``(C, H, W)`` image), any N, any
  number of channels, any size, CPU or CUDA; the output has the same shape, dtype and device and is
  clipped to [0, 1]. Work is done in float32 (float64 stays float64) and vectorised over the batch.
- ``severity`` is a number in [0, 5]: 1..5 are the paper's levels, 0 is the identity, and a fraction
  interpolates linearly between the neighbouring levels' parameters (level 0 = the identity
  parameter). Anything else raises :class:`~robustlab.core.errors.ConfigError`.
- randomness is drawn from the given ``torch.Generator`` (on the generator's device, then moved to
  ``x``'s device), so the same seed gives the same output whatever the dtype and the thread count.
  Shot and impulse noise draw exact samples from uniform random bits (table inversion, geometric gaps:
  see :class:`ShotNoise`, :class:`ImpulseNoise`); large ``torch.poisson`` draws on CPU (shot noise with
  very many photons) are split into ``DRAW_CHUNKS`` fixed chunks with generators seeded from the given
  one, drawn in parallel threads.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.probe import Transform
from robustlab.core.registry import register
from robustlab.transforms._common import check_generator, check_severity, interpolate

__all__ = [
    "TABLES",
    "Brightness",
    "Contrast",
    "DefocusBlur",
    "GaussianBlur",
    "GaussianNoise",
    "ImageCorruption",
    "ImpulseNoise",
    "ShotNoise",
    "SpeckleNoise",
    "disk_kernel",
    "gaussian_kernel1d",
]

#: severity 1..5 parameters from the reference code: CIFAR-10-C (make_cifar_c.py) and ImageNet-C
#: (imagenet_c/corruptions.py). defocus_blur is (disk radius, anti-alias sigma) in pixels.
TABLES: dict[str, dict[str, tuple]] = {
    "cifar": {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
        "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
        "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    },
    "imagenet": {
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
        "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),
        "defocus_blur": ((3.0, 0.1), (4.0, 0.5), (6.0, 0.5), (8.0, 0.5), (10.0, 0.5)),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    },
}


def _as_images(x: object, name: str) -> torch.Tensor:
    """``x`` as a float ``(N, C, H, W)`` tensor (a view), or a :class:`DataError` with the fix."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = f"{x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{name} expects float images in [0, 1], got a {kind}",
                        fix="pass a float tensor of shape (N, C, H, W) in [0, 1], e.g. x.float() / 255")
    if x.dim() == 3:
        return x.unsqueeze(0)
    if x.dim() != 4 or min(x.shape[-2:]) < 1:
        raise DataError(f"{name} expects images of shape (N, C, H, W) or (C, H, W), got {tuple(x.shape)}",
                        fix="reshape the images to (N, C, H, W); grey images have C = 1")
    return x


def apply_to_images(x: torch.Tensor, severity: float, generator: torch.Generator | None, *, name: str,
                    stochastic: bool, apply, clamp_input: bool = False, output_in_range: bool = False) -> torch.Tensor:
    """The shared body of image transforms: check inputs, return a copy at severity 0, else
    ``apply(images, severity, generator)`` on float (N, C, H, W) images, clipped to [0, 1], in ``x``'s
    shape and dtype. ``clamp_input`` clips the input to [0, 1] first; ``output_in_range`` says that
    ``apply`` already returns a new tensor in [0, 1] (the final clip is skipped)."""
    s = check_severity(severity, name)
    x4 = _as_images(x, name)
    if stochastic:
        check_generator(generator, name)
    if s == 0:
        return x.clone()
    work = x4 if x4.dtype in (torch.float32, torch.float64) else x4.float()
    src = work.clamp(0.0, 1.0) if clamp_input else work
    out = apply(src, s, generator)
    if not output_in_range:  # clip in place when ``apply`` made a new tensor (saves a full-size allocation)
        fresh = out.untyped_storage().data_ptr() not in (x.untyped_storage().data_ptr(),
                                                         src.untyped_storage().data_ptr())
        out = out.clamp_(0.0, 1.0) if fresh and not out.requires_grad else out.clamp(0.0, 1.0)
    return out.to(x.dtype).reshape(x.shape)


#: CPU draws of at least this many values are split into ``DRAW_CHUNKS`` fixed chunks, each with its own
#: generator seeded from the caller's, drawn on a thread pool (the samples do not depend on the thread count)
PARALLEL_DRAW_MIN = 1 << 17
DRAW_CHUNKS = 4


def _chunked_draw(numel: int, generator: torch.Generator, draw) -> torch.Tensor:
    """``draw(start, stop, gen)`` for fixed chunks of ``range(numel)`` (threads on CPU), concatenated (flat)."""
    if generator.device.type != "cpu" or numel < PARALLEL_DRAW_MIN:
        return draw(0, numel, generator)
    seeds = torch.randint(0, 2**62, (DRAW_CHUNKS,), generator=generator).tolist()
    bounds = [numel * i // DRAW_CHUNKS for i in range(DRAW_CHUNKS + 1)]

    def one(i: int) -> torch.Tensor:
        return draw(bounds[i], bounds[i + 1], torch.Generator().manual_seed(int(seeds[i])))

    workers = min(torch.get_num_threads(), DRAW_CHUNKS)
    if workers <= 1:
        parts = [one(i) for i in range(DRAW_CHUNKS)]
    else:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(one, range(DRAW_CHUNKS)))
    return torch.cat(parts)


def _draw(kind: str, like: torch.Tensor, generator: torch.Generator, rate: torch.Tensor | None = None):
    """Seeded noise shaped like ``like``: drawn in float32 on the generator's device, then moved.

    ``kind`` is ``"normal"`` or ``"poisson"`` (``torch.poisson`` of ``rate``, the fallback of shot noise
    for large photon counts). Poisson draws of many values are split into fixed chunks drawn in parallel
    (see :func:`_chunked_draw`); the torch CPU sampler is single-threaded.
    """
    dev = generator.device
    if kind == "normal":
        t = torch.randn(like.shape, generator=generator, device=dev, dtype=torch.float32)
    else:  # poisson with the given rate
        flat = rate.to(device=dev, dtype=torch.float32).reshape(-1)
        t = _chunked_draw(flat.numel(), generator,
                          lambda a, b, g: torch.poisson(flat[a:b], generator=g)).reshape(like.shape)
    return t.to(device=like.device, dtype=like.dtype)


#: shot noise: photon counts are drawn by table inversion (:func:`_poisson_counts`) for photon counts ``c`` up to
#: ``POISSON_TABLE_MAX_C`` (every ImageNet-C severity, CIFAR-10-C severities ≥ 3); above, the residual term
#: (O(n·c / 255) work) would cost more than ``torch.poisson``, which is used instead
POISSON_LEVELS = 255
POISSON_TABLE_MAX_C = 128.0
#: values per block of the shot noise sampler: its temporaries stay small and are reused
BLOCK_VALUES = 1 << 18
# random words are cut into cells in groups of this many words (contiguous shifts, independent of the block size)
_WORD_GROUP = 1 << 13
# float32(x · _LEVEL_SCALE) floors to j with float32(j) / 255 ≤ x and x - float32(j) / 255 < (1 + 2**-11) / 255
_LEVEL_SCALE = POISSON_LEVELS * (1.0 - 2.0**-20)


@dataclass(frozen=True)
class _PoissonTable:
    """Inversion tables of Poisson(``g_j·c``) for the 256 grid values ``g_j = float32(j) / 255``.

    ``cdf[j·width + k]`` is P(X ≤ k) (float64, the last column exactly 1). The unit interval is cut into
    ``2**bits`` cells; ``guide[j·2**bits + m]`` is the output ``min(X, c) / c`` (float32) of the count
    X = #{k : cdf(k) ≤ u} shared by every u in cell m (pure cell), or ``-1 - lo`` when the CDF steps inside
    the cell, whose counts lie in ``[lo, upper]``.
    """

    c: float
    bits: int
    width: int
    cdf: torch.Tensor
    guide: torch.Tensor
    upper: torch.Tensor


_POISSON_TABLES: dict[tuple, _PoissonTable] = {}


def _scaled_counts(counts: torch.Tensor, c: float) -> torch.Tensor:
    """``min(counts, c) / c`` in float32, as ``torch.poisson(rate).div(c).clamp(max=1)`` gives it."""
    return counts.clamp(max=c).float() / c


def _poisson_table(c: float, device: torch.device) -> _PoissonTable:
    """The (cached) :class:`_PoissonTable` of the photon count ``c``."""
    key = (float(c), str(device))
    if key not in _POISSON_TABLES:
        if len(_POISSON_TABLES) >= 8:
            _POISSON_TABLES.clear()
        lam = (torch.arange(POISSON_LEVELS + 1, dtype=torch.float32) / POISSON_LEVELS).double()[:, None] * c
        width = int(math.ceil(c + 12.0 * math.sqrt(c) + 40.0))  # P(X ≥ width) < 1e-20 for every rate ≤ c
        k = torch.arange(width, dtype=torch.float64)
        pmf = torch.exp(torch.xlogy(k, lam) - lam - torch.lgamma(k + 1))
        cdf = pmf.cumsum(1).clamp_(max=1.0)
        cdf[:, -1] = 1.0
        bits = 10 if c <= 64 else 11  # few mixed cells (≈ 6·sqrt(c) CDF steps in the bulk), tables of 1-2 MB
        edges = (torch.arange((1 << bits) + 1, dtype=torch.float64) / (1 << bits)).expand(len(lam), -1)
        lo = torch.searchsorted(cdf, edges[:, :-1].contiguous(), right=True)  # count at the cell's left edge
        hi = torch.searchsorted(cdf, edges[:, 1:].contiguous(), right=False)  # just below its right edge
        guide = torch.where(lo == hi, _scaled_counts(lo.double(), c), (-1 - lo).float())
        _POISSON_TABLES[key] = _PoissonTable(float(c), bits, width, cdf.reshape(-1).to(device),
                                             guide.reshape(-1).to(device), hi.to(torch.int16).reshape(-1).to(device))
    return _POISSON_TABLES[key]


def _poisson_counts(x: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    """``min(X, c) / c`` (float32, new) for exact X ~ Poisson(``x·c``), flat float32 ``x`` in [0, 1] on the
    generator's device.

    ``x`` is split as ``g + d``, ``g = float32(j) / 255`` an 8-bit grid value with ``0 ≤ d < 1.001 / 255``,
    and Poisson(x·c) = Poisson(g·c) + Poisson(d·c), independent. The first term inverts a uniform u with
    the table of :func:`_poisson_table`: u's top ``bits`` bits (from 31-bit random words) pick a cell,
    which fixes the count unless the CDF steps inside it; only those values (about 1-5%) draw the rest of
    u (51 bits in all) and bisect the table. The second term (d·c < Δ = 1.001·c / 255) thins Poisson(Δ)
    draws: the values with at least one Poisson(Δ) event are Bernoulli(1 - e^-Δ) trials, drawn as
    geometric gaps (:func:`_bernoulli_positions`); they get a zero-truncated Poisson(Δ) count by
    inversion, each event kept with probability d·c / Δ. So X follows the Poisson law up to float64
    rounding of the CDFs and the 2**-51 / 2**-53 grids of the uniforms. Few passes over the data, no
    transcendental function per value, O(n·Δ) work for the second term.

    Blocks of ``BLOCK_VALUES`` values keep the temporaries small (fresh large buffers cost more in page
    faults than the arithmetic). One generator, drawn in a fixed order: the samples do not depend on the
    thread count (nor on the block size).
    """
    n = x.numel()
    out = torch.empty_like(x)
    if n:
        tab = _poisson_table(c, x.device)
        group = (31 // tab.bits) * _WORD_GROUP  # blocks are whole groups (see _poisson_chunk)
        _poisson_chunk(x, out, tab, generator, max(group, BLOCK_VALUES // group * group))
    return out


def _poisson_chunk(x: torch.Tensor, out: torch.Tensor, tab: _PoissonTable, generator: torch.Generator,
                   block: int) -> None:
    """:func:`_poisson_counts` of the flat float32 ``x`` into ``out``, ``block`` values at a time (a multiple
    of ``per · _WORD_GROUP``, ``per`` cells per 31-bit random word). Each group of ``per · _WORD_GROUP``
    values draws ``_WORD_GROUP`` words; its value ``f · _WORD_GROUP + k`` takes field f of word k. So the
    cells do not depend on the block size."""
    n, dev, c = x.numel(), x.device, tab.c
    bits, per_level = tab.bits, 1 << tab.bits
    per = 31 // bits
    group = per * _WORD_GROUP
    block = min(block, -(-n // group) * group)
    words = torch.empty(block // per, dtype=torch.int32, device=dev)
    cells = torch.empty(block, dtype=torch.int32, device=dev)
    neg = torch.empty(block, dtype=torch.bool, device=dev)
    shifts = torch.arange(0, per * bits, bits, dtype=torch.int32, device=dev).view(1, per, 1)
    mixed_pos, mixed_idx = [], []
    for a in range(0, n, block):
        m = min(block, n - a)
        xb, ob = x[a:a + m], out[a:a + m]
        level = torch.mul(xb, _LEVEL_SCALE, out=ob).floor_()
        groups = -(-m // group)
        w = words[:groups * _WORD_GROUP].random_(generator=generator)
        fields = cells[:groups * group]
        torch.bitwise_right_shift(w.view(groups, 1, _WORD_GROUP), shifts, out=fields.view(groups, per, _WORD_GROUP))
        idx = fields[:m].bitwise_and_(per_level - 1)
        idx.copy_(torch.add(idx, level, alpha=per_level, out=ob))  # j·2**bits + cell, exact in float32
        torch.index_select(tab.guide, 0, idx, out=ob)
        mixed = torch.lt(ob, 0, out=neg[:m]).nonzero().squeeze(1)
        if mixed.numel():
            mixed_pos.append(mixed + a)
            mixed_idx.append(idx.index_select(0, mixed))
    if mixed_pos:  # the CDF steps inside these cells: finish u and bisect [lo, upper]
        mixed = torch.cat(mixed_pos)
        sub = torch.cat(mixed_idx)
        lo = (-1 - out.index_select(0, mixed)).long()
        hi = tab.upper.index_select(0, sub).long()
        sub = sub.long()
        low_bits = 51 - bits
        tail = torch.empty(mixed.numel(), dtype=torch.int64, device=dev).random_(generator=generator)
        u = (((sub & (per_level - 1)) << low_bits) | (tail >> (63 - low_bits))).double() * 2.0**-51
        base = (sub >> bits) * tab.width
        for _ in range(int((hi - lo).max()).bit_length()):
            mid = (lo + hi) >> 1
            above = tab.cdf.index_select(0, base + mid) <= u
            lo = torch.where(above, mid + 1, lo)
            hi = torch.where(above, hi, mid)
        out.index_copy_(0, mixed, _scaled_counts(lo.double(), c))
    # the rest, Poisson(d·c), by thinning Poisson(Δ)
    delta = c * (1.0 + 2.0**-10) / POISSON_LEVELS
    pos, _ = _bernoulli_positions(n, -math.expm1(-delta), generator)
    if pos.numel():
        xs = x.index_select(0, pos)
        g = torch.mul(xs, _LEVEL_SCALE).floor_().div_(POISSON_LEVELS)  # float32(j) / 255, j as above
        keep = (xs - g).double().mul_(c / delta).clamp_(0.0, 1.0)  # xs - g is exact; < 1 by the margins
        first = out.index_select(0, pos).double()
        first = torch.where(first >= 1.0, c, (first * c).round_())  # min(X1, c) (X1 ≥ c gives 1 anyway)
        out.index_copy_(0, pos, _scaled_counts(first + _thinned_events(delta, keep, generator), c))


def _thinned_events(rate: float, keep: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Binomial(N, ``keep``) per element (float64 out) for N ~ Poisson(``rate``) conditioned on N ≥ 1.

    One float64 uniform u inverts N's CDF; when N = 1 (u < P(N = 1)), u / P(N = 1) is uniform again and
    decides the one event (kept if below ``keep``). The rarer N ≥ 2 draw a fresh uniform per event.
    """
    width = int(math.ceil(rate + 12.0 * math.sqrt(rate) + 40.0))
    k = torch.arange(1, width, dtype=torch.float64)
    pmf = torch.exp(k * math.log(rate) - rate - torch.lgamma(k + 1)) / -math.expm1(-rate)
    cdf = pmf.cumsum(0).clamp_(max=1.0)
    cdf[-1] = 1.0
    one = float(cdf[0])
    u = torch.rand(keep.shape, generator=generator, dtype=torch.float64, device=keep.device)
    out = (u < keep * one).double()
    more = (u >= one).nonzero().squeeze(1)
    if more.numel():
        trials = 1 + torch.searchsorted(cdf.to(keep.device), u.index_select(0, more), right=True)
        out.index_copy_(0, more, _binomial(trials, keep.index_select(0, more), generator).double())
    return out


def _binomial(trials: torch.Tensor, p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Binomial(``trials``, ``p``) per element (int64 trials, float64 p): one float64 uniform per trial."""
    out = torch.zeros_like(trials)
    act = torch.arange(trials.numel(), device=trials.device)
    i = 0
    while act.numel():
        u = torch.rand(act.numel(), generator=generator, dtype=torch.float64, device=trials.device)
        out.index_add_(0, act, (u < p.index_select(0, act)).long())
        i += 1
        act = act[trials.index_select(0, act) > i]
    return out


def _bernoulli_positions(n: int, p: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (int64, increasing) of the successes among ``n`` independent Bernoulli(p) trials, and one fair
    random bit per success (int64 0/1), on the generator's device.

    The gaps between successes are geometric, drawn by inversion: ``floor(log(u) / log(1 - p))`` with u in
    (0, 1] on a 2**-53 grid (the top 53 bits of a 63-bit random word; its lowest bit is the extra bit).
    Costs O(n·p) draws instead of n.
    """
    dev = generator.device
    if p <= 0 or n == 0:
        return torch.zeros(0, dtype=torch.int64, device=dev), torch.zeros(0, dtype=torch.int64, device=dev)
    if p >= 1:
        return (torch.arange(n, device=dev),
                torch.empty(n, dtype=torch.int64, device=dev).random_(generator=generator).bitwise_and_(1))
    inv_log_q = 1.0 / math.log1p(-p)
    positions, words_used, start = [], [], 0
    while start < n:
        mean = (n - start) * p
        words = torch.empty(int(mean + 6.0 * math.sqrt(mean) + 16), dtype=torch.int64,
                            device=dev).random_(generator=generator)
        u = (words >> 10).add_(1).double().mul_(2.0**-53)  # (0, 1]
        pos = u.log_().mul_(inv_log_q).floor_().clamp_(max=n).add_(1.0).cumsum_(0).add_(start - 1)  # exact in float64
        positions.append(pos)
        words_used.append(words)
        start = int(pos[-1]) + 1
    pos = torch.cat(positions) if len(positions) > 1 else positions[0]
    keep = int(torch.searchsorted(pos, float(n)))
    words = torch.cat(words_used) if len(words_used) > 1 else words_used[0]
    return pos[:keep].long(), words[:keep].bitwise_and_(1)


@dataclass
class ImageCorruption(Transform):
    """Base of the corruptions: checks inputs and severity, maps severity to the table parameter.

    Args:
        table: ``"cifar"`` (CIFAR-10-C parameters, default, for small images) or ``"imagenet"``
            (ImageNet-C parameters, for ~224×224 images).
    """

    table: str = "cifar"

    modality = "image"
    name: ClassVar[str] = ""
    identity: ClassVar[float] = 0.0  # the parameter value that leaves the image unchanged (severity 0)
    stochastic: ClassVar[bool] = False
    output_in_range: ClassVar[bool] = False  # _apply returns a new tensor already in [0, 1] (no final clip)

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise ConfigError(f"{self.name}: unknown table {self.table!r}",
                              fix=f"use one of {sorted(TABLES)} ('cifar' for small images)")

    @property
    def levels(self) -> tuple:
        """The parameters of severities 1..5 in the chosen table."""
        return TABLES[self.table][self.name]

    def parameter(self, severity: float) -> float:
        """The (interpolated) table parameter at ``severity``; ``identity`` at 0."""
        return interpolate((self.identity, *self.levels), check_severity(severity, self.name))

    def __call__(self, x: torch.Tensor, *, severity: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Corrupted copy of ``x`` (same shape, dtype, device), clipped to [0, 1]."""
        return apply_to_images(x, severity, generator, name=self.name, stochastic=self.stochastic,
                               apply=self._apply, output_in_range=self.output_in_range)

    def _apply(self, x: torch.Tensor, severity: float, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


@register("transform", "gaussian_noise")
@dataclass
class GaussianNoise(ImageCorruption):
    """Additive Gaussian noise ``x + N(0, c²)``, clipped (Hendrycks & Dietterich, ICLR 2019).

    c per severity 1..5 — CIFAR-10-C: 0.04, 0.06, 0.08, 0.09, 0.10; ImageNet-C: 0.08, 0.12, 0.18,
    0.26, 0.38 (pixel units on a [0, 1] scale). Independent noise for every pixel and channel.
    """

    name = "gaussian_noise"
    stochastic = True

    def _apply(self, x, severity, generator):
        return x + self.parameter(severity) * _draw("normal", x, generator)


@register("transform", "shot_noise")
@dataclass
class ShotNoise(ImageCorruption):
    """Poisson (photon) noise ``Poisson(x·c) / c``, clipped (Hendrycks & Dietterich, ICLR 2019).

    c (photons at full intensity) per severity 1..5 — CIFAR-10-C: 500, 250, 100, 75, 50; ImageNet-C:
    60, 25, 12, 5, 3. Fractional severities interpolate 1/c (the noise variance scale), level 0 being
    1/c = 0 (no noise). Exact Poisson draws (:func:`_poisson_counts`): inversion of uniform random bits
    with per-8-bit-level tables, plus an exact thinned Poisson draw for the offset of each value from the
    8-bit grid; exact up to float64 rounding, rates from float32 ``x``. For c > ``POISSON_TABLE_MAX_C``
    (CIFAR-10-C severities below 3) ``torch.poisson`` is used. Same law as ``torch.poisson`` /
    ``np.random.poisson``, but the random stream for a given seed differs from earlier robustlab versions
    (which drew every value with ``torch.poisson``); it depends on the seed only, not on the thread count.
    """

    name = "shot_noise"
    stochastic = True
    output_in_range = True

    def parameter(self, severity: float) -> float:
        """The photon count c at ``severity`` (``inf`` at 0), interpolated in 1/c."""
        inv = interpolate((0.0, *(1.0 / c for c in self.levels)), check_severity(severity, self.name))
        return float("inf") if inv == 0 else 1.0 / inv

    def _apply(self, x, severity, generator):
        c = self.parameter(severity)
        if c > POISSON_TABLE_MAX_C:
            return (_draw("poisson", x, generator, rate=x.clamp(0, 1) * c) / c).clamp_(0.0, 1.0)
        flat = x.reshape(-1).to(device=generator.device, dtype=torch.float32)
        if flat.numel():
            lo, hi = torch.aminmax(flat)
            if lo < 0 or hi > 1:
                flat = flat.clamp(0.0, 1.0)
        y = _poisson_counts(flat, c, generator)  # min(X, c) / c in float32
        if x.dtype == torch.float64:  # the same counts, divided in float64
            y = y.double()
            y = torch.where(y >= 1.0, 1.0, (y * c).round_() / c)
        return y.to(x.device).reshape(x.shape)


@register("transform", "impulse_noise")
@dataclass
class ImpulseNoise(ImageCorruption):
    """Salt-and-pepper noise: each value becomes 0 or 1 (even odds) with probability c.

    From Hendrycks & Dietterich (ICLR 2019), who use ``skimage.util.random_noise(mode='s&p')``.
    c per severity 1..5 — CIFAR-10-C: 0.01, 0.02, 0.03, 0.05, 0.07; ImageNet-C: 0.03, 0.06, 0.09,
    0.17, 0.27. Each pixel of each channel is hit independently (skimage: ``rng.random() <= amount``,
    then salt with odds ``salt_vs_pepper = 0.5``). The hits are drawn as geometric gaps between
    successive hits (:func:`_bernoulli_positions`, exact up to float64 rounding, O(c·n) draws), each
    with one fair bit for salt or pepper: the same law as skimage's two uniforms per value, but the random
    stream for a given seed differs from earlier robustlab versions (one float32 uniform per value); it
    depends on the seed only, not on the thread count.
    """

    name = "impulse_noise"
    stochastic = True
    output_in_range = True

    def _apply(self, x, severity, generator):
        pos, salt = _bernoulli_positions(x.numel(), self.parameter(severity), generator)
        out = torch.clamp(x, 0.0, 1.0, out=torch.empty(x.shape, dtype=x.dtype, device=x.device))  # contiguous
        out.view(-1).index_copy_(0, pos.to(x.device), salt.to(device=x.device, dtype=x.dtype))
        return out


@register("transform", "speckle_noise")
@dataclass
class SpeckleNoise(ImageCorruption):
    """Multiplicative noise ``x + x·N(0, c²)``, clipped (Hendrycks & Dietterich, ICLR 2019).

    c per severity 1..5 — CIFAR-10-C: 0.06, 0.10, 0.12, 0.16, 0.20; ImageNet-C: 0.15, 0.2, 0.35,
    0.45, 0.6.
    """

    name = "speckle_noise"
    stochastic = True

    def _apply(self, x, severity, generator):
        return x + x * self.parameter(severity) * _draw("normal", x, generator)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian of std ``sigma`` pixels, radius ``int(truncate·sigma + 0.5)`` (float64).

    The same sampling as ``scipy.ndimage.gaussian_filter`` / ``skimage.filters.gaussian``.
    """
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2) if sigma > 0 else (t == 0).double()
    return k / k.sum()


#: 2-D kernels with at least this many taps (both sides > 1) are applied by FFT, not direct convolution
FFT_MIN_TAPS = 64


def _fast_size(n: int) -> int:
    """The smallest ``m ≥ n`` whose prime factors are 2, 3 and 5 (a fast FFT length)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


_BANDS: dict[tuple, torch.Tensor] = {}


def _band_matrix(kernel: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """``(n, n)`` float64 matrix of the 1-D correlation with odd-sized ``kernel`` after ``mode`` padding (cached)."""
    key = (tuple(kernel.reshape(-1).tolist()), n, mode)
    if key not in _BANDS:
        if len(_BANDS) > 256:
            _BANDS.clear()
        _BANDS[key] = _band_matrix_uncached(kernel, n, mode)
    return _BANDS[key]


def _band_matrix_uncached(kernel: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    r = kernel.numel() // 2
    eye = torch.eye(n, dtype=torch.float64)[:, None, None, :]  # n signals, each a unit impulse
    y = F.pad(eye, (r, r, 0, 0), mode=mode) if r else eye
    return F.conv2d(y, kernel.to(torch.float64).reshape(1, 1, 1, -1))[:, 0, 0, :].T


#: symmetric 2-D kernels with reflect borders use DCT-I products on images with ``H + W`` up to this
DCT_MAX_SIDES = 192
#: values per block of the DCT-I blur: small temporaries, and matrix products small enough for MKL to run them on
#: one thread (its OpenMP barriers stall when the cores are busy with other work)
DCT_BLOCK_VALUES = 1 << 16

_DCTS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _dct1(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(n, n)`` DCT-I matrix ``D[p, t] = w_t cos(π p t / (n - 1))``, w = 1 at both ends and 2 inside (cached).

    ``D @ x`` is the DFT of the reflect-101 (whole-sample symmetric) periodic extension of ``x``, period
    ``2n - 2``; ``D / (2n - 2)`` inverts it (D² = (2n - 2)·I).
    """
    key = (n, dtype, str(device))
    if key not in _DCTS:
        if len(_DCTS) > 64:
            _DCTS.clear()
        i = torch.arange(n, dtype=torch.int64)
        phase = (i[:, None] * i[None, :]) % (2 * n - 2)  # exact argument reduction
        w = torch.full((n,), 2.0, dtype=torch.float64)
        w[0] = w[-1] = 1.0
        _DCTS[key] = (torch.cos(math.pi * phase.double() / (n - 1)) * w).to(dtype=dtype, device=device)
    return _DCTS[key]


def _is_even(kernel: torch.Tensor) -> bool:
    """Whether the 2-D ``kernel`` is mirror-symmetric about its centre row and its centre column (exactly)."""
    return bool(torch.equal(kernel, kernel.flip(0)) and torch.equal(kernel, kernel.flip(1)))


def _conv_even_reflect(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate ``x (N, C, H, W)`` (H, W ≥ 2) with a kernel even in both axes, reflect-101 borders, by DCT-I.

    Reflect-101 padding is the whole-sample symmetric periodic extension (period 2H - 2, 2W - 2), and a
    kernel even in both axes keeps that symmetry, so the correlation is diagonal in the DCT-I basis: a
    forward DCT-I along W and H (two matrix products), a product with the kernel's real spectrum
    ``K[p, q] = Σ k[a, b] cos(π p a / (H - 1)) cos(π q b / (W - 1))`` (taps wrapping around the period
    add up, as reflect padding with radius H - 1 does), and the inverse (two products). Exact up to float
    rounding, no padding, O(H + W) multiply-adds per pixel.
    """
    n, c, h, w = x.shape
    rh, rw = kernel.shape[0] // 2, kernel.shape[1] // 2
    k64 = kernel.to(torch.float64).cpu()
    ch = torch.cos(math.pi * ((torch.arange(h)[:, None] * torch.arange(-rh, rh + 1)[None, :]) % (2 * h - 2))
                   .double() / (h - 1))
    cw = torch.cos(math.pi * ((torch.arange(w)[:, None] * torch.arange(-rw, rw + 1)[None, :]) % (2 * w - 2))
                   .double() / (w - 1))
    spectrum = (ch @ k64 @ cw.T / ((2 * h - 2) * (2 * w - 2))).to(dtype=x.dtype, device=x.device)
    dh, dw = _dct1(h, x.dtype, x.device), _dct1(w, x.dtype, x.device)
    planes = x.reshape(n * c, h, w)
    out = torch.empty(planes.shape, dtype=x.dtype, device=x.device)
    per = max(1, min(n * c, DCT_BLOCK_VALUES // (h * w)))  # planes per block: small temporaries, reused
    z1 = torch.empty((per, h, w), dtype=x.dtype, device=x.device)
    z2 = torch.empty_like(z1)
    for a in range(0, n * c, per):
        m = min(per, n * c - a)
        torch.matmul(planes[a:a + m], dw.T, out=z1[:m])  # along W
        torch.matmul(dh, z1[:m], out=z2[:m]).mul_(spectrum)  # along H, times the spectrum
        torch.matmul(dh, z2[:m], out=z1[:m])  # inverse along H (D⁻¹ = D / (2H - 2): the scale is in the spectrum)
        torch.matmul(z1[:m], dw.T, out=out[a:a + m])  # inverse along W
    return out.reshape(n, c, h, w)


def _conv_same(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of ``x (N, C, H, W)`` with the odd-sized 2-D ``kernel``, same size out.

    Kernels even in both axes with reflect borders on images with H + W ≤ ``DCT_MAX_SIDES`` use DCT-I
    products (:func:`_conv_even_reflect`); other large 2-D kernels (≥ ``FFT_MIN_TAPS`` taps) an exact FFT
    correlation of the padded image (the circular wrap never reaches the kept outputs); the rest a
    direct ``conv2d``. Same result up to float rounding.
    """
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    if (kh == 1 or kw == 1) and x.dtype in (torch.float32, torch.float64):  # 1-D: one banded matrix product
        if kh == 1:
            return x @ _band_matrix(kernel.reshape(-1), w, mode).to(dtype=x.dtype, device=x.device).T
        return _band_matrix(kernel.reshape(-1), h, mode).to(dtype=x.dtype, device=x.device) @ x
    if (mode == "reflect" and x.dtype in (torch.float32, torch.float64) and h >= 2 and w >= 2
            and h + w <= DCT_MAX_SIDES and (kh * kw > 9 or x.dtype == torch.float32)  # float64 3×3: shifted sums
            and kh // 2 < h and kw // 2 < w and _is_even(kernel)):
        return _conv_even_reflect(x, kernel)
    y = F.pad(x.reshape(n * c, 1, h, w), (kw // 2, kw // 2, kh // 2, kh // 2), mode=mode)
    k = kernel.to(dtype=x.dtype, device=x.device)
    if kh * kw <= 9 and x.dtype == torch.float64:  # small kernels: shifted sums (conv2d has no fast float64 path)
        out = None
        kv = k.tolist()
        for a, b in torch.nonzero(k).tolist():
            term = y[:, 0, a:a + h, b:b + w] * kv[a][b]
            out = term if out is None else out.add_(term)
        return (torch.zeros_like(x) if out is None else out).reshape(n, c, h, w)
    if kh > 1 and kw > 1 and kh * kw >= FFT_MIN_TAPS and x.dtype in (torch.float32, torch.float64):
        hp, wp = y.shape[-2:]
        size = (_fast_size(hp), _fast_size(wp))
        spec = torch.fft.rfft2(y[:, 0], s=size) * torch.fft.rfft2(k, s=size).conj()
        return torch.fft.irfft2(spec, s=size)[:, :h, :w].reshape(n, c, h, w)
    return F.conv2d(y, k[None, None]).reshape(n, c, h, w)


def _fit_kernel(kernel: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``kernel`` without its all-zero outer rings, cropped to radius < image size (renormalised).

    Reflect padding needs a pad smaller than the image; dropping zero rings changes nothing, and
    cropping only happens for images smaller than the kernel's support (imagecorruptions #13).
    """
    r = kernel.shape[0] // 2
    while r > 0 and bool((kernel[0] == 0).all() and (kernel[-1] == 0).all()
                         and (kernel[:, 0] == 0).all() and (kernel[:, -1] == 0).all()):
        kernel, r = kernel[1:-1, 1:-1], r - 1
    rh, rw = min(r, h - 1), min(r, w - 1)
    if (rh, rw) != (r, r):
        kernel = kernel[r - rh:r + rh + 1, r - rw:r + rw + 1]
        kernel = kernel / kernel.sum()
    return kernel


@register("transform", "gaussian_blur")
@dataclass
class GaussianBlur(ImageCorruption):
    """Gaussian blur of std σ pixels per channel (Hendrycks & Dietterich, ICLR 2019).

    σ per severity 1..5 — CIFAR-10-C: 0.4, 0.6, 0.7, 0.8, 1.0; ImageNet-C: 1, 2, 3, 4, 6. Like the
    reference (``skimage.filters.gaussian``): kernel truncated at 4σ, edges extended by replication,
    so any image size works. Separable torch convolution; deterministic (no generator needed).
    """

    name = "gaussian_blur"

    def _apply(self, x, severity, generator):
        k = gaussian_kernel1d(self.parameter(severity))
        x = _conv_same(x, k[None, :], "replicate")
        return _conv_same(x, k[:, None], "replicate")


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """Normalised anti-aliased disk of ``radius`` pixels, as in the reference ``disk`` helper (float64).

    A binary disk on a 17×17 grid (or ``2·radius + 1`` when ``radius > 8``) smoothed by a 3×3 (5×5)
    Gaussian of std ``alias_blur`` with reflect-101 borders, the way ``cv2.GaussianBlur`` does it,
    symmetrised (mean with its mirror images) so that it is exactly even, as the disk is.
    """
    half = 8 if radius <= 8 else int(radius)
    ksize = 3 if radius <= 8 else 5
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).double()
    disk = disk / disk.sum()
    t = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g = torch.exp(-(t**2) / (2 * alias_blur**2))
    g = g / g.sum()
    out = _conv_same(_conv_same(disk[None, None], g[None, :], "reflect"), g[:, None], "reflect")[0, 0]
    out = (out + out.flip(0)) / 2  # exactly mirror-symmetric (the products leave ~1e-18 asymmetries)
    return (out + out.flip(1)) / 2


def _pad_to(kernel: torch.Tensor, size: int) -> torch.Tensor:
    p = (size - kernel.shape[0]) // 2
    return F.pad(kernel, (p, p, p, p))


@register("transform", "defocus_blur")
@dataclass
class DefocusBlur(ImageCorruption):
    """Defocus (out-of-focus lens) blur: convolution with an anti-aliased disk (Hendrycks & Dietterich, 2019).

    (disk radius, anti-alias σ) per severity 1..5 — CIFAR-10-C: (0.3, 0.4), (0.4, 0.5), (0.5, 0.6),
    (1, 0.2), (1.5, 0.1); ImageNet-C: (3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5). Reflect-101
    borders like ``cv2.filter2D``; on images smaller than the kernel the kernel is cropped to the image
    and renormalised. A fractional severity blends the two neighbouring kernels linearly (level 0 is
    the identity kernel). Deterministic (no generator needed).
    """

    name = "defocus_blur"
    output_in_range = True  # _conv_same returns a new tensor, clipped in place

    def kernel(self, severity: float) -> torch.Tensor:
        """The 2-D blur kernel at ``severity`` (float64, odd size, sums to 1)."""
        s = check_severity(severity, self.name)
        lo = min(int(s), 4)
        t = s - lo
        ks = [torch.ones(1, 1, dtype=torch.float64) if i == 0 else disk_kernel(*self.levels[i - 1])
              for i in (lo, lo + 1)]
        size = max(k.shape[0] for k in ks)
        return (1 - t) * _pad_to(ks[0], size) + t * _pad_to(ks[1], size)

    def _apply(self, x, severity, generator):
        return _conv_same(x, _fit_kernel(self.kernel(severity), *x.shape[-2:]), "reflect").clamp_(0.0, 1.0)


@register("transform", "contrast")
@dataclass
class Contrast(ImageCorruption):
    """Lower contrast: ``(x - m)·c + m``, m the per-image, per-channel spatial mean (Hendrycks & Dietterich, 2019).

    c per severity 1..5 — CIFAR-10-C: 0.75, 0.5, 0.4, 0.3, 0.15; ImageNet-C: 0.4, 0.3, 0.2, 0.1,
    0.05 (level 0: c = 1). The reference takes the mean over height and width for each channel.
    Deterministic (no generator needed).
    """

    name = "contrast"
    identity = 1.0

    def _apply(self, x, severity, generator):
        m = x.mean(dim=(-2, -1), keepdim=True)
        return (x - m) * self.parameter(severity) + m


@register("transform", "brightness")
@dataclass
class Brightness(ImageCorruption):
    """Brighter image: add c to the HSV value channel, keeping hue and saturation (Hendrycks & Dietterich, 2019).

    c per severity 1..5 — CIFAR-10-C: 0.05, 0.1, 0.15, 0.2, 0.3; ImageNet-C: 0.1, 0.2, 0.3, 0.4, 0.5.
    With V = max over channels and V' = clip(V + c), the HSV round trip of the reference equals
    scaling every channel by V'/V (black pixels become grey V'); a grey image just gets ``x + c``.
    Deterministic (no generator needed).
    """

    name = "brightness"

    def _apply(self, x, severity, generator):
        v = x.amax(dim=1, keepdim=True)
        v_new = (v + self.parameter(severity)).clamp(0.0, 1.0)
        scale = v_new / v.clamp_min(torch.finfo(x.dtype).tiny)
        return torch.where(v > 0, x * scale, v_new.expand_as(x))
