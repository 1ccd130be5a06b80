"""The shared, seeded adversarial-training loop behind PGD-AT and TRADES, with an eps warm-up.

Each step crafts adversarial inputs against the *current* model with the module in eval mode
(BatchNorm uses its running statistics and is not updated by the attack's forward passes; the
common practice of RobustBench-style training code and of TRADES' official code), then switches the
module back to train mode and takes one optimizer step on the method's loss. Everything happens in
the raw input domain: a :class:`~robustlab.core.model.TorchModel` keeps its normalization inside,
and only its ``module`` is trained.

Determinism: same seed, data, device and thread count -> the same weights. Initialization runs under
``torch.random.fork_rng`` (the caller's global RNG is untouched); shuffling, augmentation and the
attacks' random starts draw from their own ``torch.Generator`` s. The loop writes no files, so an
interrupt (Ctrl-C) simply propagates; the zoo writes its cache atomically afterwards.
"""

from __future__ import annotations

import copy
import math
import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from robustlab.core.errors import ConfigError, DataError, UnsupportedModelError
from robustlab.core.model import Model, TorchModel
from robustlab.core.probe import Defense
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.core.threat import LpBall, ThreatModel, parse_norm
from robustlab.data.base import Dataset
from robustlab.models.training import (
    Augment,
    _lr_factor,
    _make_optimizer,
    _progress_bar,
    evaluate_accuracy,
    init_parameters,
)

__all__ = ["AdversarialTraining", "BatchLoss", "adversarial_train", "as_torch_model", "robust_accuracy",
           "warmup_eps"]


def warmup_eps(eps: float, epoch: float, warmup_epochs: float) -> float:
    """The training radius after ``epoch`` (fractional) epochs: a linear ramp from 0 to ``eps``.

    ``eps * min(1, epoch / warmup_epochs)``; ``warmup_epochs <= 0`` means no warm-up. The loop calls it
    once per optimizer step with ``epoch = (step + 1) / steps_per_epoch``, so the first step already
    uses a small non-zero radius and the target is reached at the end of epoch ``warmup_epochs``.
    """
    if warmup_epochs <= 0:
        return float(eps)
    return float(eps) * min(1.0, max(float(epoch), 0.0) / float(warmup_epochs))


def as_torch_model(model: nn.Module | TorchModel, device: str | torch.device | None = None) -> TorchModel:
    """``model`` as a :class:`TorchModel` on ``device`` (an ``nn.Module`` is wrapped without normalization,
    sharing its parameters); anything else raises :class:`UnsupportedModelError`."""
    if isinstance(model, TorchModel):
        return model.to(device) if device is not None else model
    if isinstance(model, nn.Module):
        if device is None:
            device = next(model.parameters(), torch.empty(0)).device
        return TorchModel(model, device=device)
    if isinstance(model, Model):
        raise UnsupportedModelError(f"adversarial training needs a torch model, got {type(model).__name__}",
                                    fix="train the underlying nn.Module (or a robustlab TorchModel)")
    raise ConfigError(f"adversarial training needs an nn.Module or TorchModel, got {type(model).__name__}",
                      fix="pass the network (or robustlab.TorchModel) to train")


class BatchLoss(NamedTuple):
    """One training step's result: the scalar ``loss`` to minimize (with graph) and the number of
    clean-correct and adversarially-correct examples of the batch (long scalars, no graph)."""

    loss: torch.Tensor
    clean_correct: torch.Tensor
    adv_correct: torch.Tensor


