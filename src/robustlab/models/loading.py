"""Build the :class:`~robustlab.core.model.Model` a suite names: zoo entry, saved file or factory."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import torch

from robustlab.core.errors import ConfigError, ModelError
from robustlab.core.model import Model, SklearnModel, TorchModel, as_model

__all__ = ["load_model"]


def load_model(spec: Any, *, device: str = "cpu", progress: bool = True) -> Model:
    """The model described by a suite's ``model`` section (:class:`~robustlab.evaluate.suite.ModelSpec`).

    Saved torch modules are unpickled (``torch.load(weights_only=False)``): only load files you trust.
    """
    if spec.zoo:
        from robustlab.models import zoo

        return zoo.load(spec.zoo, device=device, quick=spec.quick, progress=progress)
    if spec.factory:
        return _from_factory(spec, device)
    path = Path(spec.path)
    if not path.exists():
        raise ConfigError(f"model file {path} does not exist", fix="check model.path in the suite file")
    kwargs = dict(mean=spec.mean, std=spec.std, num_classes=spec.num_classes, device=device)
    if spec.modality:
        kwargs["modality"] = spec.modality
    try:
        if spec.format == "torchscript":
            module = torch.jit.load(str(path), map_location="cpu")
            return TorchModel(module, **kwargs)
        if spec.format == "sklearn":
            with open(path, "rb") as fh:
                est = pickle.load(fh)
            return SklearnModel(est, modality=spec.modality or "tabular", num_classes=spec.num_classes)
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise ModelError(f"cannot load model file {path} as {spec.format}: {exc}",
                         fix="save the whole module with torch.save(module, path), or TorchScript with "
                             "torch.jit.save, and set model.format") from exc
    if isinstance(obj, dict):
        raise ConfigError(f"{path} holds a state_dict, not a module",
                          fix="save the module itself (torch.save(model, path)), or use model.factory "
                              "'pkg.module:build' that builds the network and loads the weights")
    return as_model(obj, **kwargs)


def _from_factory(spec: Any, device: str) -> Model:
    mod_name, _, fn_name = spec.factory.partition(":")
    if not fn_name:
        raise ConfigError(f"model.factory {spec.factory!r} must look like 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import model.factory {spec.factory!r}: {exc}",
                          fix="make the module importable (on PYTHONPATH) and check the function name") from exc
    obj = fn()
    kwargs: dict[str, Any] = {}
    if not isinstance(obj, Model) and isinstance(obj, torch.nn.Module):
        kwargs = dict(mean=spec.mean, std=spec.std, num_classes=spec.num_classes, device=device)
    model = as_model(obj, **kwargs)
    return model.to(device) if isinstance(model, Model) else model
