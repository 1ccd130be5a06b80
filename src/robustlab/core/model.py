"""``Model``: any model behind one call, ``model(x) -> scores``, with declared capabilities.

Inputs are always *raw* (pixels in [0, 1], strings): normalization lives inside the model (the
RobustBench habit), so attacks, transforms and certifiers never see normalized tensors. Outputs of a
classifier are ``(batch, num_classes)`` scores whose argmax is the prediction (logits where the model
has them; log-probabilities for scikit-learn estimators).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.core.errors import ConfigError, ModelError

__all__ = ["Model", "TorchModel", "SklearnModel", "CallableModel", "as_model", "checked_scores"]

Inputs = Any  # a tensor for images / tabular data, a list of strings for text


class Model(ABC):
    """A model with declared capabilities.

    Attributes:
        task: what it does (``"classify"``, later ``"rank"``, ``"generate"``, ``"detect"``).
        modality: the input kind: ``"image"``, ``"tabular"`` or ``"text"``.
        has_gradients: whether ``scores`` are differentiable w.r.t. the input (white-box attacks).
        num_classes: size of the output (``None`` if unknown until the first call).
        low, high: the raw input domain for tensors.
    """

    task: str = "classify"
    modality: str = "image"
    has_gradients: bool = False
    num_classes: int | None = None
    low: float = 0.0
    high: float = 1.0
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def __call__(self, x: Inputs) -> torch.Tensor:
        """Scores ``(batch, num_classes)`` for a batch of raw inputs."""

    def to(self, device: str | torch.device) -> Model:
        """Move to ``device`` (only records it for models that are not torch; checks CUDA exists)."""
        self.device = _check_device(device)
        return self

    def predict(self, x: Inputs, batch_size: int = 512) -> torch.Tensor:
        """Predicted labels, computed in batches with output checks."""
        return checked_scores(self, x, batch_size=batch_size).argmax(dim=1)

    def require(self, *, gradients: bool = False, modality: str | None = None, probe: str = "probe") -> None:
        """Raise one clear error if this model lacks what ``probe`` needs."""
        from robustlab.core.errors import UnsupportedModelError

        if gradients and not self.has_gradients:
            raise UnsupportedModelError(
                f"{probe} needs input gradients but {type(self).__name__} declares has_gradients=False",
                fix="use a query-based attack (e.g. square) or wrap a differentiable torch model",
            )
        if modality is not None and modality != self.modality:
            raise UnsupportedModelError(
                f"{probe} works on {modality} inputs but the model takes {self.modality} inputs",
                fix=f"pick a probe made for {self.modality} data (see `robustlab list`)",
            )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(task={self.task!r}, modality={self.modality!r}, "
                f"num_classes={self.num_classes}, has_gradients={self.has_gradients})")


class TorchModel(Model):
    """A torch ``nn.Module`` classifier with optional per-channel ``mean``/``std`` normalization inside.

    Example::

        model = TorchModel(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=10)
        logits = model(x)          # x in [0, 1], shape (B, 3, H, W)
    """

    has_gradients = True

    def __init__(self, module: nn.Module, *, mean: Sequence[float] | float | None = None,
                 std: Sequence[float] | float | None = None, num_classes: int | None = None,
                 modality: str = "image", device: str | torch.device = "cpu",
                 low: float = 0.0, high: float = 1.0):
        if not isinstance(module, nn.Module):
            raise ConfigError(f"TorchModel needs a torch.nn.Module, got {type(module).__name__}",
                              fix="pass the network itself, or use CallableModel for a plain function")
        self.module = module.eval()
        self.modality, self.num_classes, self.low, self.high = modality, num_classes, low, high
        self._mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        self._std = None if std is None else torch.as_tensor(std, dtype=torch.float32)
        if self._std is not None and bool((self._std <= 0).any()):
            raise ConfigError("TorchModel std must be > 0", fix="pass the dataset's per-channel std")
        self.to(device)

    def to(self, device: str | torch.device) -> TorchModel:
        self.device = _check_device(device)
        self.module.to(self.device)
        if self._mean is not None:
            self._mean = self._mean.to(self.device)
        if self._std is not None:
            self._std = self._std.to(self.device)
        return self

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self._mean is None and self._std is None:
            return x
        shape = (1, -1) + (1,) * (x.dim() - 2) if x.dim() > 2 else (1, -1)
        if self._mean is not None:
            x = x - (self._mean.view(shape) if self._mean.dim() else self._mean)
        if self._std is not None:
            x = x / (self._std.view(shape) if self._std.dim() else self._std)
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self._normalize(x))


class SklearnModel(Model):
    """A scikit-learn estimator (``predict_proba`` or ``decision_function``); no input gradients.

    Scores are log-probabilities (``predict_proba``) or decision values; images are flattened.
    Text pipelines (e.g. TF-IDF + logistic regression) take a list of strings.
    """

    has_gradients = False

    def __init__(self, estimator: Any, *, modality: str = "tabular", num_classes: int | None = None):
        if not (hasattr(estimator, "predict_proba") or hasattr(estimator, "decision_function")):
            raise ConfigError(f"{type(estimator).__name__} has neither predict_proba nor decision_function",
                              fix="pass a fitted scikit-learn classifier")
        self.estimator, self.modality = estimator, modality
        classes = getattr(estimator, "classes_", None)
        self.num_classes = num_classes or (len(classes) if classes is not None else None)

    def __call__(self, x: Inputs) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().reshape(x.shape[0], -1).numpy()
        if hasattr(self.estimator, "predict_proba"):
            s = np.log(np.clip(self.estimator.predict_proba(x), 1e-12, 1.0))
        else:
            s = np.asarray(self.estimator.decision_function(x), dtype=np.float64)
            if s.ndim == 1:
                s = np.stack([-s / 2, s / 2], axis=1)
        return torch.as_tensor(s, dtype=torch.float32, device=self.device)


class CallableModel(Model):
    """A plain function ``fn(x) -> scores`` (tensor or array-like).

    Declare ``has_gradients=True`` only if ``fn`` is differentiable torch code.
    """

    def __init__(self, fn: Callable[[Inputs], Any], *, num_classes: int | None = None,
                 modality: str = "image", has_gradients: bool = False, low: float = 0.0, high: float = 1.0):
        if not callable(fn):
            raise ConfigError(f"CallableModel needs a callable, got {type(fn).__name__}")
        self.fn, self.num_classes, self.modality = fn, num_classes, modality
        self.has_gradients, self.low, self.high = has_gradients, low, high

    def __call__(self, x: Inputs) -> torch.Tensor:
        out = self.fn(x)
        return out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out), dtype=torch.float32)


def as_model(obj: Any, **kwargs: Any) -> Model:
    """Wrap ``obj`` (a Model, ``nn.Module``, scikit-learn estimator or callable) as a :class:`Model`."""
    if isinstance(obj, Model):
        return obj
    if isinstance(obj, nn.Module):
        return TorchModel(obj, **kwargs)
    if hasattr(obj, "predict_proba") or hasattr(obj, "decision_function"):
        return SklearnModel(obj, **kwargs)
    if callable(obj):
        return CallableModel(obj, **kwargs)
    raise ConfigError(f"cannot use a {type(obj).__name__} as a model",
                      fix="pass a torch nn.Module, a fitted scikit-learn classifier, or a callable x -> scores")


def _check_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available",
                          fix="run with --device cpu, or on a machine with a GPU and a CUDA build of torch")
    return dev


def _slice(x: Inputs, i: int, j: int) -> Inputs:
    return x[i:j]


def checked_scores(model: Model, x: Inputs, batch_size: int = 512) -> torch.Tensor:
    """Scores for all of ``x`` in batches, without gradients, checking what the model returns.

    Raises :class:`ModelError` (with the fix) if the model raises, returns non-finite values, or
    returns a shape other than ``(batch, num_classes)``.
    """
    n = x.shape[0] if isinstance(x, torch.Tensor) else len(x)
    outs = []
    with torch.no_grad():
        for i in range(0, n, batch_size):
            xb = _slice(x, i, i + batch_size)
            if isinstance(xb, torch.Tensor):
                xb = xb.to(model.device)
            try:
                s = model(xb)
            except Exception as exc:  # the user's model raised: say so, keep the cause
                raise ModelError(
                    f"the model raised {type(exc).__name__} on a batch of {len(xb)} inputs: {exc}",
                    fix="check that the model accepts raw inputs of this shape/type (normalization belongs "
                        "inside the model)",
                ) from exc
            if not isinstance(s, torch.Tensor):
                s = torch.as_tensor(np.asarray(s), dtype=torch.float32)
            if s.dim() != 2 or s.shape[0] != len(xb):
                raise ModelError(f"the model returned shape {tuple(s.shape)} for {len(xb)} inputs",
                                 fix="return scores of shape (batch, num_classes)")
            if model.num_classes is not None and s.shape[1] != model.num_classes:
                raise ModelError(f"the model returned {s.shape[1]} scores but declares {model.num_classes} classes",
                                 fix="set num_classes to the number of outputs")
            if not bool(torch.isfinite(s).all()):
                bad = int((~torch.isfinite(s)).any(dim=1).sum())
                raise ModelError(f"the model returned NaN or infinite scores for {bad} of {len(xb)} inputs",
                                 fix="check the inputs' range ([0,1] raw pixels) and the model's numerics")
            outs.append(s.detach().float().cpu())
    if not outs:
        return torch.empty(0, model.num_classes or 0)
    return outs[0] if len(outs) == 1 else torch.cat(outs)
