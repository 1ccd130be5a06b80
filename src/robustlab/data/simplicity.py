"""Simplicity-bias datasets: LMS-k slab data and digit dominoes, every block alone fully predictive.

From "The Pitfalls of Simplicity Bias in Neural Networks" (Shah, Tamuly, Raghunathan, Jain &
Netrapalli, NeurIPS 2020), following the official generator (``harshays/simplicitybiaspitfalls``,
``scripts/gendata.py``).

**LMS-k** (width ``B``, margins ``γ_l``, ``γ_s``; ``y ∈ {0, 1}``, ``s = 2y - 1``). Every coordinate
is drawn independently given ``y`` (the paper shuffles the rows per coordinate, which is the same):

- linear coordinate: ``x = s · (γ_l + (B - γ_l) · U)``;
- 3-slab (``w = (2B - 4γ_s) / 3``): y=1 ``±(w/2 + 2γ_s + w U)``; y=0 ``±(w/2) U``;
- 5-slab (``w = (2B - 8γ_s) / 5``): y=1 ``±((B + 6γ_s) / 5 + w U)``; y=0 with prob. 3/4 the centre
  slab ``±(w/2) U``, else the outer slabs ``±((8γ_s + 3B) / 5 + w U)``;
- 7-slab (``w = (2B - 12γ_s) / 7``): y=1 with prob. 7/8 ``±(w/2 + 2γ_s + w U)``, else
  ``±(5w/2 + 6γ_s + w U)``; y=0 with prob. 1/2 ``±(w/2) U``, else ``±(3w/2 + 4γ_s + w U)``;
- remaining coordinates (``dim`` beyond the blocks): ``U[0, B]`` noise (as ``_get_random_data``).

The gaps between neighbouring slabs of different classes are ``2γ_s`` (``2γ_l`` around 0 for the
linear coordinate), so each block alone separates the classes with margin γ. Defaults are the repo's:
``dim = 20`` (1 linear + 19 five-slab coordinates), ``γ_l = γ_s = 0.1``, ``B = 1``.

Departures, said once: (1) robustlab datasets live in [0, 1], so the stored inputs are
``(x + B) / (2B)`` (margins become ``γ / (2B)``); :func:`paper_coords` maps back, and the
reproduction's models undo it inside (``TorchModel(mean=0.5, std=1/(2B))``). (2) The optional random
orthogonal rotation of the repo is not offered (a rotated cube leaves the [0, 1] box). (3) Sizes
default to the spec's CPU setup (20k train, 2k val / test), not the repo's 100k.

**Digit dominoes** (stand-in for the paper's MNIST-CIFAR dominoes, from the digits robustlab ships):
an 8x8 digit 0 / 1 (class 0 / 1) stacked on top of an 8x8 digit 7 / 9 (class 0 / 1) that carries
Gaussian pixel noise (std 0.3 by default), giving (N, 1, 16, 8) images where each half alone is fully
predictive. The top (0 vs 1) plays the simple MNIST block, the noisy bottom (7 vs 9) the complex CIFAR
block. Without the noise the two 8x8 halves are about equally simple and an FCN uses both (measured
by the simplicity-bias reproduction), so the noise is what makes the bottom the complex feature. Halves are
drawn independently given the label from the fixed digits split of the same name (train / val / test,
so no digit image is shared across splits).

Each dataset's ``attrs`` name the blocks as flat feature indices, one row per example (``Dataset``
attributes are per example): ``attrs["simple_block"]`` (N, |S|) and ``attrs["complex_block"]``
(N, |S^c|); :func:`blocks` reads them back. The transforms ``randomize_simple`` /
``randomize_complex`` (:mod:`robustlab.transforms.simplicity`) permute them across a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.data._common import check_split
from robustlab.data.base import Dataset

__all__ = [
    "DOMINO_SIZES",
    "LMS_SIZES",
    "SLAB_KINDS",
    "blocks",
    "load_digit_dominoes",
    "load_lms",
    "load_ms",
    "paper_coords",
    "slab_arrays",
]

#: default number of examples per split (the spec's CPU setup)
LMS_SIZES = {"train": 20_000, "val": 2_000, "test": 2_000}
DOMINO_SIZES = {"train": 4_000, "val": 500, "test": 1_000}
#: coordinate kinds: 1 = linear, 3 / 5 / 7 = that many slabs
SLAB_KINDS = (1, 3, 5, 7)
_SOURCE = ("generated LMS slab data (Shah et al., NeurIPS 2020, official gendata.py), stored as (x + B) / (2B) "
           "in [0, 1]")


def _check_margin(value: float, name: str, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < upper:
        raise ConfigError(f"{name} must be a number in (0, {upper:g}), got {value!r}",
                          fix=f"use e.g. {name}=0.1 (the paper's default with width 1)")
    return float(value)


def _slab(y: torch.Tensor, k: int, margin: float, width: float, g: torch.Generator) -> torch.Tensor:
    """One k-slab (or linear, k=1) block for labels ``y`` (N, m) in paper coordinates [-B, B]."""
    u = torch.rand(y.shape, generator=g, dtype=torch.float64)
    sign = torch.randint(0, 2, y.shape, generator=g).to(torch.float64) * 2 - 1
    pick = torch.rand(y.shape, generator=g, dtype=torch.float64)
    pos = y == 1
    b, m = width, margin
    if k == 1:
        return torch.where(pos, 1.0, -1.0) * (m + (b - m) * u)
    if k == 3:
        w = (2 * b - 4 * m) / 3
        return sign * torch.where(pos, w / 2 + 2 * m + w * u, w / 2 * u)
    if k == 5:
        w = (2 * b - 8 * m) / 5
        neg = torch.where(pick < 0.75, w / 2 * u, (8 * m + 3 * b) / 5 + w * u)
        return sign * torch.where(pos, (b + 6 * m) / 5 + w * u, neg)
    w = (2 * b - 12 * m) / 7  # k == 7
    p = torch.where(pick < 0.875, w / 2 + 2 * m + w * u, 2.5 * w + 6 * m + w * u)
    n = torch.where(pick < 0.5, w / 2 * u, 1.5 * w + 4 * m + w * u)
    return sign * torch.where(pos, p, n)


def slab_arrays(n: int, kinds: Sequence[int], *, dim: int | None = None, lin_margin: float = 0.1,
                slab_margin: float = 0.1, width: float = 1.0,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw slab data in the paper's coordinates: ``x`` (n, dim) float64 in [-B, B], ``y`` (n,) in {0, 1}.

    Args:
        n: number of examples; labels are i.i.d. fair coin flips (as the repo).
        kinds: one entry per structured coordinate, in order: 1 (linear), 3, 5 or 7 (slabs).
        dim: total dimension (>= len(kinds)); the rest are U[0, B] noise. Default: len(kinds).
        lin_margin: γ_l in raw units (0 < γ_l < B).
        slab_margin: γ_s in raw units; the slab width ``(2B - 2(k-1)γ_s) / k`` must stay positive, so
            ``γ_s < B / (k - 1)`` (B/2 for 3 slabs, B/4 for 5, B/6 for 7).
        width: B, the half-width of the cube.
        generator: the only randomness.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"slab data: n must be an integer >= 0, got {n!r}", fix="pass e.g. n=2000")
    kinds = [int(k) for k in kinds]
    bad = [k for k in kinds if k not in SLAB_KINDS]
    if bad or not kinds:
        raise ConfigError(f"slab data: coordinate kinds {bad or kinds} are not in {SLAB_KINDS}",
                          fix="give one kind per structured coordinate: 1 (linear), 3, 5 or 7 slabs")
    dim = len(kinds) if dim is None else dim
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < len(kinds):
        raise ConfigError(f"slab data: dim={dim!r} is smaller than the {len(kinds)} structured coordinates",
                          fix=f"pass dim >= {len(kinds)}")
    width = float(width) if isinstance(width, (int, float)) and not isinstance(width, bool) else width
    if not isinstance(width, float) or not width > 0:
        raise ConfigError(f"slab data: width must be > 0, got {width!r}", fix="use width=1 (the repo's default)")
    _check_margin(lin_margin / width, "lin_margin / width", 1.0)
    for k in set(kinds) - {1}:  # the slab width 2B - 2(k-1)γ must stay positive
        _check_margin(slab_margin / width, f"slab_margin / width ({k} slabs)", 1.0 / (k - 1))
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"slab data needs a torch.Generator, got {type(generator).__name__}",
                          fix="pass generator=robustlab.core.rng.torch_generator(seed)")
    y = torch.randint(0, 2, (n,), generator=generator)
    x = torch.rand(n, dim, generator=generator, dtype=torch.float64) * width  # U[0, B] noise
    kt = torch.tensor(kinds)
    for k in sorted(set(kinds)):
        cols = (kt == k).nonzero().flatten()
        yy = y[:, None].expand(n, len(cols))
        x[:, cols] = _slab(yy, k, lin_margin if k == 1 else slab_margin, width, generator)
    return x, y


def paper_coords(x: torch.Tensor, width: float = 1.0) -> torch.Tensor:
    """Stored [0, 1] inputs back in the paper's coordinates: ``2B x - B``."""
    return 2 * width * x - width


