"""Model-call logs and their replay: how much of a run's time the model calls alone take.

A :class:`LoggedModel` is the same :class:`~robustlab.core.model.TorchModel` (same module, same
normalization) that records, per call, the batch size and whether the call computes an input
gradient (the input requires grad while grad mode is on). :func:`replay_seconds` then times each
distinct (batch size, kind) on fresh rows of the data — a forward under ``no_grad``, or a forward +
CE + ``autograd.grad`` w.r.t. the input — and sums count × median time. That sum is the time any
implementation needs for the same model calls at the same batch sizes, whatever its own overhead: a
floor for the run, measured rather than estimated.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.core.model import TorchModel

__all__ = ["LoggedModel", "replay_seconds"]


class LoggedModel(TorchModel):
    """``model`` itself (its module and normalization, shared) with a log of ``(batch, grad)`` per call."""

    def __init__(self, model: TorchModel):  # noqa: D107 - shares the wrapped model's state
        self.__dict__.update(model.__dict__)
        self.calls: list[tuple[int, bool]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((int(x.shape[0]), bool(torch.is_grad_enabled() and x.requires_grad)))
        return super().__call__(x)

    def counts(self) -> Counter:
        """``Counter`` of ``(batch, grad)`` over the calls logged so far."""
        return Counter(self.calls)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def replay_seconds(model: TorchModel, counts: Counter, x: torch.Tensor, y: torch.Tensor, *,
                   reps: int = 3) -> dict[str, Any]:
    """Sum over ``counts`` of count × the median of ``reps`` timed calls of that batch size and kind.

    Rows are the first ``batch`` of ``x`` / ``y`` (repeated when the batch is larger). Returns the total
    seconds, the gradient / forward-only parts, and the number of calls.
    """
    dev = model.device
    parts = {True: 0.0, False: 0.0}
    for (b, grad), count in sorted(counts.items()):
        idx = torch.arange(b, device=x.device) % x.shape[0]
        xb, yb = x[idx].to(dev), y[idx].to(dev)
        times = []
        for _ in range(reps + 1):  # the first call warms up this batch size
            _sync(dev)
            t0 = time.perf_counter()
            if grad:
                xr = xb.clone().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(model(xr).float(), yb, reduction="sum"), xr)
            else:
                with torch.no_grad():
                    model(xb)
            _sync(dev)
            times.append(time.perf_counter() - t0)
        parts[grad] += count * statistics.median(times[1:])
    return {"seconds": parts[True] + parts[False], "gradient_seconds": parts[True],
            "forward_seconds": parts[False], "calls": int(sum(counts.values()))}
