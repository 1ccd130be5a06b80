"""A generic, seeded supervised trainer for classifiers, with a rich progress bar.

Same seed, same data, same device and thread count -> the same weights: initialization runs under
``torch.random.fork_rng`` (the caller's global RNG state is left untouched), shuffling and
augmentation draw from their own ``torch.Generator``. The trainer writes no files, so an interrupt
(Ctrl-C) simply propagates; the caller decides what to persist.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.model import TorchModel
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.data.base import Dataset

__all__ = ["Augment", "evaluate_accuracy", "gaussian_noise", "init_parameters", "make_augment", "random_shift_flip",
           "train_classifier"]

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""A batched augmentation ``(x (B, C, H, W), generator) -> x`` on raw inputs."""


def random_shift_flip(max_shift: int = 2, flip: bool = False) -> Augment:
    """Random translation by up to ``max_shift`` pixels (zero padding) and optional horizontal flip.

    The standard CIFAR augmentation ("Deep Residual Learning for Image Recognition", He et al., 2016:
    pad-and-crop plus flips), vectorised over the batch (one gather, no per-example loop).

    Args:
        max_shift: largest shift in pixels along each axis.
        flip: also flip left-right with probability 1/2 (only where the label allows it).
    """
    if max_shift < 0:
        raise ConfigError(f"random_shift_flip: max_shift must be >= 0, got {max_shift}")

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        dev = generator.device
        if max_shift:
            p = max_shift
            padded = F.pad(x, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=dev).to(x.device)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=dev).to(x.device)
            rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
            bi = torch.arange(b, device=x.device)[:, None, None, None]
            ci = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[bi, ci, rows, cols]
        if flip:
            mask = torch.rand(b, generator=generator, device=dev).to(x.device) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        return x

    return augment


def gaussian_noise(sigma: float) -> Augment:
    """Add N(0, sigma^2) noise per pixel and clip to [0, 1] (``sigma`` in raw pixel units)."""
    if sigma < 0:
        raise ConfigError(f"gaussian_noise: sigma must be >= 0, got {sigma}")

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
        return (x + sigma * noise).clamp(0.0, 1.0)

    return augment


def make_augment(spec: dict[str, Any] | None) -> Augment | None:
    """An augmentation from a config dict ``{"max_shift": int, "flip": bool, "noise": float}`` (all optional).

    Shift and flip come first, then Gaussian noise; ``None`` or ``{}`` means no augmentation.
    """
    if not spec:
        return None
    unknown = sorted(set(spec) - {"max_shift", "flip", "noise"})
    if unknown:
        raise ConfigError(f"unknown augmentation setting(s) {unknown}", fix="use max_shift, flip and noise")
    steps: list[Augment] = []
    if spec.get("max_shift", 0) or spec.get("flip", False):
        steps.append(random_shift_flip(int(spec.get("max_shift", 0)), bool(spec.get("flip", False))))
    if spec.get("noise", 0.0):
        steps.append(gaussian_noise(float(spec["noise"])))

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in steps:
            x = step(x, generator)
        return x

    return augment


