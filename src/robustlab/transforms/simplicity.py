"""S-randomized and S^c-randomized evaluation: permute a block of features across the batch.

From "The Pitfalls of Simplicity Bias in Neural Networks" (Shah et al., NeurIPS 2020, Sec. 3 and the
official ``lms_utils.get_feature_deps``). Randomizing a block ``S`` draws one permutation of the batch
rows and replaces ``x[:, S]`` by ``x[perm, S]`` (the whole block moves together, every other feature
stays): the block keeps its marginal distribution but loses its link to the label. A model that relies
only on ``S`` falls to chance on the S-randomized set and is unchanged on the S^c-randomized set
(extreme simplicity bias). The "swap" variant (:func:`swap_block`) instead gives each example the
block of a random example of another class.

Blocks are flat feature indices (``x.flatten(1)`` columns): pass ``coords=...`` or let the transform
read ``attrs["simple_block"]`` / ``attrs["complex_block"]`` of a simplicity dataset
(:mod:`robustlab.data.simplicity`; the runner passes ``shard.attrs`` because ``needs_attrs`` is set).
Severity: 1 randomizes (the paper's test), 0 is the identity; nothing in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.probe import Transform
from robustlab.core.registry import register
from robustlab.transforms._common import check_generator

__all__ = ["BLOCKS", "RandomizeBlock", "RandomizeComplex", "RandomizeSimple", "randomize_block", "swap_block"]

BLOCKS = ("simple", "complex")


def _flat_coords(x: Any, coords: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` as (N, F) and the block as a long tensor of distinct indices in [0, F)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise DataError(f"{name}: inputs must be a tensor (N, ...) with a feature axis, got "
                        f"{getattr(x, 'shape', type(x).__name__)}",
                        fix="pass tabular (N, D) or image (N, C, H, W) inputs")
    flat = x.reshape(len(x), -1)
    try:
        c = torch.as_tensor(coords, dtype=torch.long).reshape(-1).cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{name}: coordinates {coords!r} are not integer indices",
                          fix="pass a sequence of flat feature indices, e.g. coords=(0,)") from None
    if len(c) == 0:
        raise ConfigError(f"{name}: the block is empty", fix="give at least one feature index to randomize")
    if int(c.min()) < 0 or int(c.max()) >= flat.shape[1]:
        raise ConfigError(f"{name}: block indices span [{int(c.min())}, {int(c.max())}] but inputs have "
                          f"{flat.shape[1]} features", fix=f"use flat feature indices in [0, {flat.shape[1]})")
    if len(torch.unique(c)) != len(c):
        raise ConfigError(f"{name}: the block lists a feature twice", fix="give each feature index once")
    return flat, c.to(x.device)


def randomize_block(x: torch.Tensor, coords: Sequence[int] | torch.Tensor, *,
                    generator: torch.Generator) -> torch.Tensor:
    """``x`` with block ``coords`` (flat feature indices) permuted jointly across the rows (a copy).

    One permutation ``p`` of the batch (``torch.randperm`` on ``generator``): ``out[i, S] = x[p[i], S]``;
    the other features are untouched (Shah et al. 2020's S-randomized data).
    """
    flat, c = _flat_coords(x, coords, "randomize_block")
    g = check_generator(generator, "randomize_block")
    perm = torch.randperm(len(flat), generator=g).to(x.device)
    out = flat.clone()
    out[:, c] = flat[perm][:, c]
    return out.reshape(x.shape)


def swap_block(x: torch.Tensor, y: torch.Tensor, coords: Sequence[int] | torch.Tensor, *,
               generator: torch.Generator) -> torch.Tensor:
    """``x`` with block ``coords`` of each row taken from a random row of another class (Shah et al.'s "swap").

    Each row ``i`` gets ``x[j, S]`` for ``j`` uniform among the rows with ``y[j] != y[i]`` (with replacement).
    """
    flat, c = _flat_coords(x, coords, "swap_block")
    g = check_generator(generator, "swap_block")
    y = torch.as_tensor(y).reshape(-1).long().cpu()
    if len(y) != len(flat):
        raise DataError(f"swap_block: {len(flat)} inputs but {len(y)} labels", fix="pass one label per input")
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise DataError("swap_block: the batch holds a single class, there is no other class to swap from",
                        fix="swap on a batch with examples of at least two classes")
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    others = len(y) - counts[inverse]  # rows of another class, per row
    r = (torch.rand(len(y), generator=g, dtype=torch.float64) * others).long().clamp_max(others - 1)
    pos = r + (r >= starts[inverse]).long() * counts[inverse]  # skip the row's own class segment
    src = order[pos].to(x.device)
    out = flat.clone()
    out[:, c] = flat[src][:, c]
    return out.reshape(x.shape)


@dataclass
class RandomizeBlock(Transform):
    """Permute one feature block across the batch (Shah et al. 2020's S- / S^c-randomized evaluation).

    Args:
        block: ``"simple"`` (S) or ``"complex"`` (S^c): which ``attrs[f"{block}_block"]`` to read when
            ``coords`` is not given.
        coords: flat feature indices of the block (overrides ``attrs``).

    Example::

        t = RandomizeSimple()
        xs = t(ds.x, severity=1, generator=torch_generator(0), attrs=ds.attrs)
    """

    block: str = "simple"
    coords: tuple[int, ...] | None = None
    default_settings: ClassVar[tuple[float, ...]] = (1,)
    needs_attrs: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ConfigError(f"randomize block {self.block!r} is unknown", fix=f"use one of {list(BLOCKS)}")
        if self.coords is not None:
            self.coords = tuple(int(i) for i in torch.as_tensor(self.coords).reshape(-1).tolist())

    @property
    def name(self) -> str:
        return f"randomize_{self.block}"

    def block_coords(self, attrs: dict[str, Any] | None) -> torch.Tensor:
        """The block's flat indices: ``coords``, else row 0 of ``attrs[f"{block}_block"]`` (checked constant)."""
        if self.coords is not None:
            return torch.tensor(self.coords, dtype=torch.long)
        key = f"{self.block}_block"
        if attrs is None or key not in attrs:
            raise ConfigError(f"{self.name}: no block to randomize (coords=None and attrs lack {key!r})",
                              fix=f"pass coords=(...) or attrs of a simplicity dataset (load_lms, "
                                  f"load_digit_dominoes) holding {key!r}")
        v = torch.as_tensor(attrs[key])
        if v.dim() != 2 or not len(v) or not bool((v == v[:1]).all()):
            raise DataError(f"{self.name}: attrs[{key!r}] must be one identical row of indices per example",
                            fix="use the attrs of a simplicity dataset, or pass coords=(...)")
        return v[0]

    def __call__(self, x: Any, *, severity: float, generator: torch.Generator,
                 attrs: dict[str, Any] | None = None) -> torch.Tensor:
        s = severity.item() if isinstance(severity, torch.Tensor) and severity.numel() == 1 else severity
        if isinstance(s, bool) or s not in (0, 1):
            raise ConfigError(f"{self.name}: severity must be 0 (identity) or 1 (randomized), got {severity!r}",
                              fix="use severity 1 for the paper's randomized test set")
        coords = self.block_coords(attrs)
        if s == 0:
            _flat_coords(x, coords, self.name)
            return x.clone()
        return randomize_block(x, coords, generator=generator)


@register("transform", "randomize_simple")
@dataclass
class RandomizeSimple(RandomizeBlock):
    """S-randomized evaluation: permute the simple block (e.g. LMS's linear coordinate) across the batch."""

    block: str = "simple"


@register("transform", "randomize_complex")
@dataclass
class RandomizeComplex(RandomizeBlock):
    """S^c-randomized evaluation: permute the complex block (e.g. LMS's slabs) across the batch."""

    block: str = "complex"
