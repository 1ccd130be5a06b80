"""Auto-PGD: momentum PGD whose step size halves by itself at checkpoints, on survivors only.

The search of APGD from "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (Croce & Hein, ICML 2020), Algorithm 1, for the L∞ and L2 balls. It has the
``run(model, goal, threat, x0, labels, *, generator) -> SearchResult`` shape of
:class:`~robustlab.attacks.search.gradient.GradientSearch`, so
:func:`~robustlab.attacks.search.gradient.run_attack` drives it. :class:`PerTargetSearch` repeats a
search once per likely target class (APGD-T).

Example::

    search = APGDSearch(n_iter=100)
    res = search.run(model, Misclassify("ce"), LpBall("inf", 8/255), x, y, generator=g)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from robustlab.attacks.goals import Goal, Misclassify
from robustlab.attacks.search.gradient import SearchResult, steepest_direction
from robustlab.core.errors import ConfigError
from robustlab.core.model import Model
from robustlab.core.threat import LpBall

__all__ = ["APGDResult", "APGDSearch", "PerTargetSearch", "apgd_start", "checkpoints", "should_halve"]


def checkpoints(n_iter: int) -> tuple[int, ...]:
    """The paper's checkpoints ``w_j = ceil(p_j * n_iter)`` that are ``<= n_iter`` (``w_0 = 0``).

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, computed in
    exact fractions (in floats ``0.22 + 0.19`` gives ``ceil(41.000000000000004) = 42``). For
    ``n_iter = 100``: ``(0, 22, 41, 57, 70, 80, 87, 93, 99)``, the same iterations as the official
    code; for an ``n_iter`` that is not a multiple of 100 the official code (which floors
    ``0.22 n``, ``0.06 n``, ``0.03 n``) can differ by an iteration or so. Duplicates are dropped.
    """
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ConfigError(f"n_iter must be an integer >= 1, got {n_iter!r}", fix="pass e.g. n_iter=100")
    p_prev, p = Fraction(0), Fraction(22, 100)
    out = [0]
    while True:
        w = math.ceil(p * n_iter)
        if w > n_iter:
            break
        if w > out[-1]:
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - Fraction(3, 100), Fraction(6, 100))
    return tuple(out)


def should_halve(increases: torch.Tensor, gap: int, rho: float, halved_before: torch.Tensor,
                 best_loss: torch.Tensor, best_at_last_check: torch.Tensor) -> torch.Tensor:
    """Per-example step-size decision at a checkpoint (Croce & Hein 2020, Eq. 3 conditions).

    Condition 1: the loss increased in fewer than ``rho * gap`` of the ``gap`` steps since the last
    checkpoint (``increases`` (B,) counts them). Condition 2: the step size was not halved at the last
    checkpoint (``halved_before`` (B,) bool) and the best loss has not improved since then.
    Returns bool (B,): halve the step size and restart from the best point.
    """
    cond1 = increases.to(torch.float64) < rho * gap
    cond2 = ~halved_before & (best_loss <= best_at_last_check)
    return cond1 | cond2


def _draw(fn, x0: torch.Tensor, generator: torch.Generator, normal: bool) -> torch.Tensor:
    gdev = generator.device
    same = gdev.type == x0.device.type and (gdev.index or 0) == (x0.device.index or 0)
    dev = x0.device if same else gdev
    t = fn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
    return (t if normal else 2 * t - 1).to(x0.device)


def apgd_start(threat: LpBall, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """APGD's random start, as in the official code: a random point on the sphere of the ball.

    L∞: ``x0 + eps * t / ||t||_∞`` with ``t ~ U[-1, 1]^d`` (one coordinate at ±eps); L2:
    ``x0 + eps * g / ||g||_2`` with ``g ~ N(0, I)``; then clipped to the box. Shapes: (B, ...).
    """
    b = x0.shape[0]
    t = _draw(torch.randn if threat.norm == "2" else torch.rand, x0, generator, normal=threat.norm == "2")
    flat = t.reshape(b, -1)
    scale = flat.norm(dim=1) if threat.norm == "2" else flat.abs().amax(dim=1)
    delta = t / (scale.view(-1, *([1] * (x0.dim() - 1))) + 1e-12)
    return (x0 + threat.eps * delta).clamp(threat.low, threat.high)


@dataclass
class APGDResult(SearchResult):
    """:class:`SearchResult` plus, per example, the step size at the end of its last run (raw units)
    and how many times it was halved there (``nan`` / 0 for examples never attacked)."""

    step_size: torch.Tensor
    n_halvings: torch.Tensor


def _sel(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``where(mask, a, b)`` with the (n,) mask broadcast over a's trailing dims."""
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


