"""scikit-learn's bundled digits (UCI optical digits, 1,797 8x8 images) with a fixed stratified split."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from robustlab.core.rng import derive_seed, numpy_generator
from robustlab.data._common import check_split, seeded_subset
from robustlab.data.base import Dataset

__all__ = ["digits_split_indices", "load_digits"]

SOURCE = ("scikit-learn's bundled copy of the UCI ML hand-written digits test set (1,797 8x8 images, "
          "pixels 0..16 scaled by 1/16); shipped with scikit-learn, no download")
TEST_FRACTION = 0.3
VAL_FRACTION = 0.1  # of the training part


@lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as (images (1797, 8, 8) float64 0..16, targets (1797,)), read once."""
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    return bunch.images, bunch.target


def digits_split_indices() -> dict[str, np.ndarray]:
    """Row indices of sklearn's digits for "train" / "val" / "test": fixed, stratified, disjoint.

    Per class: 30 % to test, then 10 % of the rest to val, the remainder to train (a permutation seeded
    by ``derive_seed(0, "digits-split")``, independent of any user seed, so no split ever leaks).
    """
    y = _arrays()[1]
    rng = numpy_generator(derive_seed(0, "digits-split"))
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(TEST_FRACTION * len(idx))
        n_val = round(VAL_FRACTION * (len(idx) - n_test))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def load_digits(split: str = "test", n: int | None = None, seed: int = 0) -> Dataset:
    """The digits ``split`` as (N, 1, 8, 8) float32 in [0, 1] with labels 0..9.

    Args:
        split: "train" (~1,132 images), "val" (~126) or "test" (~539); fixed and disjoint.
        n: take a seeded subset of ``n`` examples (same ``n`` and ``seed`` -> same examples).
        seed: seed of that subset only (the split itself never changes).
    Returns: a :class:`Dataset` whose ids are row numbers in scikit-learn's array.
    """
    check_split(split, "digits")
    images, target = _arrays()
    idx = digits_split_indices()[split]
    x = torch.from_numpy(images[idx].astype(np.float32) / 16.0)[:, None]
    ds = Dataset(x=x, y=torch.from_numpy(target[idx]), modality="image",
                 class_names=[str(i) for i in range(10)], name="digits", source=SOURCE,
                 ids=torch.from_numpy(idx))
    return seeded_subset(ds, n, seed)
