"""PGD adversarial training (PGD-AT): minimize the cross-entropy on PGD adversarial examples.

From "Towards Deep Learning Models Resistant to Adversarial Attacks" (Madry, Makelov, Schmidt,
Tsipras & Vladu, ICLR 2018): the saddle-point problem ``min_theta E max_{x' in B(x, eps)} CE(f(x'), y)``,
with the inner maximization approximated by PGD from a uniform random start in the ball.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlab.attacks.goals import Misclassify
from robustlab.attacks.search.gradient import default_alpha, sample_start, steepest_direction
from robustlab.core.model import TorchModel
from robustlab.core.registry import register
from robustlab.core.threat import LpBall
from robustlab.defend.train.adversarial import AdversarialTraining, BatchLoss

__all__ = ["PGDAT", "pgd_examples"]

_CE = Misclassify("ce")


def pgd_examples(model: TorchModel, x: torch.Tensor, y: torch.Tensor, threat: LpBall, *, steps: int,
                 alpha: float, generator: torch.Generator, random_start: bool = True) -> torch.Tensor:
    """PGD inputs for training: ``steps`` ascent steps on the CE loss, every example, no early stop.

    Unlike :class:`robustlab.attacks.pgd.PGD` (an evaluation attack that freezes an example at its
    first misclassified point), training uses the end point of all ``steps`` steps, as Madry et al.
    do: the inner maximization wants high loss, not just a wrong label. Each step is
    ``x <- project(x + alpha * d)`` with ``d = sign(g)`` (L∞) or ``g / ||g||_2`` (L2). The caller sets
    the module's mode (eval, see :mod:`robustlab.defend.train.adversarial`); parameter ``.grad`` are
    never touched.

    Args:
        model: the classifier (raw inputs); ``x`` (B, ...) and ``y`` (B,) on ``model.device``.
        threat: the ball (radius in raw units); ``eps == 0`` returns ``x``.
        steps: ascent steps; ``alpha``: step size in raw units (L∞ per pixel, L2 the step's norm).
        generator: draws the uniform random start in the ball (``random_start``).

    Returns: adversarial inputs like ``x``, inside ``threat`` around ``x`` (detached).
    """
    x = x.detach()
    if threat.eps == 0 or x.shape[0] == 0:
        return x.clone()
    xa = sample_start(threat, x, generator) if random_start else x.clone()
    for _ in range(steps):
        grad = _CE.query(model, xa, y, grad=True).grad
        xa = threat.project(x, xa + alpha * steepest_direction(grad, threat.norm).to(xa.dtype))
    return xa.detach()


@register("defense", "pgd_at")
@dataclass(frozen=True)
class PGDAT(AdversarialTraining):
    """PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", 2018) in an L∞ or L2 ball, with an eps warm-up.

    Every step: PGD with a uniform random start and ``steps`` iterations of size ``alpha`` against the
    current model in eval mode (BatchNorm running statistics, not updated by the attack), then one
    optimizer step on ``CE(f(x_adv), y)`` with the module in train mode (adversarial examples only,
    as in the paper).

    Defaults: ``steps=10`` and ``alpha = 2.5 * eps / steps`` (Madry et al.'s rule, also
    :func:`robustlab.attacks.search.gradient.default_alpha`; the paper used 40 steps of 0.01 at eps 0.3
    on MNIST and 7 steps of 2/255 at eps 8/255 on CIFAR-10). The linear eps warm-up (a third of the
    epochs by default) is not in the paper; it is the common stabilizer for small networks and short
    schedules (pass ``warmup_epochs=0`` for the paper's constant eps). The other arguments are those
    of :class:`~robustlab.defend.train.adversarial.AdversarialTraining`.

    Cost: ``steps + 1`` forward/backward passes per training example per epoch (plus one clean
    forward for the clean-accuracy counter).

    Example::

        defended = PGDAT(epochs=20, batch_size=64).train(net, train_data, LpBall("inf", 0.1))
    """

    name = "pgd_at"

    def default_alpha(self, norm: str, eps: float) -> float:
        return default_alpha(eps, self.steps)

    def batch_loss(self, model: TorchModel, x: torch.Tensor, y: torch.Tensor, threat: LpBall, alpha: float,
                   generator: torch.Generator) -> BatchLoss:
        module = model.module
        module.eval()
        with torch.no_grad():
            clean_correct = (model(x).argmax(1) == y).sum()
        x_adv = pgd_examples(model, x, y, threat, steps=self.steps, alpha=alpha, generator=generator)
        module.train()
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        return BatchLoss(loss, clean_correct, (logits.detach().argmax(1) == y).sum())
