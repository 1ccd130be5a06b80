"""Certified training: IBP (Gowal et al., 2018) and CROWN-IBP (Zhang et al., 2020), on robustlab's bounds.

- IBP training, "On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust
  Models" (Gowal, Dvijotham, Stanforth, Bunel, Qin, Uesato, Arandjelovic, Mann & Kohli, 2018): minimize
  ``kappa * CE(z(x), y) + (1 - kappa) * CE(z_worst, y)``, where ``z_worst_j = -lower(z_y - z_j)`` (0 at y)
  are the worst-case logits from interval bounds over the L∞ box (the margin specification folded into
  the last affine layers); eps rises linearly from 0 and kappa from 1 to 0.5 (``kappa_end``).
- CROWN-IBP, "Towards Stable and Efficient Training of Verifiably Robust Neural Networks" (Zhang, Chen,
  Xiao, Gowal, Stanforth, Li, Boning & Hsieh, ICLR 2020): the margin lower bound is
  ``beta * CROWN-IBP + (1 - beta) * IBP``, CROWN-IBP being CROWN's backward pass for the margins with
  IBP pre-activation bounds; beta falls linearly from 1 to 0 over the eps ramp, kappa from 1 to 0.

Bounds are the certifiers' own (:mod:`robustlab.certify.bounds`, :mod:`~robustlab.certify.crown`): the
network is converted with ``to_ops(..., keep_grad=True)``, which keeps the ops attached to the module's
parameters, so the same propagation code certifies after training and gives gradients during it. Any
model those certifiers support can be trained (Linear, Conv2d, ReLU, Flatten, pooling, BatchNorm, the
robustlab ResNet); anything else raises the certifiers' :class:`UnsupportedModelError` listing every
unsupported module, before training starts. BatchNorm is bounded with its running statistics (the clean
forward in train mode updates them); the papers' networks have no BatchNorm in the bounded path.

Schedules are per optimizer step and follow the IBP code's ``linear_schedule``: with
``t = clamp((step - warmup_steps) / ramp_steps, 0, 1)``, ``eps_t = t * eps``, ``kappa_t = kappa_start +
t (kappa_end - kappa_start)``, ``beta_t = beta_start + t (beta_end - beta_start)`` (see
:func:`ramp_value`). At ``eps_t = 0`` (or ``kappa_t = 1``) the worst-case term equals the clean CE, so
the step is plain cross-entropy and no bounds are computed.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.certify.bounds import _ibp_margins, bound_margins, margin_spec
from robustlab.certify.crown import crown_lower
from robustlab.certify.layers import to_ops, trace_shapes
from robustlab.core.errors import ConfigError, DataError, UnsupportedModelError
from robustlab.core.model import Model, TorchModel
from robustlab.core.probe import Defense
from robustlab.core.registry import register
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.core.threat import LpBall, ThreatModel, parse_norm
from robustlab.data.base import Dataset
from robustlab.defend.train.adversarial import as_torch_model
from robustlab.models.training import Augment, _lr_factor, _make_optimizer, _progress_bar, init_parameters

__all__ = ["CROWNIBPTraining", "CertifiedTraining", "IBPTraining", "certified_accuracy", "certified_train",
           "margin_lower_bounds", "ramp_value", "worst_case_logits"]

METHODS = ("ibp", "crown-ibp")


def ramp_value(step: int, start: float, end: float, begin: int, length: int) -> float:
    """Linear schedule: ``start`` until ``begin``, then linear to ``end`` reached at ``begin + length``.

    ``start + (end - start) * clamp((step - begin) / length, 0, 1)`` (``length <= 0``: ``end`` from
    ``begin`` on), the ``linear_schedule`` of Gowal et al.'s code with steps counted from 0.
    """
    if length <= 0:
        frac = 1.0 if step >= begin else 0.0
    else:
        frac = min(1.0, max(0.0, (step - begin) / length))
    return float(start) + (float(end) - float(start)) * frac


def _ops(model: nn.Module | TorchModel, x: torch.Tensor) -> list[Any]:
    """Differentiable bound-propagation ops of ``model`` (BatchNorm with running statistics), traced on x[:1]."""
    tm = model if isinstance(model, TorchModel) else None
    module = tm.module if tm is not None else model
    was = module.training
    module.eval()  # BatchNorm is converted with its running statistics (to_ops refuses train-mode BN)
    try:
        ops = to_ops(model, dtype=x.dtype, keep_grad=True)
    finally:
        module.train(was)
    with torch.no_grad():
        trace_shapes(ops, x[:1])
    return ops


def margin_lower_bounds(model: nn.Module | TorchModel, x: torch.Tensor, y: torch.Tensor, threat: LpBall, *,
                        method: str = "ibp", beta: float = 1.0) -> torch.Tensor:
    """Differentiable lower bounds of the margins ``z_y - z_j`` (j != y, increasing j): (B, K-1).

    Args:
        model: an ``nn.Module`` on raw inputs or a :class:`TorchModel` (normalization inside); bounds
            are computed in the dtype of ``x`` (the parameters' dtype during training).
        x, y: clean inputs (B, ...) and labels (B,) on the model's device.
        threat: the ball; its box ``threat.bounds(x)`` is bounded.
        method: ``"ibp"`` (Gowal et al., last layers folded with the specification) or ``"crown-ibp"``
            (``beta * CROWN-IBP + (1 - beta) * IBP``, Zhang et al.).
        beta: CROWN-IBP's mixing weight in [0, 1].
    """
    if method not in METHODS:
        raise ConfigError(f"unknown certified-training bound {method!r}", fix=f"use one of {', '.join(METHODS)}")
    ops = _ops(model, x)
    k = ops[-1].out_shape[0] if len(ops[-1].out_shape) == 1 else None
    if k is None:
        raise UnsupportedModelError(f"the network outputs shape {ops[-1].out_shape}, not (num_classes,)",
                                    fix="end the network with a Linear layer giving one score per class")
    lo, hi = threat.bounds(x)
    spec = margin_spec(y, k, dtype=x.dtype)
    if method == "ibp" or beta == 0:
        return _ibp_margins(ops, spec, lo, hi)
    crown = crown_lower(ops, spec, lo, hi, intermediate="ibp")
    if beta == 1:
        return crown
    return beta * crown + (1 - beta) * _ibp_margins(ops, spec, lo, hi)


def worst_case_logits(lower: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Worst-case logits (B, K) from margin lower bounds (B, K-1): ``-lower`` at j != y, 0 at y (Gowal et al.)."""
    b, k = lower.shape[0], lower.shape[1] + 1
    others = torch.arange(k, device=y.device).expand(b, -1)
    others = others[others != y.view(-1, 1)].view(b, k - 1)
    return torch.zeros(b, k, dtype=lower.dtype, device=lower.device).scatter(1, others, -lower)


def _as_xy(data: Dataset | torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, Dataset):
        if not isinstance(data.x, torch.Tensor):
            raise DataError(f"certified training needs tensor inputs; dataset {data.name!r} is {data.modality}",
                            fix="use image or tabular data (float tensors in [0, 1])")
        return data.x, data.y
    if isinstance(data, torch.Tensor) and isinstance(y, torch.Tensor) and len(data) == len(y):
        return data, y
    raise DataError("certified training needs a Dataset, or tensors x (N, ...) and y (N,) of equal length",
                    fix="call fit(model, dataset, ...) or fit(model, x, y, ...)")


@dataclass(frozen=True)
class CertifiedTraining(Defense):
    """IBP / CROWN-IBP certified training: the loop, its schedules and ``Defense.train``.

    Args:
        method: ``"ibp"`` or ``"crown-ibp"`` (see the module docstring).
        epochs: passes over the training data; ``batch_size``: examples per step (a last, smaller
            batch is dropped when there is more than one).
        warmup_epochs: epochs of plain training at eps 0 first; ``ramp_epochs``: epochs of the linear
            eps / kappa / beta ramp after them (``None``: half of the remaining epochs). Fractions are
            allowed; both are rounded to whole steps.
        kappa_start, kappa_end: weight of the clean CE at the start and the end of the ramp; ``None``
            end -> the paper's: 0.5 for IBP (Gowal et al.), 0 for CROWN-IBP (Zhang et al.).
        beta_start, beta_end: CROWN-IBP's weight of the CROWN-IBP bound (1 -> 0, Zhang et al.).
        optimizer: ``"adam"`` (both papers), ``"adamw"`` or ``"sgd"``; ``lr``, ``weight_decay``;
            ``schedule``: ``"constant"``, ``"cosine"`` or ``"onecycle"`` (per step, as
            :func:`robustlab.models.training.train_classifier`; the papers decay the rate in steps).
        grad_clip: max global gradient norm (``None``: no clipping; 10 as in CROWN-IBP's code).
        seed: initialization (when ``init``), shuffling and augmentation; ``init``: re-initialize every
            parameter from ``seed`` first.
        device: where to train; ``None`` -> the model's device. ``progress``: a transient progress bar.
    """

    method: str = "ibp"
    epochs: int = 20
    batch_size: int = 64
    warmup_epochs: float = 0.0
    ramp_epochs: float | None = None
    kappa_start: float = 1.0
    kappa_end: float | None = None
    beta_start: float = 1.0
    beta_end: float = 0.0
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    lr_warmup: float = 0.15
    grad_clip: float | None = 10.0
    seed: int = 0
    init: bool = True
    device: str | None = None
    progress: bool = True

    name = "certified"

    def __post_init__(self) -> None:
        cls = type(self).__name__
        if self.method not in METHODS:
            raise ConfigError(f"{cls}: unknown method {self.method!r}", fix=f"use one of {', '.join(METHODS)}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(f"{cls}: epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr} must be > 0",
                              fix="pass positive epochs, batch_size and lr")
        if not self.warmup_epochs >= 0 or (self.ramp_epochs is not None and not self.ramp_epochs >= 0):
            raise ConfigError(f"{cls}: warmup_epochs={self.warmup_epochs}, ramp_epochs={self.ramp_epochs} "
                              "must be >= 0", fix="pass e.g. warmup_epochs=2, ramp_epochs=10")
        for key in ("kappa_start", "kappa_end", "beta_start", "beta_end"):
            v = getattr(self, key)
            if v is not None and not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise ConfigError(f"{cls}: {key} must lie in [0, 1], got {v!r}", fix=f"pass e.g. {key}=0.5")
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise ConfigError(f"unknown schedule {self.schedule!r}", fix="use 'onecycle', 'cosine' or 'constant'")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}", fix="use 'adam', 'adamw' or 'sgd'")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"{cls}: grad_clip must be > 0 or None, got {self.grad_clip!r}")

    @property
    def final_kappa(self) -> float:
        """``kappa_end``, or the paper's default (IBP 0.5, CROWN-IBP 0)."""
        if self.kappa_end is not None:
            return float(self.kappa_end)
        return 0.5 if self.method == "ibp" else 0.0

    def steps(self, steps_per_epoch: int) -> tuple[int, int, int]:
        """``(total, warmup, ramp)`` optimizer steps for ``steps_per_epoch``."""
        total = steps_per_epoch * self.epochs
        warm = round(self.warmup_epochs * steps_per_epoch)
        ramp_epochs = (self.epochs - self.warmup_epochs) / 2 if self.ramp_epochs is None else self.ramp_epochs
        return total, warm, max(0, round(ramp_epochs * steps_per_epoch))

    def schedule_at(self, step: int, eps: float, steps_per_epoch: int) -> tuple[float, float, float]:
        """``(eps_t, kappa_t, beta_t)`` at optimizer step ``step`` (from 0); ``beta_t`` is 0 for IBP."""
        _, warm, ramp = self.steps(steps_per_epoch)
        e = ramp_value(step, 0.0, eps, warm, ramp)
        kappa = ramp_value(step, self.kappa_start, self.final_kappa, warm, ramp)
        beta = ramp_value(step, self.beta_start, self.beta_end, warm, ramp) if self.method == "crown-ibp" else 0.0
        return e, kappa, beta

    def batch_loss(self, model: TorchModel, x: torch.Tensor, y: torch.Tensor, threat: LpBall, kappa: float,
                   beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, clean_correct, certified_correct)`` of one batch (module in train mode for the clean term)."""
        model.module.train()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        clean = (logits.detach().argmax(1) == y).sum()
        if threat.eps == 0 or kappa == 1:  # the worst case at eps 0 is the clean margin: same CE
            return loss, clean, clean
        xb = x.to(next(model.module.parameters()).dtype)
        lower = margin_lower_bounds(model, xb, y, threat, method=self.method, beta=beta)
        robust = F.cross_entropy(worst_case_logits(lower, y), y)
        cert = (lower.detach().min(1).values > 0).sum() if lower.shape[1] else clean
        return kappa * loss + (1 - kappa) * robust, clean, cert

    def train(self, model: Model | nn.Module, data: Dataset, threat: ThreatModel) -> TorchModel:
        """``Defense.train``: a certifiably trained *copy* of ``model`` against ``threat`` (an L∞ :class:`LpBall`);
        the history is kept as ``result.train_history``."""
        if not isinstance(threat, LpBall):
            raise ConfigError(f"{type(self).__name__} trains against an LpBall, got {type(threat).__name__}",
                              fix="pass robustlab.core.threat.LpBall(norm='inf', eps=0.1)")
        trained = as_torch_model(copy.deepcopy(model))
        history = self.fit(trained, data, eps=threat.eps, norm=threat.norm)
        trained.train_history = history  # type: ignore[attr-defined]
        return trained

    def fit(self, model: nn.Module | TorchModel, data: Dataset | torch.Tensor, y: torch.Tensor | None = None, *,
            eps: float, norm: str | float = "inf", generator: torch.Generator | None = None,
            augment: Augment | None = None) -> dict[str, Any]:
        """Train ``model`` in place to be certifiably robust in the L∞ ball of radius ``eps`` (raw units).

        Args:
            model: an ``nn.Module`` on raw inputs or a :class:`TorchModel` (normalization inside).
            data: a :class:`Dataset`, or inputs ``x (N, ...)`` in the model's domain with labels ``y``.
            eps: target radius, reached at the end of the ramp.
            norm: must be ``"inf"`` (interval bounds bound a box).
            generator: shuffles the data (default: one derived from ``seed``).
            augment: optional batched augmentation ``(x, generator) -> x`` before the bounds.

        Returns:
            ``{"method", "loss", "clean_acc", "cert_acc", "eps", "kappa", "beta", "lr": per-epoch lists,
            "epochs", "steps", "warmup_steps", "ramp_steps", "seconds"}``: loss and accuracies on the
            training batches (``cert_acc``: margin lower bounds > 0 at that step's eps); eps, kappa and
            beta are the values at the epoch's last step.
        """
        if parse_norm(norm) != "inf":
            raise ConfigError(f"{type(self).__name__} certifies L∞ balls, got norm {norm!r}",
                              fix="pass norm='inf' (IBP and CROWN-IBP bound a box)")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise ConfigError(f"eps must be a finite number >= 0, got {eps!r}",
                              fix="pass the training radius in raw input units, e.g. eps=0.1")
        xs, ys = _as_xy(data, y)
        tm = as_torch_model(model, self.device)
        dev, module = tm.device, tm.module
        _ops(tm, xs[:1].to(dev, next(module.parameters()).dtype))  # unsupported layers fail here, before training
        if self.init:
            init_parameters(module, self.seed)
        if self.optimizer == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(module.parameters(), lr=self.lr,
                                                          weight_decay=self.weight_decay)
        else:
            opt = _make_optimizer(module.parameters(), self.optimizer, self.lr, self.weight_decay)
        shuffle = generator if generator is not None else torch_generator(derive_seed(self.seed, "shuffle"))
        aug_gen = torch_generator(derive_seed(self.seed, "augment"), dev)
        n = len(ys)
        per_epoch = max(n // self.batch_size, 1)
        total, warm, ramp = self.steps(per_epoch)
        base = LpBall(norm="inf", eps=float(eps), low=tm.low, high=tm.high)
        name = "ibp_training" if self.method == "ibp" else "crown_ibp_training"
        hist: dict[str, Any] = {"method": name, "loss": [], "clean_acc": [], "cert_acc": [], "eps": [],
                                "kappa": [], "beta": [], "lr": [], "epochs": self.epochs, "steps": total,
                                "warmup_steps": warm, "ramp_steps": ramp, "seconds": 0.0}
        start, step = time.perf_counter(), 0
        desc = f"{name} {base}"
        try:
            with _progress_bar(self.progress, desc) as bar:
                task = bar.add_task(desc, total=total, status="")
                for epoch in range(self.epochs):
                    order = torch.randperm(n, generator=shuffle)
                    loss_sum, clean, cert, seen = 0.0, 0, 0, 0
                    for i in range(per_epoch):
                        idx = order[i * self.batch_size:(i + 1) * self.batch_size]
                        xb, yb = xs[idx].to(dev), ys[idx].to(dev)
                        if augment is not None:
                            xb = augment(xb, aug_gen)
                        e, kappa, beta = self.schedule_at(step, float(eps), per_epoch)
                        for group in opt.param_groups:
                            group["lr"] = self.lr * _lr_factor(self.schedule, step, total, self.lr_warmup)
                        loss, c_ok, r_ok = self.batch_loss(tm, xb, yb, base.with_eps(e), kappa, beta)
                        opt.zero_grad()
                        loss.backward()
                        if self.grad_clip is not None:
                            nn.utils.clip_grad_norm_(module.parameters(), self.grad_clip)
                        opt.step()
                        step += 1
                        loss_sum += float(loss.detach()) * len(yb)
                        clean, cert, seen = clean + int(c_ok), cert + int(r_ok), seen + len(yb)
                        if self.progress and (i % 10 == 0 or i == per_epoch - 1):
                            bar.update(task, status=f"epoch {epoch + 1}/{self.epochs} eps {e:.4g} "
                                                    f"loss {float(loss):.3f}")
                        bar.update(task, advance=1)
                    for key, v in (("loss", loss_sum / seen), ("clean_acc", clean / seen), ("cert_acc", cert / seen),
                                   ("eps", e), ("kappa", kappa), ("beta", beta), ("lr", opt.param_groups[0]["lr"])):
                        hist[key].append(v)
        finally:
            module.eval()
            hist["seconds"] = time.perf_counter() - start
        return hist


@register("defense", "ibp_training")
@dataclass(frozen=True)
class IBPTraining(CertifiedTraining):
    """IBP certified training (Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training
    Verifiably Robust Models", 2018): kappa 1 -> 0.5, eps ramped linearly from 0; see :class:`CertifiedTraining`.

    Example::

        defended = IBPTraining(epochs=30, ramp_epochs=10).train(net, train_data, LpBall("inf", 0.1))
    """

    method: str = "ibp"
    name = "ibp_training"

    def __post_init__(self) -> None:
        if self.method != "ibp":
            raise ConfigError(f"IBPTraining trains with IBP bounds, got method={self.method!r}",
                              fix="use CROWNIBPTraining for CROWN-IBP")
        super().__post_init__()


@register("defense", "crown_ibp_training")
@dataclass(frozen=True)
class CROWNIBPTraining(CertifiedTraining):
    """CROWN-IBP certified training (Zhang et al., "Towards Stable and Efficient Training of Verifiably Robust
    Neural Networks", ICLR 2020): bounds ``beta * CROWN-IBP + (1 - beta) * IBP`` with beta 1 -> 0 and kappa
    1 -> 0 over the eps ramp; see :class:`CertifiedTraining`. Costs about one backward pass of the margin
    specification (K-1 rows) per example on top of IBP.

    Example::

        defended = CROWNIBPTraining(epochs=30, ramp_epochs=10).train(cnn, train_data, LpBall("inf", 0.1))
    """

    method: str = "crown-ibp"
    name = "crown_ibp_training"

    def __post_init__(self) -> None:
        if self.method != "crown-ibp":
            raise ConfigError(f"CROWNIBPTraining trains with CROWN-IBP bounds, got method={self.method!r}",
                              fix="use IBPTraining for IBP")
        super().__post_init__()


def certified_train(model: nn.Module | TorchModel, data: Dataset | torch.Tensor, y: torch.Tensor | None = None, *,
                    method: str = "ibp", eps: float, norm: str | float = "inf",
                    generator: torch.Generator | None = None, augment: Augment | None = None,
                    **settings: Any) -> dict[str, Any]:
    """Certifiably train ``model`` in place with IBP (``method="ibp"``) or CROWN-IBP (``"crown-ibp"``).

    A convenience over :class:`CertifiedTraining` (``settings``: its fields, e.g. ``epochs``,
    ``warmup_epochs``, ``ramp_epochs``, ``kappa_start``, ``kappa_end``, ``beta_start``, ``beta_end``,
    ``optimizer``, ``lr``, ``batch_size``, ``grad_clip``, ``seed``, ``init``, ``progress``) and its
    :meth:`~CertifiedTraining.fit`. Returns the per-epoch history.

    Example::

        hist = certified_train(net, load_dataset("digits", split="train"), eps=0.1, epochs=30, ramp_epochs=10)
    """
    fields = set(CertifiedTraining.__dataclass_fields__)
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ConfigError(f"certified_train: unknown setting(s) {unknown}", fix=f"use {', '.join(sorted(fields))}")
    return CertifiedTraining(method=method, **settings).fit(model, data, y, eps=eps, norm=norm, generator=generator,
                                                            augment=augment)


def certified_accuracy(model: nn.Module | TorchModel, data: Dataset | torch.Tensor, y: torch.Tensor | None = None, *,
                       eps: float, method: str = "ibp", batch_size: int = 64, intermediate: str = "crown") -> float:
    """Fraction of examples whose every margin lower bound is > 0 in the L∞ ball of radius ``eps``
    (robustlab's certifier bounds, float64; ``method``: ``"ibp"``, ``"crown"`` or ``"crown_ibp_best"``;
    ``intermediate``: CROWN's pre-activation bounds, ``"ibp"`` gives the CROWN-IBP bound)."""
    xs, ys = _as_xy(data, y)
    tm = as_torch_model(model)
    was = tm.module.training
    tm.module.eval()
    try:
        lower = bound_margins(tm, xs.to(tm.device), ys, LpBall("inf", float(eps), low=tm.low, high=tm.high),
                              method=method, batch_size=batch_size, intermediate=intermediate)
    finally:
        tm.module.train(was)
    return float((lower.min(1).values > 0).double().mean()) if len(ys) else 0.0
