"""Attack goals: what the adversary wants, as a loss to *maximize* and a success test.

A :class:`Goal` is the "what" of an attack (Goal + ThreatModel + Search). It owns the per-example
loss, the success test, and the model calls: every call goes through :meth:`Goal.query`, which
counts one query per example (a forward pass, with or without the backward pass, is one query).

Example::

    goal = Misclassify("margin")
    labels = goal.labels(y, num_classes=10, generator=g)
    ev = goal.query(model, x, labels, queries=counts, grad=True)   # ev.loss (B,), ev.grad like x
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError, ProbeError, UnsupportedModelError
from robustlab.core.model import Model

__all__ = [
    "TARGETED_LOSSES",
    "UNTARGETED_LOSSES",
    "Evaluation",
    "Goal",
    "Misclassify",
    "Targeted",
    "as_goal",
    "dlr_loss",
    "margin_loss",
]

UNTARGETED_LOSSES = ("ce", "margin", "dlr")
TARGETED_LOSSES = ("ce", "margin")


def _other_max(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``max_{j != label} scores[:, j]`` per row."""
    masked = scores.scatter(1, labels.view(-1, 1), float("-inf"))
    return masked.amax(dim=1)


def margin_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y`` (no clamp): > 0 iff ``y`` is not the argmax.

    From "Towards Evaluating the Robustness of Neural Networks" (Carlini & Wagner, 2017).
    Shapes: ``scores`` (B, C), ``labels`` (B,) -> (B,).
    """
    true = scores.gather(1, labels.view(-1, 1)).squeeze(1)
    return _other_max(scores, labels) - true


def dlr_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)``.

    Shift- and scale-invariant in the logits; from "Reliable evaluation of adversarial robustness
    with an ensemble of diverse parameter-free attacks" (Croce & Hein, 2020), where ``pi`` sorts the
    scores in decreasing order. Needs at least 3 classes. Shapes: (B, C), (B,) -> (B,).
    """
    if scores.shape[1] < 3:
        raise ConfigError(f"the DLR loss needs at least 3 classes, the model has {scores.shape[1]}",
                          fix="use loss='margin' (equivalent up to scale for 2 classes) or loss='ce'")
    top3 = scores.topk(3, dim=1).values
    return margin_loss(scores, labels) / (top3[:, 0] - top3[:, 2] + 1e-12)


@dataclass
class Evaluation:
    """One batched query: scores (B, C), loss (B,), success (B,) and, if asked, the input gradient."""

    scores: torch.Tensor
    loss: torch.Tensor
    success: torch.Tensor
    grad: torch.Tensor | None = None


