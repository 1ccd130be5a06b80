"""EOT: PGD on the expectation over a randomized model's randomness.

From "Synthesizing Robust Adversarial Examples" (Athalye, Engstrom, Ilyas & Kwok, ICML 2018), and
used against randomized defenses in "Obfuscated Gradients Give a False Sense of Security" (Athalye,
Carlini & Wagner, 2018): a randomized model's single gradient and single prediction are random
draws, so the attack maximizes ``E[loss]`` instead, estimating it, its gradient and the expected
scores from ``eot_samples`` forward/backward passes per step (20, as in AutoAttack's ``rand``
version, Croce & Hein 2020).

:class:`EOTGoal` wraps any :class:`~robustlab.attacks.goals.Goal`: its ``query`` averages losses,
gradients and scores over the draws, and judges success on the averaged scores, so an example is
frozen only when it fools the model in expectation, not on one lucky draw. :class:`EOTPGD` is PGD
with that goal; it is deterministic whenever the model's randomness comes from a seeded generator
(e.g. ``robustlab.defend.wrap.RandomizedInput(model, generator=...)``).
"""

from __future__ import annotations

import torch

from robustlab.attacks.bpda import bpda_view
from robustlab.attacks.goals import Evaluation, Goal
from robustlab.attacks.pgd import PGD, Target
from robustlab.attacks.search.gradient import run_attack
from robustlab.core.errors import ConfigError
from robustlab.core.model import Model
from robustlab.core.probe import AttackResult
from robustlab.core.registry import register

__all__ = ["DEFAULT_EOT_SAMPLES", "EOTPGD", "EOTGoal"]

#: draws per step, as AutoAttack's ``rand`` version (``eot_iter=20``)
DEFAULT_EOT_SAMPLES = 20


class EOTGoal(Goal):
    """A goal whose every query is the mean over ``samples`` draws of a randomized model.

    Args:
        goal: the per-draw goal (loss, success test, labels).
        samples: draws per query (>= 1); each is one counted query per example.

    ``query`` returns the mean loss (B,), the mean input gradient and the mean scores (B, C), and
    ``success`` of the inner goal on the mean scores.
    """

    def __init__(self, goal: Goal, samples: int = DEFAULT_EOT_SAMPLES):
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"eot_samples must be an integer >= 1, got {samples!r}",
                              fix=f"pass e.g. eot_samples={DEFAULT_EOT_SAMPLES}")
        self.goal, self.samples = goal, samples
        self.targeted, self.loss_name = goal.targeted, goal.loss_name

    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.goal.loss(scores, labels)

    def success(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.goal.success(scores, labels)

    def labels(self, y: torch.Tensor, *, num_classes: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        return self.goal.labels(y, num_classes=num_classes, generator=generator)

    def query(self, model: Model, x: torch.Tensor, labels: torch.Tensor, *,
              queries: torch.Tensor | None = None, index: torch.Tensor | None = None,
              grad: bool = False) -> Evaluation:
        """Mean of ``samples`` inner queries on ``x`` (B, ...); adds ``samples`` to ``queries[index]``."""
        scores = loss = g = None
        for _ in range(self.samples):  # a loop over draws, batched over examples
            ev = self.goal.query(model, x, labels, queries=queries, index=index, grad=grad)
            scores = ev.scores if scores is None else scores + ev.scores
            loss = ev.loss if loss is None else loss + ev.loss
            if grad:
                g = ev.grad if g is None else g + ev.grad
        scores, loss = scores / self.samples, loss / self.samples
        g = g / self.samples if grad else None
        return Evaluation(scores, loss, self.goal.success(scores, labels), g)

    def __repr__(self) -> str:
        return f"EOTGoal({self.goal!r}, samples={self.samples})"


@register("attack", "eot_pgd")
class EOTPGD(PGD):
    """PGD with Expectation over Transformation (Athalye, Engstrom, Ilyas & Kwok, 2018).

    Each step averages the loss gradient over ``eot_samples`` forward/backward passes of the
    (randomized) model and steps along the steepest-ascent direction of that mean; the best point is
    the one with the highest mean loss, and an example counts as broken when the mean scores
    misclassify it. Otherwise exactly :class:`~robustlab.attacks.pgd.PGD`.

    Args: as :class:`~robustlab.attacks.pgd.PGD` (``norm``, ``eps`` in raw units, ``steps``=20,
    ``alpha``, ``random_start``, ``restarts``, ``loss``, ``targeted``), plus
        eot_samples: draws per step (20, as AutoAttack's rand version).
        bpda: take gradients through the model's ``bpda_forward`` surrogate (BPDA + EOT, for
            randomized *and* non-differentiable defenses, as Athalye et al. 2018 combine them).

    Cost: at most ``restarts * (steps + 1) * eot_samples`` queries per example.

    Example::

        model = RandomizedInput(TorchModel(net), noise=0.1, generator=torch_generator(1))
        res = EOTPGD(eps=8/255, eot_samples=20)(model, x, y, generator=torch_generator(0))
    """

    def __init__(self, norm: str | float = "inf", eps: float | None = None, steps: int = 20,
                 alpha: float | None = None, random_start: bool = True, restarts: int = 1,
                 loss: str = "ce", targeted: Target | None = None, eot_samples: int = DEFAULT_EOT_SAMPLES,
                 bpda: bool = False, *, l1_quantile: float = 0.99):
        super().__init__(norm, eps, steps, alpha, random_start, restarts, loss, targeted, l1_quantile=l1_quantile)
        if not isinstance(bpda, bool):
            raise ConfigError(f"EOTPGD: bpda must be True or False, got {bpda!r}",
                              fix="pass bpda=True to differentiate through the model's bpda_forward")
        self.eot = EOTGoal(self.goal, eot_samples)
        self.bpda = bpda
        self.needs_gradients = not bpda

    @property
    def eot_samples(self) -> int:
        return self.eot.samples

    def check_model(self, model: Model) -> None:
        """Raise if ``model`` has no gradients (or, with ``bpda=True``, no ``bpda_forward``)."""
        if self.bpda:
            model.require(modality=self.modality, probe="EOTPGD")
            bpda_view(model, probe="EOTPGD(bpda=True)")
        else:
            super().check_model(model)

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """Adversarial ``x_adv`` (like ``x``) and ``queries`` (B,), ``eot_samples`` per evaluation."""
        target = bpda_view(model, probe="EOTPGD(bpda=True)") if self.bpda else model
        return run_attack(target, x, y, goal=self.eot, threat=self.threat, search=self.search,
                          generator=generator, name="EOTPGD")

    def __repr__(self) -> str:
        return "EOT" + super().__repr__()[:-1] + f", eot_samples={self.eot_samples}, bpda={self.bpda})"
