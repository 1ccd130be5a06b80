"""Exact, seeded random draws for the noise corruptions (shot noise's Poisson sampler, impulse noise's
Bernoulli positions) and fixed-chunk parallel draws; used by :mod:`robustlab.transforms.image`.

Every function takes a ``torch.Generator`` and draws in a fixed order, so results depend on the seed
only, never on the thread count or block sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from robustlab.core.rng import run_chunks, split_generator

#: CPU draws of at least this many values are split into ``DRAW_CHUNKS`` fixed chunks, each with its own
#: generator seeded from the caller's, drawn on a thread pool (the samples do not depend on the thread count)
PARALLEL_DRAW_MIN = 1 << 17
DRAW_CHUNKS = 4


def _chunked_draw(numel: int, generator: torch.Generator, draw) -> torch.Tensor:
    """``draw(start, stop, gen)`` for fixed chunks of ``range(numel)`` (threads on CPU), concatenated (flat)."""
    if generator.device.type != "cpu" or numel < PARALLEL_DRAW_MIN:
        return draw(0, numel, generator)
    gens = split_generator(generator, DRAW_CHUNKS)
    bounds = [numel * i // DRAW_CHUNKS for i in range(DRAW_CHUNKS + 1)]
    return torch.cat(run_chunks(lambda i: draw(bounds[i], bounds[i + 1], gens[i]), DRAW_CHUNKS))


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
