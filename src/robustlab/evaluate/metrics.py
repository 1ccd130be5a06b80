"""Metrics computed from outcomes only: a per-setting table, flat named numbers and ``--fail-under``.

Probes never compute metrics (see :mod:`robustlab.core.outcomes`); everything here reads the outcome
rows, so a run directory can be re-scored at any time without a model. Robust accuracy follows the
usual convention (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", 2020): an example the model already gets wrong counts as not robust.
The corruption summary averages accuracy over transforms and severities the way mCE does (Hendrycks
& Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", 2019),
without the AlexNet normalisation, which needs a baseline model we do not have.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from robustlab.core.errors import ConfigError

__all__ = [
    "KIND_ORDER",
    "TABLE_COLUMNS",
    "as_frame",
    "check_fail_under",
    "clean_accuracy",
    "compute_metrics",
    "metrics_table",
    "parse_fail_under",
    "reference_correct",
]

#: order of kinds in tables and reports
KIND_ORDER = ("clean", "transform", "attack", "certifier", "detector", "slice")

TABLE_COLUMNS = ["probe", "kind", "setting", "param", "n", "accuracy", "clean_accuracy", "accuracy_drop",
                 "relative_robustness", "robust_accuracy", "attempted", "broken", "attack_success_rate",
                 "mean_queries", "median_queries", "mean_distance", "certified_accuracy", "abstained", "seconds"]


def as_frame(outcomes: Any):
    """A pandas DataFrame from an :class:`~robustlab.core.outcomes.Outcomes` or a DataFrame (copied)."""
    import pandas as pd

    if isinstance(outcomes, pd.DataFrame):
        return outcomes.copy()
    if hasattr(outcomes, "to_frame"):
        return outcomes.to_frame()
    raise TypeError(f"expected Outcomes or a pandas DataFrame, got {type(outcomes).__name__}")


def reference_correct(frame) -> np.ndarray:
    """Per row: was this example right on the clean input? Taken from the "clean" rows when present
    (paired by example id), else from the row's own ``clean_correct``."""
    own = frame["clean_correct"].to_numpy(dtype=bool)
    clean = frame[frame["kind"] == "clean"]
    if clean.empty:
        return own
    lookup = clean.groupby("example_id")["correct"].max()
    ref = frame["example_id"].map(lookup)
    return np.where(ref.isna().to_numpy(), own, ref.fillna(False).to_numpy(dtype=bool))


def clean_accuracy(frame) -> float:
    """Clean accuracy: mean ``correct`` of the "clean" rows, else mean ``clean_correct`` per example."""
    frame = as_frame(frame)
    clean = frame[frame["kind"] == "clean"]
    if not clean.empty:
        return float(clean.groupby("example_id")["correct"].max().mean())
    if frame.empty:
        return float("nan")
    return float(frame.groupby("example_id")["clean_correct"].max().mean())


