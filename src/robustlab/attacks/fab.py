"""FAB and FAB-T: minimum-norm attacks that walk along the linearized decision boundary.

From "Minimally distorted Adversarial Examples with a Fast Adaptive Boundary Attack" (Croce & Hein,
ICML 2020); FAB-T is the targeted version AutoAttack runs ("Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", Croce & Hein, ICML 2020).
"""

from __future__ import annotations

import dataclasses

import torch

from robustlab.attacks._common import DEFAULT_SWEEP, fmt_eps, resolve_eps
from robustlab.attacks.goals import Misclassify
from robustlab.attacks.search.fab import FABSearch
from robustlab.attacks.search.gradient import run_attack
from robustlab.core.model import Model
from robustlab.core.probe import Attack, AttackResult
from robustlab.core.registry import register
from robustlab.core.threat import LpBall

__all__ = ["FAB", "fab_t"]


@register("attack", "fab")
class FAB(Attack):
    """Fast Adaptive Boundary attack (untargeted, or FAB-T with ``targeted=True``), L∞ / L2 / L1.

    Croce & Hein, "Minimally distorted Adversarial Examples with a Fast Adaptive Boundary Attack"
    (ICML 2020). Each step projects the current point and the clean point onto the linearized
    boundary (box-constrained, exact for L∞ / L2 / L1), mixes the two with a bias ``alpha <=
    alpha_max`` towards the clean point, overshoots by ``eta``, and after each adversarial point
    steps back by ``beta``; the smallest adversarial point is kept. FAB-T (AutoAttack's version)
    runs once per target class, the ``n_target_classes`` most likely other classes at ``x``, and
    needs one backward pass per query; untargeted FAB needs the full Jacobian (C backward passes).

    FAB minimizes the norm; to fit the threat-model contract ``__call__`` returns the smallest
    adversarial point found **if its norm is <= eps**, else the clean ``x`` (as AutoAttack's check
    does). ``minimize`` returns the smallest adversarial point whatever its norm.
    ``extras["norm"]`` holds the smallest adversarial norm found (inf where none).

    Args:
        norm: ``"inf"`` (default), ``2`` or ``1``.
        eps: radius in raw units; ``None`` -> 8/255 (L∞), 0.5 (L2), 12 (L1). Also sets the radius
            of the random restarts (half of ``min(eps, best norm)``).
        n_iter: steps per run (100). n_restarts: runs per target (1).
        alpha_max, eta, beta: 0.1, 1.05, 0.9 (the paper's and AutoAttack's values).
        targeted: FAB-T (default False here; ``fab_t`` sets it).
        n_target_classes: FAB-T targets (9, capped at C - 1).
        early_stop: in ``__call__``, stop attacking an example once an adversarial point within
            ``eps`` is found (same success as running all steps; fewer queries).

    Deviations from AutoAttack, on purpose: while few steps land on adversarial points, the
    prediction check of a step reuses the forward pass of the next step's gradient (1 query per
    step, +1 after an adversarial step, instead of 2); once more than a third of the last step's
    points were adversarial, the check is a forward pass of its own followed by the gradient at the
    (pulled-back) point, as in AutoAttack (2 queries per step, the cheaper order then). Both orders
    compute the same points and gradients. The
    targets exclude the true label explicitly (AutoAttack takes the 2nd.. 10th class of the clean
    scores, the same for correctly classified inputs); a restart's radius uses the best norm found
    by earlier runs, as the original FAB code did.

    Shapes: ``x`` (B, ...) raw inputs in [0, 1], ``y`` (B,) -> ``x_adv`` like ``x``, ``queries`` (B,).

    Example::

        res = fab_t(eps=8/255)(TorchModel(net), x, y, generator=torch_generator(0))
        dist = FAB(norm=2).minimize(model, x, y, generator=g).extras["norm"]
    """

    default_settings = DEFAULT_SWEEP["inf"]

    def __init__(self, norm: str | float = "inf", eps: float | None = None, n_iter: int = 100,
                 n_restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
                 targeted: bool = False, n_target_classes: int = 9, early_stop: bool = True):
        norm, eps = resolve_eps(norm, eps, "FAB")
        self.threat = LpBall(norm=norm, eps=eps)
        self.search = FABSearch(n_iter=n_iter, n_restarts=n_restarts, alpha_max=alpha_max, eta=eta, beta=beta,
                                targeted=bool(targeted), n_target_classes=n_target_classes,
                                early_stop=bool(early_stop))
        self.default_settings = DEFAULT_SWEEP[norm]

    @property
    def targeted(self) -> bool:
        return self.search.targeted

    def _run(self, search: FABSearch, model: Model, x: torch.Tensor, y: torch.Tensor,
             generator: torch.Generator) -> AttackResult:
        name = "FAB-T" if search.targeted else "FAB"
        res = run_attack(model, x, y, goal=Misclassify("margin"), threat=self.threat, search=search,
                         generator=generator, name=name)
        if "loss" in res.extras:
            res.extras["norm"] = -res.extras.pop("loss")
        return res

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """The smallest adversarial point found if within ``eps``, else ``x``; ``queries`` (B,)."""
        return self._run(self.search, model, x, y, generator)

    def minimize(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """The smallest adversarial point found for each example (``x`` where none), any norm.

        ``extras["norm"]`` (B,) its distance to ``x`` (inf where none), ``extras["success"]`` found.
        ``eps`` (> 0; with ``eps == 0`` nothing is attacked) only sets the radius of random restarts.
        """
        return self._run(dataclasses.replace(self.search, min_norm=True), model, x, y, generator)

    def __repr__(self) -> str:
        s = self.search
        extra = f", n_target_classes={s.n_target_classes}" if s.targeted else ""
        return (f"FAB(norm={self.norm!r}, eps={fmt_eps(self.eps)}, n_iter={s.n_iter}, n_restarts={s.n_restarts}, "
                f"alpha_max={s.alpha_max}, eta={s.eta}, beta={s.beta}, targeted={s.targeted}{extra})")


@register("attack", "fab_t")
def fab_t(norm: str | float = "inf", eps: float | None = None, n_iter: int = 100, n_restarts: int = 1,
          n_target_classes: int = 9, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
          early_stop: bool = True) -> FAB:
    """FAB-T, the targeted FAB of AutoAttack (9 target classes, 100 steps); see :class:`FAB`."""
    return FAB(norm, eps, n_iter, n_restarts, alpha_max, eta, beta, targeted=True,
               n_target_classes=n_target_classes, early_stop=early_stop)
