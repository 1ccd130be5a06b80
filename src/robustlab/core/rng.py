"""Seeded randomness without a global RNG: every stochastic function takes a generator.

Seeds for sub-tasks are *derived* from a base seed and names (``derive_seed(0, "pgd", 3)``) with a
stable hash, so a job computes the same numbers whichever process or machine runs it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

__all__ = ["derive_seed", "torch_generator", "numpy_generator", "parallel_randn", "run_chunks", "split_generator"]

T = TypeVar("T")


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


#: CPU draws of at least this many values are split into ``RANDN_CHUNKS`` fixed slices along dim 0,
#: each with its own generator seeded from the caller's, drawn on a thread pool
PARALLEL_RANDN_MIN = 1 << 18
RANDN_CHUNKS = 4
_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """The draw threads, made anew in a forked child (a parent's pool has no threads there)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(RANDN_CHUNKS, thread_name_prefix="robustlab-randn"))
    return _POOL[1]


def split_generator(generator: torch.Generator, k: int) -> list[torch.Generator]:
    """``k`` fresh CPU generators seeded from ``generator`` (one draw of ``k`` seeds from it)."""
    seeds = torch.randint(0, 2**62, (k,), generator=generator).tolist()
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def run_chunks(fn: Callable[[int], T], k: int) -> list[T]:
    """``[fn(0), ..., fn(k - 1)]``, on the shared draw threads when torch may use more than one thread.

    For independent, seeded chunks of work (each with its own generator): the results do not depend
    on whether or how the chunks run in parallel.
    """
    if torch.get_num_threads() <= 1:
        return [fn(i) for i in range(k)]
    return list(_pool().map(fn, range(k)))


def parallel_randn(shape: tuple[int, ...], generator: torch.Generator,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard-normal samples of ``shape`` drawn in parallel on CPU, a deterministic function of the seed.

    torch draws normals on one core; large CPU draws are split into ``RANDN_CHUNKS`` fixed slices of
    the first dimension, each drawn by its own generator (seeded from ``generator``) on a thread, so
    the values depend on the generator's state and the shape only, never on the thread count. Small
    draws, draws with fewer rows than chunks, and other devices use ``generator`` directly.
    """
    numel = int(np.prod(shape)) if len(shape) else 1
    if generator.device.type != "cpu" or numel < PARALLEL_RANDN_MIN or shape[0] < RANDN_CHUNKS:
        return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    gens = split_generator(generator, RANDN_CHUNKS)
    out = torch.empty(shape, dtype=dtype)
    cuts = [shape[0] * i // RANDN_CHUNKS for i in range(RANDN_CHUNKS + 1)]

    def one(i: int) -> None:
        part = out[cuts[i]:cuts[i + 1]]
        torch.randn(part.shape, generator=gens[i], dtype=dtype, out=part)

    run_chunks(one, RANDN_CHUNKS)
    return out