def _sizes(split: str, n: int | None, table: dict[str, int], name: str) -> int:
    check_split(split, name)
    if n is None:
        return table[split]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"{name}: n must be a positive integer, got {n!r}", fix="pass e.g. n=2000")
    return n


def _block_attrs(n: int, simple: Sequence[int], complex_: Sequence[int]) -> dict[str, torch.Tensor]:
    s = torch.as_tensor(list(simple), dtype=torch.long)
    c = torch.as_tensor(list(complex_), dtype=torch.long)
    return {"simple_block": s.expand(n, len(s)).clone(), "complex_block": c.expand(n, len(c)).clone()}


def _slab_dataset(name: str, kinds: list[int], n_simple: int, split: str, n: int, seed: int, dim: int,
                  lin_margin: float, slab_margin: float, width: float) -> Dataset:
    g = torch_generator(derive_seed(seed, "simplicity", name, split, dim, lin_margin, slab_margin, width))
    x, y = slab_arrays(n, kinds, dim=dim, lin_margin=lin_margin, slab_margin=slab_margin, width=width, generator=g)
    x01 = ((x + width) / (2 * width)).clamp_(0.0, 1.0).float()
    attrs = _block_attrs(n, range(n_simple), range(n_simple, len(kinds)))
    src = (f"{_SOURCE}; kinds {''.join(map(str, kinds))}, dim {dim}, γ_l {lin_margin:g}, γ_s {slab_margin:g}, "
           f"B {width:g}; simple block = coordinates 0..{n_simple - 1}")
    return Dataset(x=x01, y=y, modality="tabular", class_names=["0", "1"], name=name, source=src, attrs=attrs)


