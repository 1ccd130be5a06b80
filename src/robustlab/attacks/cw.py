"""Carlini-Wagner L2: the minimum-norm optimization attack, reported against an L2 ball.

From "Towards Evaluating the Robustness of Neural Networks" (Carlini & Wagner, IEEE S&P 2017).
"""

from __future__ import annotations

import math

import torch

from robustlab.attacks._common import DEFAULT_SWEEP, fmt_eps, resolve_eps
from robustlab.attacks.goals import Goal, margin_loss
from robustlab.core.errors import ConfigError, ProbeError
from robustlab.core.model import Model
from robustlab.core.probe import Attack, AttackResult
from robustlab.core.registry import register
from robustlab.core.threat import LpBall

__all__ = ["CWL2", "CWHinge"]

_TANH_SHRINK = 0.999999  # keeps arctanh finite at the box edges (the reference code's 1.999999 / 2)
_UPPER = 1e10            # "no upper bound on c yet"


class CWHinge(Goal):
    """Carlini-Wagner's objective f6 as a loss to maximize: ``-max(z_y - max_{j != y} z_j + kappa, 0)``.

    Success is ``argmax(z with z_y + kappa) != y`` (a margin of at least ``kappa``). The reference
    code subtracts kappa from ``z_y`` in its untargeted success test, which makes kappa > 0 easier,
    not harder; we add it (kappa = 0, the default, is unaffected). Shapes: (B, C), (B,) -> (B,).
    """

    targeted = False
    loss_name = "cw"

    def __init__(self, kappa: float = 0.0):
        self.kappa = float(kappa)

    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return -(self.kappa - margin_loss(scores, labels)).clamp_min(0.0)

    def success(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        shifted = scores.scatter_add(1, labels.view(-1, 1), torch.full_like(scores[:, :1], self.kappa))
        return shifted.argmax(dim=1) != labels


def _positive(name: str, v: object, example: str, *, integer: bool = False, zero_ok: bool = False) -> None:
    bad = isinstance(v, bool) or not isinstance(v, int if integer else (int, float))
    if not bad and not integer:
        bad = not math.isfinite(v)  # type: ignore[arg-type]
    if not bad:
        bad = v < 0 if zero_ok else v <= 0  # type: ignore[operator]
    if bad:
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"CWL2: {name} must be {kind} {'>=' if zero_ok else '>'} 0, got {v!r}",
                          fix=f"pass e.g. {example}")


