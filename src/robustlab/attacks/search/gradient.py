"""Batched projected gradient ascent in an Lp ball that attacks only the survivors.

The "Search" of Attack = Goal + ThreatModel + Search, shared by FGSM, PGD and (later) APGD-style
attacks. Each step moves along the steepest-ascent direction of the goal's loss for the threat's
norm, then projects back with ``threat.project`` (ball, then box). A per-example "still robust"
mask decides who is attacked: an example is frozen at the first point where the goal succeeds,
and only the others pay for forward/backward passes; the search stops when none remain.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol

import torch

from robustlab.attacks.goals import Goal
from robustlab.core.errors import ConfigError, ProbeError
from robustlab.core.model import Model
from robustlab.core.probe import AttackResult
from robustlab.core.threat import LpBall

__all__ = [
    "GradientSearch",
    "Search",
    "SearchResult",
    "default_alpha",
    "run_attack",
    "sample_start",
    "steepest_direction",
]


def default_alpha(eps: float, steps: int) -> float:
    """Default step size ``2.5 * eps / steps`` (Madry et al., 2018): enough to cross the ball 2.5x.

    Used for every norm (for L1 each step moves ``alpha`` in L1 mass).
    """
    return 2.5 * float(eps) / int(steps)


def steepest_direction(grad: torch.Tensor, norm: str, *, x: torch.Tensor | None = None,
                       low: float = 0.0, high: float = 1.0, l1_quantile: float = 0.99) -> torch.Tensor:
    """Steepest-ascent direction of unit Lp norm for a batch of gradients (B, ...).

    * L∞: ``sign(grad)`` (FGSM / PGD).
    * L2: ``grad / ||grad||_2`` (the fast gradient method).
    * L1: the sparse step of SLIDE ("Adversarial Training and Robustness for Multiple
      Perturbations", Tramèr & Boneh, 2019): keep the coordinates whose ``|grad|`` reaches the
      ``l1_quantile`` quantile (the top ``ceil((1 - q) * d)``, at least one; ties keep all),
      skip coordinates already at the box edge that the gradient pushes outwards (needs ``x``),
      and give each kept coordinate ``sign(grad) / k`` so the step has unit L1 norm.

    Zero gradients give a zero direction.
    """
    if norm == "inf":
        return grad.sign()
    b = grad.shape[0]
    flat = grad.reshape(b, -1)
    if norm == "2":
        return (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(grad)
    if x is not None:
        xf = x.reshape(b, -1)
        blocked = ((xf >= high) & (flat > 0)) | ((xf <= low) & (flat < 0))
        flat = flat.masked_fill(blocked, 0.0)
    mag = flat.abs()
    d = flat.shape[1]
    k = min(d, max(1, math.ceil((1.0 - l1_quantile) * d - 1e-9)))
    kth = mag.topk(k, dim=1).values[:, -1:]
    e = flat.sign() * ((mag >= kth) & (mag > 0))
    return (e / e.abs().sum(dim=1, keepdim=True).clamp_min(1.0)).view_as(grad)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def sample_start(threat: LpBall, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform-ish random start in ``threat`` around ``x0``, drawn on the generator's device."""
    gdev = generator.device
    if _same_device(gdev, x0.device):
        return threat.sample(x0, generator)
    return threat.sample(x0.to(gdev), generator).to(x0.device)


class Search(Protocol):
    """What :func:`run_attack` needs of a search: ``run(...) -> SearchResult``."""

    def run(self, model: Model, goal: Goal, threat: LpBall, x0: torch.Tensor, labels: torch.Tensor, *,
            generator: torch.Generator) -> SearchResult: ...


@dataclass
class SearchResult:
    """What the search found: ``x_adv`` (B, ...), ``queries`` (B,) long, ``success`` (B,) bool (goal
    met at ``x_adv``, as evaluated during the search) and ``loss`` (B,) the goal's loss there
    (``-inf`` where the point was never evaluated)."""

    x_adv: torch.Tensor
    queries: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor


@dataclass(frozen=True)
class GradientSearch:
    """Projected steepest ascent with random starts and restarts, on survivors only.

    Args:
        steps: gradient steps per restart (>= 1); each is one forward+backward = one query.
        alpha: step size in raw input units (L∞: per coordinate; L2 / L1: the step's norm);
            ``None`` -> :func:`default_alpha` ``= 2.5 * eps / steps``.
        random_start: start each restart at ``threat.sample`` (else at ``x0``).
        restarts: independent runs (>= 1); a restart attacks only examples not yet broken, and the
            best point (successful, else highest loss) is kept across restarts.
        final_check: evaluate the last iterate with one forward (one more query). Without it
            (only with ``restarts == 1``) the last iterate is returned unevaluated, as in FGSM.
        l1_quantile: gradient quantile of the sparse L1 step (SLIDE; 0.99 as in cleverhans).

    Cost: at most ``restarts * (steps + final_check)`` queries per example; an example broken at
    iteration ``t`` of its first restart costs ``t + 1``.
    """

    steps: int = 10
    alpha: float | None = None
    random_start: bool = True
    restarts: int = 1
    final_check: bool = True
    l1_quantile: float = 0.99

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {self.steps!r}", fix="pass e.g. steps=20")
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, int) or self.restarts < 1:
            raise ConfigError(f"restarts must be an integer >= 1, got {self.restarts!r}",
                              fix="pass e.g. restarts=1")
        if self.alpha is not None and not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)
                                           and self.alpha > 0):
            raise ConfigError(f"alpha must be a finite step size > 0 or None, got {self.alpha!r}",
                              fix="leave alpha=None for the default 2.5*eps/steps, or pass e.g. alpha=2/255")
        if not 0.0 <= self.l1_quantile < 1.0:
            raise ConfigError(f"l1_quantile must be in [0, 1), got {self.l1_quantile!r}",
                              fix="pass e.g. l1_quantile=0.99 (top 1% of coordinates per step)")
        if not self.final_check and self.restarts > 1:
            raise ConfigError("final_check=False needs restarts=1",
                              fix="keep final_check=True to compare points across restarts")

    def step_size(self, threat: LpBall) -> float:
        """The step size used against ``threat``."""
        return float(self.alpha) if self.alpha is not None else default_alpha(threat.eps, self.steps)

    def run(self, model: Model, goal: Goal, threat: LpBall, x0: torch.Tensor, labels: torch.Tensor, *,
            generator: torch.Generator) -> SearchResult:
        """Maximize ``goal.loss`` over ``threat`` around ``x0`` (B, ...) for ``labels`` (B,).

        Tensors must be on ``model.device``; the model should be in eval mode (the caller's job).
        Works under ``torch.no_grad()``; never writes parameter gradients.
        """
        b, dev = x0.shape[0], x0.device
        x0 = x0.detach()
        queries = torch.zeros(b, dtype=torch.long, device=dev)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        best_loss = torch.full((b,), float("-inf"), dtype=torch.float64, device=dev)
        x_best = x0.clone()
        if b == 0 or threat.eps == 0:
            return SearchResult(x_best, queries, done, best_loss)
        alpha = self.step_size(threat)
        for _ in range(self.restarts):
            active = (~done).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            x0a, la = x0[active], labels[active]
            xa = sample_start(threat, x0a, generator) if self.random_start else x0a.clone()
            for it in range(self.steps + 1):
                last = it == self.steps
                if last and not self.final_check:
                    x_best[active] = xa  # FGSM-style: the unevaluated last iterate
                    break
                ev = goal.query(model, xa, la, queries=queries, index=active, grad=not last)
                succ = ev.success
                upd = succ | (ev.loss.double() > best_loss[active])
                if bool(upd.any()):
                    idx = active[upd]
                    x_best[idx] = xa[upd]
                    best_loss[idx] = ev.loss[upd].double()
                grad = ev.grad
                if bool(succ.any()):  # freeze the broken ones, attack only the survivors
                    done[active[succ]] = True
                    keep = ~succ
                    active, xa, x0a, la = active[keep], xa[keep], x0a[keep], la[keep]
                    grad = grad[keep] if grad is not None else None
                    if active.numel() == 0:
                        break
                if last:
                    break
                direction = steepest_direction(grad, threat.norm, x=xa, low=threat.low, high=threat.high,
                                               l1_quantile=self.l1_quantile)
                xa = threat.project(x0a, xa + alpha * direction.to(xa.dtype))
        return SearchResult(x_best, queries, done, best_loss)


