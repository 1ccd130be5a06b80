"""Baseline-family files: a family's ID→OOD lines per natural shift, saved once, used by every run.

Effective robustness (Taori et al., "Measuring Robustness to Natural Distribution Shifts in Image
Classification", 2020; Nguyen et al., "Quality Not Quantity", NeurIPS 2022) compares a model's
accuracy under a shift with what a *baseline family* of standard models of the same clean accuracy
gets (:mod:`robustlab.evaluate.effective`). Training that family for every run would be wasteful, so
:func:`make_baseline` trains it once (12 narrow ShapeWorld ResNets, or
:func:`~robustlab.evaluate.effective.model_family_sweep` small CNNs, varying training-set size, width and
epochs on ShapeWorld), evaluates it on the clean test set and
on every (style, severity) shift, fits the line per shift, and :func:`save_baseline` writes JSON::

    {"format": "robustlab-baseline", "version": 1, "dataset": "shapeworld", "dataset_options": {"size": 32},
     "scale": "logit", "eps": 0.0001, "id_test": {"split": "test", "n": 1000, "seed": 0},
     "shifts": [{"probe": "style_sketch", "setting": "severity=3", "id_acc": [...], "ood_acc": [...],
                 "slope": 0.8, "intercept": -1.2, "r2": 0.9, "n_points": 12}, ...],
     "models": [{"source": "shapeworld", "n": 500, "width": 8, "epochs": 3, "seed": 0}, ...],
     "seeds": [0], "robustlab_version": "0.1.0", "created": "...", "notes": [...]}

``probe`` and ``setting`` are spelled as in a run's outcomes (the registry name and
``severity=3``), so a suite's ``baseline:`` file (:func:`effective_robustness_for_run`) adds
``{probe}.effective_robustness[{setting}]`` metrics: ``ER = acc_shift − line(acc_clean)``.

CPU-sized: the family is a dozen narrow ResNets trained for minutes (far weaker than the ImageNet families
of Taori et al.), so a much stronger model is compared with the line *extrapolated*
beyond the family's ID accuracies; the file records the family's range and a run notes the
extrapolation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.evaluate.effective import SCALES, LinearFit, fit_baseline

__all__ = [
    "BASELINE_FORMAT",
    "BASELINE_SIZES",
    "Baseline",
    "BaselineShift",
    "baseline_effective_robustness",
    "effective_robustness_for_run",
    "load_baseline",
    "make_baseline",
    "save_baseline",
]

BASELINE_FORMAT = "robustlab-baseline"
_VERSION = 1

#: family sizes: training images drawn, nested subset sizes, widths (ResNet stage widths / CNN width), epochs,
#: clean test images
BASELINE_SIZES: dict[str, dict[str, Any]] = {
    "default": {"train_n": 6000, "sizes": (1000, 2500, 6000), "widths": ((8, 16, 32), (16, 32, 64)),
                "cnn_widths": (8, 16), "epochs": (3, 10), "test_n": 1000},
    "quick": {"train_n": 192, "sizes": (64, 128, 192), "widths": ((4, 8, 8),), "cnn_widths": (4,), "epochs": (1, 2),
              "test_n": 96},
}
ARCHS = ("resnet", "cnn")


@torch.no_grad()
def _correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]).argmax(1) == y[i:i + batch] for i in range(0, len(x), batch)])


def _resnet_model(train: Any, test: Any, ood: Mapping[str, Any], n: int, widths: Sequence[int], epochs: int,
                  seed: int, lr: float = 1e-2) -> Any:
    """One family member: a ShapeWorldResNet (the zoo model's architecture, narrower) on the first ``n`` of a
    seeded permutation (nested subsets), AdamW + one-cycle; its correctness as a one-model SweepResult."""
    from robustlab.core.rng import derive_seed, torch_generator
    from robustlab.data.base import Dataset
    from robustlab.evaluate.effective import SweepResult
    from robustlab.models.architectures import ShapeWorldResNet
    from robustlab.models.training import train_classifier

    perm = torch.randperm(len(train), generator=torch_generator(derive_seed(seed, "sweep", "shapeworld")))[:n]
    sub = Dataset(x=train.x[perm], y=train.y[perm], class_names=list(train.class_names), name=f"shapeworld[{n}]")
    k = len(train.class_names)
    model = ShapeWorldResNet(int(train.x.shape[1]), k, widths=tuple(int(w) for w in widths), blocks=1, stem_stride=2)
    train_classifier(model, sub, epochs=int(epochs), batch_size=min(64, n), lr=lr, weight_decay=1e-4,
                     seed=derive_seed(seed, "model", n, *widths, epochs), progress=False, optimizer="adamw",
                     schedule="onecycle")
    model.eval()
    return SweepResult(records=[{"source": "shapeworld", "arch": "resnet", "n": int(n), "width": int(widths[-1]),
                                 "widths": [int(w) for w in widths], "epochs": int(epochs), "seed": int(seed)}],
                       correct_id=_correct(model, test.x, test.y)[None],
                       correct_ood={key: _correct(model, d.x, d.y)[None] for key, d in ood.items()})


@dataclass(frozen=True)
class BaselineShift:
    """One shift of a baseline: the family's (ID, OOD) accuracies and the line fitted through them."""

    probe: str
    setting: str
    id_acc: tuple[float, ...]
    ood_acc: tuple[float, ...]
    fit: LinearFit

    @property
    def key(self) -> tuple[str, str]:
        return (self.probe, self.setting)

    def to_dict(self) -> dict[str, Any]:
        return {"probe": self.probe, "setting": self.setting, "id_acc": list(self.id_acc),
                "ood_acc": list(self.ood_acc), "slope": self.fit.slope, "intercept": self.fit.intercept,
                "r2": None if not math.isfinite(self.fit.r2) else self.fit.r2, "n_points": self.fit.n_points}


@dataclass
class Baseline:
    """A baseline family's lines for one dataset (see the module docstring for the JSON format)."""

    dataset: str
    shifts: list[BaselineShift]
    scale: str = "logit"
    eps: float = 1e-4
    dataset_options: dict[str, Any] = field(default_factory=dict)
    id_test: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    robustlab_version: str = ""
    created: str = ""
    notes: list[str] = field(default_factory=list)

    def shift(self, probe: str, setting: str) -> BaselineShift | None:
        """The line for ``probe`` at ``setting`` (e.g. ``"style_sketch"``, ``"severity=3"``), or None."""
        for s in self.shifts:
            if s.key == (probe, setting):
                return s
        return None

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [s.key for s in self.shifts]

    def to_dict(self) -> dict[str, Any]:
        return {"format": BASELINE_FORMAT, "version": _VERSION, "dataset": self.dataset,
                "dataset_options": dict(self.dataset_options), "scale": self.scale, "eps": self.eps,
                "id_test": dict(self.id_test), "shifts": [s.to_dict() for s in self.shifts],
                "models": list(self.models), "seeds": list(self.seeds), "robustlab_version": self.robustlab_version,
                "created": self.created, "notes": list(self.notes)}


def _style_name(style: str) -> str:
    from robustlab.transforms.styles import STYLES

    key = str(style).strip().lower().removeprefix("style_")
    if key not in STYLES:
        raise ConfigError(f"unknown style {style!r} for a baseline",
                          fix=f"use some of {', '.join('style_' + s for s in STYLES)}")
    return f"style_{key}"


def make_baseline(dataset: str = "shapeworld", styles: Sequence[str] = ("style_sketch", "style_cartoon"),
                  severities: Sequence[float] = (3,), *, quick: bool = False, seed: int = 0, scale: str = "logit",
                  size: int = 32, arch: str = "resnet",
                  progress: Callable[[int, int, str], None] | None = None) -> Baseline:
    """Train a family of small models on ShapeWorld and fit its ID→OOD line per (style, severity) (Taori et al., 2020).

    The family spans the training-set sizes × widths × epochs of ``BASELINE_SIZES["quick" if quick else
    "default"]`` (12 models by default, 6 quick), trained on nested seeded subsets with AdamW and a
    one-cycle schedule. ``arch="resnet"`` (default) trains narrow
    :class:`~robustlab.models.architectures.ShapeWorldResNet` s (the zoo model's architecture, stage
    widths 8/16/32 and 16/32/64); ``arch="cnn"`` runs
    :func:`~robustlab.evaluate.effective.model_family_sweep` of ``small_cnn`` s, which stay near chance on
    ShapeWorld at this budget (no normalisation layers), so its line says little. Every model is evaluated
    on the same ``test`` images, clean and under each style at each severity
    (:func:`~robustlab.transforms.styles.shift_dataset`, seeded by ``seed``).

    Args:
        dataset: only ``"shapeworld"`` (the styles need its images; other data is future work).
        styles: ``style_*`` transform names (``"sketch"`` works too).
        severities: style severities in (0, 5].
        quick: the seconds-long family for tests (6 tiny models, 96 test images).
        seed: seeds data, subsets, models and styles.
        scale: the fit's scale (``"logit"``, ``"probit"`` or ``"linear"``).
        size: ShapeWorld image side (the suite's ``data.options.size``, default 32).
        arch: ``"resnet"`` or ``"cnn"`` (see above).
        progress: called as ``progress(done, total, label)`` after every trained model.
    """
    import robustlab
    from robustlab.data import load_dataset
    from robustlab.evaluate.effective import SweepResult, model_family_sweep
    from robustlab.transforms.styles import shift_dataset

    if str(dataset).strip().lower() != "shapeworld":
        raise ConfigError(f"make_baseline supports dataset 'shapeworld', got {dataset!r}",
                          fix="use --data shapeworld (the style shifts and the family are sized for it)")
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}", fix=f"use one of {list(SCALES)}")
    names = list(dict.fromkeys(_style_name(s) for s in styles))
    if not names:
        raise ConfigError("make_baseline needs at least one style", fix="e.g. styles=['style_sketch']")
    sev = [float(s) for s in severities]
    if not sev or any(not (0 < s <= 5) for s in sev):
        raise ConfigError(f"severities must be non-empty numbers in (0, 5], got {list(severities)}",
                          fix="e.g. --severities 3 or --severities 1,3,5")
    if arch not in ARCHS:
        raise ConfigError(f"unknown baseline family arch {arch!r}", fix=f"use one of {list(ARCHS)}")
    cfg = BASELINE_SIZES["quick" if quick else "default"]
    train = load_dataset("shapeworld", split="train", n=cfg["train_n"], seed=seed, size=size)
    test = load_dataset("shapeworld", split="test", n=cfg["test_n"], seed=seed, size=size)
    shifts = {(p, f"severity={s:.4g}"): shift_dataset(test, p, severity=s, seed=seed) for p in names for s in sev}
    ood = {f"{p}@{st}": ds for (p, st), ds in shifts.items()}
    widths = cfg["widths"] if arch == "resnet" else cfg["cnn_widths"]
    configs = [(n, w, e) for n in cfg["sizes"] for w in widths for e in cfg["epochs"]]
    sweep = SweepResult()
    for i, (n, w, e) in enumerate(configs):  # one model per call: same seeds as one big sweep, with progress
        if arch == "resnet":
            sweep.extend(_resnet_model(train, test, ood, n, w, e, seed))
        else:
            sweep.extend(model_family_sweep({"shapeworld": train}, test, ood, sizes=(n,), widths=(w,), epochs=(e,),
                                            seed=seed, arch="cnn"))
        if progress is not None:
            progress(i + 1, len(configs), f"n={n} width={'/'.join(map(str, w)) if arch == 'resnet' else w} "
                                          f"epochs={e}")
    id_acc = sweep.id_acc()
    out = []
    for (p, st) in shifts:
        ood_acc = sweep.ood_acc(f"{p}@{st}")
        out.append(BaselineShift(p, st, tuple(float(v) for v in id_acc), tuple(float(v) for v in ood_acc),
                                 fit_baseline(id_acc, ood_acc, scale=scale)))
    shown_widths = [list(w) if arch == "resnet" else w for w in widths]
    return Baseline(
        dataset="shapeworld", shifts=out, scale=scale, dataset_options={"size": int(size)},
        id_test={"split": "test", "n": int(cfg["test_n"]), "seed": int(seed)}, models=sweep.records,
        seeds=[int(seed)], robustlab_version=robustlab.__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        notes=[f"family: {len(configs)} "
               + ("ShapeWorldResNets (robustlab.models.architectures)" if arch == "resnet"
                  else "small CNNs (robustlab.evaluate.effective.small_cnn)")
               + f" trained on ShapeWorld subsets of {list(cfg['sizes'])} images, widths {shown_widths}, "
               f"epochs {list(cfg['epochs'])}" + (" (quick size)" if quick else ""),
               f"family clean accuracy {id_acc.min():.3f} .. {id_acc.max():.3f}: a model outside this range is "
               "compared with the line extrapolated beyond the family"])


