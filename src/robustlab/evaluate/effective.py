"""Effective robustness: OOD accuracy beyond what a baseline family's ID-to-OOD line predicts.

From "Measuring Robustness to Natural Distribution Shifts in Image Classification" (Taori et al., 2020)
as used by "Quality Not Quantity: On the Interaction between Dataset Design and Robustness of CLIP"
(Nguyen et al., NeurIPS 2022): fit ``logit(acc_ood) = a·logit(acc_id) + b`` by least squares over a
baseline family of models, then a model's effective robustness is

    ER = acc_ood − σ(a·logit(acc_id) + b)        (accuracy space, σ = logistic)

so points on the line have ER = 0 and points above it are effectively robust. ``scale="probit"`` uses
Φ⁻¹ / Φ instead (Taori et al.'s plots), ``scale="linear"`` the raw numbers (COCO-O's mAP fit, Mao
et al. 2023). Accuracies are clipped to ``[eps, 1 − eps]`` before the transform (default 1e-4).

:func:`model_family_sweep` trains a family of small CNNs (per data source × training-set size × width ×
epochs) and records per-example correctness on the ID test set and on each shifted test set, so that
accuracies, fits and bootstrap intervals (:func:`bootstrap_effective_robustness`) come from the same
models. :func:`effective_robustness_plot` draws the points and fit lines (PNG data URI).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.data.base import Dataset

__all__ = [
    "SCALES",
    "LinearFit",
    "SweepResult",
    "bootstrap_effective_robustness",
    "effective_robustness",
    "effective_robustness_plot",
    "fit_baseline",
    "inverse_transform",
    "model_family_sweep",
    "small_cnn",
    "small_mlp",
    "transform_accuracy",
]

SCALES = ("logit", "probit", "linear")


def _check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ConfigError(f"unknown effective-robustness scale {scale!r}", fix=f"use one of {list(SCALES)}")
    return scale


def _as_array(values: Any, name: str) -> np.ndarray:
    a = np.asarray(values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise DataError(f"{name} must be non-empty and finite, got {values!r}",
                        fix="pass accuracies as numbers in [0, 1]")
    return a


def transform_accuracy(acc: Any, scale: str = "logit", eps: float = 1e-4) -> np.ndarray:
    """``logit`` / ``probit`` (or identity for ``linear``) of accuracies clipped to ``[eps, 1 − eps]`` (float64)."""
    a = _as_array(acc, "accuracy")
    if _check_scale(scale) == "linear":
        return a
    if np.any(a < 0) or np.any(a > 1):
        raise DataError(f"accuracies must lie in [0, 1] for the {scale} scale, got [{a.min():.3g}, {a.max():.3g}]",
                        fix="pass fractions, not percentages (divide by 100)")
    a = np.clip(a, eps, 1 - eps)
    if scale == "logit":
        return np.log(a) - np.log1p(-a)
    return torch.special.ndtri(torch.as_tensor(a)).numpy()


def inverse_transform(v: Any, scale: str = "logit") -> np.ndarray:
    """The inverse of :func:`transform_accuracy`: logistic σ, normal CDF Φ, or identity."""
    v = np.asarray(v, dtype=np.float64)
    if _check_scale(scale) == "logit":
        return 1.0 / (1.0 + np.exp(-v))
    if scale == "probit":
        return torch.special.ndtr(torch.as_tensor(v)).numpy()
    return v


@dataclass(frozen=True)
class LinearFit:
    """A baseline line ``T(acc_ood) = slope·T(acc_id) + intercept`` in the transformed space ``T`` (``scale``)."""

    slope: float
    intercept: float
    scale: str = "logit"
    n_points: int = 0
    r2: float = float("nan")
    eps: float = 1e-4

    def predict(self, id_acc: Any) -> np.ndarray | float:
        """The line's OOD accuracy (accuracy space) at ``id_acc``; a float for a scalar input."""
        t = transform_accuracy(id_acc, self.scale, self.eps)
        out = inverse_transform(self.slope * t + self.intercept, self.scale)
        return float(out) if out.ndim == 0 else out


