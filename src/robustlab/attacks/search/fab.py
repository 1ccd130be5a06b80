"""FAB's search: steps to the linearized decision boundary, biased back towards the clean input.

From "Minimally distorted Adversarial Examples with a Fast Adaptive Boundary Attack" (Croce & Hein,
ICML 2020), in the form AutoAttack runs it (fra31/auto-attack ``fab_pt.py``). At the current point
the boundary between the true class ``y`` and a class ``j`` is linearized, ``f_j(z) ~ f_j(x1) +
grad f_j(x1) . (z - x1)`` with ``f_j = z_j - z_y``; the current point and the clean point are both
projected onto that hyperplane (minimal Lp step inside the [low, high] box, exact), and the two
projections are mixed with weight ``alpha = min(|d1| / (|d1| + |d2|), alpha_max)`` and overshot by
``eta``. When the point is adversarial, its norm is recorded and it is pulled back to
``x0 + beta (x1 - x0)``. The targeted version (FAB-T) uses one hyperplane per run, to the
``k``-th most likely class at ``x0``; the untargeted version picks the closest hyperplane among all
classes each step (it needs the full Jacobian: one forward and C backward passes per query).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlab.attacks.goals import Goal
from robustlab.attacks.search.gradient import SearchResult
from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.model import Model
from robustlab.core.threat import LpBall, lp_norm

__all__ = ["FABSearch", "ScoreGap", "box_hyperplane_projection"]

_DUAL = {"inf": "1", "2": "2", "1": "inf"}
#: check first (a forward pass, then the gradient at the possibly pulled-back point) when the last
#: step's adversarial fraction times a gradient query's cost in forward passes exceeds this
_CHECK_FIRST_ABOVE = 1.0


def _segment_root(slope: torch.Tensor, breaks: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Per row, the ``lam >= 0`` with ``sum_i slope_i * min(lam, breaks_i) = c``; inf if out of reach.

    ``slope`` (N, D) >= 0, ``breaks`` (N, D) >= 0 (may be inf where slope is 0), ``c`` (N,) >= 0.
    The left side is nondecreasing and piecewise linear in ``lam``; its values at the sorted
    breakpoints give the segment that holds the root.
    """
    bs, order = breaks.sort(dim=1)
    a = slope.gather(1, order)
    done = torch.where(a > 0, a * bs, torch.zeros_like(a)).cumsum(dim=1)  # saturated coordinates
    rest = F.pad(a.flip(1).cumsum(dim=1).flip(1)[:, 1:], (0, 1))          # slope still growing
    at_breaks = done + torch.where(rest > 0, bs * rest, torch.zeros_like(rest))
    m = (at_breaks < c.unsqueeze(1)).sum(dim=1, keepdim=True)              # breakpoints before the root
    prev = (m - 1).clamp_min(0)
    done_prev = torch.where(m > 0, done.gather(1, prev), torch.zeros_like(c).unsqueeze(1)).squeeze(1)
    rest_prev = torch.where(m > 0, rest.gather(1, prev), a.sum(dim=1, keepdim=True)).squeeze(1)
    lam = ((c - done_prev) / rest_prev.clamp_min(torch.finfo(c.dtype).tiny)).clamp_min(0)
    lam = torch.where(rest_prev > 0, lam, torch.where(c > 0, math.inf, 0.0))
    return torch.where(m.squeeze(1) >= a.shape[1], math.inf, lam)


