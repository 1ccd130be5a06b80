"""``WrappedModel``: a :class:`~robustlab.core.model.Model` around another, inheriting its declarations."""

from __future__ import annotations

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.model import Model

__all__ = ["WrappedModel"]


class WrappedModel(Model):
    """Base of inference-time wrappers: keeps the inner ``model`` and copies its task, modality,
    ``num_classes``, input domain, device and ``has_gradients`` (a subclass overrides what it changes).

    Args:
        model: the wrapped :class:`Model` (e.g. a ``TorchModel``).
    """

    def __init__(self, model: Model):
        if not isinstance(model, Model):
            raise ConfigError(f"{type(self).__name__} wraps a robustlab Model, got {type(model).__name__}",
                              fix="wrap the network first: robustlab.core.model.as_model(net) or TorchModel(net)")
        self.model = model
        self.task, self.modality, self.num_classes = model.task, model.modality, model.num_classes
        self.low, self.high, self.device = model.low, model.high, model.device
        self.has_gradients = model.has_gradients

    def to(self, device: str | torch.device) -> WrappedModel:
        self.model.to(device)
        self.device = self.model.device
        return self

    def _params(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self._params()
        return f"{type(self).__name__}({self.model!r}{', ' + extra if extra else ''})"
