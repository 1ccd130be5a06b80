"""Helpers shared by the dataset loaders: seeded subsets and split-name checks."""

from __future__ import annotations

import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.data.base import Dataset

__all__ = ["SPLITS", "check_split", "seeded_subset"]

SPLITS = ("train", "val", "test")


def check_split(split: str, dataset: str) -> str:
    """``split`` if it is one of train / val / test, else a ConfigError naming the dataset."""
    if split not in SPLITS:
        raise ConfigError(f"{dataset}: unknown split {split!r}", fix=f"use one of {list(SPLITS)}")
    return split


def seeded_subset(ds: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """The first ``n`` examples of a permutation seeded by (seed, dataset name), in their original order.

    The same ``n`` and ``seed`` always give the same examples (ids kept), and a smaller ``n`` gives a
    subset of a larger one.
    """
    if n is None:
        return ds
    n = int(n)
    if n < 0 or n > len(ds):
        raise DataError(f"dataset {ds.name!r} has {len(ds)} examples; cannot take n={n}",
                        fix=f"ask for 0 <= n <= {len(ds)} examples (or leave n unset for all)")
    if n == len(ds):
        return ds
    g = torch_generator(derive_seed(seed, "subset", ds.name, len(ds)))
    idx = torch.randperm(len(ds), generator=g)[:n].sort().values
    return ds.subset(idx)