@dataclass(frozen=True)
class APGDSearch:
    """Auto-PGD (Croce & Hein, 2020, Algorithm 1) in an L∞ or L2 ball; batched, survivors only.

    Each run starts at :func:`apgd_start`, takes ``n_iter`` steps
    ``z = P(x_k + eta * dir(grad))``, ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))``
    with ``a = 1`` on the first step and ``momentum`` after, ``dir`` = sign (L∞) or the normalized
    gradient (L2) and ``eta = step_scale * eps`` at first. At each checkpoint of :func:`checkpoints`,
    examples for which :func:`should_halve` holds get ``eta / 2`` and restart from their best point
    (with the gradient stored there; the momentum term keeps the last iterate, as in the official
    code). An example is frozen at the first point where the goal succeeds and stops paying; the
    others keep their highest-loss point. ``n_restarts`` runs attack only the examples still robust.

    Args:
        n_iter: steps per run (100 in the paper); each run costs ``n_iter + 1`` queries (the start
            and every iterate are evaluated).
        n_restarts: runs with fresh random starts (1 for AutoAttack's APGD-CE, 5 in its "plus").
        rho: condition-1 threshold (0.75).
        momentum: ``alpha`` of the paper (0.75).
        step_scale: the initial step size in units of eps (2, for L∞ and L2).

    Deviations from the official code (all small): condition 1 uses the paper's strict
    ``< rho * gap`` (the code uses ``<=``; it differs when ``0.75 * gap`` is an integer, e.g. the
    16-step gap at N=100), counts the ``gap`` increases since the last checkpoint exactly (the code's
    first window wraps around to an unset entry), and condition 2 may hold at the first checkpoint
    (the code forbids it there); after a restart from the best point the next increase is measured
    against the best loss. The official code returns the clean input where the attack fails; we
    return the highest-loss point.
    """

    n_iter: int = 100
    n_restarts: int = 1
    rho: float = 0.75
    momentum: float = 0.75
    step_scale: float = 2.0

    def __post_init__(self) -> None:
        checkpoints(self.n_iter)  # validates n_iter
        if isinstance(self.n_restarts, bool) or not isinstance(self.n_restarts, int) or self.n_restarts < 1:
            raise ConfigError(f"n_restarts must be an integer >= 1, got {self.n_restarts!r}",
                              fix="pass e.g. n_restarts=1 (AutoAttack standard) or 5 ('plus')")
        for name, lo, hi in (("rho", 0.0, 1.0), ("momentum", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v <= hi:
                raise ConfigError(f"{name} must be a number in ({lo}, {hi}], got {v!r}",
                                  fix=f"pass e.g. {name}=0.75 (Croce & Hein 2020)")
        v = self.step_scale
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ConfigError(f"step_scale must be a finite number > 0, got {v!r}",
                              fix="pass e.g. step_scale=2.0 (initial step 2 * eps, the paper's)")

    def run(self, model: Model, goal: Goal, threat: LpBall, x0: torch.Tensor, labels: torch.Tensor, *,
            generator: torch.Generator) -> APGDResult:
        """Maximize ``goal.loss`` over ``threat`` around ``x0`` (B, ...) for ``labels`` (B, ...).

        Tensors must be on ``model.device``. Works under ``torch.no_grad()``.
        """
        if threat.norm not in ("inf", "2"):
            raise ConfigError(f"APGD supports the L∞ and L2 balls, not L{threat.norm}",
                              fix="use norm='inf' or norm=2 (for L1 use PGD(norm=1))")
        b, dev = x0.shape[0], x0.device
        x0 = x0.detach()
        queries = torch.zeros(b, dtype=torch.long, device=dev)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        best_loss = torch.full((b,), float("-inf"), dtype=torch.float64, device=dev)
        step = torch.full((b,), float("nan"), dtype=torch.float64, device=dev)
        halvings = torch.zeros(b, dtype=torch.long, device=dev)
        x_best = x0.clone()
        if b == 0 or threat.eps == 0:
            return APGDResult(x_best, queries, done, best_loss, step, halvings)
        for _ in range(self.n_restarts):
            active = (~done).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            xr, sr, lr, eta, nh = self._run_once(model, goal, threat, x0[active], labels[active], active,
                                                 queries, generator)
            better = sr | (lr > best_loss[active])
            idx = active[better]
            x_best[idx], best_loss[idx] = xr[better], lr[better]
            done[active[sr]] = True
            step[active], halvings[active] = eta, nh
        return APGDResult(x_best, queries, done, best_loss, step, halvings)

    def _run_once(self, model: Model, goal: Goal, threat: LpBall, x0: torch.Tensor, labels: torch.Tensor,
                  index: torch.Tensor, queries: torch.Tensor, generator: torch.Generator):
        """One run on ``x0`` (n, ...) = rows ``index`` of the caller: (x, success, loss, eta, halvings)."""
        n, dev = x0.shape[0], x0.device
        out_x, out_loss = x0.clone(), torch.full((n,), float("-inf"), dtype=torch.float64, device=dev)
        out_succ = torch.zeros(n, dtype=torch.bool, device=dev)
        out_eta = torch.full((n,), self.step_scale * threat.eps, dtype=torch.float64, device=dev)
        out_nh = torch.zeros(n, dtype=torch.long, device=dev)
        checks = set(checkpoints(self.n_iter)[1:])

        x = apgd_start(threat, x0, generator)
        ev = goal.query(model, x, labels, queries=queries, index=index, grad=True)
        s = {  # state of the examples still attacked in this run
            "pos": torch.arange(n, device=dev), "x0": x0, "lab": labels, "x": x, "x_prev": x,
            "grad": ev.grad, "loss": ev.loss.double(), "best_x": x, "best_loss": ev.loss.double(),
            "best_grad": ev.grad, "eta": out_eta.clone(), "incr": torch.zeros(n, dtype=torch.long, device=dev),
            "halved": torch.zeros(n, dtype=torch.bool, device=dev), "best_at_check": ev.loss.double(),
            "nh": out_nh.clone(),
        }
        s = self._freeze(s, ev.success, out_x, out_loss, out_succ, out_eta, out_nh)
        last_check = 0
        for k in range(self.n_iter):
            if s["pos"].numel() == 0:
                break
            a = 1.0 if k == 0 else self.momentum
            x, xp, x0a = s["x"], s["x_prev"], s["x0"]
            eta = s["eta"].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
            d = steepest_direction(s["grad"], threat.norm).to(x.dtype)
            z = threat.project(x0a, x + eta * d)
            x_new = threat.project(x0a, x + a * (z - x) + (1 - a) * (x - xp))
            last = k == self.n_iter - 1
            ev = goal.query(model, x_new, s["lab"], queries=queries, index=index[s["pos"]], grad=not last)
            loss = ev.loss.double()
            s["incr"] = s["incr"] + (loss > s["loss"])
            s["x_prev"], s["x"], s["loss"] = x, x_new, loss
            better = loss > s["best_loss"]
            s["best_x"] = _sel(better, x_new, s["best_x"])
            s["best_loss"] = torch.where(better, loss, s["best_loss"])
            if not last:
                s["best_grad"] = _sel(better, ev.grad, s["best_grad"])
                s["grad"] = ev.grad
            s = self._freeze(s, ev.success, out_x, out_loss, out_succ, out_eta, out_nh)
            if k + 1 in checks and not last:
                gap, last_check = k + 1 - last_check, k + 1
                if s["pos"].numel() == 0:
                    continue
                red = should_halve(s["incr"], gap, self.rho, s["halved"], s["best_loss"], s["best_at_check"])
                s["eta"] = torch.where(red, s["eta"] / 2, s["eta"])
                s["nh"] = s["nh"] + red
                s["x"] = _sel(red, s["best_x"], s["x"])
                s["grad"] = _sel(red, s["best_grad"], s["grad"])
                s["loss"] = torch.where(red, s["best_loss"], s["loss"])
                s["halved"], s["best_at_check"] = red, s["best_loss"].clone()
                s["incr"] = torch.zeros_like(s["incr"])
        pos = s["pos"]
        out_x[pos], out_loss[pos], out_eta[pos], out_nh[pos] = s["best_x"], s["best_loss"], s["eta"], s["nh"]
        return out_x, out_succ, out_loss, out_eta, out_nh

    @staticmethod
    def _freeze(s: dict, succ: torch.Tensor, out_x, out_loss, out_succ, out_eta, out_nh) -> dict:
        """Write the examples that just succeeded to the outputs and drop them from the state."""
        if not bool(succ.any()):
            return s
        p = s["pos"][succ]
        out_x[p], out_loss[p], out_succ[p] = s["x"][succ], s["loss"][succ], True
        out_eta[p], out_nh[p] = s["eta"][succ], s["nh"][succ]
        keep = ~succ
        return {k: (v[keep] if v is not None else None) for k, v in s.items()}


@dataclass(frozen=True)
class PerTargetSearch:
    """Run ``base`` once per likely target class, on the examples still robust (APGD-T's loop).

    The targets are ranked once by the scores at ``x0`` (one query per example): the ``t``-th run
    (``t = 1 .. n_target_classes``, capped at ``C - 1``) aims at each example's ``t+1``-th most
    likely class, as the official ``APGDAttack_targeted`` does. The goal receives labels of shape
    (B, 2): column 0 the true class, column 1 the target. Across targets the point of highest loss
    is kept for the examples never broken.
    """

    base: APGDSearch
    n_target_classes: int = 9
    min_classes: int = 4

    def __post_init__(self) -> None:
        v = self.n_target_classes
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"n_target_classes must be an integer >= 1, got {v!r}",
                              fix="pass e.g. n_target_classes=9 (AutoAttack's default)")

    def run(self, model: Model, goal: Goal, threat: LpBall, x0: torch.Tensor, labels: torch.Tensor, *,
            generator: torch.Generator) -> APGDResult:
        """``labels`` (B,) true classes; see the class docstring."""
        b, dev = x0.shape[0], x0.device
        queries = torch.zeros(b, dtype=torch.long, device=dev)
        best_loss = torch.full((b,), float("-inf"), dtype=torch.float64, device=dev)
        step = torch.full((b,), float("nan"), dtype=torch.float64, device=dev)
        halvings = torch.zeros(b, dtype=torch.long, device=dev)
        x_best = x0.detach().clone()
        if b == 0 or threat.eps == 0:
            return APGDResult(x_best, queries, torch.zeros(b, dtype=torch.bool, device=dev), best_loss, step,
                              halvings)
        ev = Misclassify("ce").query(model, x0, labels, queries=queries)
        c = ev.scores.shape[1]
        if c < self.min_classes:
            raise ConfigError(f"the targeted DLR loss needs at least {self.min_classes} classes, the model "
                              f"has {c}", fix="use APGD with loss='ce' or loss='dlr' (apgd_ce / apgd_dlr)")
        done = ev.success.clone()  # misclassified already: nothing to do
        order = ev.scores.argsort(dim=1, descending=True)
        for t in range(1, min(self.n_target_classes, c - 1) + 1):
            active = (~done).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            lab = torch.stack([labels[active], order[active, t]], dim=1)
            r = self.base.run(model, goal, threat, x0[active], lab, generator=generator)
            queries[active] += r.queries
            better = r.success | (r.loss > best_loss[active])
            idx = active[better]
            x_best[idx], best_loss[idx] = r.x_adv[better], r.loss[better]
            done[active[r.success]] = True
            step[active], halvings[active] = r.step_size, r.n_halvings
        return APGDResult(x_best, queries, done, best_loss, step, halvings)