def load_lms(split: str = "test", n: int | None = None, seed: int = 0, *, k: int = 5, dim: int = 20,
             num_linear: int = 1, num_slabs: int | None = None, lin_margin: float = 0.1, slab_margin: float = 0.1,
             width: float = 1.0) -> Dataset:
    """LMS-k (Shah et al. 2020): ``num_linear`` linear coordinates then ``num_slabs`` k-slab ones, in [0, 1].

    ``S`` (``attrs["simple_block"]``) is the linear block, ``S^c`` (``attrs["complex_block"]``) the slabs;
    ``num_linear=0`` gives slab-only data (then ``S`` is empty). Default ``num_slabs = dim - num_linear``.

    Args:
        split: "train", "val" or "test" (independent draws; same split + seed -> same data).
        n: examples (default ``LMS_SIZES[split]``).
        seed: generation seed.
        k: slabs per complex coordinate (3, 5 or 7).
        dim: total dimension; coordinates beyond the blocks are U[0, B] noise.
        lin_margin, slab_margin, width: γ_l, γ_s, B in the paper's raw units.
    """
    if k not in (3, 5, 7):
        raise ConfigError(f"load_lms: k={k!r} slabs is not supported", fix="use k=3, 5 or 7")
    if isinstance(num_linear, bool) or not isinstance(num_linear, int) or num_linear < 0:
        raise ConfigError(f"load_lms: num_linear must be an integer >= 0, got {num_linear!r}", fix="use 1")
    num_slabs = dim - num_linear if num_slabs is None else num_slabs
    bad = isinstance(num_slabs, bool) or not isinstance(num_slabs, int) or num_slabs < 0
    if bad or not 1 <= num_linear + num_slabs <= dim:
        raise ConfigError(f"load_lms: num_slabs={num_slabs!r} with num_linear={num_linear} does not fit dim={dim!r}",
                          fix="use at least one linear or slab coordinate, and num_linear + num_slabs <= dim")
    n = _sizes(split, n, LMS_SIZES, f"lms-{k}")
    name = f"lms-{k}" if num_linear else f"ms-{k}"
    return _slab_dataset(name, [1] * num_linear + [k] * num_slabs, num_linear, split, n, seed, dim,
                         lin_margin, slab_margin, width)


def load_ms(split: str = "test", n: int | None = None, seed: int = 0, *, simple_k: int = 5, complex_k: int = 7,
            dim: int = 20, lin_margin: float = 0.1, slab_margin: float = 0.1, width: float = 1.0) -> Dataset:
    """MS-(simple_k, complex_k) (Shah et al. 2020, Sec. 4): one ``simple_k``-slab coordinate (``S``) then
    ``dim - 1`` ``complex_k``-slab coordinates (``S^c``), in [0, 1]."""
    if simple_k not in (3, 5, 7) or complex_k not in (3, 5, 7) or dim < 2:
        raise ConfigError(f"load_ms: simple_k={simple_k!r}, complex_k={complex_k!r}, dim={dim!r} not supported",
                          fix="use slab counts 3, 5 or 7 and dim >= 2, e.g. simple_k=5, complex_k=7")
    n = _sizes(split, n, LMS_SIZES, f"ms-{simple_k}{complex_k}")
    return _slab_dataset(f"ms-{simple_k}{complex_k}", [simple_k] + [complex_k] * (dim - 1), 1, split, n, seed, dim,
                         lin_margin, slab_margin, width)