def metrics_table(outcomes: Any):
    """One row per (probe, kind, setting, param) with accuracy and, per kind, its robustness numbers.

    Columns (fractions in [0, 1]; NaN where a column does not apply):
        n: rows (examples) in the group; accuracy: mean ``correct`` on the probed inputs;
        clean_accuracy: clean accuracy of the *same* examples; accuracy_drop: clean_accuracy -
        accuracy; relative_robustness: accuracy / clean_accuracy;
        robust_accuracy (attacks): = accuracy, clean-wrong examples count as not robust;
        attempted / broken (attacks): examples attacked (status != "skipped") / flipped;
        attack_success_rate: broken / attempted; mean_queries / median_queries: model calls per
        attempted example; mean_distance: mean perturbation norm of the successful attacks;
        seconds: summed per-example wall time of the group.

    Args:
        outcomes: an ``Outcomes`` or its DataFrame.
    Returns:
        a DataFrame with :data:`TABLE_COLUMNS`, sorted by kind (:data:`KIND_ORDER`), probe and param.
    """
    import pandas as pd

    frame = as_frame(outcomes)
    if frame.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    frame["_ref"] = reference_correct(frame)
    frame["_attempted"] = frame["status"] != "skipped"
    frame["_broken"] = frame["status"] == "broken"
    frame["_certified"] = frame["status"] == "certified"
    frame["_abstained"] = frame["status"] == "abstained"
    q = frame["queries"].astype(float)
    frame["_q"] = q.where(frame["_attempted"] & (q >= 0))
    frame["_d"] = frame["distance"].where(frame["_broken"])
    keys = ["probe", "kind", "setting", "param"]
    g = frame.groupby(keys, dropna=False, sort=False)
    t = g.agg(n=("correct", "size"), accuracy=("correct", "mean"), clean_accuracy=("_ref", "mean"),
              attempted=("_attempted", "sum"), broken=("_broken", "sum"), mean_queries=("_q", "mean"),
              median_queries=("_q", "median"), mean_distance=("_d", "mean"),
              certified_accuracy=("_certified", "mean"), abstained=("_abstained", "mean"),
              seconds=("seconds", "sum")).reset_index()
    t["accuracy"] = t["accuracy"].astype(float)
    t["clean_accuracy"] = t["clean_accuracy"].astype(float)
    t["accuracy_drop"] = t["clean_accuracy"] - t["accuracy"]
    t["relative_robustness"] = t["accuracy"] / t["clean_accuracy"].where(t["clean_accuracy"] > 0)
    is_attack = t["kind"] == "attack"
    t["robust_accuracy"] = t["accuracy"].where(is_attack)
    t["attack_success_rate"] = (t["broken"] / t["attempted"].where(t["attempted"] > 0)).where(is_attack)
    for col in ("attempted", "broken"):
        t[col] = t[col].astype(float).where(is_attack)
    for col in ("mean_queries", "median_queries", "mean_distance"):
        t[col] = t[col].astype(float).where(is_attack)
    is_cert = t["kind"] == "certifier"
    for col in ("certified_accuracy", "abstained"):
        t[col] = t[col].astype(float).where(is_cert)
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    t["_k"] = t["kind"].map(lambda k: order.get(k, len(order)))
    t = t.sort_values(["_k", "probe", "param", "setting"], kind="stable").reset_index(drop=True)
    return t[TABLE_COLUMNS]


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float, np.number)) and math.isfinite(float(v))


#: transform families summarised separately (``Transform.group``); names give the family when unknown
TRANSFORM_GROUPS = ("corruption", "attribute", "style")


def transform_group(probe: str, groups: Mapping[str, Any] | None = None) -> str:
    """The family of a transform probe: its recorded ``group``, else guessed from the name
    (``edit_*`` attribute edits, ``style_*`` natural shifts, anything else a corruption)."""
    g = (groups or {}).get(probe)
    if g in TRANSFORM_GROUPS:
        return str(g)
    return "attribute" if probe.startswith("edit_") else "style" if probe.startswith("style_") else "corruption"