def box_hyperplane_projection(t: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str,
                              low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Smallest Lp step ``d`` with ``c + w . d = 0`` and ``low <= t + d <= high``, per row.

    The box-constrained projection of FAB (Croce & Hein, 2020): ``t + d`` is the nearest point of
    the hyperplane ``{z : w . (z - t) + c = 0}`` inside the box, for the L∞, L2 or L1 distance.
    Each coordinate moves against the sign of ``w`` by ``m_i`` <= its room ``u_i`` to the box:
    L∞: ``m_i = min(lam, u_i)``; L2: ``m_i = min(lam |w_i|, u_i)``; L1: greedily the largest
    ``|w_i|`` first. Where the box cannot reach the hyperplane, every coordinate moves to its bound
    (the closest box corner in the direction of the hyperplane).

    Args:
        t: (N, D) points inside the box; ``w``: (N, D) normals; ``c``: (N,) the affine function's
            value at ``t`` (its zero set is the hyperplane).
        norm: ``"inf"``, ``"2"`` or ``"1"``.

    Returns: (N, D) steps, computed in at least float32 and returned in ``t``'s dtype.
    """
    out_dtype, dt = t.dtype, torch.promote_types(t.dtype, torch.float32)
    t, w, c = t.to(dt), w.to(dt), c.to(dt)
    w = torch.where((c < 0).unsqueeze(1), -w, w)  # now c >= 0: move so that w . d = -c
    c = c.abs()
    aw, sign = w.abs(), w.sign()
    room = torch.where(w > 0, t - low, high - t).clamp_min(0) * (aw > 0)
    if norm == "inf":
        lam = _segment_root(aw, room, c).unsqueeze(1)
        move = torch.minimum(lam.expand_as(room), room)
    elif norm == "2":
        breaks = torch.where(aw > 0, room / aw.clamp_min(torch.finfo(dt).tiny), torch.full_like(room, math.inf))
        lam = _segment_root(aw.square(), breaks, c).unsqueeze(1)
        move = torch.where(aw > 0, torch.minimum(lam * aw, room), torch.zeros_like(room))
    elif norm == "1":
        ws, order = aw.sort(dim=1, descending=True)
        cap = (ws * room.gather(1, order)).cumsum(dim=1)                  # reach of the k best coordinates
        k = (cap < c.unsqueeze(1)).sum(dim=1, keepdim=True)               # coordinates used in full
        part = (c.unsqueeze(1) - torch.where(k > 0, cap.gather(1, (k - 1).clamp_min(0)), torch.zeros_like(k, dtype=dt)))
        part = part / ws.gather(1, k.clamp_max(w.shape[1] - 1)).clamp_min(torch.finfo(dt).tiny)
        pos = torch.arange(w.shape[1], device=w.device).unsqueeze(0)
        full = room.gather(1, order)
        ms = torch.where(pos < k, full, torch.where(pos == k, torch.minimum(part, full), torch.zeros_like(full)))
        move = torch.zeros_like(ms).scatter(1, order, ms)
    else:
        raise ConfigError(f"unknown norm {norm!r}", fix="use 'inf', '2' or '1'")
    return (-sign * move).to(out_dtype)


class ScoreGap(Goal):
    """``z_t - z_y`` for label pairs ``(B, 2) = [y, t]``; success is any prediction but ``y``.

    FAB-T's function: its zero set is the decision boundary between ``y`` and ``t``.
    """

    targeted = False
    loss_name = "gap"

    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (scores.gather(1, labels[:, 1:]) - scores.gather(1, labels[:, :1])).squeeze(1)

    def success(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return scores.argmax(dim=1) != labels[:, 0]


_GAP = ScoreGap()


def _jacobian_gaps(model: Model, x: torch.Tensor, y: torch.Tensor, queries: torch.Tensor,
                   index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One counted query: scores (n, C), ``z_j - z_y`` (n, C) and their input gradients (n, C, D)."""
    queries.index_add_(0, index, torch.ones_like(index, dtype=queries.dtype))
    with torch.inference_mode(False), torch.enable_grad():
        xr = x.detach().clone().requires_grad_(True)
        scores = model(xr)
        if not scores.requires_grad:
            raise UnsupportedModelError(
                f"{type(model).__name__} returned scores that do not depend differentiably on the input",
                fix="use a differentiable torch model (TorchModel) or a query-based attack (square)")
        scores = scores.float()
        k = scores.shape[1]
        grads = [torch.autograd.grad(scores[:, j].sum(), xr, retain_graph=j < k - 1)[0] for j in range(k)]
    g = torch.nan_to_num(torch.stack(grads, dim=1).flatten(2), nan=0.0, posinf=0.0, neginf=0.0)
    scores = scores.detach()
    rows = torch.arange(x.shape[0], device=x.device)
    df = scores - scores[rows, y].unsqueeze(1)
    df[rows, y] = 1e10  # never pick the true class's own "boundary"
    return scores, df, g - g[rows, y].unsqueeze(1)


@dataclass(frozen=True)
class FABSearch:
    """FAB / FAB-T as a search: minimal-norm adversarial points, on survivors only.

    Args:
        n_iter: steps per run (100). Each step costs one query (forward + backward) and a step that
            lands on an adversarial point one more (the gradient at the pulled-back point); after a
            step where more than a third (untargeted: ``1 / (2C + 1)``) of the points were
            adversarial, the next step checks first with a forward pass, then takes the gradient at
            the possibly pulled-back point (2 queries, but a forward instead of a wasted gradient).
            The points and gradients are the same in both orders.
        n_restarts: runs per target (1); runs after the first start at a random point at distance
            ``min(best norm, eps) / 2`` from ``x0``.
        alpha_max, eta, beta: the paper's bias towards ``x0`` (0.1), overshoot (1.05) and backward
            step (0.9).
        targeted: FAB-T (one hyperplane per run, targets = the most likely other classes at ``x0``).
        n_target_classes: FAB-T targets per example (9, capped at ``C - 1``).
        early_stop: stop attacking an example once it has an adversarial point within ``eps``
            (success is then decided, as AutoAttack's check ``norm <= eps`` would decide it).
        min_norm: return the smallest adversarial point found whatever its norm (and never stop
            early); otherwise return it only if it lies within ``eps``, else ``x0``.

    ``run`` returns ``loss = -norm`` of the best adversarial point (``-inf`` where none was found).
    """

    n_iter: int = 100
    n_restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    targeted: bool = True
    n_target_classes: int = 9
    early_stop: bool = True
    min_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("n_iter", "n_restarts", "n_target_classes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}", fix=f"pass e.g. {name}=1")
        checks = {"alpha_max": (0.0, 1.0), "beta": (0.0, 1.0)}
        for name, (lo, hi) in checks.items():
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and lo <= v <= hi):
                raise ConfigError(f"{name} must be in [{lo}, {hi}], got {v!r}", fix="keep the paper's default")
        if not (isinstance(self.eta, (int, float)) and math.isfinite(self.eta) and self.eta >= 1):
            raise ConfigError(f"eta must be a finite number >= 1, got {self.eta!r}", fix="pass e.g. eta=1.05")

    def run(self, model: Model, goal: Goal, threat: LpBall, x0: torch.Tensor, labels: torch.Tensor, *,
            generator: torch.Generator) -> SearchResult:
        """Attack ``x0`` (B, ...) with true labels ``labels`` (B,); ``goal`` must be untargeted."""
        if goal.targeted:
            raise ConfigError("FAB finds misclassified points; its targets are chosen internally",
                              fix="use targeted=True on FAB (FAB-T) instead of a Targeted goal")
        b, dev = x0.shape[0], x0.device
        x0, y = x0.detach(), labels.long()
        queries = torch.zeros(b, dtype=torch.long, device=dev)
        best = torch.full((b,), math.inf, dtype=torch.float64, device=dev)
        x_best = x0.clone()
        if b == 0:
            return SearchResult(x_best, queries, best < 0, -best)
        ev = _GAP.query(model, x0, torch.stack([y, y], 1), queries=queries)
        best[ev.success] = 0.0  # already misclassified: nothing to do
        stop = None if self.min_norm or not self.early_stop else threat.eps
        if self.targeted:
            k = min(self.n_target_classes, ev.scores.shape[1] - 1)
            others = ev.scores.scatter(1, y.view(-1, 1), float("-inf"))
            targets = [t for t in others.topk(k, dim=1).indices.t()] if k > 0 else []
        else:
            targets = [None]
        for t in targets:
            for r in range(self.n_restarts):
                todo = best > 0 if stop is None else best > stop
                idx = todo.nonzero().squeeze(1)
                if idx.numel():
                    self._run_once(model, threat, x0, y, t, idx, r, best, x_best, queries, stop, generator)
        if self.min_norm:
            found = torch.isfinite(best)
            return SearchResult(x_best, queries, found, -best)
        within = best <= threat.eps
        x_out = torch.where(within.view(-1, *[1] * (x0.dim() - 1)), threat.project(x0, x_best), x0)
        return SearchResult(x_out, queries, within, -best)

    def _linearize(self, model: Model, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None,
                   queries: torch.Tensor, index: torch.Tensor, grad: bool):
        """Scores (n, C), gaps ``f`` (n, K) and gradients (n, K, D) (``None`` without ``grad``)."""
        if t is None and grad:
            return _jacobian_gaps(model, x, y, queries, index)
        ev = _GAP.query(model, x, torch.stack([y, y if t is None else t], 1), queries=queries, index=index,
                        grad=grad)
        return ev.scores, ev.loss.unsqueeze(1), (ev.grad.flatten(1).unsqueeze(1) if grad else None)

    def _start(self, threat: LpBall, x0: torch.Tensor, scale: torch.Tensor, generator: torch.Generator):
        """``x0`` plus a random step of norm ``scale / 2`` (AutoAttack's restart), in the box."""
        g = generator
        if threat.norm == "inf":
            u = torch.rand(x0.shape, generator=g, device=g.device, dtype=x0.dtype) * 2 - 1
        else:
            u = torch.randn(x0.shape, generator=g, device=g.device, dtype=x0.dtype)
        u = u.to(x0.device)
        u = u / lp_norm(u, threat.norm).clamp_min(1e-12).view(-1, *[1] * (x0.dim() - 1))
        return (x0 + 0.5 * scale.to(x0.dtype).view(-1, *[1] * (x0.dim() - 1)) * u).clamp(threat.low, threat.high)

    def _run_once(self, model, threat, x0, y, t, idx, restart, best, x_best, queries, stop, generator) -> None:
        """One FAB run from ``x0[idx]``: updates ``best``, ``x_best`` and ``queries`` in place."""
        norm, low, high = threat.norm, threat.low, threat.high
        xa0, ya = x0[idx], y[idx]
        ta = None if t is None else t[idx]
        x1 = xa0.clone() if restart == 0 else self._start(threat, xa0, best[idx].clamp(max=threat.eps), generator)
        scores, f, g = self._linearize(model, x1, ya, ta, queries, idx, grad=True)
        # a gradient query's cost in forward passes (backward ~ 2 forwards; untargeted: C backwards)
        grad_cost = 3.0 if ta is not None else 1.0 + 2.0 * scores.shape[1]
        p_adv = 0.0  # fraction of the last step's points that were adversarial
        for it in range(self.n_iter):
            n = idx.numel()
            if f.shape[1] > 1:  # untargeted: the closest linearized boundary (dual norm of the gradient)
                j = (f.abs() / (1e-12 + lp_norm(g.flatten(0, 1), _DUAL[norm]).view(n, -1))).argmin(dim=1)
                rows = torch.arange(n, device=x1.device)
                fj, w = f[rows, j], g[rows, j]
            else:
                fj, w = f[:, 0], g[:, 0]
            x1f, x0f = x1.flatten(1), xa0.flatten(1)
            w = w.to(x1f.dtype)
            c0 = fj.to(x1f.dtype) + (w * (x0f - x1f)).sum(dim=1)
            d = box_hyperplane_projection(torch.cat([x1f, x0f]), torch.cat([w, w]), torch.cat([fj.to(c0.dtype), c0]),
                                          norm, low, high)
            a = lp_norm(d, norm).clamp_min(1e-8)
            alpha = (a[:n] / (a[:n] + a[n:])).clamp(0.0, self.alpha_max).unsqueeze(1)
            x1f = ((x1f + self.eta * d[:n]) * (1 - alpha) + (x0f + self.eta * d[n:]) * alpha).clamp(low, high)
            x1 = x1f.to(xa0.dtype).view_as(xa0)
            last = it == self.n_iter - 1
            # Check first (a forward pass, then the gradient at the possibly pulled-back point) when
            # enough of the last step's points were adversarial that the gradient at x1 would mostly
            # be wasted; else take the gradient at x1 at once. Same points and gradients either way.
            check_first = last or p_adv * grad_cost > _CHECK_FIRST_ABOVE
            scores, f, g = self._linearize(model, x1, ya, ta, queries, idx, grad=not check_first)
            adv = scores.argmax(dim=1) != ya
            n_adv = int(adv.sum())
            p_adv = n_adv / n
            if n_adv:
                dist = lp_norm(x1 - xa0, norm).double()
                better = adv & (dist < best[idx])
                best[idx[better]], x_best[idx[better]] = dist[better], x1[better]
                shape = (-1, *[1] * (x1.dim() - 1))
                x1 = torch.where(adv.view(shape), xa0 + self.beta * (x1 - xa0), x1)
                if stop is not None:
                    keep = best[idx] > stop
                    if not bool(keep.all()):
                        idx, xa0, ya, x1, adv = idx[keep], xa0[keep], ya[keep], x1[keep], adv[keep]
                        ta = None if ta is None else ta[keep]
                        f = None if f is None else f[keep]
                        g = None if g is None else g[keep]
                        if idx.numel() == 0:
                            return
                        n_adv = int(adv.sum())
            if last:
                return
            if check_first:  # the gradient at every (pulled-back or not) point
                _, f, g = self._linearize(model, x1, ya, ta, queries, idx, grad=True)
            elif n_adv:  # the gradient at the pulled-back points
                sub = adv.nonzero().squeeze(1)
                _, f2, g2 = self._linearize(model, x1[sub], ya[sub], None if ta is None else ta[sub],
                                            queries, idx[sub], grad=True)
                f, g = f.clone(), g.clone()
                f[sub], g[sub] = f2, g2