# ------------------------------------------------------------------------------------------- file format
def save_baseline(baseline: Baseline, path: str | Path) -> Path:
    """Write ``baseline`` as JSON to ``path`` atomically; returns the path."""
    from robustlab.core.outcomes import atomic_write_bytes

    if not isinstance(baseline, Baseline):
        raise ConfigError(f"save_baseline needs a Baseline, got {type(baseline).__name__}",
                          fix="pass make_baseline(...) or load_baseline(path)")
    return atomic_write_bytes(Path(path), json.dumps(baseline.to_dict(), indent=1).encode())


def _bad(path: Any, what: str) -> DataError:
    return DataError(f"baseline file {path}: {what}",
                     fix="recreate it with `robustlab baseline --data shapeworld --styles ... --out FILE`")


def _accs(v: Any, name: str, path: Any) -> tuple[float, ...]:
    if not isinstance(v, list) or len(v) < 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                                        for a in v):
        raise _bad(path, f"{name} must be a list of >= 2 numbers")
    if not all(0.0 <= a <= 1.0 for a in v):
        raise _bad(path, f"{name} holds accuracies outside [0, 1]")
    return tuple(float(a) for a in v)


def _number(d: Mapping[str, Any], key: str, path: Any, where: str) -> float:
    v = d.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise _bad(path, f"{where}: '{key}' must be a finite number, got {v!r}")
    return float(v)