@register("attack", "cw_l2")
class CWL2(Attack):
    """Carlini-Wagner L2 attack, untargeted, returned only where it lands within ``eps``.

    Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks" (2017): minimize
    ``||x' - x||_2^2 + c * max(z_y(x') - max_{j != y} z_j(x') + kappa, 0)`` over
    ``x' = (tanh(w) + 1) / 2`` (always in the [0, 1] box) with Adam, starting at ``x`` for each ``c``
    (Adam state reset), and binary-search ``c`` per example: on success ``upper = c``, else
    ``lower = c``; ``c`` becomes the midpoint once an upper bound exists, else ``c * 10``. The
    smallest successful point over all steps is the CW point. Scores must be logits.

    Threat-model contract: CW is a minimum-norm attack, but robustlab attacks must return points
    inside ``self.threat`` (the L2 ball of radius ``eps``). ``x_adv`` is the CW point where its L2
    distance is ``<= eps``, else the clean ``x`` (no adversarial found within eps); the found
    distances are in ``extras["distance"]`` (``inf`` where none was found).

    Args:
        eps: L2 radius in raw input units (``None`` -> 0.5).
        initial_const: first ``c`` (1e-3, the reference code's and Foolbox's).
        binary_search_steps: rounds of the search over ``c`` (9, reference / Foolbox); with 10 or
            more the last round uses the upper bound, as the reference code does.
        steps: Adam steps per round. The reference code uses 10000; we default to 1000 (with
            abort-early most rounds stop well before), pass ``steps=10000`` for the reference scale.
        lr: Adam learning rate (0.01, paper / reference).
        kappa: confidence margin (0).
        abort_early: stop a round for an example once its objective has not decreased by 0.01% over
            the last ``steps // 10`` steps (reference rule, applied per example here rather than to
            the whole batch's summed objective).

    Cost: one forward+backward (1 query) per Adam step per example, at most
    ``binary_search_steps * steps``; the clean point is never evaluated separately. Deterministic
    (no randomness; ``generator`` is unused).

    Example::

        res = CWL2(eps=0.5)(TorchModel(net), x, y, generator=torch_generator(0))
        res.extras["distance"]   # (B,) L2 norm of each CW adversarial (inf: none found)
    """

    default_settings = DEFAULT_SWEEP["2"]

    def __init__(self, eps: float | None = None, initial_const: float = 1e-3, binary_search_steps: int = 9,
                 steps: int = 1000, lr: float = 0.01, kappa: float = 0.0, abort_early: bool = True):
        _, eps = resolve_eps("2", eps, "CWL2")
        self.threat = LpBall(norm="2", eps=eps)
        _positive("initial_const", initial_const, "initial_const=1e-3")
        _positive("binary_search_steps", binary_search_steps, "binary_search_steps=9", integer=True)
        _positive("steps", steps, "steps=1000", integer=True)
        _positive("lr", lr, "lr=0.01")
        _positive("kappa", kappa, "kappa=0", zero_ok=True)
        if not isinstance(abort_early, bool):
            raise ConfigError(f"CWL2: abort_early must be True or False, got {abort_early!r}",
                              fix="pass abort_early=True (the reference) or False")
        self.initial_const, self.binary_search_steps, self.steps = float(initial_const), binary_search_steps, steps
        self.lr, self.kappa, self.abort_early = float(lr), float(kappa), abort_early

    @property
    def eps(self) -> float:
        return self.threat.eps

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """``x_adv`` (like ``x``) inside the L2 ball, ``queries`` (B,); ``extras``: ``distance`` (B,)
        CW L2 norms (``inf`` if none found), ``success`` (B,) adversarial within eps, ``const`` (B,)
        the smallest ``c`` that succeeded (1e10 if none)."""
        model.require(gradients=True, probe="CWL2")
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ProbeError(f"CWL2 needs a floating-point tensor of inputs, got {type(x).__name__}",
                             fix="pass raw inputs as a float tensor in [0, 1]")
        if x.shape[0] != y.shape[0]:
            raise ProbeError(f"CWL2 got {x.shape[0]} inputs but {y.shape[0]} labels", fix="pass one label per input")
        lo, hi = self.threat.low, self.threat.high
        xd, yd = x.detach().to(model.device), y.detach().to(model.device).long()
        if xd.numel() and (float(xd.min()) < lo - 1e-6 or float(xd.max()) > hi + 1e-6):
            raise ProbeError(f"CWL2 needs inputs in [{lo}, {hi}] (its tanh box)", fix="pass raw inputs in [0, 1]")
        best_x, best_d, queries, const = self._search(model, xd, yd)
        within = best_d <= self.eps
        x_adv = torch.where(within.view(-1, *([1] * (x.dim() - 1))), best_x, xd)
        out = x.device
        return AttackResult(x_adv.to(out), queries.to(out),
                            extras={"distance": best_d.to(out), "success": within.to(out), "const": const.to(out)})

    def _search(self, model: Model, x0: torch.Tensor, y: torch.Tensor):
        """The CW optimization on the whole batch: (best point, its L2 distance, queries, upper c)."""
        b, dev, dt = x0.shape[0], x0.device, x0.dtype
        lo, span = self.threat.low, self.threat.high - self.threat.low
        goal = CWHinge(self.kappa)
        view = (-1, *([1] * (x0.dim() - 1)))
        w0 = torch.atanh(((x0.clamp(lo, lo + span) - lo) / span * 2 - 1) * _TANH_SHRINK)
        queries = torch.zeros(b, dtype=torch.long, device=dev)
        best_x, best_d2 = x0.clone(), torch.full((b,), math.inf, dtype=torch.float64, device=dev)
        lower = torch.zeros(b, dtype=torch.float64, device=dev)
        upper = torch.full((b,), _UPPER, dtype=torch.float64, device=dev)
        c = torch.full((b,), self.initial_const, dtype=torch.float64, device=dev)
        check_every = max(self.steps // 10, 1)
        b1, b2, adam_eps = 0.9, 0.999, 1e-8
        for outer in range(self.binary_search_steps if b else 0):
            if self.binary_search_steps >= 10 and outer == self.binary_search_steps - 1:
                c = upper.clone()
            mod = torch.zeros_like(w0)
            m, v = torch.zeros_like(w0), torch.zeros_like(w0)
            found = torch.zeros(b, dtype=torch.bool, device=dev)
            prev = torch.full((b,), 1e6, dtype=torch.float64, device=dev)
            idx = torch.arange(b, device=dev)
            for it in range(self.steps):
                if idx.numel() == 0:
                    break
                t = torch.tanh(w0[idx] + mod[idx])
                xa = lo + span * (t + 1) / 2
                ev = goal.query(model, xa, y[idx], queries=queries, index=idx, grad=True)
                diff = xa - x0[idx]
                d2 = diff.reshape(len(idx), -1).pow(2).sum(1).double()
                ci = c[idx]
                total = d2 - ci * ev.loss.double()
                ok = ev.success
                found[idx[ok]] = True
                better = ok & (d2 < best_d2[idx])
                if bool(better.any()):
                    best_d2[idx[better]], best_x[idx[better]] = d2[better], xa[better]
                g = (2 * diff - ci.to(dt).view(view) * ev.grad.to(dt)) * (span / 2) * (1 - t * t)
                mi = m[idx] * b1 + (1 - b1) * g
                vi = v[idx] * b2 + (1 - b2) * g * g
                m[idx], v[idx] = mi, vi
                step = self.lr / (1 - b1 ** (it + 1))
                mod[idx] = mod[idx] - step * mi / ((vi / (1 - b2 ** (it + 1))).sqrt() + adam_eps)
                if self.abort_early and it % check_every == 0:
                    stop = total > prev[idx] * 0.9999
                    prev[idx] = total
                    idx = idx[~stop]
            upper = torch.where(found, torch.minimum(upper, c), upper)
            lower = torch.where(found, lower, torch.maximum(lower, c))
            c = torch.where(upper < 1e9, (lower + upper) / 2, torch.where(found, c, c * 10))
        return best_x, best_d2.sqrt(), queries, upper

    def __repr__(self) -> str:
        return (f"CWL2(eps={fmt_eps(self.eps)}, initial_const={self.initial_const:g}, "
                f"binary_search_steps={self.binary_search_steps}, steps={self.steps}, lr={self.lr:g}, "
                f"kappa={self.kappa:g}, abort_early={self.abort_early})")