def fit_baseline(id_acc: Any, ood_acc: Any, *, scale: str = "logit", eps: float = 1e-4) -> LinearFit:
    """Least-squares line through the baseline models' ``(T(id_acc), T(ood_acc))`` (Taori et al., 2020).

    Args:
        id_acc, ood_acc: accuracies in [0, 1] of the same baseline models, one value each (>= 2 models
            with distinct ID accuracies).
        scale: ``"logit"`` (default, Nguyen et al. 2022), ``"probit"`` or ``"linear"``.
        eps: clipping of accuracies before the transform.
    """
    x, y = transform_accuracy(id_acc, scale, eps).ravel(), transform_accuracy(ood_acc, scale, eps).ravel()
    if x.shape != y.shape:
        raise DataError(f"fit_baseline: {x.size} ID accuracies but {y.size} OOD accuracies",
                        fix="pass one ID and one OOD accuracy per baseline model")
    if x.size < 2 or np.ptp(x) == 0:
        raise DataError(f"fit_baseline needs >= 2 baseline models with different ID accuracies, got {x.size}",
                        fix="add baseline models of different ID accuracy (sizes, epochs, widths)")
    xm, ym = x.mean(), y.mean()
    sxx = np.sum((x - xm) ** 2)
    slope = float(np.sum((x - xm) * (y - ym)) / sxx)
    intercept = float(ym - slope * xm)
    ss_res = float(np.sum((y - slope * x - intercept) ** 2))
    ss_tot = float(np.sum((y - ym) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return LinearFit(slope, intercept, scale, int(x.size), r2, eps)


def effective_robustness(fit: LinearFit, id_acc: Any, ood_acc: Any) -> np.ndarray | float:
    """``ood_acc − fit.predict(id_acc)`` in accuracy space (Taori et al., 2020); a float for scalars."""
    if not isinstance(fit, LinearFit):
        raise ConfigError(f"effective_robustness needs a LinearFit, got {type(fit).__name__}",
                          fix="pass fit_baseline(id_acc, ood_acc) of the baseline models")
    o = _as_array(ood_acc, "ood_acc")
    er = o - np.asarray(fit.predict(id_acc))
    return float(er) if er.ndim == 0 else er


def bootstrap_effective_robustness(correct_id: torch.Tensor, correct_ood: torch.Tensor, baseline: Sequence[int],
                                   groups: Mapping[str, Sequence[int]], *, n_boot: int = 200, scale: str = "logit",
                                   level: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Mean ER per group of models with a percentile bootstrap interval over test examples.

    Each replicate resamples the ID and the OOD test examples (with replacement), recomputes every
    model's accuracies, refits the baseline line on the ``baseline`` rows and averages the ER of each
    group's rows. Returns ``{group: (mean ER on the full data, low, high)}``.

    Args:
        correct_id: ``(models, n_id)`` bool, model i right on ID example j.
        correct_ood: ``(models, n_ood)`` bool, the same models on the shifted set.
        baseline: rows that define the line; groups: name -> rows.
    """
    cid, cood = torch.as_tensor(correct_id).double(), torch.as_tensor(correct_ood).double()
    if cid.dim() != 2 or cood.dim() != 2 or len(cid) != len(cood):
        raise DataError(f"correctness matrices must be (models, examples) for the same models, got "
                        f"{tuple(cid.shape)} and {tuple(cood.shape)}", fix="stack one row per model")
    g = torch_generator(seed)

    def counts(n: int) -> torch.Tensor:
        idx = torch.randint(0, n, (n_boot, n), generator=g)
        ones = torch.ones(n_boot, n, dtype=torch.float64)
        return torch.zeros(n_boot, n, dtype=torch.float64).scatter_add_(1, idx, ones)

    aid = torch.cat([cid.mean(1, keepdim=True), cid @ counts(cid.shape[1]).T / cid.shape[1]], 1).numpy()
    aood = torch.cat([cood.mean(1, keepdim=True), cood @ counts(cood.shape[1]).T / cood.shape[1]], 1).numpy()
    tid, tood = transform_accuracy(aid, scale), transform_accuracy(aood, scale)  # (M, 1 + B)
    b = list(baseline)
    xb, yb = tid[b], tood[b]
    xm, ym = xb.mean(0), yb.mean(0)
    slope = ((xb - xm) * (yb - ym)).sum(0) / ((xb - xm) ** 2).sum(0).clip(1e-300)
    pred = inverse_transform(slope * tid + (ym - slope * xm), scale)
    er = aood - pred
    q = (1 - level) / 2
    out = {}
    for name, rows in groups.items():
        m = er[list(rows)].mean(0)
        out[name] = (float(m[0]), float(np.quantile(m[1:], q)), float(np.quantile(m[1:], 1 - q)))
    return out


# ------------------------------------------------------------------------------------------- model family
def small_cnn(in_channels: int, num_classes: int, width: int = 16) -> nn.Sequential:
    """conv3x3(w) → ReLU → maxpool2 → conv3x3(2w) → ReLU → adaptive avgpool 4x4 → linear; any image side >= 2."""
    if width < 1 or in_channels < 1 or num_classes < 2:
        raise ConfigError(f"small_cnn: width={width}, in_channels={in_channels}, num_classes={num_classes}",
                          fix="use width >= 1, in_channels >= 1 and num_classes >= 2")
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(32 * width, num_classes))


def small_mlp(in_features: int, num_classes: int, width: int = 64) -> nn.Sequential:
    """flatten → linear(width) → ReLU → linear(classes): the spec's small CPU model family."""
    if width < 1 or in_features < 1 or num_classes < 2:
        raise ConfigError(f"small_mlp: width={width}, in_features={in_features}, num_classes={num_classes}",
                          fix="use width >= 1, in_features >= 1 and num_classes >= 2")
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, num_classes))


@dataclass
class SweepResult:
    """Models of a family sweep: one record per model and its per-example correctness ID / per shift."""

    records: list[dict[str, Any]] = field(default_factory=list)
    correct_id: torch.Tensor | None = None  # (models, n_id) bool
    correct_ood: dict[str, torch.Tensor] = field(default_factory=dict)  # shift -> (models, n_ood) bool

    def rows(self, **where: Any) -> list[int]:
        """Indices of the records whose fields equal ``where`` (e.g. ``source="clean"``)."""
        return [i for i, r in enumerate(self.records) if all(r.get(k) == v for k, v in where.items())]

    def id_acc(self) -> np.ndarray:
        return self.correct_id.double().mean(1).numpy()

    def ood_acc(self, shift: str | None = None) -> np.ndarray:
        """Accuracy on one shift, or the mean over shifts (COCO-O's averaged domain score) when None."""
        if shift is None:
            return np.mean([c.double().mean(1).numpy() for c in self.correct_ood.values()], axis=0)
        return self.correct_ood[shift].double().mean(1).numpy()

    def extend(self, other: SweepResult) -> SweepResult:
        """Append ``other``'s models (same test sets)."""
        self.records += other.records
        self.correct_id = other.correct_id if self.correct_id is None else torch.cat([self.correct_id,
                                                                                     other.correct_id])
        for k, v in other.correct_ood.items():
            self.correct_ood[k] = torch.cat([self.correct_ood[k], v]) if k in self.correct_ood else v
        return self


@torch.no_grad()
def _correct(model: nn.Module, ds: Dataset, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model(ds.x[i:i + batch]).argmax(1) == ds.y[i:i + batch] for i in range(0, len(ds), batch)])


