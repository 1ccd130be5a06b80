"""BPDA: PGD through a non-differentiable model, using a differentiable surrogate on the backward pass.

From "Obfuscated Gradients Give a False Sense of Security: Circumventing Defenses to Adversarial
Examples" (Athalye, Carlini & Wagner, ICML 2018), Backward Pass Differentiable Approximation: run
the forward pass through the real (non-differentiable) defense ``f(g(x))`` and replace ``g`` by a
differentiable ``g̃ ≈ g`` on the backward pass only (the identity for input purifiers: the
straight-through estimator).

Protocol: a model supports BPDA when it has a method ``bpda_forward(x) -> scores`` whose *values*
equal ``model(x)`` and whose input gradient is the surrogate's. :func:`straight_through` builds one
(``robustlab.defend.wrap.InputTransform`` and ``QuantizedInput`` supply it). :class:`BPDA` wraps the
model in :func:`bpda_view`, a differentiable :class:`Model` whose forward is ``bpda_forward``, and
runs the ordinary PGD search on it, so success tests and queries are those of the real model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from robustlab.attacks.pgd import PGD, Target
from robustlab.attacks.search.gradient import run_attack
from robustlab.core.errors import UnsupportedModelError
from robustlab.core.model import Model
from robustlab.core.probe import AttackResult
from robustlab.core.registry import register

__all__ = ["BPDA", "bpda_view", "straight_through", "supports_bpda"]

_FIX = ("wrap the defense as robustlab.defend.wrap.InputTransform(model, transform) (identity surrogate) "
        "or give the model a bpda_forward(x) method; for a differentiable model use pgd, and for a "
        "black-box one a query-based attack (square)")


def straight_through(x: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor],
                     surrogate: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """``transform(x)`` in the forward pass, the gradient of ``surrogate`` (identity) in the backward.

    Computes ``s + (transform(x) - s).detach()`` with ``s = surrogate(x)`` (``s = x`` by default):
    the value is exactly ``transform(x)``, and ``d/dx`` is ``d surrogate / dx`` (the identity: the
    straight-through estimator of BPDA, Athalye et al. 2018). ``transform`` runs without gradients.
    Shapes: ``x`` (B, ...) -> like ``x``.
    """
    with torch.no_grad():
        gx = torch.as_tensor(transform(x.detach()), dtype=x.dtype, device=x.device)
    s = x if surrogate is None else surrogate(x)
    return s + (gx - s).detach()


def supports_bpda(model: Model) -> bool:
    """Whether ``model`` supplies a BPDA surrogate (a callable ``bpda_forward``)."""
    return callable(getattr(model, "bpda_forward", None))


class _BPDAView(Model):
    """A differentiable view of a model: forward = the model's ``bpda_forward``."""

    has_gradients = True

    def __init__(self, model: Model):
        self.model = model
        self.task, self.modality, self.num_classes = model.task, model.modality, model.num_classes
        self.low, self.high, self.device = model.low, model.high, model.device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.bpda_forward(x)

    def __repr__(self) -> str:
        return f"bpda_view({self.model!r})"


def bpda_view(model: Model, probe: str = "BPDA") -> Model:
    """A differentiable :class:`Model` whose forward is ``model.bpda_forward`` (same values as
    ``model``, surrogate gradients); raises :class:`UnsupportedModelError` if there is none."""
    if not supports_bpda(model):
        raise UnsupportedModelError(f"{probe} needs a BPDA surrogate but {type(model).__name__} has no "
                                    "bpda_forward(x) method", fix=_FIX)
    return _BPDAView(model)


@register("attack", "bpda_pgd")
class BPDA(PGD):
    """PGD with Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, 2018).

    Every step evaluates the real model (forward values, success, queries) and takes the input
    gradient of its ``bpda_forward`` surrogate; otherwise exactly :class:`~robustlab.attacks.pgd.PGD`
    (random start, ``steps`` steepest-ascent steps of size ``alpha``, projection, restarts,
    survivors only). Works on models with ``has_gradients=False`` as long as they supply
    ``bpda_forward``; a model without one is refused with :class:`UnsupportedModelError`.

    Args: as :class:`~robustlab.attacks.pgd.PGD` (``norm``, ``eps`` in raw units, ``steps``=20,
    ``alpha``=2.5*eps/steps, ``random_start``, ``restarts``, ``loss`` "ce" | "margin" | "dlr",
    ``targeted``). Athalye et al. ran many more steps (up to 1000) against real defenses: raise
    ``steps`` until robust accuracy stops dropping.

    Cost: at most ``restarts * (steps + 1)`` queries per example.

    Example::

        model = QuantizedInput(TorchModel(net), levels=8)
        res = BPDA(eps=8/255, steps=50)(model, x, y, generator=torch_generator(0))
    """

    needs_gradients = False

    def __init__(self, norm: str | float = "inf", eps: float | None = None, steps: int = 20,
                 alpha: float | None = None, random_start: bool = True, restarts: int = 1,
                 loss: str = "ce", targeted: Target | None = None, *, l1_quantile: float = 0.99):
        super().__init__(norm, eps, steps, alpha, random_start, restarts, loss, targeted, l1_quantile=l1_quantile)

    def check_model(self, model: Model) -> None:
        """Raise if ``model`` has no ``bpda_forward`` surrogate (or is not a tensor model)."""
        model.require(modality=self.modality, probe="BPDA")
        bpda_view(model)

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """Adversarial ``x_adv`` (like ``x``) and ``queries`` (B,) against the real ``model``."""
        return run_attack(bpda_view(model), x, y, goal=self.goal, threat=self.threat, search=self.search,
                          generator=generator, name="BPDA")

    def __repr__(self) -> str:
        return "BPDA" + super().__repr__()[len("PGD"):]