class Goal(ABC):
    """The adversary's objective: ``loss`` to maximize, ``success`` test, and counted ``query``.

    ``labels(y, ...)`` turns true labels into the labels the loss uses (``y`` itself when
    untargeted, the target classes when targeted); the search works on those.
    """

    targeted: bool = False
    loss_name: str = "ce"

    @abstractmethod
    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-example loss to maximize: (B, C), (B,) -> (B,)."""

    @abstractmethod
    def success(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-example success: (B, C), (B,) -> bool (B,)."""

    def labels(self, y: torch.Tensor, *, num_classes: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """The labels the loss and success test use (``y`` for an untargeted goal)."""
        return y

    def query(self, model: Model, x: torch.Tensor, labels: torch.Tensor, *,
              queries: torch.Tensor | None = None, index: torch.Tensor | None = None,
              grad: bool = False) -> Evaluation:
        """Call ``model`` once on ``x`` (B, ...) and score it; add 1 to ``queries[index]``.

        Args:
            model: a :class:`Model`; ``x`` must already be on ``model.device``.
            labels: (B,) labels from :meth:`labels`.
            queries: optional (N,) long counter updated in place (N >= B).
            index: (B,) positions of ``x``'s rows in ``queries`` (default: ``0..B-1``).
            grad: also return ``d sum(loss) / d x`` (computed w.r.t. the input only, so the model's
                parameter ``.grad`` are never touched); works under ``torch.no_grad()``.
        """
        if queries is not None:
            if index is None:
                queries[: x.shape[0]] += 1
            else:
                queries.index_add_(0, index, torch.ones_like(index, dtype=queries.dtype))
        if not grad:
            with torch.no_grad():
                scores = model(x).float()
                return Evaluation(scores, self.loss(scores, labels), self.success(scores, labels))
        with torch.inference_mode(False), torch.enable_grad():
            xr = x.detach().clone().requires_grad_(True)  # clones: inference tensors can't enter autograd
            labels = labels.clone()
            scores = model(xr)
            if not scores.requires_grad:
                raise UnsupportedModelError(
                    f"{type(model).__name__} returned scores that do not depend differentiably on the input",
                    fix="use a differentiable torch model (TorchModel) or a query-based attack")
            scores = scores.float()
            loss = self.loss(scores, labels)
            (g,) = torch.autograd.grad(loss.sum(), xr)
        g = torch.nan_to_num(g.detach(), nan=0.0, posinf=0.0, neginf=0.0)
        scores = scores.detach()
        return Evaluation(scores, loss.detach(), self.success(scores, labels), g)


class Misclassify(Goal):
    """Untargeted goal: any label but the true one.

    Args:
        loss: ``"ce"`` (cross-entropy, as in Madry et al. 2018), ``"margin"`` (Carlini-Wagner,
            clamp-free) or ``"dlr"`` (Croce & Hein 2020, needs >= 3 classes).
    """

    targeted = False

    def __init__(self, loss: str = "ce"):
        if loss not in UNTARGETED_LOSSES:
            raise ConfigError(f"unknown loss {loss!r} for an untargeted attack",
                              fix=f"use loss= one of {', '.join(UNTARGETED_LOSSES)}")
        self.loss_name = loss

    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "ce":
            return F.cross_entropy(scores, labels, reduction="none")
        if self.loss_name == "margin":
            return margin_loss(scores, labels)
        return dlr_loss(scores, labels)

    def success(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return scores.argmax(dim=1) != labels

    def __eq__(self, other: object) -> bool:
        return type(other) is Misclassify and other.loss_name == self.loss_name

    def __hash__(self) -> int:
        return hash(("Misclassify", self.loss_name))

    def __repr__(self) -> str:
        return f"Misclassify({self.loss_name!r})"


class Targeted(Goal):
    """Targeted goal: make the model predict ``target``.

    Args:
        target: one class for every example (int), ``"random"`` (a uniformly drawn class other than
            the true one, per example, from the attack's generator), or a (B,) sequence/tensor of
            classes for the batch the attack is called on (not usable through ``Attack.evaluate``,
            which attacks only a subset of the batch).
        loss: ``"ce"`` (minimize cross-entropy to the target) or ``"margin"``
            (``z_t - max_{j != t} z_j``, clamp-free; Carlini & Wagner 2017).
    """

    targeted = True

    def __init__(self, target: int | str | Sequence[int] | torch.Tensor = "random", loss: str = "ce"):
        if loss not in TARGETED_LOSSES:
            raise ConfigError(f"unknown loss {loss!r} for a targeted attack",
                              fix=f"use loss= one of {', '.join(TARGETED_LOSSES)}")
        if isinstance(target, str) and target != "random":
            raise ConfigError(f"unknown target {target!r}",
                              fix="pass a class index, 'random', or one class per example")
        if isinstance(target, bool) or (isinstance(target, int) and target < 0):
            raise ConfigError(f"target must be a class index >= 0, got {target!r}", fix="pass e.g. target=0")
        self.target, self.loss_name = target, loss

    def labels(self, y: torch.Tensor, *, num_classes: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        t = self.target
        if isinstance(t, str):  # "random": y + U{1..C-1} mod C, never the true class
            if num_classes is None or num_classes < 2:
                raise ProbeError("a random target needs the number of classes (>= 2)",
                                 fix="set num_classes on the model")
            gdev = generator.device if generator is not None else y.device
            shift = torch.randint(1, num_classes, (len(y),), generator=generator, device=gdev).to(y.device)
            out = (y + shift) % num_classes
        elif isinstance(t, int):
            out = torch.full_like(y, t)
        else:
            out = torch.as_tensor(t, dtype=torch.long).to(y.device).reshape(-1)
            if out.shape[0] != y.shape[0]:
                raise ConfigError(f"{out.shape[0]} targets given for a batch of {y.shape[0]} examples",
                                  fix="pass one target per example of this batch, or an int / 'random'")
        if num_classes is not None and bool((out >= num_classes).any()):
            raise ConfigError(f"target class {int(out.max())} is out of range for {num_classes} classes",
                              fix=f"pass a class index below {num_classes}")
        return out

    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "ce":
            return -F.cross_entropy(scores, labels, reduction="none")
        return -margin_loss(scores, labels)

    def success(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return scores.argmax(dim=1) == labels

    def __repr__(self) -> str:
        t = self.target
        shown = repr(t) if isinstance(t, (int, str)) else f"<{len(t)} targets>"
        return f"Targeted({shown}, loss={self.loss_name!r})"


def as_goal(goal: Goal | str) -> Goal:
    """A :class:`Goal` from a goal or a loss name (``"ce"`` -> ``Misclassify("ce")``)."""
    if isinstance(goal, Goal):
        return goal
    if isinstance(goal, str):
        return Misclassify(goal)
    raise ConfigError(f"goal must be a Goal or a loss name, got {type(goal).__name__}",
                      fix="pass e.g. goal=Misclassify('margin') or goal='margin'")
