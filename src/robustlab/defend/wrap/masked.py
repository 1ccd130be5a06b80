"""Gradient-masking wrappers: models that *look* robust to gradient attacks without being robust.

Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security" (ICML 2018) name
three kinds of masking, one wrapper each here (``masking`` says which):

* **shattered** gradients: a non-differentiable input step (:class:`InputTransform`,
  :class:`QuantizedInput`): autograd gives zero or no gradient; broken by BPDA (``bpda_pgd``).
* **vanishing** gradients: saturated outputs (:class:`SaturatedLogits`, :class:`SoftmaxOutput`):
  the cross-entropy gradient underflows to 0; broken by margin / DLR losses or query attacks.
* **stochastic** gradients: randomness per call (:class:`RandomizedInput`): one gradient and one
  evaluation are single random draws; broken by EOT (``eot_pgd``).

Each wrapper declares what it does (``has_gradients``, ``bpda_forward``, ``randomized``), so
:func:`robustlab.evaluate.masking.run_model_checks` and the attacks can treat it honestly. They are
test subjects and teaching material, not defenses to deploy.

Example::

    model = QuantizedInput(TorchModel(net), levels=8)    # has_gradients=False, bpda_forward given
    BPDA(eps=0.1)(model, x, y, generator=g)              # PGD through the identity surrogate
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from robustlab.attacks.bpda import straight_through
from robustlab.core.errors import ConfigError
from robustlab.core.model import Model
from robustlab.core.rng import torch_generator
from robustlab.defend.wrap.base import WrappedModel

__all__ = ["InputTransform", "QuantizedInput", "RandomizedInput", "SaturatedLogits", "SoftmaxOutput", "quantize"]

TensorFn = Callable[[torch.Tensor], torch.Tensor]


def quantize(x: torch.Tensor, levels: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Round ``x`` to ``levels`` evenly spaced values in ``[low, high]`` (bit-depth reduction).

    From "Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks" (Xu, Evans &
    Qi, NDSS 2018); ``levels = 2**bits``. Differentiable in torch's sense, with gradient 0 almost
    everywhere. Shape and dtype of ``x`` are kept.
    """
    scale = (levels - 1) / (high - low)
    return ((x.clamp(low, high) - low) * scale).round() / scale + low