def run_attack(model: Model, x: torch.Tensor, y: torch.Tensor, *, goal: Goal, threat: LpBall,
               search: Search, generator: torch.Generator, name: str = "attack",
               gradients: bool = True) -> AttackResult:
    """Shared body of the attacks: checks, device moves, labels, search, result.

    ``search`` is any object with :class:`GradientSearch`'s ``run`` (e.g. ``APGDSearch``); tensor
    fields its result adds to :class:`SearchResult` are passed on in ``extras``.

    ``x`` (B, ...) raw inputs and ``y`` (B,) true labels; results come back on ``x``'s device.
    ``eps == 0`` returns ``x`` unchanged with zero queries. ``gradients=False`` for score-based
    searches (Square), which work on models without input gradients.
    """
    model.require(gradients=gradients, probe=name)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ProbeError(f"{name} needs a floating-point tensor of inputs, got {type(x).__name__}",
                         fix="pass raw inputs as a float tensor (e.g. images in [0, 1])")
    if x.shape[0] != y.shape[0]:
        raise ProbeError(f"{name} got {x.shape[0]} inputs but {y.shape[0]} labels",
                         fix="pass one label per input")
    out_dev = x.device
    n = x.shape[0]
    if threat.eps == 0 or n == 0:
        return AttackResult(x.detach().clone(), torch.zeros(n, dtype=torch.long, device=out_dev),
                            extras={"success": torch.zeros(n, dtype=torch.bool, device=out_dev)})
    dev = model.device
    xd, yd = x.detach().to(dev), y.detach().to(dev).long()
    num_classes = model.num_classes
    if goal.targeted and num_classes is None:
        with torch.no_grad():
            num_classes = int(model(xd[:1]).shape[1])
    labels = goal.labels(yd, num_classes=num_classes, generator=generator)
    res = search.run(model, goal, threat, xd, labels, generator=generator)
    extras = {"success": res.success.to(out_dev), "loss": res.loss.to(out_dev)}
    for f in dataclasses.fields(res):  # per-example fields a search adds (e.g. APGD's step_size)
        value = getattr(res, f.name)
        if f.name not in ("x_adv", "queries", "success", "loss") and isinstance(value, torch.Tensor):
            extras[f.name] = value.to(out_dev)
    return AttackResult(res.x_adv.to(out_dev), res.queries.to(out_dev), extras=extras)