def load_digit_dominoes(split: str = "test", n: int | None = None, seed: int = 0, *,
                        top: tuple[int, int] = (0, 1), bottom: tuple[int, int] = (7, 9),
                        noise: float = 0.3) -> Dataset:
    """Digit dominoes (stand-in for the paper's MNIST-CIFAR): (N, 1, 16, 8), top digit ``top[y]`` over
    bottom digit ``bottom[y]``, halves drawn independently given ``y``; the bottom half gets N(0, ``noise``²)
    pixel noise, clipped to [0, 1].

    ``S`` (``attrs["simple_block"]``) is the top half's 64 pixels, ``S^c`` the bottom half's; ``attrs``
    also keep the digits' ids (``top_id``, ``bottom_id``: rows of scikit-learn's digits).

    Args:
        split: "train", "val" or "test": digits drawn from that fixed digits split only.
        n: examples (default ``DOMINO_SIZES[split]``); halves are sampled with replacement.
        seed: seed of labels, pairing and noise (the pairing does not depend on ``noise``).
        top, bottom: the digit classes standing for labels 0 and 1 in each half (four distinct digits).
        noise: pixel noise std on the bottom (complex) half; 0 for none.
    """
    from robustlab.data.digits import load_digits

    n = _sizes(split, n, DOMINO_SIZES, "digit-dominoes")
    digits_ = [int(d) for d in (*top, *bottom)] if len(top) == 2 and len(bottom) == 2 else []
    if len(set(digits_)) != 4 or not all(0 <= d <= 9 for d in digits_):
        raise ConfigError(f"digit dominoes: top={top!r} and bottom={bottom!r} must be two pairs of four distinct "
                          "digits 0..9", fix="use e.g. top=(0, 1), bottom=(7, 9)")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ConfigError(f"digit dominoes: noise must be a number >= 0, got {noise!r}", fix="use e.g. noise=0.3")
    pool = load_digits(split)
    g = torch_generator(derive_seed(seed, "digit-dominoes", split, *digits_))  # noise drawn last: same pairs
    y = torch.randint(0, 2, (n,), generator=g)
    halves, ids = [], []
    for pair in (top, bottom):
        idx = torch.empty(n, dtype=torch.long)
        for label in (0, 1):
            rows = (pool.y == int(pair[label])).nonzero().flatten()
            mask = y == label
            idx[mask] = rows[torch.randint(0, len(rows), (int(mask.sum()),), generator=g)]
        halves.append(pool.x[idx])
        ids.append(pool.ids[idx])
    if noise > 0:  # the spec's "bottom = digits 7 vs 9 (+ mild noise)": the complex half only
        halves[1] = (halves[1] + noise * torch.randn(halves[1].shape, generator=g)).clamp_(0.0, 1.0)
    x = torch.cat(halves, dim=2)  # (n, 1, 16, 8)
    attrs = _block_attrs(n, range(64), range(64, 128)) | {"top_id": ids[0], "bottom_id": ids[1]}
    src = (f"digit dominoes from scikit-learn's digits ({split} split): digit {top[0]}/{top[1]} on top of "
           f"{bottom[0]}/{bottom[1]} for class 0/1, bottom pixel noise std {noise:g} (stand-in for Shah et al.'s "
           "MNIST-CIFAR dominoes)")
    return Dataset(x=x, y=y, modality="image", class_names=["0", "1"], name="digit-dominoes", source=src,
                   attrs=attrs)


def blocks(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, S^c)``: the simple and complex blocks of ``ds`` as flat feature indices (from its attrs)."""
    out = []
    for key in ("simple_block", "complex_block"):
        v = ds.attrs.get(key)
        if v is None:
            raise DataError(f"dataset {ds.name!r} has no attribute {key!r}",
                            fix="use a simplicity-bias dataset (load_lms, load_ms, load_digit_dominoes) or pass "
                                "the coordinates explicitly")
        v = torch.as_tensor(v)
        if len(v) and not bool((v == v[:1]).all()):
            raise DataError(f"dataset {ds.name!r}: {key} differs across examples",
                            fix="mix no datasets with different blocks in one batch")
        out.append(v[0].clone() if len(v) else torch.empty(0, dtype=torch.long))
    return out[0], out[1]
