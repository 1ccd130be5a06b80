"""TRADES: trade natural accuracy for robustness with a KL smoothness term on adversarial inputs.

From "Theoretically Principled Trade-off between Robustness and Accuracy" (Zhang, Yu, Jiao, Xing,
El Ghaoui & Jordan, ICML 2019): minimize ``CE(f(x), y) + beta * KL(f(x) || f(x'))``, where ``x'``
maximizes that KL in the ball around ``x`` (the surrogate of the boundary error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlab.attacks.search.gradient import steepest_direction
from robustlab.core.errors import ConfigError
from robustlab.core.model import TorchModel
from robustlab.core.registry import register
from robustlab.core.threat import LpBall
from robustlab.defend.train.adversarial import AdversarialTraining, BatchLoss

__all__ = ["LINF_STEP_RATIO", "START_SIGMA", "TRADES", "kl_divergence", "trades_examples"]

#: the official CIFAR-10 L∞ setting: step 0.007 at eps 0.031 (10 steps) -> alpha = 0.226 * eps
LINF_STEP_RATIO = 0.007 / 0.031
#: standard deviation of the Gaussian start around x (official code: x + 0.001 * N(0, 1))
START_SIGMA = 0.001


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Per-example ``KL(softmax(p) || softmax(q))`` from logits (B, C) -> (B,), in log space (finite
    gradients even where a probability underflows to 0)."""
    lp, lq = F.log_softmax(logits_p.float(), dim=1), F.log_softmax(logits_q.float(), dim=1)
    return (lp.exp() * (lp - lq)).sum(dim=1)


def trades_examples(model: TorchModel, x: torch.Tensor, threat: LpBall, *, steps: int, alpha: float,
                    generator: torch.Generator, clean_logits: torch.Tensor | None = None) -> torch.Tensor:
    """TRADES' inner maximization: ``x'`` in ``threat`` around ``x`` maximizing ``KL(f(x) || f(x'))``.

    Start at ``x + 0.001 * N(0, 1)`` (projected into the ball and the box, which the official code does
    only after the first step), then ``steps`` steps ``x' <- project(x' + alpha * d)`` with
    ``d = sign(g)`` (L∞) or ``g / ||g||_2`` (L2, the official code's normalized-gradient SGD step; a zero
    gradient gives a zero step there, where the official code takes a random one). All steps are taken
    for every example. The caller sets the module's mode (eval, as the official code).

    Args:
        model: the classifier on raw inputs; ``x`` (B, ...) on ``model.device``.
        threat: the ball; ``eps == 0`` returns ``x``.
        steps, alpha: iterations and step size in raw units.
        generator: draws the Gaussian start.
        clean_logits: ``f(x)`` (B, C) if already computed (no graph needed).

    Returns: ``x'`` like ``x``, inside ``threat`` (detached).
    """
    x = x.detach()
    if threat.eps == 0 or x.shape[0] == 0:
        return x.clone()
    if clean_logits is None:
        with torch.no_grad():
            clean_logits = model(x)
    target = clean_logits.detach()
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    xa = threat.project(x, x + START_SIGMA * noise)
    for _ in range(steps):
        with torch.inference_mode(False), torch.enable_grad():
            xr = xa.detach().clone().requires_grad_(True)
            loss = kl_divergence(target, model(xr)).sum()
            (grad,) = torch.autograd.grad(loss, xr)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        xa = threat.project(x, xa + alpha * steepest_direction(grad, threat.norm).to(xa.dtype))
    return xa.detach()


@register("defense", "trades")
@dataclass(frozen=True)
class TRADES(AdversarialTraining):
    """TRADES adversarial training (Zhang et al., "Theoretically Principled Trade-off between Robustness
    and Accuracy", ICML 2019) in an L∞ or L2 ball, with an eps warm-up.

    Every step: :func:`trades_examples` against the current model in eval mode, then one optimizer
    step on ``CE(f(x), y) + beta * mean_i KL(f(x_i) || f(x'_i))`` with the module in train mode; the
    gradient flows through both ``f(x)`` and ``f(x')``, as in the official code.

    Args:
        beta: weight of the KL term (``1/lambda`` in the paper); 6.0 as in the paper's CIFAR-10 and
            MNIST models. ``beta=0`` is standard training (the attack still runs).
        steps: attack iterations (10, the official CIFAR-10 setting).
        alpha: attack step size; ``None`` -> the official code's: L∞ ``0.007 / 0.031 * eps``
            (= 0.007 at eps 0.031), L2 ``2 * eps / steps``.

    The other arguments (epochs, eps warm-up, optimizer, seed, ...) are those of
    :class:`~robustlab.defend.train.adversarial.AdversarialTraining`; the warm-up is not in the paper
    (``warmup_epochs=0`` switches it off). One clean forward in train mode is shared by the CE and KL
    terms (the official code runs it twice).

    Example::

        defended = TRADES(beta=6.0, epochs=20).train(net, train_data, LpBall("inf", 8/255))
    """

    beta: float = 6.0
    name = "trades"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not (
                math.isfinite(self.beta) and self.beta >= 0):
            raise ConfigError(f"TRADES: beta must be a finite number >= 0, got {self.beta!r}",
                              fix="pass e.g. beta=6.0 (the paper's CIFAR-10 setting)")

    def default_alpha(self, norm: str, eps: float) -> float:
        return LINF_STEP_RATIO * eps if norm == "inf" else 2.0 * eps / self.steps

    def batch_loss(self, model: TorchModel, x: torch.Tensor, y: torch.Tensor, threat: LpBall, alpha: float,
                   generator: torch.Generator) -> BatchLoss:
        module = model.module
        module.eval()
        with torch.no_grad():
            eval_logits = model(x)
        x_adv = trades_examples(model, x, threat, steps=self.steps, alpha=alpha, generator=generator,
                                clean_logits=eval_logits)
        module.train()
        logits = model(x)
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits, y) + self.beta * kl_divergence(logits, logits_adv).mean()
        return BatchLoss(loss, (logits.detach().argmax(1) == y).sum(), (logits_adv.detach().argmax(1) == y).sum())