def compute_metrics(outcomes: Any, groups: Mapping[str, Any] | None = None,
                    set_valued: Iterable[str] = ()) -> dict[str, float]:
    """Flat, named numbers for summaries and ``--fail-under`` (fractions in [0, 1]).

    Keys: ``clean_accuracy``, ``n_examples``; per probe and setting ``{probe}.accuracy[{setting}]``
    (and ``{probe}.robust_accuracy[{setting}]``, ``{probe}.attack_success_rate[{setting}]`` for
    attacks; ``{probe}.certified_accuracy[{setting}]`` for certifiers); per probe
    ``{probe}.mean_accuracy`` and ``{probe}.min_accuracy`` over its settings;
    over the corruptions ``corruption.mean_accuracy`` (mean over transforms of their mean accuracy over
    severities, every transform weighted equally), ``corruption.min_accuracy`` and
    ``corruption.relative_robustness`` (mean accuracy / clean accuracy); the same three for attribute
    edits (``attribute.*``) and natural-shift styles (``style.*``), each transform's family given by
    ``groups`` (probe -> ``Transform.group``) or :func:`transform_group`'s name rule; for the
    conformal certifiers named in ``set_valued`` (outcome ``score`` = set size, status certified or
    robust = true label in the set) ``{probe}.coverage[{setting}]`` and
    ``{probe}.mean_set_size[{setting}]``. Undefined (NaN) numbers are left out, so the dict is valid JSON.
    """
    frame = as_frame(outcomes)
    out: dict[str, float] = {}
    out["clean_accuracy"] = clean_accuracy(frame)
    clean = frame[frame["kind"] == "clean"]
    out["n_examples"] = float((clean if not clean.empty else frame)["example_id"].nunique())
    table = metrics_table(frame)
    probe_means: dict[str, dict[str, float]] = {}
    for (probe, kind), rows in table[table["kind"] != "clean"].groupby(["probe", "kind"], sort=False):
        for r in rows.itertuples():
            out[f"{probe}.accuracy[{r.setting}]"] = float(r.accuracy)
            if kind == "attack":
                out[f"{probe}.robust_accuracy[{r.setting}]"] = float(r.robust_accuracy)
                out[f"{probe}.attack_success_rate[{r.setting}]"] = float(r.attack_success_rate)
        if kind == "certifier":  # certified accuracy: correct *and* certified at this radius
            cert = frame[(frame["probe"] == probe) & (frame["kind"] == "certifier")]
            for setting, g in cert.groupby("setting", sort=False):
                out[f"{probe}.certified_accuracy[{setting}]"] = float((g["status"] == "certified").mean())
                if probe in set(set_valued):
                    out[f"{probe}.coverage[{setting}]"] = float(g["status"].isin(["certified", "robust"]).mean())
                    out[f"{probe}.mean_set_size[{setting}]"] = float(g["score"].astype(float).mean())
        out[f"{probe}.mean_accuracy"] = float(rows["accuracy"].mean())
        out[f"{probe}.min_accuracy"] = float(rows["accuracy"].min())
        if kind == "transform":
            probe_means.setdefault(transform_group(probe, groups), {})[probe] = out[f"{probe}.mean_accuracy"]
    transforms = table[table["kind"] == "transform"]
    for family, means in probe_means.items():
        rows = transforms[transforms["probe"].isin(list(means))]
        out[f"{family}.mean_accuracy"] = float(np.mean(list(means.values())))
        out[f"{family}.min_accuracy"] = float(rows["accuracy"].min())
        if out["clean_accuracy"] > 0:
            out[f"{family}.relative_robustness"] = out[f"{family}.mean_accuracy"] / out["clean_accuracy"]
    return {k: float(v) for k, v in out.items() if _finite(v)}


def parse_fail_under(spec: str) -> tuple[str, float]:
    """Parse ``METRIC=VALUE`` (or ``METRIC>=VALUE``; ``VALUE`` may be a percentage like ``80%``).

    The split is at the *last* ``=``, so metric names with settings work:
    ``pgd_linf.robust_accuracy[eps=0.0314]=0.4`` -> ``("pgd_linf.robust_accuracy[eps=0.0314]", 0.4)``.
    """
    fix = "write it as METRIC=VALUE, e.g. --fail-under clean_accuracy=0.9"
    if not isinstance(spec, str) or "=" not in spec:
        raise ConfigError(f"--fail-under {spec!r} has no '='", fix=fix)
    head, _, value = spec.rpartition("=")
    name = head.removesuffix(">")
    name, value = name.strip(), value.strip()
    if not name:
        raise ConfigError(f"--fail-under {spec!r} names no metric", fix=fix)
    try:
        number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ConfigError(f"--fail-under {spec!r}: {value!r} is not a number", fix=fix) from None
    if not math.isfinite(number):
        raise ConfigError(f"--fail-under {spec!r}: the threshold must be finite", fix=fix)
    return name, number


def check_fail_under(metrics: Mapping[str, float], specs: Iterable[str | tuple[str, float]]) -> list[str]:
    """Compare metrics with thresholds; one message per metric below its threshold (empty: all pass).

    Args:
        metrics: the dict of :func:`compute_metrics`.
        specs: ``"METRIC=VALUE"`` strings or ``(name, value)`` pairs.
    Raises:
        ConfigError: a named metric does not exist; the message lists the closest names and the fix
            lists what exists.
    """
    failures: list[str] = []
    for spec in specs:
        name, threshold = parse_fail_under(spec) if isinstance(spec, str) else (str(spec[0]), float(spec[1]))
        if name not in metrics:
            close = difflib.get_close_matches(name, list(metrics), n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            avail = sorted(metrics)
            shown = ", ".join(avail[:40]) + (f", ... ({len(avail) - 40} more)" if len(avail) > 40 else "")
            raise ConfigError(f"--fail-under names an unknown metric {name!r}{hint}",
                              fix=f"use one of the metrics this run has: {shown or '(none)'}")
        value = float(metrics[name])
        if not math.isfinite(value):
            failures.append(f"{name} is undefined (NaN), required >= {threshold:g}")
        elif value < threshold:
            failures.append(f"{name} = {value:.4g} < {threshold:g}")
    return failures
