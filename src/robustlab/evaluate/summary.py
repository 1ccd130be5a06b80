"""Finishing a run: outcomes -> metrics, checks, ``summary.json``, ``report.html`` and the run store.

Everything here reads what the jobs wrote to the run directory, so a resumed run, a Dask run and an
in-process run end the same way.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from robustlab.core.outcomes import Outcomes, atomic_write_bytes
from robustlab.core.rng import derive_seed, torch_generator

if TYPE_CHECKING:
    from robustlab.evaluate.runner import Context, Job, RunResult

__all__ = ["finalize_run"]


def finalize_run(run_dir: Path, ctx: Context, jobs: list[Job], job_counts: dict[str, int], wall: float,
                 executor_info: dict[str, Any], fail_under: dict[str, float]) -> RunResult:
    """Gather job outcomes into ``outcomes.parquet``, compute metrics and checks, write summary + report."""
    from robustlab.evaluate.checks import run_checks
    from robustlab.evaluate.metrics import check_fail_under, compute_metrics
    from robustlab.report.html import build_report

    parts = [Outcomes.load(run_dir / "jobs" / f"{j.id}.parquet") for j in jobs]
    outcomes = Outcomes.concat(parts)
    outcomes.save(run_dir / "outcomes.parquet")
    frame = outcomes.to_frame()
    groups = {k: getattr(p, "group", None) for k, p in ctx.probes.items()}
    set_valued = [k for k, p in ctx.probes.items() if getattr(p, "set_valued", False)]
    metrics = compute_metrics(frame, groups=groups, set_valued=set_valued)
    metrics.update(_class_metrics(frame))
    slice_rows = _slice_rows(ctx, frame, run_dir)
    metrics.update(_slice_metrics(slice_rows))
    er_rows, er_notes = _effective_robustness(ctx, frame)
    metrics.update({f"{r['probe']}.effective_robustness[{r['setting']}]": r["effective_robustness"] for r in er_rows})
    probe_info = {k: {"kind": p.kind, "norm": getattr(getattr(p, "threat", None), "norm", None),
                      "query_free": bool(getattr(p, "query_free", False)), "group": getattr(p, "group", None),
                      "set_valued": bool(getattr(p, "set_valued", False))}
                  for k, p in ctx.probes.items()}
    checks = run_checks(frame, probe_info=probe_info, extra=_model_checks(ctx, frame))
    suite = ctx.suite
    previous = _read_json(run_dir / "summary.json")
    summary = {
        "suite": suite.to_dict(),
        "model": {"name": suite.model.label, "repr": repr(ctx.model),
                  "info": getattr(ctx.model, "zoo_info", None)},
        "data": {"name": suite.data.name, "source": ctx.data.source, "n": len(ctx.data),
                 "class_names": ctx.data.class_names, "modality": ctx.data.modality},
        "seed": suite.seed, "device": ctx.device, "versions": _versions(),
        "wall_seconds": round(wall, 3),
        "wall_seconds_total": round(wall + float(previous.get("wall_seconds_total", 0.0) or 0.0), 3),
        "jobs": job_counts, "executor": executor_info, "metrics": metrics, "checks": checks,
        "probe_info": probe_info,
        "slices": slice_rows,
        "effective_robustness": er_rows,
        "notes": list(suite.notes) + _honesty_notes(ctx) + er_notes,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    gates = {**suite.fail_under, **fail_under}
    failures = check_fail_under(metrics, [f"{k}={v}" for k, v in gates.items()]) if gates else []
    summary["fail_under"] = {"gates": gates, "failures": failures}
    summary["fingerprint"] = suite.fingerprint()
    atomic_write_bytes(run_dir / "summary.json", json.dumps(summary, indent=2, default=_json_default).encode())
    build_report(run_dir)
    _record(summary, run_dir)
    from robustlab.evaluate.runner import RunResult

    return RunResult(run_dir=run_dir, summary=summary, failures=failures)


def _class_metrics(frame: Any) -> dict[str, float]:
    """Per-class accuracy disparity for clean, transformed and attacked accuracy (Hu et al. 2023)."""
    from robustlab.evaluate.slices import disparity_table

    out: dict[str, float] = {}
    for r in disparity_table(frame).itertuples():
        where = "" if r.kind == "clean" else f"[{r.setting}]"
        for name in ("worst_class_accuracy", "max_minus_min"):
            value = float(getattr(r, name))
            if np.isfinite(value):
                label = "class_accuracy_gap" if name == "max_minus_min" else name
                out[f"{r.probe}.{label}{where}"] = value
    return out


def _slice_rows(ctx: Context, frame: Any, run_dir: Path) -> list[dict[str, Any]]:
    """Accuracy of every probe setting on every suite slice (also written to ``slices.parquet``)."""
    from robustlab.evaluate.slices import attrs_frame, build_slices, slice_metrics

    if not ctx.suite.slices:
        return []
    table = slice_metrics(frame, build_slices(ctx.suite.slices), attrs_frame(ctx.data))
    atomic_write_bytes(run_dir / "slices.parquet", table.to_parquet(index=False))
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
            for r in table.to_dict("records")]


def _slice_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """``slice[{name}].clean_accuracy`` and ``slice[{name}].{probe}.accuracy[{setting}]`` (for --fail-under)."""
    out: dict[str, float] = {}
    for r in rows:
        if r["accuracy"] is None:
            continue
        if r["kind"] == "clean":
            out[f"slice[{r['slice']}].clean_accuracy"] = float(r["accuracy"])
        else:
            out[f"slice[{r['slice']}].{r['probe']}.accuracy[{r['setting']}]"] = float(r["accuracy"])
    return out


def _effective_robustness(ctx: Context, frame: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """ER of the style probes against the suite's ``baseline:`` family (Taori et al. 2020); notes, never errors."""
    from robustlab.evaluate.baseline import effective_robustness_for_run

    if not ctx.suite.baseline:
        return [], []
    return effective_robustness_for_run(
        ctx.suite.baseline, frame, dataset=ctx.suite.data.name, dataset_options=ctx.suite.data.options,
        probe_names={k: getattr(p, "name", k) for k, p in ctx.probes.items()},
        groups={k: getattr(p, "group", None) for k, p in ctx.probes.items()})