def model_family_sweep(train_sets: Mapping[str, Dataset], id_test: Dataset, ood_tests: Mapping[str, Dataset], *,
                       sizes: Sequence[int] = (100, 200, 400, 800, 1400), widths: Sequence[int] = (8, 16),
                       epochs: Sequence[int] = (5, 15), seed: int = 0, lr: float = 3e-3,
                       batch_size: int = 64, arch: str = "mlp") -> SweepResult:
    """Train a family of small models per data source and record ID / OOD correctness.

    For every source × size × width × epochs one model is trained (AdamW, one-cycle schedule,
    :func:`robustlab.models.training.train_classifier`) on the first ``size`` examples of a seeded
    permutation of that source (nested subsets: larger sizes contain the smaller ones), then evaluated
    on ``id_test`` and on every dataset of ``ood_tests``. Records hold source, n, width, epochs, seed.
    ``arch`` is ``"mlp"`` (:func:`small_mlp`, hidden width ``width``) or ``"cnn"`` (:func:`small_cnn`).
    """
    from robustlab.models.training import train_classifier

    if arch not in ("mlp", "cnn"):
        raise ConfigError(f"model_family_sweep: unknown arch {arch!r}", fix="use 'mlp' or 'cnn'")

    if not train_sets or not ood_tests:
        raise ConfigError("model_family_sweep needs at least one training source and one shifted test set",
                          fix="pass train_sets={'name': Dataset} and ood_tests={'shift': Dataset}")
    result = SweepResult()
    cid, cood = [], {k: [] for k in ood_tests}
    k = len(id_test.class_names) or int(id_test.y.max()) + 1
    for source, ds in train_sets.items():
        if max(sizes) > len(ds):
            raise DataError(f"source {source!r} has {len(ds)} examples, sweep asks for {max(sizes)}",
                            fix="generate more training data or lower sizes")
        perm = torch.randperm(len(ds), generator=torch_generator(derive_seed(seed, "sweep", source)))
        for n, width, ep in itertools.product(sizes, widths, epochs):
            idx = perm[:n]
            sub = Dataset(x=ds.x[idx], y=ds.y[idx], class_names=list(ds.class_names), name=f"{source}[{n}]")
            model = (small_mlp(int(ds.x[0].numel()), k, int(width)) if arch == "mlp"
                     else small_cnn(int(ds.x.shape[1]), k, int(width)))
            model_seed = derive_seed(seed, "model", source, n, width, ep)
            train_classifier(model, sub, epochs=int(ep), batch_size=min(batch_size, n), lr=lr, weight_decay=1e-4,
                             seed=model_seed, progress=False, optimizer="adamw", schedule="onecycle")
            model.eval()
            cid.append(_correct(model, id_test))
            for key, test in ood_tests.items():
                cood[key].append(_correct(model, test))
            result.records.append({"source": source, "n": int(n), "width": int(width), "epochs": int(ep),
                                   "seed": int(seed)})
    result.correct_id = torch.stack(cid)
    result.correct_ood = {k: torch.stack(v) for k, v in cood.items()}
    return result