def baseline_from_dict(data: Any, path: Any = "(dict)") -> Baseline:
    """Validate a baseline given as a dict (the JSON file's content)."""
    if not isinstance(data, dict):
        raise _bad(path, f"expected a JSON object, got {type(data).__name__}")
    if data.get("format") != BASELINE_FORMAT:
        raise _bad(path, f"'format' is {data.get('format')!r}, not {BASELINE_FORMAT!r} (not a baseline file?)")
    if data.get("version") != _VERSION:
        raise _bad(path, f"unsupported version {data.get('version')!r} (this robustlab reads version {_VERSION})")
    for key in ("dataset", "scale", "shifts"):
        if key not in data:
            raise _bad(path, f"missing field '{key}'")
    if not isinstance(data["dataset"], str) or not data["dataset"]:
        raise _bad(path, "'dataset' must be a non-empty string")
    if data["scale"] not in SCALES:
        raise _bad(path, f"'scale' is {data['scale']!r}, expected one of {list(SCALES)}")
    eps = _number(data, "eps", path, "top level") if "eps" in data else 1e-4
    if not isinstance(data["shifts"], list) or not data["shifts"]:
        raise _bad(path, "'shifts' must be a non-empty list")
    shifts, seen = [], set()
    for i, s in enumerate(data["shifts"]):
        where = f"shifts[{i}]"
        if not isinstance(s, dict):
            raise _bad(path, f"{where} must be an object")
        for key in ("probe", "setting"):
            if not isinstance(s.get(key), str) or not s[key]:
                raise _bad(path, f"{where}: '{key}' must be a non-empty string (e.g. 'style_sketch', 'severity=3')")
        if (s["probe"], s["setting"]) in seen:
            raise _bad(path, f"{where}: shift {s['probe']} {s['setting']} appears twice")
        seen.add((s["probe"], s["setting"]))
        ida, ooda = _accs(s.get("id_acc"), f"{where}.id_acc", path), _accs(s.get("ood_acc"), f"{where}.ood_acc", path)
        if len(ida) != len(ooda):
            raise _bad(path, f"{where}: {len(ida)} id_acc but {len(ooda)} ood_acc values (one pair per model)")
        r2 = s.get("r2")
        fit = LinearFit(_number(s, "slope", path, where), _number(s, "intercept", path, where), data["scale"],
                        int(s.get("n_points") or len(ida)), float(r2) if isinstance(r2, (int, float)) else float("nan"),
                        eps)
        shifts.append(BaselineShift(s["probe"], s["setting"], ida, ooda, fit))
    lists = {k: data.get(k) or [] for k in ("models", "seeds", "notes")}
    for k, v in lists.items():
        if not isinstance(v, list):
            raise _bad(path, f"'{k}' must be a list")
    opts = data.get("dataset_options") or {}
    test = data.get("id_test") or {}
    if not isinstance(opts, dict) or not isinstance(test, dict):
        raise _bad(path, "'dataset_options' and 'id_test' must be objects")
    return Baseline(dataset=data["dataset"], shifts=shifts, scale=data["scale"], eps=eps, dataset_options=opts,
                    id_test=test, models=lists["models"], seeds=lists["seeds"],
                    robustlab_version=str(data.get("robustlab_version", "")), created=str(data.get("created", "")),
                    notes=[str(n) for n in lists["notes"]])


