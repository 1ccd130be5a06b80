"""APGD: parameter-free PGD with momentum and an automatic step size (APGD-CE, APGD-DLR, APGD-T).

From "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks" (Croce & Hein, ICML 2020); the search lives in :mod:`robustlab.attacks.search.apgd`.
"""

from __future__ import annotations

import torch

from robustlab.attacks._common import DEFAULT_SWEEP, fmt_eps, resolve_eps
from robustlab.attacks.goals import Goal, Misclassify
from robustlab.attacks.search.apgd import APGDSearch, PerTargetSearch
from robustlab.attacks.search.gradient import run_attack
from robustlab.core.errors import ConfigError
from robustlab.core.model import Model
from robustlab.core.probe import Attack, AttackResult
from robustlab.core.registry import register
from robustlab.core.threat import LpBall

__all__ = ["APGD", "APGDCE", "APGDDLR", "APGDT", "TargetedDLR", "dlr_targeted_loss"]

LOSSES = ("ce", "dlr", "margin", "dlr-targeted")


def dlr_targeted_loss(scores: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targeted DLR ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` (Croce & Hein, 2020).

    ``pi`` sorts the scores in decreasing order; needs >= 4 classes. Shapes: (B, C), (B,), (B,) -> (B,).
    """
    if scores.shape[1] < 4:
        raise ConfigError(f"the targeted DLR loss needs at least 4 classes, the model has {scores.shape[1]}",
                          fix="use loss='ce' or loss='dlr'")
    top = scores.topk(4, dim=1).values
    zy = scores.gather(1, labels.view(-1, 1)).squeeze(1)
    zt = scores.gather(1, targets.view(-1, 1)).squeeze(1)
    return -(zy - zt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


class TargetedDLR(Goal):
    """APGD-T's goal: untargeted success (any wrong class) by maximizing the targeted DLR loss.

    Its labels have shape (B, 2): the true class and the target (built by
    :class:`~robustlab.attacks.search.apgd.PerTargetSearch`); :meth:`labels` returns ``y``.
    """

    targeted = False
    loss_name = "dlr-targeted"

    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return dlr_targeted_loss(scores, labels[:, 0], labels[:, 1])

    def success(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return scores.argmax(dim=1) != labels[:, 0]

    def __repr__(self) -> str:
        return "TargetedDLR()"


def _check_int(name: str, v: object, example: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"APGD: {name} must be an integer >= 1, got {v!r}", fix=f"pass e.g. {example}")


@register("attack", "apgd")
class APGD(Attack):
    """Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks", ICML 2020) in an L∞ or L2 ball, untargeted.

    Momentum PGD (``alpha = 0.75``, first step without momentum) whose step size starts at ``2 eps``
    and is halved, restarting from the best point, at the checkpoints
    ``ceil(0.22 N), ceil(0.41 N), ...`` where progress stalled (fewer than ``rho = 0.75`` of the
    steps increased the loss, or no improvement and no halving since the last checkpoint). Only
    examples still robust are attacked; a broken example is frozen at its first adversarial point;
    the others get their highest-loss point. See
    :class:`~robustlab.attacks.search.apgd.APGDSearch` for the algorithm and the (small) deviations
    from the official code.

    Args:
        norm: ``"inf"`` (default) or ``2``; eps in raw input units, ``None`` -> 8/255 / 0.5.
        loss: ``"ce"`` (APGD-CE), ``"dlr"`` (APGD-DLR, needs >= 3 classes), ``"margin"``, or
            ``"dlr-targeted"`` (APGD-T: one run per target class, needs >= 4 classes).
        n_iter: iterations per run (100, the paper's).
        n_restarts: random restarts (1: AutoAttack "standard"; its "plus" version uses 5 for APGD-CE
            / APGD-DLR and 1 for APGD-T).
        rho: step-size condition-1 threshold (0.75). momentum: 0.75.
        n_target_classes: for ``"dlr-targeted"``, the number of target classes (9, capped at C - 1),
            the 2nd ... 10th most likely classes at the clean input, each a separate run.

    Cost per example still robust at the end: ``n_restarts * (n_iter + 1)`` queries (forward +
    backward each), times ``n_target_classes`` plus 1 ranking query for ``"dlr-targeted"``.
    The random start (a point on the sphere of the ball, as in the official code) is drawn from
    ``generator``.

    Example::

        res = APGD(eps=8/255, loss="ce")(TorchModel(net), x, y, generator=torch_generator(0))
        res.x_adv, res.queries   # (B, C, H, W), (B,)
    """

    default_settings = DEFAULT_SWEEP["inf"]
    fixed_loss: str | None = None

    def __init__(self, norm: str | float = "inf", eps: float | None = None, loss: str = "ce",
                 n_iter: int = 100, n_restarts: int = 1, rho: float = 0.75, *, momentum: float = 0.75,
                 n_target_classes: int = 9):
        name = type(self).__name__
        norm, eps = resolve_eps(norm, eps, name)
        if norm not in ("inf", "2"):
            raise ConfigError(f"{name} supports norm 'inf' and 2, got L{norm}",
                              fix="use norm='inf' or norm=2; for L1 use PGD(norm=1)")
        if loss not in LOSSES:
            raise ConfigError(f"{name}: unknown loss {loss!r}", fix=f"use loss= one of {', '.join(LOSSES)}")
        _check_int("n_iter", n_iter, "n_iter=100")
        _check_int("n_restarts", n_restarts, "n_restarts=1")
        _check_int("n_target_classes", n_target_classes, "n_target_classes=9")
        self.threat = LpBall(norm=norm, eps=eps)
        self.loss = loss
        self.n_target_classes = n_target_classes
        self.search = APGDSearch(n_iter=n_iter, n_restarts=n_restarts, rho=rho, momentum=momentum)
        self.default_settings = DEFAULT_SWEEP[norm]

    @property
    def n_iter(self) -> int:
        return self.search.n_iter

    @property
    def n_restarts(self) -> int:
        return self.search.n_restarts

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """Adversarial ``x_adv`` (like ``x``) and per-example ``queries`` (B,); see the class docstring.

        ``extras``: ``success`` (B,) bool, ``loss`` (B,), ``step_size`` (B,) final step size in raw
        units and ``n_halvings`` (B,) of the last run.
        """
        if self.loss == "dlr-targeted":
            goal: Goal = TargetedDLR()
            search = PerTargetSearch(self.search, self.n_target_classes)
        else:
            goal, search = Misclassify(self.loss), self.search
        res = run_attack(model, x, y, goal=goal, threat=self.threat, search=search,
                         generator=generator, name=type(self).__name__)
        return res

    def __repr__(self) -> str:
        s = self.search
        extra = f", n_target_classes={self.n_target_classes}" if self.loss == "dlr-targeted" else ""
        loss = "" if self.fixed_loss else f", loss={self.loss!r}"
        return (f"{type(self).__name__}(norm={self.norm!r}, eps={fmt_eps(self.eps)}{loss}, n_iter={s.n_iter}, "
                f"n_restarts={s.n_restarts}, rho={s.rho}{extra})")


@register("attack", "apgd_ce")
class APGDCE(APGD):
    """APGD on the cross-entropy loss (AutoAttack's first attack); see :class:`APGD`."""

    fixed_loss = "ce"

    def __init__(self, norm: str | float = "inf", eps: float | None = None, n_iter: int = 100,
                 n_restarts: int = 1, rho: float = 0.75, *, momentum: float = 0.75):
        super().__init__(norm, eps, "ce", n_iter, n_restarts, rho, momentum=momentum)


@register("attack", "apgd_dlr")
class APGDDLR(APGD):
    """APGD on the Difference of Logits Ratio loss (needs >= 3 classes); see :class:`APGD`."""

    fixed_loss = "dlr"

    def __init__(self, norm: str | float = "inf", eps: float | None = None, n_iter: int = 100,
                 n_restarts: int = 1, rho: float = 0.75, *, momentum: float = 0.75):
        super().__init__(norm, eps, "dlr", n_iter, n_restarts, rho, momentum=momentum)


@register("attack", "apgd_t")
class APGDT(APGD):
    """APGD-T: APGD on the targeted DLR loss, one run of ``n_iter`` per target class (the 2nd ...
    ``n_target_classes + 1``-th most likely at the clean input, default 9), on survivors only;
    success is any misclassification. Needs >= 4 classes. See :class:`APGD`."""

    fixed_loss = "dlr-targeted"

    def __init__(self, norm: str | float = "inf", eps: float | None = None, n_iter: int = 100,
                 n_restarts: int = 1, rho: float = 0.75, *, momentum: float = 0.75, n_target_classes: int = 9):
        super().__init__(norm, eps, "dlr-targeted", n_iter, n_restarts, rho, momentum=momentum,
                         n_target_classes=n_target_classes)
