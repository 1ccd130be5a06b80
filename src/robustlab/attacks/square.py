"""Square Attack: a score-based black-box attack by random search over square-shaped changes.

From "Square Attack: a query-efficient black-box adversarial attack via random search"
(Andriushchenko, Croce, Flammarion & Hein, ECCV 2020). Needs only the model's scores, so it runs on
any :class:`~robustlab.core.model.Model` (scikit-learn estimators, plain callables, torch nets).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from robustlab.attacks._common import DEFAULT_SWEEP, fmt_eps, resolve_eps
from robustlab.attacks.goals import Goal, Misclassify, Targeted
from robustlab.attacks.search.gradient import run_attack
from robustlab.attacks.search.square import SquareSearch
from robustlab.core.errors import ConfigError
from robustlab.core.model import Model
from robustlab.core.probe import Attack, AttackResult
from robustlab.core.registry import register
from robustlab.core.threat import LpBall

__all__ = ["Square"]

Target = int | str | Sequence[int] | torch.Tensor


@register("attack", "square")
class Square(Attack):
    """Square Attack (L∞ or L2): random search over squares, keeping what raises the loss.

    Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial attack via random
    search" (ECCV 2020). Each query changes one random square per example (``±eps`` stripes and
    squares for L∞; "center-surround" bumps with mass redistribution for L2); the change is kept when
    the margin loss improves. Only examples not yet broken are queried; each stops at its first
    success. See :mod:`robustlab.attacks.search.square` for the details.

    Args:
        norm: ``"inf"`` (default) or ``2``.
        eps: radius in raw input units; ``None`` -> 8/255 (L∞) or 0.5 (L2).
        n_queries: query budget per example and restart (5000, the AutoAttack standard setting; the
            paper uses 10000).
        p_init: fraction of the input changed by the first steps. Default 0.8 as in AutoAttack (the
            paper's standard values are 0.05 for L∞ and 0.1 for L2 on undefended ImageNet models, and it
            notes robust models need larger ones); it halves on the paper's schedule rescaled to
            ``n_queries``.
        restarts: independent runs on the examples still robust (1, as in AutoAttack).
        loss: ``"margin"`` (paper: ``max_{j != y} z_j - z_y``) or ``"ce"``.
        targeted: ``None`` (untargeted), a class index, ``"random"``, or one target per example.

    Deviations from the paper code, on purpose: random squares are drawn per example (AutoAttack's
    port shares one per batch); window corners may touch the last row and column (the paper code's
    ``randint(0, h - s)`` never does); the L2 start grid tiles the whole image when it is smaller
    than 5 x 5 blocks; the L∞ sign redraw for a window that would not change stops after 10 tries.
    The L2 budget uses per-channel window norms, as the paper code (AutoAttack's port uses the
    whole-image norm). Flat inputs (D,) are treated as 1 x D images (segments instead of squares).

    Shapes: ``x`` (B, D), (B, H, W) or (B, C, H, W) raw inputs in [0, 1], ``y`` (B,) -> ``x_adv``
    like ``x`` (always inside the ball and the box), ``queries`` (B,) <= ``restarts * n_queries``.

    Example::

        res = Square(eps=8/255, n_queries=1000)(SklearnModel(clf), x, y, generator=torch_generator(0))
    """

    needs_gradients = False
    default_settings = DEFAULT_SWEEP["inf"]

    def __init__(self, norm: str | float = "inf", eps: float | None = None, n_queries: int = 5000,
                 p_init: float = 0.8, restarts: int = 1, loss: str = "margin",
                 targeted: Target | None = None):
        norm, eps = resolve_eps(norm, eps, "Square")
        if norm == "1":
            raise ConfigError("Square supports norm='inf' and norm=2 only",
                              fix="use norm='inf' or norm=2 (for L1 use a gradient attack, e.g. PGD(norm=1))")
        self.threat = LpBall(norm=norm, eps=eps)
        self.search = SquareSearch(n_queries=n_queries, p_init=p_init, restarts=restarts)
        if loss not in ("margin", "ce"):
            raise ConfigError(f"Square: unknown loss {loss!r}", fix="use loss='margin' (paper) or loss='ce'")
        self.goal: Goal = Misclassify(loss) if targeted is None else Targeted(targeted, loss)
        self.default_settings = DEFAULT_SWEEP[norm]

    @property
    def n_queries(self) -> int:
        return self.search.n_queries

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """Adversarial ``x_adv`` (like ``x``) and per-example ``queries`` (B,); see the class docstring."""
        return run_attack(model, x, y, goal=self.goal, threat=self.threat, search=self.search,
                          generator=generator, name="Square", gradients=False)

    def __repr__(self) -> str:
        s = self.search
        target = getattr(self.goal, "target", None)
        shown = repr(target) if target is None or isinstance(target, (int, str)) else f"<{len(target)}>"
        return (f"Square(norm={self.norm!r}, eps={fmt_eps(self.eps)}, n_queries={s.n_queries}, "
                f"p_init={s.p_init}, restarts={s.restarts}, loss={self.goal.loss_name!r}, targeted={shown})")
