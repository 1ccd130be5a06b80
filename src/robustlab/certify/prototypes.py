"""Closed-form robustness certificates of prototype networks (robust stable CBC, RBF network, GLVQ).

From "A Robust Prototype-Based Network with Interpretable RBF Classifier Foundations" (Saralajew, Rana,
Villmann & Shaker, AAAI 2025). The certified L2 radius ``rho(x)`` of each model is exact arithmetic
on its distances (no bound propagation): for the CBC and the RBF network, ``||e||_2 <= eps`` scales
every detection ``exp(-||x - w_k|| / sigma_k)`` by a factor in ``[1/u, u]``, ``u = exp(eps / sigma_min)``
(triangle inequality), which bounds each pairwise margin by ``P / u - N u + B`` and gives
``rho = sigma_min ln u*`` at its root (Theorem 1); for GLVQ ``rho = (d- - d+) / 2``. The radius is
computed in float64 with exact distances (see :meth:`robustlab.models.prototypes.RobustCBC.certified_radius`).

Norms: the paper certifies L2. L∞ and L1 balls are certified through the norm inequalities
``||e||_2 <= sqrt(D) ||e||_inf`` and ``||e||_2 <= ||e||_1`` (radius ``rho / sqrt(D)`` and ``rho``),
sound but looser. Normalization inside the :class:`~robustlab.core.model.TorchModel` (``(x - mean) / std``)
is allowed: a raw perturbation ``e`` moves the normalized input by at most ``||e|| / min(std)``, so
the raw radius is ``rho * min(std)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.model import Model, TorchModel, checked_scores
from robustlab.core.probe import Certifier, ProbeOutput
from robustlab.core.registry import register
from robustlab.core.threat import LpBall, parse_norm

__all__ = ["PrototypeMargin", "certified_radius"]


def _module(model: Any) -> Any:
    from robustlab.models.prototypes import PROTOTYPE_MODELS

    module = model.module if isinstance(model, TorchModel) else model
    if not isinstance(module, PROTOTYPE_MODELS):
        names = ", ".join(c.__name__ for c in PROTOTYPE_MODELS)
        raise UnsupportedModelError(
            f"prototype_margin certifies prototype networks ({names}), got {type(module).__name__}",
            fix="certify a robustlab.models.prototypes model (e.g. the zoo's digits-cbc-rbf), or use ibp / crown")
    return module


def _raw_scale(model: Any) -> float:
    """How much a raw L2 step can move the module's (normalized) input: ``1 / min(std)`` (1 without std)."""
    std = getattr(model, "_std", None) if isinstance(model, TorchModel) else None
    return 1.0 if std is None else 1.0 / float(torch.as_tensor(std).min())


def certified_radius(model: Model | torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str | float = "2",
                     batch_size: int = 512) -> torch.Tensor:
    """(B,) float64 certified radius (raw input units, in ``norm``) of a prototype network at ``(x, y)``.

    ``rho > eps`` proves that no perturbation with ``||e|| <= eps`` changes the prediction away from
    ``y``; ``rho <= 0`` where ``x`` is misclassified. ``inf`` where no perturbation can flip it.

    Args:
        model: a :class:`TorchModel` wrapping (or a bare) :class:`~robustlab.models.prototypes.RobustCBC`,
            :class:`~robustlab.models.prototypes.RBFNetwork` or :class:`~robustlab.models.prototypes.GLVQ`.
        x: raw inputs (B, ...); y: labels (B,).
        norm: ``"2"`` (the paper), ``"inf"`` or ``"1"`` (through norm inequalities).
        batch_size: examples per chunk.
    """
    module = _module(model)
    norm = parse_norm(norm)
    if isinstance(model, TorchModel):
        x = model._normalize(x.to(model.device))
    dev = next(module.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        out.append(module.certified_radius(x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev),
                                           exact=True).cpu())
    rho = torch.cat(out) if out else torch.empty(0, dtype=torch.float64)
    rho = rho / _raw_scale(model)
    if norm == "inf":
        rho = rho / math.sqrt(float(module.in_features))
    return rho


@register("certifier", "prototype_margin")
class PrototypeMargin(Certifier):
    """Closed-form certificate of prototype networks (Saralajew et al., AAAI 2025; see the module docstring).

    Per example: status ``"certified"`` (clean-correct and certified radius ``rho > eps``),
    ``"abstained"`` (clean-correct, ``rho <= eps``) or ``"skipped"`` (clean-wrong); outcome score =
    ``rho`` (raw units); scores = clean scores. Models that are not prototype networks raise
    :class:`~robustlab.core.errors.UnsupportedModelError`.

    Args:
        norm: ``"2"`` (default, the paper), ``"inf"`` or ``"1"``.
        batch_size: examples per chunk.

    Example::

        out = PrototypeMargin().evaluate(model, x, y, 0.5, clean_pred=model.predict(x), generator=g)
        out.status   # ["certified", "abstained", "skipped", ...]
    """

    default_settings = (0.25, 0.5, 1.0)

    def __init__(self, norm: str | float = "2", batch_size: int = 512):
        if int(batch_size) < 1:
            raise ConfigError(f"prototype_margin: batch_size must be >= 1, got {batch_size!r}",
                              fix="use e.g. batch_size=512")
        self.threat = LpBall(norm=norm, eps=0.0)
        self.batch_size = int(batch_size)

    def check_model(self, model: Model) -> None:
        _module(model)

    def evaluate(self, model: Model, x: Any, y: torch.Tensor, setting: float, *,
                 clean_pred: torch.Tensor, generator: torch.Generator) -> ProbeOutput:
        if not setting >= 0:
            raise ConfigError(f"prototype_margin: eps must be >= 0, got {setting}", fix="ask for radii >= 0")
        self.check_model(model)
        scores = checked_scores(model, x)
        rho = certified_radius(model, x, y, self.threat.norm, self.batch_size)
        attempted = clean_pred.cpu() == y.cpu()
        certified = attempted & (rho > float(setting))
        status = ["certified" if c else ("abstained" if a else "skipped")
                  for c, a in zip(certified.tolist(), attempted.tolist())]
        return ProbeOutput(scores=scores, attempted=attempted, queries=torch.zeros(len(y), dtype=torch.long),
                           x_probed=x, status=status, score=rho.float(), extras={"radius": rho})

    def __repr__(self) -> str:
        return f"PrototypeMargin(norm={self.threat.norm!r}, batch_size={self.batch_size})"
