"""Slices: named subsets of outcome rows, accuracy per slice, and class-wise accuracy disparity.

A slice picks rows of an outcomes frame by class, by a known dataset attribute (``Dataset.attrs``,
e.g. ShapeWorld's ``background_name`` or ``size``) or by any function of the frame. Everything here
reads outcome rows only (pandas / numpy, no torch, no model), like :mod:`robustlab.evaluate.metrics`.
The disparity measures follow Hu, Wu, Zhang & Zhao, "Understanding the Impact of Adversarial
Robustness on Accuracy Disparity" (ICML 2023): accuracy disparity AD = a_majority - a_minority (and the
ratio of the class-wise errors), besides max - min, the standard deviation and the worst class accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.registry import register
from robustlab.evaluate.metrics import as_frame, reference_correct

__all__ = [
    "GROUP_KEYS",
    "AttributeSlice",
    "ClassSlice",
    "FunctionSlice",
    "Slice",
    "attrs_frame",
    "build_slices",
    "class_disparity",
    "disparity_table",
    "per_class_accuracy",
    "slice_metrics",
]

#: an outcome group: one probe at one setting
GROUP_KEYS = ["probe", "kind", "setting", "param"]


class Slice:
    """A named subset of outcome rows; subclasses implement :meth:`mask`."""

    name: str

    def mask(self, frame) -> np.ndarray:
        """Boolean array, one entry per row of ``frame`` (outcomes, joined with attributes if any)."""
        raise NotImplementedError


@register("slice", "class")
@dataclass(frozen=True)
class ClassSlice(Slice):
    """The examples whose true label is ``label`` (an int class index); named ``class=<label>``."""

    label: int
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"class={int(self.label)}")

    def mask(self, frame) -> np.ndarray:
        return frame["label"].to_numpy() == int(self.label)


@register("slice", "attribute")
@dataclass(frozen=True)
class AttributeSlice(Slice):
    """The examples whose dataset attribute ``attr`` equals ``value`` (or satisfies ``predicate``).

    Args:
        attr: a column of the attributes frame (a key of ``Dataset.attrs``), e.g. ``"background_name"``.
        value: the value to match; a list / tuple / set matches any of its values.
        predicate: instead of ``value``, a vectorised function ``pandas.Series -> bool array``,
            e.g. ``lambda s: s > 0.3``.
        name: slice name; default ``"<attr>=<value>"`` or ``"<attr>:<predicate name>"``.
    """

    attr: str
    value: Any = None
    predicate: Callable[[Any], Any] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if (self.value is None) == (self.predicate is None):
            raise ConfigError(f"AttributeSlice({self.attr!r}): give exactly one of value and predicate",
                              fix="e.g. AttributeSlice('size', predicate=lambda s: s > 0.3) or "
                                  "AttributeSlice('background_name', 'stripes')")
        if not self.name:
            label = (f"{self.attr}={self.value}" if self.predicate is None
                     else f"{self.attr}:{getattr(self.predicate, '__name__', 'predicate')}")
            object.__setattr__(self, "name", label)

    def mask(self, frame) -> np.ndarray:
        if self.attr not in frame.columns:
            from robustlab.core.outcomes import COLUMNS

            have = sorted(c for c in frame.columns if c not in COLUMNS and not c.startswith("_"))
            raise ConfigError(f"slice {self.name!r}: no attribute {self.attr!r} in the frame",
                              fix="pass attrs_frame=attrs_frame(dataset) to slice_metrics; attributes there: "
                                  f"{', '.join(have) or '(none)'}")
        col = frame[self.attr]
        if self.predicate is not None:
            out = np.asarray(self.predicate(col), dtype=bool)
        elif isinstance(self.value, (list, tuple, set, frozenset)):
            out = col.isin(list(self.value)).to_numpy()
        else:
            out = (col == self.value).to_numpy()
        return _checked(out, len(frame), self.name)


@register("slice", "function")
@dataclass(frozen=True)
class FunctionSlice(Slice):
    """The rows selected by ``fn(frame) -> bool array`` (vectorised over the whole frame)."""

    name: str
    fn: Callable[[Any], Any]

    def mask(self, frame) -> np.ndarray:
        return _checked(np.asarray(self.fn(frame), dtype=bool), len(frame), self.name)


class _Range:
    """``lo <= s <= hi`` (either end open), as a named vectorised predicate."""

    def __init__(self, lo: float | None, hi: float | None) -> None:
        self.lo, self.hi = lo, hi
        self.__name__ = f"[{'' if lo is None else f'{lo:g}'}, {'' if hi is None else f'{hi:g}'}]"

    def __call__(self, s: Any) -> np.ndarray:
        v = np.asarray(s, dtype=float)
        out = np.ones(v.shape, dtype=bool)
        if self.lo is not None:
            out &= v >= self.lo
        if self.hi is not None:
            out &= v <= self.hi
        return out


def _import_function(path: str) -> Callable[[Any], Any]:
    import importlib

    module, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"slice function {path!r} cannot be imported: {exc}",
                          fix="give 'package.module:function' of an importable module (on PYTHONPATH)") from None
    if not callable(fn):
        raise ConfigError(f"slice function {path!r} is not callable", fix="point at a function frame -> bool array")
    return fn


def build_slices(specs: Iterable[Any]) -> list[Slice]:
    """:class:`Slice` objects from suite ``slices:`` entries (:class:`robustlab.evaluate.suite.SliceSpec`)."""
    out: list[Slice] = []
    for spec in specs:
        name = spec.key
        if spec.label is not None:
            out.append(ClassSlice(int(spec.label), name=name))
        elif spec.function is not None:
            out.append(FunctionSlice(name, _import_function(spec.function)))
        elif spec.values is not None:
            out.append(AttributeSlice(spec.attribute, value=tuple(spec.values), name=name))
        elif spec.value is not None:
            out.append(AttributeSlice(spec.attribute, value=spec.value, name=name))
        else:
            out.append(AttributeSlice(spec.attribute, predicate=_Range(spec.min, spec.max), name=name))
    return out


def _checked(mask: np.ndarray, n: int, name: str) -> np.ndarray:
    if mask.shape != (n,):
        raise ConfigError(f"slice {name!r} returned a mask of shape {mask.shape} for {n} rows",
                          fix="return one boolean per row of the frame")
    return mask


def attrs_frame(dataset: Any):
    """A DataFrame ``example_id`` + one column per 1-D attribute of ``dataset.attrs`` (others skipped).

    Args:
        dataset: a :class:`~robustlab.data.base.Dataset` (``ids`` and ``attrs`` of length N).
    """
    import pandas as pd

    cols: dict[str, Any] = {"example_id": np.asarray(dataset.ids).astype("int64")}
    for key, values in dataset.attrs.items():
        arr = values.numpy() if hasattr(values, "numpy") else np.asarray(values, dtype=object)
        if arr.ndim == 1:
            cols[key] = arr
    return pd.DataFrame(cols)


def _join(frame, attrs):
    if attrs is None:
        return frame
    if "example_id" not in attrs.columns:
        raise DataError("the attributes frame has no example_id column",
                        fix="build it with attrs_frame(dataset)")
    if attrs["example_id"].duplicated().any():
        raise DataError("the attributes frame repeats example ids", fix="give one row per example")
    clash = [c for c in attrs.columns if c != "example_id" and c in frame.columns]
    if clash:
        raise DataError(f"attribute columns {clash} clash with outcome columns", fix="rename those attributes")
    return frame.merge(attrs, on="example_id", how="left", validate="many_to_one")


def slice_metrics(frame: Any, slices: Iterable[Slice], attrs_frame: Any = None):
    """Accuracy per (probe, kind, setting, param) and slice.

    Args:
        frame: an ``Outcomes`` or its DataFrame.
        slices: :class:`Slice` objects (names must be distinct).
        attrs_frame: optional DataFrame ``example_id`` + attribute columns (see :func:`attrs_frame`),
            joined on ``example_id`` before the slices are evaluated.
    Returns:
        a DataFrame with columns probe, kind, setting, param, slice, n, accuracy, clean_accuracy,
        accuracy_drop; one row per group and slice (``n = 0`` and NaN accuracies for an empty slice).
    """
    import pandas as pd

    slices = list(slices)
    names = [s.name for s in slices]
    if len(set(names)) != len(names):
        raise ConfigError(f"slice names repeat: {names}", fix="give every slice a distinct name")
    frame = _join(as_frame(frame), attrs_frame)
    cols = GROUP_KEYS + ["slice", "n", "accuracy", "clean_accuracy", "accuracy_drop"]
    if frame.empty or not slices:
        return pd.DataFrame(columns=cols)
    frame["_ref"] = reference_correct(frame).astype(float)
    frame["_correct"] = frame["correct"].astype(float)
    groups = frame[GROUP_KEYS].drop_duplicates().reset_index(drop=True)
    parts = []
    for s in slices:
        sub = frame[s.mask(frame)]
        agg = (sub.groupby(GROUP_KEYS, dropna=False, sort=False)
               .agg(n=("_correct", "size"), accuracy=("_correct", "mean"), clean_accuracy=("_ref", "mean"))
               .reset_index())
        part = groups.merge(agg, on=GROUP_KEYS, how="left")
        part.insert(len(GROUP_KEYS), "slice", s.name)
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["n"] = out["n"].fillna(0).astype(int)
    out["accuracy_drop"] = out["clean_accuracy"] - out["accuracy"]
    return out[cols]


def per_class_accuracy(frame: Any):
    """Accuracy of every class in every (probe, kind, setting, param) group.

    Returns:
        a DataFrame with columns probe, kind, setting, param, label, n, accuracy.
    """
    frame = as_frame(frame)
    frame["_correct"] = frame["correct"].astype(float)
    return (frame.groupby(GROUP_KEYS + ["label"], dropna=False, sort=True)
            .agg(n=("_correct", "size"), accuracy=("_correct", "mean")).reset_index())


def class_disparity(accuracy: Mapping[int, float], *, majority: int | None = None,
                    minority: int | None = None, counts: Mapping[int, int] | None = None) -> dict[str, float]:
    """Disparity measures of class-wise accuracies (fractions in [0, 1]).

    Keys: ``max_minus_min``, ``std`` (population standard deviation over classes),
    ``worst_class_accuracy``, ``worst_class``, and the paper's (Hu et al., 2023) ``accuracy_disparity``
    = a_majority - a_minority and ``error_ratio`` = (1 - a_minority) / (1 - a_majority) (inf when the
    majority class has no error, NaN when both have none). ``majority`` / ``minority`` default to the
    most / least frequent class of ``counts`` (e.g. training-set counts); with neither the last two are NaN.
    """
    if not accuracy:
        raise ConfigError("class_disparity needs at least one class accuracy", fix="pass {label: accuracy}")
    labels = sorted(accuracy)
    acc = np.array([float(accuracy[k]) for k in labels])
    out = {"max_minus_min": float(acc.max() - acc.min()), "std": float(acc.std()),
           "worst_class_accuracy": float(acc.min()), "worst_class": float(labels[int(acc.argmin())])}
    if counts is not None and (majority is None or minority is None):
        ranked = sorted(counts, key=lambda k: (-counts[k], k))
        if counts[ranked[0]] != counts[ranked[-1]]:
            majority = ranked[0] if majority is None else majority
            minority = ranked[-1] if minority is None else minority
    if majority is None or minority is None:
        out["accuracy_disparity"] = out["error_ratio"] = float("nan")
        return out
    for k in (majority, minority):
        if k not in accuracy:
            raise ConfigError(f"class {k} has no accuracy", fix=f"pick majority / minority among {labels}")
    a_maj, a_min = float(accuracy[majority]), float(accuracy[minority])
    out["accuracy_disparity"] = a_maj - a_min
    e_maj, e_min = 1.0 - a_maj, 1.0 - a_min
    out["error_ratio"] = (e_min / e_maj if e_maj > 0 else (float("inf") if e_min > 0 else float("nan")))
    return out


def disparity_table(frame: Any, *, majority: int | None = None, minority: int | None = None,
                    counts: Mapping[int, int] | None = None):
    """:func:`class_disparity` of every (probe, kind, setting, param) group: clean rows give the clean
    disparity, transforms the corrupted one and attacks the robust one (clean-wrong = not robust).

    ``counts`` defaults to the label counts of the frame's examples (distinct example ids).
    Returns:
        a DataFrame: probe, kind, setting, param, n_classes, max_minus_min, std, worst_class_accuracy,
        worst_class, accuracy_disparity, error_ratio.
    """
    import pandas as pd

    frame = as_frame(frame)
    if counts is None and not frame.empty:
        counts = frame.drop_duplicates("example_id")["label"].value_counts().to_dict()
    pcs = per_class_accuracy(frame)
    rows = []
    for key, g in pcs.groupby(GROUP_KEYS, dropna=False, sort=False):
        d = class_disparity(dict(zip(g["label"].tolist(), g["accuracy"].tolist())),
                            majority=majority, minority=minority, counts=counts)
        rows.append({**dict(zip(GROUP_KEYS, key)), "n_classes": len(g), **d})
    cols = GROUP_KEYS + ["n_classes", "max_minus_min", "std", "worst_class_accuracy", "worst_class",
                         "accuracy_disparity", "error_ratio"]
    return pd.DataFrame(rows, columns=cols)
