"""PGD: projected gradient ascent from a random start, the standard first-order adversary.

From "Towards Deep Learning Models Resistant to Adversarial Attacks" (Madry, Makelov, Schmidt,
Tsipras & Vladu, ICLR 2018).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from robustlab.attacks._common import DEFAULT_SWEEP, fmt_eps, resolve_eps
from robustlab.attacks.goals import Goal, Misclassify, Targeted
from robustlab.attacks.search.gradient import GradientSearch, run_attack
from robustlab.core.errors import ConfigError
from robustlab.core.model import Model
from robustlab.core.probe import Attack, AttackResult
from robustlab.core.registry import register
from robustlab.core.threat import LpBall

__all__ = ["PGD", "pgd_l2", "pgd_linf"]

Target = int | str | Sequence[int] | torch.Tensor


@register("attack", "pgd")
class PGD(Attack):
    """Projected Gradient Descent (ascent on the loss) in an L∞, L2 or L1 ball.

    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks" (2018): start at
    a uniform random point of the ball, take ``steps`` steepest-ascent steps of size ``alpha``
    (L∞: ``sign(g)``; L2: ``g / ||g||_2``; L1: the sparse SLIDE step of Tramèr & Boneh 2019), and
    project back onto the ball and the [0, 1] box after each. Only examples not yet broken are
    attacked; each is frozen at its first successful point; across ``restarts`` the best point
    (successful, else highest loss) is kept.

    Args:
        norm: ``"inf"`` (default), ``2`` or ``1``.
        eps: radius in raw input units; ``None`` -> 8/255 (L∞), 0.5 (L2), 12 (L1).
        steps: gradient steps per restart (>= 1); 20 by default.
        alpha: step size in raw units (L∞: per pixel; L2 / L1: the step's norm); ``None`` ->
            ``2.5 * eps / steps`` for every norm (Madry et al.'s rule: the steps could cross the
            ball 2.5 times).
        random_start: start from a random point of the ball (Madry et al.); else from ``x``.
        restarts: independent random starts (>= 1).
        loss: ``"ce"`` (paper), ``"margin"`` (Carlini-Wagner) or ``"dlr"`` (Croce & Hein 2020,
            untargeted only).
        targeted: ``None`` (untargeted), a class index, ``"random"`` (a random other class per
            example), or one target per example of the batch.
        l1_quantile: for ``norm=1``, the gradient quantile of the sparse step (0.99).

    Cost: at most ``restarts * (steps + 1)`` queries per example (``steps`` forward+backward and a
    forward that checks the last iterate); broken examples stop paying at once.

    Example::

        res = PGD(eps=8/255, steps=20)(TorchModel(net), x, y, generator=torch_generator(0))
        res.x_adv, res.queries   # (B, C, H, W), (B,)
    """

    default_settings = DEFAULT_SWEEP["inf"]

    def __init__(self, norm: str | float = "inf", eps: float | None = None, steps: int = 20,
                 alpha: float | None = None, random_start: bool = True, restarts: int = 1,
                 loss: str = "ce", targeted: Target | None = None, *, l1_quantile: float = 0.99):
        norm, eps = resolve_eps(norm, eps, "PGD")
        self.threat = LpBall(norm=norm, eps=eps)
        if not isinstance(random_start, bool):
            raise ConfigError(f"PGD: random_start must be True or False, got {random_start!r}",
                              fix="pass random_start=True (Madry et al.) or random_start=False")
        # GradientSearch checks steps >= 1, restarts >= 1, alpha > 0 and names the argument
        self.search = GradientSearch(steps=steps, alpha=float(alpha) if _is_num(alpha) else alpha,
                                     random_start=random_start, restarts=restarts, l1_quantile=l1_quantile)
        self.goal: Goal = Misclassify(loss) if targeted is None else Targeted(targeted, loss)
        self.default_settings = DEFAULT_SWEEP[norm]

    @property
    def steps(self) -> int:
        return self.search.steps

    @property
    def alpha(self) -> float | None:
        return self.search.alpha

    @property
    def restarts(self) -> int:
        return self.search.restarts

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """Adversarial ``x_adv`` (like ``x``) and per-example ``queries`` (B,); see the class docstring."""
        return run_attack(model, x, y, goal=self.goal, threat=self.threat, search=self.search,
                          generator=generator, name="PGD")

    def __repr__(self) -> str:
        s = self.search
        targeted = None if not self.goal.targeted else getattr(self.goal, "target", None)
        shown_t = repr(targeted) if targeted is None or isinstance(targeted, (int, str)) else f"<{len(targeted)}>"
        return (f"PGD(norm={self.norm!r}, eps={fmt_eps(self.eps)}, steps={s.steps}, alpha={s.alpha!r}, "
                f"random_start={s.random_start}, restarts={s.restarts}, loss={self.goal.loss_name!r}, "
                f"targeted={shown_t})")


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@register("attack", "pgd_linf")
def pgd_linf(eps: float | None = None, steps: int = 20, alpha: float | None = None, random_start: bool = True,
             restarts: int = 1, loss: str = "ce", targeted: Target | None = None) -> PGD:
    """PGD in the L∞ ball (default eps 8/255); see :class:`PGD`."""
    return PGD("inf", eps, steps, alpha, random_start, restarts, loss, targeted)


@register("attack", "pgd_l2")
def pgd_l2(eps: float | None = None, steps: int = 20, alpha: float | None = None, random_start: bool = True,
           restarts: int = 1, loss: str = "ce", targeted: Target | None = None) -> PGD:
    """PGD in the L2 ball (default eps 0.5); see :class:`PGD`."""
    return PGD("2", eps, steps, alpha, random_start, restarts, loss, targeted)