class InputTransform(WrappedModel):
    """``model(transform(x))`` for a non-differentiable input transformation, with a BPDA surrogate.

    The usual input-purification defense (JPEG, bit-depth reduction, thermometer encoding, ...):
    ``transform`` may be anything that maps a batch to a batch of the same shape (numpy code too,
    it runs without gradients), so the wrapper declares ``has_gradients=False``. ``bpda_forward``
    gives BPDA (Athalye et al., 2018) its differentiable view: forward values ``model(transform(x))``
    exactly, backward through ``surrogate`` (identity by default, the straight-through estimator,
    right when ``transform(x) ≈ x``).

    Args:
        model: the classifier behind the transformation.
        transform: ``(B, ...) -> (B, ...)`` in the raw input domain.
        surrogate: differentiable ``g̃`` with ``g̃(x) ≈ transform(x)``; ``None`` -> identity.
    """

    masking: ClassVar[str] = "shattered"

    def __init__(self, model: Model, transform: TensorFn, *, surrogate: TensorFn | None = None):
        super().__init__(model)
        if not callable(transform) or (surrogate is not None and not callable(surrogate)):
            raise ConfigError("InputTransform needs a callable transform (and surrogate, if given)",
                              fix="pass functions mapping a batch of inputs to a batch of the same shape")
        self.transform, self.surrogate = transform, surrogate
        self.has_gradients = False

    def _transformed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.transform(x.detach())
        return torch.as_tensor(out, dtype=x.dtype, device=x.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._transformed(x))

    def bpda_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores equal to ``self(x)`` whose input gradient is that of ``model(surrogate(x))`` at the
        transformed point (BPDA's straight-through pass); see :func:`robustlab.attacks.bpda.straight_through`."""
        return self.model(straight_through(x, self._transformed, self.surrogate))


class QuantizedInput(InputTransform):
    """Rounds inputs to ``levels`` values per coordinate before the model: shattered gradients.

    Bit-depth reduction (Xu et al., "Feature Squeezing", 2018) as a defense; Athalye et al. (2018)
    break this family with BPDA and the identity surrogate (supplied as ``bpda_forward``).

    Args:
        model: the classifier.
        levels: grid values per coordinate (>= 2); 8 = 3 bits.
        expose_gradients: ``False`` (honest, default): ``has_gradients=False``, gradient attacks
            refuse the model. ``True``: the *naive* defense, which keeps ``has_gradients=True`` and
            lets autograd differentiate ``round`` (gradient exactly 0): PGD then sees zero gradients
            and reports false robustness, the failure mode the masking checks catch.
    """

    def __init__(self, model: Model, levels: int = 8, *, expose_gradients: bool = False):
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ConfigError(f"QuantizedInput: levels must be an integer >= 2, got {levels!r}",
                              fix="pass e.g. levels=8 (3 bits) or levels=256 (8 bits)")
        lo, hi = model.low, model.high
        super().__init__(model, lambda x: quantize(x, levels, lo, hi))
        self.levels, self.expose_gradients = levels, bool(expose_gradients)
        self.has_gradients = self.expose_gradients

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.expose_gradients:  # autograd through round: zero gradient everywhere
            return self.model(quantize(x, self.levels, self.low, self.high))
        return super().__call__(x)

    def _params(self) -> str:
        return f"levels={self.levels}, expose_gradients={self.expose_gradients}"


class SaturatedLogits(WrappedModel):
    """Multiplies the logits by ``scale``: same predictions, saturated softmax, vanishing CE gradients.

    What defensive distillation at temperature T does at test time (Carlini & Wagner, "Defensive
    Distillation is Not Robust to Adversarial Examples", 2016): once ``scale * margin`` exceeds ~100
    the float32 softmax is exactly one-hot and the cross-entropy gradient is exactly 0. Margin and
    DLR losses (scale-free in direction) still work.

    Args:
        model: the classifier (logits).
        scale: factor > 0 on the scores (1000 by default).
    """

    masking: ClassVar[str] = "vanishing"

    def __init__(self, model: Model, scale: float = 1000.0):
        super().__init__(model)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ConfigError(f"SaturatedLogits: scale must be a number > 0, got {scale!r}",
                              fix="pass e.g. scale=1000")
        self.scale = float(scale)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale

    def _params(self) -> str:
        return f"scale={self.scale:g}"


class SoftmaxOutput(WrappedModel):
    """Returns probabilities instead of logits: CE applied on top takes a softmax of a softmax.

    The mistake AutoAttack checks for (Croce & Hein, 2020, ``check_range_output``): the attack's
    cross-entropy then sees scores squeezed into [0, 1], its gradient is damped by the softmax
    Jacobian ``p (1 - p)`` and vanishes on confident examples. Predictions are unchanged.
    """

    masking: ClassVar[str] = "vanishing"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


class RandomizedInput(WrappedModel):
    """Adds fresh Gaussian noise to every input on every call: stochastic outputs and gradients.

    A random-noise defense in the style of "Towards Robust Neural Networks via Random
    Self-ensemble" (Liu et al., ECCV 2018) and "Mitigating Adversarial Effects Through
    Randomization" (Xie et al., ICLR 2018): ``model(clip(x + noise * N(0, I)))``. A single gradient
    or a single evaluation is one random draw; EOT (``eot_pgd``) averages over draws.

    Args:
        model: the classifier.
        noise: standard deviation of the noise, in raw input units (>= 0).
        generator: where the noise comes from (drawn on its device); ``None`` -> a generator seeded
            with 0, so runs are reproducible. Each call advances it.
        clip: clip the noisy input to ``[low, high]``.
    """

    masking: ClassVar[str] = "stochastic"
    randomized: bool = True

    def __init__(self, model: Model, noise: float = 0.1, *, generator: torch.Generator | None = None,
                 clip: bool = True):
        super().__init__(model)
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
            raise ConfigError(f"RandomizedInput: noise must be a number >= 0, got {noise!r}",
                              fix="pass the noise standard deviation in input units, e.g. noise=0.1")
        self.noise, self.clip = float(noise), bool(clip)
        self.generator = generator if generator is not None else torch_generator(0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.randn(x.shape, generator=self.generator, device=self.generator.device, dtype=x.dtype)
        xn = x + self.noise * z.to(x.device)
        return self.model(xn.clamp(self.low, self.high) if self.clip else xn)

    def _params(self) -> str:
        return f"noise={self.noise:g}, clip={self.clip}"