# ------------------------------------------------------------------------------------------------ plot
def effective_robustness_plot(points: Mapping[str, tuple[Any, Any]], fits: Mapping[str, LinearFit] | None = None, *,
                              scale: str = "logit", title: str = "", xlabel: str = "ID accuracy",
                              ylabel: str = "OOD accuracy") -> str:
    """OOD vs ID accuracy on ``scale`` axes (ticks in accuracy), one colour per group, fit lines, y = x dashed.

    Returns a ``data:image/png;base64,...`` URI (:func:`robustlab.report.plots.fig_to_data_uri`).
    """
    from robustlab.report.plots import _colors, fig_to_data_uri, new_figure

    _check_scale(scale)
    fig = new_figure(5.0, 4.2)
    ax = fig.add_subplot()
    fits = dict(fits or {})
    colors = _colors(max(len(points), len(fits), 1))
    allx = []
    for i, (name, (ida, ooda)) in enumerate(points.items()):
        x, y = transform_accuracy(ida, scale).ravel(), transform_accuracy(ooda, scale).ravel()
        allx.append(x)
        ax.scatter(x, y, s=18, color=colors[i % len(colors)], label=name, alpha=0.8)
    xs = np.concatenate(allx) if allx else np.array([-1.0, 1.0])
    grid = np.linspace(xs.min() - 0.2, xs.max() + 0.2, 50)
    names = list(points)
    for name, fit in fits.items():
        c = colors[names.index(name) % len(colors)] if name in names else "black"
        ax.plot(grid, fit.slope * grid + fit.intercept, color=c, lw=1.4, label=f"{name} fit (a={fit.slope:.2f})")
    ax.plot(grid, grid, ls="--", color="grey", lw=0.8, label="y = x")
    if scale != "linear":
        def fmt(v: float, _: Any) -> str:
            return f"{100 * float(inverse_transform(v, scale)):.0f}%"

        ax.xaxis.set_major_formatter(fmt)
        ax.yaxis.set_major_formatter(fmt)
    ax.set_xlabel(f"{xlabel} ({scale} scale)")
    ax.set_ylabel(f"{ylabel} ({scale} scale)")
    ax.set_title(title or "effective robustness")
    ax.grid(True, color="#e3e6ea", linewidth=0.8)
    ax.legend(fontsize=7, frameon=False)
    return fig_to_data_uri(fig)

