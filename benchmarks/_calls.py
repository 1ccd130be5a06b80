"""Model-call logs and their replay: how much of a run's time the model calls alone take.

A :class:`LoggedModel` is the same :class:`~robustlab.core.model.TorchModel` (same module, same
normalization) that records, per call, the batch size and whether the call computes an input
gradient (the input requires grad while grad mode is on). :func:`replay_seconds` then times each
distinct (batch size, kind) on fresh rows of the data — a forward under ``no_grad``, or a forward +
CE + ``autograd.grad`` w.r.t. the input — and sums count × median time: what the same model calls at
the same batch sizes cost when run back to back, warm (a low estimate: inside attack loops the same
calls measured 17–26% slower). :class:`QueryTimer` measures the calls where they happen instead: the
wall time of every search query inside a run.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from _timing import sync  # a sibling module: the benchmarks put their folder on sys.path

from robustlab.core.model import TorchModel

__all__ = ["LoggedModel", "QueryTimer", "replay_seconds"]


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


class QueryTimer:
    """Times every search query of robustlab's attacks inside a run (``with QueryTimer() as qt: ...``).

    All of robustlab's searches (APGD, FAB, Square, PGD) query the model through
    :meth:`robustlab.attacks.goals.Goal.query`: one forward (and, for a gradient query, the loss and one
    backward w.r.t. the input, plus the goal's few small ops). Inside the context that method is wrapped
    to add its wall time to ``seconds``; the ensemble's own checks (a handful of forwards) are not counted.
    Unlike a replay, this is what the calls cost inside the attack loops, in the same run.
    """

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def __enter__(self) -> QueryTimer:
        from robustlab.attacks.goals import Goal

        self._goal, self._orig = Goal, Goal.query
        timer, orig = self, Goal.query

        def query(goal: Any, model: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(goal, model, x, *args, **kwargs)
            finally:
                sync(x.device)  # CUDA calls are asynchronous: count each where it ends
                timer.seconds += time.perf_counter() - t0
                timer.calls += 1

        Goal.query = query
        return self

    def __exit__(self, *exc: object) -> None:
        self._goal.query = self._orig



def replay_seconds(model: TorchModel, counts: Counter, x: torch.Tensor, y: torch.Tensor, *,
                   reps: int = 3, max_reps: int = 25) -> dict[str, Any]:
    """Sum over ``counts`` of count × the median time of one call of that batch size and kind.

    Each (batch, kind) is warmed up once, then timed ``reps`` times, or ``count / 100`` times up to
    ``max_reps`` for the frequent ones (which dominate the sum); the timed calls go in rounds over all
    kinds, so a drift of the machine's speed during the replay spreads over every kind alike. Rows are
    the first ``batch`` of ``x`` / ``y`` (repeated when the batch is larger). Returns the total seconds,
    the gradient / forward-only parts, and the number of calls.
    """
    dev = model.device
    keys = sorted(counts)
    inputs = {}
    for b, _ in keys:
        if b not in inputs:
            idx = torch.arange(b, device=x.device) % x.shape[0]
            inputs[b] = (x[idx].to(dev), y[idx].to(dev))

    def call(b: int, grad: bool) -> float:
        xb, yb = inputs[b]
        sync(dev)
        t0 = time.perf_counter()
        if grad:
            xr = xb.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xr).float(), yb, reduction="sum"), xr)
        else:
            with torch.no_grad():
                model(xb)
        sync(dev)
        return time.perf_counter() - t0

    n_reps = {k: min(max(reps, counts[k] // 100), max(reps, max_reps)) for k in keys}
    times: dict[tuple[int, bool], list[float]] = {k: [] for k in keys}
    for k in keys:  # warm-up: the first call at a new size builds the backend's kernels for it
        call(*k)
    for r in range(max(n_reps.values(), default=0)):
        for k in keys:
            if r < n_reps[k]:
                times[k].append(call(*k))
    parts = {True: 0.0, False: 0.0}
    for k in keys:
        parts[k[1]] += counts[k] * statistics.median(times[k])
    return {"seconds": parts[True] + parts[False], "gradient_seconds": parts[True],
            "forward_seconds": parts[False], "calls": int(sum(counts.values()))}