@dataclass(frozen=True)
class AdversarialTraining(Defense):
    """Base of the adversarial trainers: the loop, its settings, and ``Defense.train``.

    Subclasses implement :meth:`batch_loss` (craft adversarial inputs, return the loss).

    Args:
        steps: attack iterations per training step (>= 1).
        alpha: attack step size in raw units at the target ``eps`` (scaled with eps during the
            warm-up); ``None`` -> the method's default.
        epochs: passes over the training data.
        batch_size: examples per step (the last, smaller batch is dropped when there is more than one).
        lr: peak learning rate; ``weight_decay``: L2 (SGD) / decoupled (AdamW) weight decay.
        warmup_epochs: epochs of the linear eps ramp 0 -> eps (:func:`warmup_eps`); ``None`` -> a
            third of ``epochs``; 0 -> none.
        optimizer: ``"sgd"`` (Nesterov momentum 0.9) or ``"adamw"``; ``schedule``: ``"onecycle"``,
            ``"cosine"`` or ``"constant"`` with ``lr_warmup`` (fraction of steps) as in
            :func:`robustlab.models.training.train_classifier`.
        seed: initialization (when ``init``), shuffling, augmentation and attack random starts.
        init: re-initialize every parameter from ``seed`` first (training from scratch, as in both
            papers); ``False`` fine-tunes the given weights.
        device: where to train; ``None`` -> the model's device (``"cpu"`` for a bare module).
        progress: show a transient rich progress bar (eps, loss, clean and adversarial accuracy).
    """

    steps: int = 10
    alpha: float | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    warmup_epochs: float | None = None
    optimizer: str = "sgd"
    schedule: str = "onecycle"
    lr_warmup: float = 0.15
    seed: int = 0
    init: bool = True
    device: str | None = None
    progress: bool = True

    name = "adversarial"

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"{type(self).__name__}: steps must be an integer >= 1, got {self.steps!r}",
                              fix="pass e.g. steps=10")
        if self.alpha is not None and not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)
                                           and self.alpha > 0):
            raise ConfigError(f"{type(self).__name__}: alpha must be > 0 or None, got {self.alpha!r}",
                              fix="leave alpha=None for the method's default step size")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(f"{type(self).__name__}: epochs={self.epochs}, batch_size={self.batch_size}, "
                              f"lr={self.lr} must be > 0", fix="pass positive epochs, batch_size and lr")
        if self.warmup_epochs is not None and not self.warmup_epochs >= 0:
            raise ConfigError(f"warmup_epochs must be >= 0 or None, got {self.warmup_epochs!r}",
                              fix="pass e.g. warmup_epochs=3, or 0 for no eps warm-up")
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise ConfigError(f"unknown schedule {self.schedule!r}", fix="use 'onecycle', 'cosine' or 'constant'")

    @abstractmethod
    def default_alpha(self, norm: str, eps: float) -> float:
        """The method's attack step size at radius ``eps``."""

    @abstractmethod
    def batch_loss(self, model: TorchModel, x: torch.Tensor, y: torch.Tensor, threat: LpBall, alpha: float,
                   generator: torch.Generator) -> BatchLoss:
        """Craft adversarial inputs for ``(x, y)`` (module in eval mode), then return the training loss
        computed with the module in train mode. ``threat`` is the current (warmed-up) ball."""

    def train(self, model: Model | nn.Module, data: Dataset, threat: ThreatModel) -> TorchModel:
        """``Defense.train``: a trained *copy* of ``model`` (the input is left as it was) against ``threat``
        (an :class:`LpBall`, L∞ or L2). The history is kept as ``result.train_history``."""
        if not isinstance(threat, LpBall):
            raise ConfigError(f"{type(self).__name__} trains against an LpBall, got {type(threat).__name__}",
                              fix="pass robustlab.core.threat.LpBall(norm='inf', eps=8/255)")
        trained = as_torch_model(copy.deepcopy(model))
        history = self.fit(trained, data, norm=threat.norm, eps=threat.eps)
        trained.train_history = history  # type: ignore[attr-defined]
        return trained

    def fit(self, model: nn.Module | TorchModel, train: Dataset, *, norm: str | float = "inf", eps: float,
            augment: Augment | None = None, val: Dataset | None = None) -> dict[str, Any]:
        """Train ``model`` in place against the ``norm`` ball of radius ``eps`` (raw units).

        Args:
            model: an ``nn.Module`` on raw inputs or a :class:`TorchModel` (normalization inside).
            train: tensor data ``x (N, ...)`` in [0, 1], labels ``y (N,)``.
            norm: ``"inf"`` or ``2``.
            eps: target radius, reached after ``warmup_epochs``.
            augment: optional batched augmentation ``(x, generator) -> x``, applied before the attack.
            val: optional data: clean and PGD (this trainer's steps, target eps) accuracy every epoch.

        Returns:
            ``{"loss", "clean_acc", "adv_acc", "eps", "lr", "val_acc", "val_adv_acc": per-epoch lists,
            "epochs", "steps", "seconds", "method"}``; the accuracies are on the training batches
            (clean: eval-mode or train-mode logits as the method computes them; adversarial: the
            train-mode logits on the crafted inputs), the eps is the radius at the epoch's last step.
        """
        norm = parse_norm(norm)
        if norm not in ("inf", "2"):
            raise ConfigError(f"{type(self).__name__} supports the L∞ and L2 balls, got norm {norm!r}",
                              fix="pass norm='inf' or norm=2")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise ConfigError(f"eps must be a finite number >= 0, got {eps!r}",
                              fix="pass the training radius in raw input units, e.g. eps=8/255")
        if not isinstance(train.x, torch.Tensor):
            raise DataError(f"adversarial training needs tensor inputs; dataset {train.name!r} is {train.modality}",
                            fix="use image or tabular data (float tensors in [0, 1])")
        tm = as_torch_model(model, self.device)
        dev = tm.device
        module = tm.module
        if self.init:
            init_parameters(module, self.seed)
        opt = _make_optimizer(module.parameters(), self.optimizer, self.lr, self.weight_decay)
        shuffle = torch_generator(derive_seed(self.seed, "shuffle"))
        aug_gen = torch_generator(derive_seed(self.seed, "augment"), dev)
        attack_gen = torch_generator(derive_seed(self.seed, "attack"), dev)
        warm = self.epochs / 3 if self.warmup_epochs is None else float(self.warmup_epochs)
        n = len(train)
        per_epoch = max(n // self.batch_size, 1)
        total = per_epoch * self.epochs
        base = LpBall(norm=norm, eps=float(eps), low=tm.low, high=tm.high)
        alpha_target = float(self.alpha) if self.alpha is not None else self.default_alpha(norm, float(eps))
        hist: dict[str, Any] = {"method": self.name, "loss": [], "clean_acc": [], "adv_acc": [], "eps": [],
                                "lr": [], "val_acc": [], "val_adv_acc": [], "epochs": self.epochs,
                                "steps": total, "seconds": 0.0}
        desc = f"{self.name} {base}"
        start, step = time.perf_counter(), 0
        try:
            with _progress_bar(self.progress, desc) as bar:
                task = bar.add_task(desc, total=total, status="")
                for epoch in range(self.epochs):
                    order = torch.randperm(n, generator=shuffle)
                    loss_sum = torch.zeros((), device=dev)
                    clean = torch.zeros((), device=dev, dtype=torch.long)
                    adv = torch.zeros((), device=dev, dtype=torch.long)
                    seen = 0
                    for i in range(per_epoch):
                        idx = order[i * self.batch_size:(i + 1) * self.batch_size] if per_epoch > 1 else order
                        xb, yb = train.x[idx].to(dev), train.y[idx].to(dev)
                        if augment is not None:
                            xb = augment(xb, aug_gen)
                        e = warmup_eps(eps, (step + 1) / per_epoch, warm)
                        threat = base.with_eps(e)
                        alpha = alpha_target * (e / eps) if eps > 0 else 0.0
                        for group in opt.param_groups:
                            group["lr"] = self.lr * _lr_factor(self.schedule, step, total, self.lr_warmup)
                        out = self.batch_loss(tm, xb, yb, threat, alpha, attack_gen)
                        opt.zero_grad(set_to_none=True)
                        out.loss.backward()
                        opt.step()
                        step += 1
                        loss_sum += out.loss.detach() * len(yb)
                        clean += out.clean_correct
                        adv += out.adv_correct
                        seen += len(yb)
                        if self.progress and (i % 10 == 0 or i == per_epoch - 1):
                            bar.update(task, status=f"epoch {epoch + 1}/{self.epochs} eps {e:.4g} "
                                                    f"loss {out.loss.item():.3f}")
                        bar.update(task, advance=1)
                    hist["loss"].append(float(loss_sum) / seen)
                    hist["clean_acc"].append(int(clean) / seen)
                    hist["adv_acc"].append(int(adv) / seen)
                    hist["eps"].append(e)
                    hist["lr"].append(opt.param_groups[0]["lr"])
                    status = (f"epoch {epoch + 1}/{self.epochs} eps {e:.4g} loss {hist['loss'][-1]:.3f} "
                              f"clean {hist['clean_acc'][-1]:.3f} adv {hist['adv_acc'][-1]:.3f}")
                    if val is not None:
                        hist["val_acc"].append(evaluate_accuracy(tm, val, device=dev))
                        hist["val_adv_acc"].append(robust_accuracy(
                            tm, val, norm=norm, eps=float(eps), steps=self.steps, seed=self.seed))
                        status += f" val {hist['val_acc'][-1]:.3f}/{hist['val_adv_acc'][-1]:.3f}"
                    module.train()
                    bar.update(task, status=status)
        finally:
            module.eval()
            hist["seconds"] = time.perf_counter() - start
        return hist


def robust_accuracy(model: nn.Module | TorchModel, data: Dataset, *, norm: str | float = "inf", eps: float,
                    steps: int = 20, alpha: float | None = None, restarts: int = 1, batch_size: int = 256,
                    seed: int = 0) -> float:
    """Fraction of ``data`` classified correctly both clean and under robustlab's PGD (CE loss, random
    start, ``alpha`` default ``2.5 * eps / steps``) at radius ``eps``; model in eval mode, batched."""
    from robustlab.attacks.pgd import PGD

    tm = as_torch_model(model)
    was_training = tm.module.training
    tm.module.eval()
    attack = PGD(norm, eps, steps=steps, alpha=alpha, restarts=restarts)
    gen = torch_generator(derive_seed(seed, "robust-accuracy"), tm.device)
    correct = 0
    try:
        for i in range(0, len(data), batch_size):
            xb, yb = data.x[i:i + batch_size].to(tm.device), data.y[i:i + batch_size].to(tm.device)
            with torch.no_grad():
                ok = tm(xb).argmax(1) == yb
            if bool(ok.any()):
                x_adv = attack(tm, xb[ok], yb[ok], generator=gen).x_adv
                with torch.no_grad():
                    correct += int((tm(x_adv).argmax(1) == yb[ok]).sum())
    finally:
        tm.module.train(was_training)
    return correct / max(len(data), 1)


def adversarial_train(model: nn.Module | TorchModel, train: Dataset, *, method: str = "pgd",
                      norm: str | float = "inf", eps: float, steps: int = 10, alpha: float | None = None,
                      beta: float = 6.0, epochs: int = 10, batch_size: int = 128, lr: float = 0.05,
                      weight_decay: float = 5e-4, warmup_epochs: float | None = None, seed: int = 0,
                      device: str | None = None, progress: bool = True, **options: Any) -> dict[str, Any]:
    """Adversarially train ``model`` in place with PGD-AT (``method="pgd"``) or TRADES (``"trades"``).

    A convenience over :class:`~robustlab.defend.train.pgd_at.PGDAT` /
    :class:`~robustlab.defend.train.trades.TRADES` (see them and :class:`AdversarialTraining` for
    every argument); ``beta`` is used by TRADES only. ``options`` go to the trainer (``optimizer``,
    ``schedule``, ``lr_warmup``, ``init``) or to :meth:`AdversarialTraining.fit` (``augment``, ``val``).

    Returns the per-epoch history of :meth:`AdversarialTraining.fit`.

    Example::

        hist = adversarial_train(net, load_dataset("digits", split="train"), eps=0.1, epochs=20,
                                 batch_size=64)
    """
    from robustlab.defend.train.pgd_at import PGDAT
    from robustlab.defend.train.trades import TRADES

    fit_opts = {k: options.pop(k) for k in ("augment", "val") if k in options}
    common = {"steps": steps, "alpha": alpha, "epochs": epochs, "batch_size": batch_size, "lr": lr,
              "weight_decay": weight_decay, "warmup_epochs": warmup_epochs, "seed": seed, "device": device,
              "progress": progress}
    known = {"optimizer", "schedule", "lr_warmup", "init"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"adversarial_train: unknown option(s) {unknown}",
                          fix=f"use {', '.join(sorted(known | {'augment', 'val'}))}")
    if method == "pgd":
        trainer: AdversarialTraining = PGDAT(**common, **options)
    elif method == "trades":
        trainer = TRADES(**common, beta=beta, **options)
    else:
        raise ConfigError(f"unknown adversarial training method {method!r}", fix="use method='pgd' or 'trades'")
    return trainer.fit(model, train, norm=norm, eps=eps, **fit_opts)