def load_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline JSON file (ConfigError: no such file; DataError: not a valid baseline)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"baseline file {path} does not exist",
                          fix="create it with `robustlab baseline --data shapeworld --styles style_sketch "
                              f"--severities 3 --out {path}` or correct the path")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _bad(path, f"not readable JSON ({exc})") from None
    return baseline_from_dict(data, path)


# ------------------------------------------------------------------------------------- effective robustness
def baseline_effective_robustness(baseline: Baseline, frame_or_metrics_table: Any,
                                  clean_accuracy: float | None = None, *,
                                  probe_names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Per (probe, setting) the baseline covers: accuracy, the line's prediction and ER (Taori et al., 2020).

    Args:
        baseline: a :class:`Baseline`.
        frame_or_metrics_table: a run's outcomes (frame or ``Outcomes``) or its
            :func:`~robustlab.evaluate.metrics.metrics_table`.
        clean_accuracy: the model's clean (ID) accuracy; default: each row's clean accuracy on the same
            examples (the table's ``clean_accuracy`` column).
        probe_names: probe key (a suite ``id``) -> registry name, when ids differ from names.
    Returns:
        rows ``{probe, name, setting, accuracy, clean_accuracy, predicted, effective_robustness, slope,
        intercept, n_points, family_min, family_max, family_id_acc, family_ood_acc, scale}``, in the table's
        order; empty when nothing matches.
    """
    from robustlab.evaluate.metrics import metrics_table

    if not isinstance(baseline, Baseline):
        raise ConfigError(f"baseline_effective_robustness needs a Baseline, got {type(baseline).__name__}",
                          fix="load it with load_baseline(path)")
    table = frame_or_metrics_table
    cols = set(getattr(table, "columns", []))
    if not {"probe", "kind", "setting", "accuracy", "clean_accuracy"} <= cols:
        table = metrics_table(table)
    if clean_accuracy is not None and not (0.0 <= float(clean_accuracy) <= 1.0):
        raise DataError(f"clean_accuracy must lie in [0, 1], got {clean_accuracy}", fix="pass a fraction")
    names = dict(probe_names or {})
    rows = []
    for r in table[table["kind"] == "transform"].itertuples():
        name = names.get(r.probe, r.probe)
        line = baseline.shift(name, str(r.setting))
        if line is None:
            continue
        clean = float(r.clean_accuracy) if clean_accuracy is None else float(clean_accuracy)
        acc = float(r.accuracy)
        if not (math.isfinite(clean) and math.isfinite(acc)):
            continue
        pred = float(line.fit.predict(clean))
        rows.append({"probe": r.probe, "name": name, "setting": str(r.setting), "accuracy": acc,
                     "clean_accuracy": clean, "predicted": pred, "effective_robustness": acc - pred,
                     "slope": line.fit.slope, "intercept": line.fit.intercept, "n_points": line.fit.n_points,
                     "family_min": float(np.min(line.id_acc)), "family_max": float(np.max(line.id_acc)),
                     "family_id_acc": list(line.id_acc), "family_ood_acc": list(line.ood_acc),
                     "scale": line.fit.scale})
    return rows


def effective_robustness_for_run(path: str | Path, frame: Any, *, dataset: str,
                                 dataset_options: Mapping[str, Any] | None = None,
                                 probe_names: Mapping[str, str] | None = None,
                                 groups: Mapping[str, str | None] | None = None
                                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """ER rows for a finished run's style probes and notes on what could not be matched; never raises.

    A missing or invalid file, another dataset or image size, or no shared (probe, setting) gives a note
    and no rows. ``groups`` (probe key -> transform group) restricts the match to ``"style"`` probes.
    """
    try:
        baseline = load_baseline(path)
    except (ConfigError, DataError) as exc:
        return [], [f"Effective robustness: not computed, {exc.message} ({exc.fix})"]
    if baseline.dataset.strip().lower() != str(dataset).strip().lower():
        return [], [f"Effective robustness: not computed, the baseline {path} was fitted on "
                    f"'{baseline.dataset}' but this run evaluates '{dataset}'"]
    size = (dataset_options or {}).get("size", 32)
    bsize = baseline.dataset_options.get("size", 32)
    if bsize != size:
        return [], [f"Effective robustness: not computed, the baseline {path} used {baseline.dataset} images of "
                    f"side {bsize}, this run {size}"]
    frame = frame.copy()
    if groups is not None:
        style = {k for k, g in groups.items() if g == "style"}
        frame = frame[frame["probe"].isin(style) | (frame["kind"] == "clean")]
    try:
        rows = baseline_effective_robustness(baseline, frame, probe_names=probe_names)
    except Exception as exc:  # a finished run must never crash here
        return [], [f"Effective robustness: not computed ({exc})"]
    if not rows:
        shown = ", ".join(f"{p} {s}" for p, s in baseline.keys[:6])
        return [], [f"Effective robustness: the baseline {path} covers {shown}"
                    f"{' ...' if len(baseline.keys) > 6 else ''}, none of this run's style probes and settings"]
    lo, hi = min(r["family_min"] for r in rows), max(r["family_max"] for r in rows)
    clean = max(r["clean_accuracy"] for r in rows)
    notes = [f"Effective robustness: {len(rows)} style settings against the baseline family of {path} "
             f"({len(baseline.models) or rows[0]['n_points']} models, {baseline.scale} fit, family clean accuracy "
             f"{lo:.3f} .. {hi:.3f})"
             + (f"; this model's clean accuracy {clean:.3f} lies outside the family's range, so the line is "
                "extrapolated" if not (lo <= clean <= hi) else "")]
    return rows, notes