def _record(summary: dict[str, Any], run_dir: Path) -> None:
    """Append the run to the DuckDB store; a store problem never fails a finished run."""
    import warnings

    from robustlab.evaluate.store import append_run

    try:
        append_run(json.loads(json.dumps(summary, default=_json_default)), run_dir)
    except Exception as exc:  # e.g. a locked or corrupt store file
        warnings.warn(f"run not recorded in the store: {exc}", stacklevel=2)


def _model_checks(ctx: Context, frame: Any) -> list[dict[str, Any]]:
    """Model-level gradient-masking checks, run after the jobs (they call a possibly random model)."""
    from robustlab.evaluate.masking import effort_pairs, more_effort_check, run_model_checks

    sub = ctx.data.subset(slice(0, 256))
    extra = run_model_checks(ctx.model, sub.x, sub.y,
                             generator=torch_generator(derive_seed(ctx.suite.seed, "model-checks")))
    pairs = effort_pairs(ctx.probes)
    if pairs:
        extra += more_effort_check(frame, pairs=pairs)
    return extra


def _honesty_notes(ctx: Context) -> list[str]:
    notes = []
    if ctx.data.source:
        notes.append(f"Data: {ctx.data.source}")
    info = getattr(ctx.model, "zoo_info", None)
    if info:
        acc = info.get("test_accuracy")
        notes.append(f"Model: robustlab zoo '{ctx.suite.model.zoo}' trained on this machine"
                     + (f" (test accuracy at training time {acc:.4f})" if isinstance(acc, float) else ""))
    return notes


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    return str(o)


def _versions() -> dict[str, str]:
    import robustlab

    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "robustlab": robustlab.__version__, "platform": platform.platform()}
