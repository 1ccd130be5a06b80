"""FGSM: one signed-gradient step, the cheapest white-box attack.

From "Explaining and Harnessing Adversarial Examples" (Goodfellow, Shlens & Szegedy, ICLR 2015).
"""

from __future__ import annotations

import torch

from robustlab.attacks._common import DEFAULT_SWEEP, fmt_eps, resolve_eps
from robustlab.attacks.goals import Goal, as_goal
from robustlab.attacks.search.gradient import GradientSearch, run_attack
from robustlab.core.errors import ConfigError
from robustlab.core.model import Model
from robustlab.core.probe import Attack, AttackResult
from robustlab.core.registry import register
from robustlab.core.threat import LpBall

__all__ = ["FGSM"]


@register("attack", "fgsm")
class FGSM(Attack):
    """Fast Gradient Sign Method: ``x + eps * sign(grad loss)``, clipped to the input box.

    Goodfellow et al., "Explaining and Harnessing Adversarial Examples" (2015). With ``norm=2`` it
    is the "fast gradient method" ``x + eps * g / ||g||_2``. One forward+backward: 1 query per
    example (examples already misclassified at ``x`` are returned unchanged).

    Args:
        norm: ``"inf"`` (sign step) or ``2`` (normalized gradient step).
        eps: radius in raw input units (pixels in [0, 1]); ``None`` -> 8/255 for L∞, 0.5 for L2.
        goal: a :class:`~robustlab.attacks.goals.Goal` or a loss name (``"ce"``, ``"margin"``,
            ``"dlr"``) for the untargeted goal; default ``"ce"`` = ``Misclassify("ce")`` as in the paper.

    Shapes: ``x`` (B, ...) raw inputs on any device, ``y`` (B,) labels -> ``x_adv`` like ``x``,
    ``queries`` (B,).

    Example::

        res = FGSM(eps=8/255)(TorchModel(net), x, y, generator=torch_generator(0))
    """

    default_settings = DEFAULT_SWEEP["inf"]

    def __init__(self, norm: str | float = "inf", eps: float | None = None,
                 goal: Goal | str = "ce"):
        norm, eps = resolve_eps(norm, eps, "FGSM")
        if norm == "1":
            raise ConfigError("FGSM supports norm='inf' and norm=2 only",
                              fix="use PGD(norm=1) for an L1 attack (a single L1 step is very weak)")
        self.threat = LpBall(norm=norm, eps=eps)
        self.goal = as_goal(goal)
        self.default_settings = DEFAULT_SWEEP[norm]

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """One step of size ``eps`` along the steepest direction; see the class docstring."""
        search = GradientSearch(steps=1, alpha=self.threat.eps if self.threat.eps > 0 else None,
                                random_start=False, restarts=1, final_check=False)
        return run_attack(model, x, y, goal=self.goal, threat=self.threat, search=search,
                          generator=generator, name="FGSM")

    def __repr__(self) -> str:
        return f"FGSM(norm={self.norm!r}, eps={fmt_eps(self.eps)}, goal={self.goal!r})"