@contextmanager
def _progress_bar(enabled: bool, description: str) -> Iterator[Any]:
    """A transient rich progress bar (a no-op object when disabled)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                  transient=True, disable=not enabled) as bar:
        yield bar


def _forward_fn(model: nn.Module | TorchModel) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    if isinstance(model, TorchModel):
        return model.module, model.__call__
    if isinstance(model, nn.Module):
        return model, model
    raise ConfigError(f"train_classifier needs a torch nn.Module or TorchModel, got {type(model).__name__}",
                      fix="pass the network (or robustlab.TorchModel) to train")


@torch.no_grad()
def evaluate_accuracy(model: nn.Module | TorchModel, data: Dataset, *, batch_size: int = 512,
                      device: str | torch.device | None = None) -> float:
    """Clean accuracy (fraction in [0, 1]) of ``model`` on ``data``, in eval mode, batched."""
    module, fwd = _forward_fn(model)
    dev = torch.device(device) if device is not None else next(module.parameters()).device
    was_training = module.training
    module.eval()
    correct = 0
    try:
        for i in range(0, len(data), batch_size):
            xb = data.x[i:i + batch_size].to(dev)
            correct += int((fwd(xb).argmax(1).cpu() == data.y[i:i + batch_size]).sum())
    finally:
        module.train(was_training)
    return correct / max(len(data), 1)


def _make_optimizer(params: Any, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}", fix="use optimizer='sgd' or 'adamw'")


def _lr_factor(schedule: str, step: int, total: int, warmup: float) -> float:
    """Learning-rate multiplier at ``step`` of ``total``: linear warmup, then cosine decay to 0."""
    if schedule == "constant":
        return 1.0
    w = round(warmup * total) if schedule == "onecycle" else 0
    if step < w:
        return (step + 1) / w
    t = (step - w) / max(total - w, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def train_classifier(
    model: nn.Module | TorchModel,
    train: Dataset,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    augment: Augment | None = None,
    val: Dataset | None = None,
    optimizer: str = "sgd",
    schedule: str = "onecycle",
    warmup: float = 0.15,
    label_smoothing: float = 0.0,
    description: str = "training",
    init: bool = True,
) -> dict[str, Any]:
    """Train a classifier with cross-entropy, in place; returns the per-epoch history.

    Optimizer: SGD with Nesterov momentum 0.9, or AdamW. Schedule: ``"onecycle"`` (linear warmup over
    ``warmup`` of the steps, then cosine decay to 0; "Super-Convergence", Smith & Topin, 2019),
    ``"cosine"`` (cosine decay, "SGDR", Loshchilov & Hutter, 2017) or ``"constant"``; the rate is
    updated every step.

    Args:
        model: an ``nn.Module`` taking raw inputs, or a :class:`TorchModel` (trained through its
            normalization; only ``model.module``'s parameters are updated).
        train: image/tabular training data ``x (N, ...)`` in [0, 1], labels ``y (N,)``.
        epochs: passes over ``train``.
        batch_size: examples per step (the last, smaller batch is dropped when there is more than one).
        lr: peak learning rate.
        weight_decay: L2 / decoupled weight decay.
        seed: determines initialization (when ``init``), shuffling and augmentation.
        device: where to train.
        progress: show a transient rich progress bar with epoch, loss and accuracy.
        augment: optional batched augmentation ``(x, generator) -> x`` (e.g. :func:`random_shift_flip`).
        val: optional validation data, evaluated after every epoch.
        init: re-initialize every parameter from ``seed`` first (``reset_parameters``), so the result
            does not depend on how the module was constructed.

    Returns:
        ``{"loss": [...], "acc": [...], "val_acc": [...], "lr": [...], "epochs", "steps", "seconds"}``:
        mean training loss and accuracy per epoch (accuracy on augmented batches in train mode).
    """
    if not isinstance(train.x, torch.Tensor):
        raise DataError(f"train_classifier needs tensor inputs; dataset {train.name!r} is {train.modality}",
                        fix="use a scikit-learn pipeline for text, or encode the text as tensors first")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ConfigError(f"train_classifier: epochs={epochs}, batch_size={batch_size}, lr={lr} must be > 0",
                          fix="pass positive epochs, batch_size and lr")
    if schedule not in ("onecycle", "cosine", "constant"):
        raise ConfigError(f"unknown schedule {schedule!r}", fix="use 'onecycle', 'cosine' or 'constant'")
    module, fwd = _forward_fn(model)
    dev = torch.device(device)
    if isinstance(model, TorchModel):
        model.to(dev)
    else:
        module.to(dev)
    if init:
        init_parameters(module, seed)
    opt = _make_optimizer(module.parameters(), optimizer, lr, weight_decay)
    shuffle = torch_generator(derive_seed(seed, "shuffle"))
    aug_gen = torch_generator(derive_seed(seed, "augment"), dev)
    n = len(train)
    xs, ys = train.x.to(dev), train.y.to(dev)  # once, not per step (a no-op on CPU)
    steps_per_epoch = max(n // batch_size, 1)
    total = steps_per_epoch * epochs
    history: dict[str, Any] = {"loss": [], "acc": [], "val_acc": [], "lr": [], "epochs": epochs,
                               "steps": total, "seconds": 0.0}
    start = time.perf_counter()
    step = 0
    module.train()
    try:
        with _progress_bar(progress, description) as bar:
            task = bar.add_task(description, total=total, status="")
            for epoch in range(epochs):
                order = torch.randperm(n, generator=shuffle)
                loss_sum = torch.zeros((), device=dev)
                correct = torch.zeros((), device=dev, dtype=torch.long)
                seen = 0
                for i in range(steps_per_epoch):
                    idx = order[i * batch_size:(i + 1) * batch_size] if steps_per_epoch > 1 else order
                    idx = idx.to(dev)
                    xb, yb = xs[idx], ys[idx]
                    if augment is not None:
                        xb = augment(xb, aug_gen)
                    for group in opt.param_groups:
                        group["lr"] = lr * _lr_factor(schedule, step, total, warmup)
                    logits = fwd(xb)
                    loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    loss_sum += loss.detach() * len(yb)
                    correct += (logits.detach().argmax(1) == yb).sum()
                    seen += len(yb)
                    if progress and (i % 10 == 0 or i == steps_per_epoch - 1):
                        bar.update(task, status=f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f}")
                    bar.update(task, advance=1)
                history["loss"].append(float(loss_sum) / seen)
                history["acc"].append(int(correct) / seen)
                history["lr"].append(opt.param_groups[0]["lr"])
                status = (f"epoch {epoch + 1}/{epochs} loss {history['loss'][-1]:.3f} "
                          f"acc {history['acc'][-1]:.3f}")
                if val is not None:
                    history["val_acc"].append(evaluate_accuracy(model, val, device=dev))
                    module.train()
                    status += f" val {history['val_acc'][-1]:.3f}"
                bar.update(task, status=status)
    finally:
        module.eval()
        history["seconds"] = time.perf_counter() - start
    return history


def init_parameters(module: nn.Module, seed: int) -> None:
    """Re-initialize every parameter from ``seed`` (``reset_parameters``, then any ``_init_weights``).

    Runs under ``torch.random.fork_rng``, so the global RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        _reinit_hook(module)


def _reinit_hook(module: nn.Module) -> None:
    """Re-apply custom initializations (any submodule's ``_init_weights``) after ``reset_parameters``."""
    for m in module.modules():
        fn = getattr(m, "_init_weights", None)
        if callable(fn):
            fn()
