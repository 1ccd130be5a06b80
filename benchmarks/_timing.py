"""Timing helpers of the benchmarks: wall and process-CPU clocks, and the forward/backward floor.

On a shared machine wall time includes waiting for the cores; the process CPU time (with one torch
thread) is the work done and is far steadier, so every helper records both.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Floors", "Progress", "floor_seconds", "median_runs", "ratio", "sync", "timed"]


def sync(dev: torch.device) -> None:
    """Wait for ``dev``'s queued work (CUDA runs asynchronously; a no-op on CPU)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], Any], dev: torch.device) -> tuple[float, float, Any]:
    """``(wall seconds, process CPU seconds, fn())``, with device syncs around."""
    sync(dev)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    sync(dev)
    return time.perf_counter() - t0, time.process_time() - c0, out


class Floors:
    """Samples of the floor on the whole batch: one forward+backward w.r.t. the input (what a
    gradient step must at least pay) and one forward (what a check must pay), wall and CPU."""

    def __init__(self, model: Any, x: torch.Tensor, y: torch.Tensor):
        self.model, self.x, self.y = model, x, y
        self.samples: dict[str, list[float]] = {"fb": [], "f": [], "fb_cpu": [], "f_cpu": []}

    def _fb(self) -> None:
        xr = self.x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(self.model(xr), self.y, reduction="sum"), xr)

    def _f(self) -> None:
        with torch.no_grad():
            self.model(self.x)

    def sample(self, k: int = 3) -> None:
        """Take ``k`` more samples of each (call between timed runs so load hits both alike)."""
        for _ in range(k):
            for key, fn in (("fb", self._fb), ("f", self._f)):
                wall, cpu, _ = timed(fn, self.model.device)
                self.samples[key].append(wall)
                self.samples[key + "_cpu"].append(cpu)

    def snapshot(self) -> Floors:
        """A copy of the samples taken so far (same model and data): the floor of the measures made up to now."""
        new = Floors(self.model, self.x, self.y)
        new.samples = {k: list(v) for k, v in self.samples.items()}
        return new

    def clear(self) -> None:
        for v in self.samples.values():
            v.clear()

    def get(self, key: str) -> float:
        """Median of ``"fb"``, ``"f"``, ``"fb_cpu"`` or ``"f_cpu"`` (seconds)."""
        return statistics.median(self.samples[key])

    def __len__(self) -> int:
        return len(self.samples["fb"])


def floor_seconds(queries: torch.Tensor, steps: int, floors: Floors, n: int, *, cpu: bool = False) -> float:
    """Floor work of a PGD / APGD run in seconds: per example, ``min(q, steps)`` gradient queries
    at the forward+backward floor and the rest (the last iterate's check) at the forward floor,
    each floor being for the whole batch of ``n`` (so / n per example)."""
    q = queries.double().cpu()
    grad_q = float(q.clamp(max=steps).sum())
    fwd_q = float((q - steps).clamp(min=0).sum())
    sfx = "_cpu" if cpu else ""
    return (grad_q * floors.get("fb" + sfx) + fwd_q * floors.get("f" + sfx)) / n


def median_runs(fn: Callable[[], Any], repeats: int, floors: Floors | None,
                dev: torch.device) -> tuple[float, float, Any]:
    """Median wall and CPU seconds of ``repeats`` runs of ``fn`` (floors, if given, sampled before each),
    and the last result."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        if floors is not None:
            floors.sample()
        wall, cpu, out = timed(fn, dev)
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus), out


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing (a peer not installed) or ``b`` is 0."""
    return None if a is None or b is None or b == 0 else a / b


class Progress:
    """Progress lines on stderr with the elapsed time (silent when ``quiet``)."""

    def __init__(self, quiet: bool):
        self.quiet, self.t0 = quiet, time.perf_counter()

    def __call__(self, text: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:7.1f}s] {text}", file=sys.stderr, flush=True)
