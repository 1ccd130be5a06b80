"""Seeded randomness without a global RNG: every stochastic function takes a generator.

Seeds for sub-tasks are *derived* from a base seed and names (``derive_seed(0, "pgd", 3)``) with a
stable hash, so a job computes the same numbers whichever process or machine runs it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["derive_seed", "torch_generator", "numpy_generator"]


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed determined by ``seed`` and ``keys`` only (stable across processes)."""
    text = "\x1f".join([str(int(seed))] + [str(k) for k in keys])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed) & ((1 << 63) - 1))
    return g


def numpy_generator(seed: int) -> np.random.Generator:
    """A fresh numpy ``Generator`` seeded with ``seed`` (masked to 63 bits, as ``torch_generator``)."""
    return np.random.default_rng(int(seed) & ((1 << 63) - 1))
