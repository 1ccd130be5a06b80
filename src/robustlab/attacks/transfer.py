"""Transfer attack: craft on a surrogate (one model, an ensemble or posterior samples), apply to the target.

The target is never queried while crafting: the attack is a black-box, query-free probe of the model
under test (``needs_gradients=False``). With a sampled surrogate it is the attack of "Efficient and
Transferable Adversarial Examples from Bayesian Neural Networks" (Gubri, Cordy, Papadakis & Le Traon,
UAI 2022): every iteration takes the gradient of *one* posterior sample, cycling through a seeded
shuffle of them ("light"), or of all of them together ("full").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from robustlab.attacks._common import fmt_eps, resolve_eps
from robustlab.attacks.goals import Goal, Misclassify, Targeted
from robustlab.attacks.search.gradient import sample_start, steepest_direction
from robustlab.core.errors import ConfigError, ProbeError, UnsupportedModelError
from robustlab.core.model import Model, TorchModel
from robustlab.core.probe import Attack, AttackResult
from robustlab.core.registry import register
from robustlab.core.threat import LpBall

__all__ = ["SurrogateSpec", "TransferAttack", "resolve_surrogate", "surrogate_scores"]

SurrogateSpec = Any
"""A :class:`Model`, an ``nn.Module``, a zoo name (``"digits-cnn"``), an object with ``.models`` (a
:class:`~robustlab.models.posterior.Posterior`), or a sequence of those (flattened)."""

MODES = ("light", "full")
FUSIONS = ("logits", "loss")


def resolve_surrogate(spec: SurrogateSpec) -> list[Model]:
    """The surrogate's member models, flattened, each with input gradients.

    Zoo names are loaded (trained once and cached) through :func:`robustlab.models.zoo.load`.
    """
    from torch import nn

    if isinstance(spec, Model):
        out = [spec]
    elif isinstance(spec, nn.Module):
        out = [TorchModel(spec)]
    elif isinstance(spec, str):
        from robustlab.models import zoo

        out = [zoo.load(spec, progress=False)]
    elif hasattr(spec, "models"):
        out = resolve_surrogate(list(spec.models))
    elif isinstance(spec, Sequence):
        out = [m for part in spec for m in resolve_surrogate(part)]
    else:
        raise ConfigError(f"cannot use a {type(spec).__name__} as a surrogate",
                          fix="pass a Model, a zoo name, a Posterior, or a list of them")
    if not out:
        raise ConfigError("the surrogate is empty", fix="pass at least one surrogate model")
    for m in out:
        if not m.has_gradients:
            raise UnsupportedModelError(f"surrogate {type(m).__name__} has no input gradients",
                                        fix="use differentiable torch surrogates (TorchModel, zoo torch models)")
    return out


def surrogate_scores(models: Sequence[Model], x: torch.Tensor) -> torch.Tensor:
    """Mean logits ``(B, C)`` of ``models`` on ``x`` (the ensemble's prediction), without gradients."""
    with torch.no_grad():
        return torch.stack([m(x.to(m.device)).float().to(x.device) for m in models]).mean(0)


@register("attack", "transfer")
class TransferAttack(Attack):
    """Iterative L∞ / L2 / L1 attack on a surrogate, evaluated on the (never queried) target.

    Gubri et al., "Efficient and Transferable Adversarial Examples from Bayesian Neural Networks"
    (UAI 2022), as in their ``attack_csgld_pgd_torch.py``: from ``x`` (or a random point of the ball
    per restart), ``steps`` times ``x ← Π(x + alpha·dir(g))`` with ``dir`` = ``sign`` (L∞),
    ``g/||g||₂`` (L2) or the sparse L1 step, where ``g`` is the gradient of the loss of

    * ``mode="light"``: surrogate member ``order[t mod S]`` at step ``t``, ``order`` a seeded
      shuffle of the ``S`` members (I-FGSM / PGD "light" of the paper), or
    * ``mode="full"``: all members at once: the loss of the mean logits (``fuse="logits"``, the
      reference's ensemble) or the mean of the members' losses (``fuse="loss"``).

    Every step runs to the end (no early stop when the surrogate is fooled: transfer improves
    past that point). With ``momentum`` it is MI-FGSM (Dong et al., CVPR 2018: ``g ← μg + ∇/||∇||₁``).
    Across ``restarts``, a later restart's point replaces the earlier one wherever it fools the whole
    surrogate (mean logits), as in the reference.

    Args:
        surrogate: see :data:`SurrogateSpec` (models, zoo names, a Posterior, or a list of them).
        norm: ``"inf"`` (default), ``2`` or ``1``.
        eps: radius in raw input units; ``None`` -> 8/255 (L∞), 0.5 (L2), 12 (L1).
        steps: iterations (reference 50).
        alpha: step size in raw units; ``None`` -> ``eps / 10`` (the reference's step).
        mode: ``"light"`` (one member per step) or ``"full"`` (all members per step).
        fuse: how ``"full"`` combines members: ``"logits"`` (reference) or ``"loss"``.
        restarts: runs per example (>= 1); ``random_start`` draws each start in the ball
            (PGD; reference: 5 random restarts), else I-FGSM from ``x``.
        momentum: MI-FGSM decay ``μ`` (reference 0.9 where used); ``None`` = plain steps.
        loss: ``"ce"`` (reference), ``"margin"`` or ``"dlr"``.
        targeted: ``None`` (untargeted), a class, ``"random"``, or one class per example.

    Cost on the target: zero queries (``queries`` are 0; the surrogate's forward/backward passes are
    in ``extras["surrogate_queries"]``).

    Example::

        post = sample_csgld(DigitsCNN(), train, CSGLDConfig(cycles=3, cycle_epochs=10))
        attack = TransferAttack(post, eps=0.1, steps=50)
        res = attack(target, x, y, generator=torch_generator(0))   # target is not queried
    """

    query_free = True  # never queries the evaluated model (the runner's query check knows)

    needs_gradients = False

    def __init__(self, surrogate: SurrogateSpec, norm: str | float = "inf", eps: float | None = None,
                 steps: int = 50, alpha: float | None = None, mode: str = "light", fuse: str = "logits",
                 restarts: int = 1, random_start: bool = False, momentum: float | None = None,
                 loss: str = "ce", targeted: int | str | Sequence[int] | None = None):
        norm, eps = resolve_eps(norm, eps, "TransferAttack")
        self.threat = LpBall(norm=norm, eps=eps)
        for name, v in (("steps", steps), ("restarts", restarts)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"TransferAttack: {name} must be an integer >= 1, got {v!r}",
                                  fix=f"pass e.g. {name}={50 if name == 'steps' else 1}")
        if alpha is not None and not (isinstance(alpha, (int, float)) and alpha > 0):
            raise ConfigError(f"TransferAttack: alpha must be > 0 or None, got {alpha!r}",
                              fix="leave alpha=None for eps/10")
        if mode not in MODES or fuse not in FUSIONS:
            raise ConfigError(f"TransferAttack: unknown mode={mode!r} or fuse={fuse!r}",
                              fix=f"mode in {MODES}, fuse in {FUSIONS}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ConfigError(f"TransferAttack: momentum must be in [0, 1] or None, got {momentum!r}",
                              fix="pass momentum=0.9 (MI-FGSM) or None")
        self.surrogate, self.steps, self.alpha, self.mode, self.fuse = surrogate, steps, alpha, mode, fuse
        self.restarts, self.random_start, self.momentum = restarts, bool(random_start), momentum
        self.goal: Goal = Misclassify(loss) if targeted is None else Targeted(targeted, loss)
        self._members: list[Model] | None = None

    @property
    def members(self) -> list[Model]:
        """The surrogate's member models (resolved, and for zoo names loaded, on first use)."""
        if self._members is None:
            self._members = resolve_surrogate(self.surrogate)
        return self._members

    def step_size(self) -> float:
        """The step size against ``self.threat``: ``alpha``, else ``eps / 10``."""
        return float(self.alpha) if self.alpha is not None else self.threat.eps / 10.0

    def _grad(self, models: Sequence[Model], x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Input gradient of the goal's summed loss over a batch, for one member or fused members."""
        with torch.inference_mode(False), torch.enable_grad():
            xr = x.detach().clone().requires_grad_(True)
            outs = [m(xr.to(m.device)).float().to(x.device) for m in models]
            if self.fuse == "logits" or len(outs) == 1:
                loss = self.goal.loss(torch.stack(outs).mean(0), labels).sum()
            else:
                loss = torch.stack([self.goal.loss(o, labels) for o in outs]).mean(0).sum()
            (g,) = torch.autograd.grad(loss, xr)
        return torch.nan_to_num(g.detach(), nan=0.0, posinf=0.0, neginf=0.0)

    def craft(self, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator) -> AttackResult:
        """Adversarial examples for ``(x (B, ...), y (B,))`` from the surrogate alone.

        Returns ``x_adv`` (like ``x``, inside the ball and the box), zero target ``queries``, and
        extras ``surrogate_success`` (B,) (the mean-logit surrogate fooled) and ``surrogate_queries``.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.shape[0] != y.shape[0]:
            raise ProbeError("TransferAttack needs a float tensor of inputs and one label per input",
                             fix="pass raw inputs (e.g. images in [0, 1]) and labels of the same length")
        members, n, threat = self.members, x.shape[0], self.threat
        x0 = x.detach()
        zeros = torch.zeros(n, dtype=torch.long, device=x.device)
        if n == 0 or threat.eps == 0:
            return AttackResult(x0.clone(), zeros, extras={"surrogate_success": zeros.bool(),
                                                           "surrogate_queries": zeros.clone()})
        labels = self.goal.labels(y.detach().long(), num_classes=members[0].num_classes, generator=generator)
        gdev = generator.device
        order = torch.randperm(len(members), generator=generator, device=gdev).tolist()
        alpha = self.step_size()
        best = x0.clone()
        best_success = torch.zeros(n, dtype=torch.bool, device=x.device)
        per_step = 1 if self.mode == "light" else len(members)
        for r in range(self.restarts):
            xa = sample_start(threat, x0, generator) if self.random_start else x0.clone()
            buf = torch.zeros_like(x0)
            for t in range(self.steps):
                group = [members[order[t % len(members)]]] if self.mode == "light" else members
                g = self._grad(group, xa, labels)
                if self.momentum is not None:  # MI-FGSM: accumulate L1-normalized gradients
                    l1 = g.flatten(1).abs().sum(1).clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))
                    buf = self.momentum * buf + g / l1
                    g = buf
                d = steepest_direction(g, threat.norm, x=xa, low=threat.low, high=threat.high)
                xa = threat.project(x0, xa + alpha * d.to(xa.dtype))
            success = self.goal.success(surrogate_scores(members, xa), labels)
            take = success if r > 0 else torch.ones_like(success)  # as the reference: later successes win
            best[take] = xa[take]
            best_success |= success
        queries = torch.full((n,), self.restarts * (self.steps * per_step + len(members)), dtype=torch.long,
                             device=x.device)
        extras = {"surrogate_success": best_success, "surrogate_queries": queries}
        return AttackResult(best, zeros, extras=extras)

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """Craft on the surrogate for ``(x, y)``; ``model`` (the target) is never called."""
        return self.craft(x, y, generator=generator)

    def __repr__(self) -> str:
        s = self.surrogate
        shown = repr(s) if isinstance(s, str) else (f"<{len(self._members)} member(s)>" if self._members
                                                    else f"<{type(s).__name__}>")
        return (f"TransferAttack(surrogate={shown}, norm={self.threat.norm!r}, eps={fmt_eps(self.threat.eps)}, "
                f"steps={self.steps}, alpha={self.alpha!r}, mode={self.mode!r}, restarts={self.restarts}, "
                f"random_start={self.random_start}, momentum={self.momentum!r}, loss={self.goal.loss_name!r})")
