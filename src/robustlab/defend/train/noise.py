"""Gaussian noise augmentation: train the base classifier of randomized smoothing on noisy inputs.

From "Certified Adversarial Robustness via Randomized Smoothing" (Cohen, Rosenfeld & Kolter, ICML
2019, Section 4 / Appendix): the smoothed classifier ``g`` is only as good as the base classifier
``f`` is on ``x + N(0, sigma^2 I)``, so ``f`` is trained with cross-entropy on inputs that get fresh
Gaussian noise every step (``sigma`` the same as at certification, noise in the raw input domain,
not clipped, one noise draw per example per step), as in the paper's code (``locuslab/smoothing``,
``code/train.py``). Every other choice (optimizer, schedule, epochs) is
:func:`robustlab.models.training.train_classifier`'s; the paper trained ResNets with SGD for 90
epochs, which this CPU library replaces by the caller's budget.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustlab.certify.smoothing import noise_augment
from robustlab.core.errors import ConfigError
from robustlab.core.model import Model, TorchModel
from robustlab.core.probe import Defense
from robustlab.core.registry import register
from robustlab.core.threat import ThreatModel
from robustlab.data.base import Dataset
from robustlab.defend.train.adversarial import as_torch_model

__all__ = ["GaussianAugmentation", "gaussian_augmentation_train"]


def _check_sigma(sigma: Any) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"gaussian augmentation: sigma must be a finite number >= 0, got {sigma!r}",
                          fix="pass the smoothing noise level in raw input units, e.g. sigma=0.25")
    return float(sigma)


def gaussian_augmentation_train(model: nn.Module | TorchModel, data: Dataset, sigma: float, *, epochs: int = 10,
                                batch_size: int = 128, lr: float = 0.05, seed: int = 0,
                                device: str | torch.device | None = None, progress: bool = False,
                                **kwargs: Any) -> dict[str, Any]:
    """Train ``model`` in place on ``x + N(0, sigma^2 I)`` (Cohen et al., "Certified Adversarial Robustness
    via Randomized Smoothing", 2019).

    Args:
        model: an ``nn.Module`` on raw inputs or a :class:`TorchModel` (normalization inside).
        data: tensor data ``x (N, ...)`` in raw units, labels ``y (N,)``.
        sigma: noise standard deviation in raw input units (use the certification sigma; 0 = standard
            training).
        epochs, batch_size, lr, seed, device, progress, **kwargs: as in
            :func:`robustlab.models.training.train_classifier` (``seed`` sets the initialization when
            ``init=True`` (default), the shuffling and the noise).

    Returns: the per-epoch training history (``loss``, ``acc`` on noisy batches, ...), with ``sigma``.

    Example::

        hist = gaussian_augmentation_train(net, load_dataset("digits", split="train"), sigma=0.25, epochs=20)
    """
    from robustlab.models.training import train_classifier

    sigma = _check_sigma(sigma)
    if "augment" in kwargs:
        raise ConfigError("gaussian_augmentation_train adds its own noise augmentation",
                          fix="call robustlab.models.training.train_classifier with a composed augment")
    if device is None:
        device = as_torch_model(model).device
    hist = train_classifier(model, data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                            progress=progress, augment=noise_augment(sigma),
                            description=f"gaussian augmentation sigma={sigma:g}", **kwargs)
    hist["sigma"] = sigma
    return hist


@register("defense", "gaussian_augmentation")
@dataclass(frozen=True)
class GaussianAugmentation(Defense):
    """Gaussian noise-augmented training, the base classifier of randomized smoothing (Cohen et al., 2019).

    ``train(model, data, threat)`` returns a trained *copy* (the input is left as it was); the threat
    model is not used (the certificate is for L2 balls whose radius comes from ``sigma``), so pass
    ``None`` or the L2 ball you will certify. Certify the result with
    :class:`robustlab.certify.smoothing.RandomizedSmoothing` at the same ``sigma``.

    Args:
        sigma: noise standard deviation in raw input units (paper: 0.12, 0.25, 0.5, 1.0).
        epochs, batch_size, lr, weight_decay, seed: training settings
            (:func:`robustlab.models.training.train_classifier`).
        init: re-initialize the weights from ``seed`` (training from scratch, as in the paper).
    """

    sigma: float = 0.25
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    seed: int = 0
    init: bool = True
    device: str | None = None
    progress: bool = False

    name = "gaussian_augmentation"

    def __post_init__(self) -> None:
        _check_sigma(self.sigma)
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(f"GaussianAugmentation: epochs={self.epochs}, batch_size={self.batch_size}, "
                              f"lr={self.lr} must be > 0", fix="pass positive epochs, batch_size and lr")

    def train(self, model: Model | nn.Module, data: Dataset, threat: ThreatModel | None = None) -> TorchModel:
        """A copy of ``model`` trained with Gaussian noise augmentation; history in ``.train_history``."""
        trained = as_torch_model(copy.deepcopy(model), self.device)
        hist = gaussian_augmentation_train(trained, data, self.sigma, epochs=self.epochs, batch_size=self.batch_size,
                                           lr=self.lr, weight_decay=self.weight_decay, seed=self.seed,
                                           device=trained.device, progress=self.progress, init=self.init)
        trained.train_history = hist  # type: ignore[attr-defined]
        return trained
