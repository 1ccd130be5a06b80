"""``build_report(run_dir)``: one self-contained HTML page telling the story of a run.

The page is built from the run directory alone (outcomes, ``summary.json``, ``suite.yaml``,
``examples/``), so it can be rebuilt at any time without the model. It embeds everything: CSS inline,
figures as base64 PNG, no script, no font, no URL; a Content-Security-Policy forbids the browser to
fetch anything, and URLs inside user text are written with an entity so the file holds no literal one.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robustlab.core.errors import RunError
from robustlab.core.outcomes import Outcomes, atomic_write_bytes
from robustlab.evaluate.checks import SEVERITIES, run_checks
from robustlab.evaluate.metrics import clean_accuracy, compute_metrics, metrics_table, transform_group
from robustlab.report import plots

__all__ = ["SECTIONS", "build_report", "render_report", "report_context"]

#: stable section ids, in page order
SECTIONS = ("header", "summary", "corruptions", "attacks", "slices", "examples", "checks", "provenance")
_URL = re.compile(r"(?i)\b(https?|ftps?|wss?)://")
_NUM = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")


def build_report(run_dir: str | Path, *, out: str | Path | None = None,
                 probe_info: Mapping[str, Mapping[str, Any]] | None = None, max_example_sets: int = 24) -> Path:
    """Write ``report.html`` for a run directory and return its path.

    Args:
        run_dir: the run directory (``outcomes.parquet`` or ``jobs/*.parquet``, ``summary.json``, ...).
        out: where to write (default ``run_dir/report.html``); written atomically.
        probe_info: per-probe hints for the checks and plots (``norm``, ``eps_large``, ...); defaults to
            ``summary["probe_info"]`` when the summary has one.
        max_example_sets: at most this many (probe, setting) example sets are shown, one per probe.
    Raises:
        RunError: the directory does not exist or holds no outcomes.
    """
    run_dir = Path(run_dir)
    html = render_report(report_context(run_dir, probe_info=probe_info, max_example_sets=max_example_sets))
    return atomic_write_bytes(Path(out) if out else run_dir / "report.html", html.encode("utf-8"))


def render_report(context: Mapping[str, Any]) -> str:
    """Render the Jinja2 template (package data ``report/templates/report.html.j2``) with ``context``."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(pct=_pct, num=_num, duration=_duration, heat=_heat)
    html = env.get_template("report.html.j2").render(**context)
    return _URL.sub(lambda m: m.group(1) + "&#58;//", html)


def _load_frame(run_dir: Path):
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist", fix="pass the directory `robustlab run` wrote")
    path = run_dir / "outcomes.parquet"
    if path.exists():
        return Outcomes.load(path).to_frame(), []
    parts = sorted((run_dir / "jobs").glob("*.parquet"))
    if not parts:
        raise RunError(f"{run_dir} has no outcomes.parquet and no jobs/*.parquet",
                       fix="run the suite first (robustlab run SUITE --out RUN_DIR) or --resume it")
    note = f"outcomes.parquet is missing: the report is built from {len(parts)} finished job files"
    return Outcomes.concat(Outcomes.load(p) for p in parts).to_frame(), [note]


def report_context(run_dir: str | Path, *, probe_info: Mapping[str, Mapping[str, Any]] | None = None,
                   max_example_sets: int = 24) -> dict[str, Any]:
    """Everything the template shows, computed from the run directory (JSON-like values)."""
    run_dir = Path(run_dir)
    frame, notes = _load_frame(run_dir)
    summary_path = run_dir / "summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if not summary:
        notes.append("summary.json is missing: model, data and versions are unknown")
    info = dict(probe_info or summary.get("probe_info") or {})
    table = metrics_table(frame)
    groups = {k: (v or {}).get("group") for k, v in info.items()}
    set_valued = [k for k, v in info.items() if (v or {}).get("set_valued")]
    metrics = compute_metrics(frame, groups=groups, set_valued=set_valued)
    clean = clean_accuracy(frame)
    family = table["probe"].map(lambda p: transform_group(p, groups)).where(table["kind"] == "transform")
    checks = summary.get("checks") if isinstance(summary.get("checks"), list) else run_checks(frame, info)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    checks = sorted(checks, key=lambda c: order.get(c.get("severity"), 0))
    data = dict(summary.get("data") or {})
    class_names = list(data.get("class_names") or [])
    suite = summary.get("suite") or {}
    er_rows = [r for r in summary.get("effective_robustness") or [] if isinstance(r, dict)]
    suite_yaml = (run_dir / "suite.yaml").read_text() if (run_dir / "suite.yaml").exists() else (
        _yaml(suite) if suite else "")
    return {
        "title": str(suite.get("name") or run_dir.name),
        "run_dir": str(run_dir.resolve()),
        "date": _date(summary, run_dir),
        "wall_seconds": summary.get("wall_seconds"),
        "seed": summary.get("seed", suite.get("seed")),
        "model": _described(summary.get("model")),
        "data": {k: v for k, v in data.items() if k != "class_names"} | {"classes": _classes(class_names)},
        "versions": dict(summary.get("versions") or {}),
        "headline": _headline(table, metrics, clean, checks),
        "clean_accuracy": clean,
        "corruption_plot": plots.corruption_plot(table[family == "corruption"], clean),
        "style_plot": plots.style_plot(table[family == "style"], clean, **_er_marks(er_rows, table[family == "style"])),
        "er_rows": er_rows,
        "er_plot": _er_plot(er_rows),
        "attribute_plot": plots.corruption_plot(table[family == "attribute"], clean, xlabel="edit level"),
        "corruption_table": _pivot(table),
        "attack_plot": plots.security_curve_plot(table, clean, info),
        "attack_rows": _records(table[table["kind"] == "attack"]),
        "other_rows": _records(table[~table["kind"].isin(["clean", "transform", "attack"])]),
        "certified_plot": plots.certified_plot(table, info),
        "certified_gap": _certified_gap(table[~table["probe"].isin(set_valued)], info),
        "conformal_rows": _conformal_rows(metrics, table[table["probe"].isin(set_valued)]),
        "slice_table": _slice_table(summary, run_dir),
        "disparity_rows": _disparity_rows(frame, class_names),
        "examples": _examples(run_dir / "examples", class_names, max_example_sets),
        "checks": checks,
        "check_counts": {s: sum(c.get("severity") == s for c in checks) for s in SEVERITIES},
        "suite_yaml": suite_yaml,
        "jobs": dict(summary.get("jobs") or {}),
        "executor": summary.get("executor"),
        "notes": [str(n) for n in summary.get("notes") or []] + notes,
        "metrics": metrics,
        "n_rows": len(frame),
    }


def _headline(table, metrics: dict[str, float], clean: float, checks: list[dict]) -> list[dict]:
    cards = [{"label": "clean accuracy", "value": clean, "detail": f"{int(metrics.get('n_examples', 0))} examples"}]
    for fam, label in (("corruption", "corruptions"), ("attribute", "attribute edits"), ("style", "style shifts")):
        if f"{fam}.mean_accuracy" in metrics:
            rel = metrics.get(f"{fam}.relative_robustness")
            cards.append({"label": f"mean accuracy under {label}", "value": metrics[f"{fam}.mean_accuracy"],
                          "detail": f"{_pct(rel)} of clean" if rel is not None else ""})
    attacks = table[table["kind"] == "attack"]
    for probe, rows in attacks.groupby("probe", sort=True):
        rows = rows.sort_values("param")
        cards.append({"label": f"{probe} robust accuracy", "value": None,
                      "items": [(r.setting, r.robust_accuracy) for r in rows.itertuples()]})
    warn = sum(c.get("severity") == "warning" for c in checks)
    cards.append({"label": "sanity checks", "value": None, "warning": warn,
                  "detail": f"{warn} warning{'s' * (warn != 1)} of {len(checks)} checks" if warn
                  else f"all {len(checks)} checks passed or informational"})
    return cards


def _er_marks(rows: list[dict], table) -> dict[str, dict[str, float]]:
    """Per style probe: the line's mean prediction over the settings the baseline covers, and, when those
    are not all the style's settings, the model's mean accuracy on just them (to compare like with like)."""
    predicted: dict[str, float] = {}
    matched: dict[str, float] = {}
    for probe in dict.fromkeys(r["probe"] for r in rows):
        mine = [r for r in rows if r["probe"] == probe]
        predicted[probe] = float(np.mean([r["predicted"] for r in mine]))
        settings = set(table.loc[(table["probe"] == probe) & (table["kind"] == "transform"), "setting"])
        if settings != {r["setting"] for r in mine}:
            matched[probe] = float(np.mean([r["accuracy"] for r in mine]))
    return {"predicted": predicted, "matched": matched}


def _er_plot(rows: list[dict]) -> str | None:
    """Family points + fitted line per style setting and this model's points (Taori et al. 2020 scatter)."""
    from robustlab.evaluate.effective import LinearFit, effective_robustness_plot

    rows = [r for r in rows if r.get("family_id_acc") and r.get("family_ood_acc")]
    if not rows or len(rows) > 8:
        return None
    try:
        scale = rows[0].get("scale") or "logit"
        points = {f"{r['name'].removeprefix('style_')} {r['setting']}": (r["family_id_acc"], r["family_ood_acc"])
                  for r in rows}
        fits = {f"{r['name'].removeprefix('style_')} {r['setting']}": LinearFit(r["slope"], r["intercept"], scale)
                for r in rows}
        points["this model"] = ([r["clean_accuracy"] for r in rows], [r["accuracy"] for r in rows])
        return effective_robustness_plot(points, fits, scale=scale, title="effective robustness",
                                         xlabel="clean accuracy", ylabel="accuracy under the style")
    except Exception:  # a figure must never break the report
        return None


def _pivot(table) -> dict[str, Any] | None:
    """Transforms x severities accuracy grid for the corruption table."""
    rows = table[table["kind"] == "transform"]
    if rows.empty:
        return None
    settings = rows.sort_values("param").drop_duplicates("setting")["setting"].tolist()
    body = []
    for probe, r in rows.groupby("probe", sort=True):
        acc = dict(zip(r["setting"], r["accuracy"]))
        drop = dict(zip(r["setting"], r["accuracy_drop"]))
        body.append({"probe": probe, "cells": [(acc.get(s), drop.get(s)) for s in settings],
                     "mean": float(r["accuracy"].mean()), "n": int(r["n"].max())})
    return {"settings": settings, "rows": body}


def _certified_gap(table, info: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """Per certifier and radius: certified accuracy, the lowest attacked accuracy in the same threat model
    (same norm, same eps) and the gap between them (what neither side has settled)."""
    from robustlab.evaluate.checks import probe_norm

    certs = table[table["kind"] == "certifier"]
    attacks = table[table["kind"] == "attack"].copy()
    attacks["_norm"] = [probe_norm(p, info.get(p)) for p in attacks["probe"]]
    rows = []
    for r in certs.itertuples():
        norm = probe_norm(r.probe, info.get(r.probe))
        same = attacks[(attacks["_norm"] == norm) & np.isclose(attacks["param"].astype(float), float(r.param))]
        best = same.loc[same["accuracy"].idxmin()] if not same.empty else None
        cert = None if math.isnan(r.certified_accuracy) else float(r.certified_accuracy)
        attacked = None if best is None else float(best["accuracy"])
        rows.append({"probe": r.probe, "setting": r.setting, "certified": cert, "attacked": attacked,
                     "attack": None if best is None else str(best["probe"]),
                     "gap": None if cert is None or attacked is None else attacked - cert})
    return rows


def _conformal_rows(metrics: Mapping[str, float], table) -> list[dict]:
    """Coverage and mean set size per conformal certifier and radius."""
    return [{"probe": r.probe, "setting": r.setting, "coverage": metrics.get(f"{r.probe}.coverage[{r.setting}]"),
             "certified": metrics.get(f"{r.probe}.certified_accuracy[{r.setting}]"),
             "size": metrics.get(f"{r.probe}.mean_set_size[{r.setting}]")} for r in table.itertuples()]


def _slice_table(summary: Mapping[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """Probe settings x suite slices accuracy grid (from ``summary["slices"]`` or ``slices.parquet``)."""
    rows = summary.get("slices")
    if not rows and (run_dir / "slices.parquet").exists():
        import pandas as pd

        rows = pd.read_parquet(run_dir / "slices.parquet").to_dict("records")
    if not rows:
        return None
    names = list(dict.fromkeys(r["slice"] for r in rows))
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    sizes: dict[str, int] = {}
    for r in rows:
        label = (r["probe"], "" if r["kind"] == "clean" else str(r["setting"]))
        acc = r.get("accuracy")
        groups.setdefault(label, {})[r["slice"]] = None if acc is None or not math.isfinite(float(acc)) else acc
        if r["kind"] == "clean":
            sizes[r["slice"]] = int(r["n"])
    body = [{"probe": p, "setting": s, "cells": [cells.get(n) for n in names]} for (p, s), cells in groups.items()]
    return {"slices": names, "sizes": [sizes.get(n) for n in names], "rows": body}


def _disparity_rows(frame, class_names: list[str]) -> list[dict]:
    """Class-wise accuracy disparity per probe setting (Hu et al. 2023): worst class, max - min, std."""
    from pandas import isna as pd_isna

    from robustlab.evaluate.slices import disparity_table

    table = disparity_table(frame)
    out = []
    for r in table.itertuples():
        if r.n_classes < 2:
            continue
        out.append({"probe": r.probe, "kind": r.kind, "setting": "" if r.kind == "clean" else r.setting,
                    "worst_class": "–" if r.worst_class is None or pd_isna(r.worst_class)
                    else _cls(r.worst_class, class_names),
                    "worst_class_accuracy": r.worst_class_accuracy, "max_minus_min": r.max_minus_min,
                    "std": r.std})
    return out


def _records(frame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]


def _examples(folder: Path, class_names: list[str], limit: int) -> dict[str, Any]:
    """One representative example set per probe (its middle setting), images as figures, text as rows."""
    files = sorted([*folder.glob("*.npz"), *folder.glob("*.json")]) if folder.is_dir() else []
    by_probe: dict[str, list[tuple[float, str, Path]]] = {}
    for f in files:
        probe, _, setting = f.stem.rpartition("__")
        num = _NUM.search(setting)
        by_probe.setdefault(probe or f.stem, []).append((float(num.group()) if num else 0.0, setting, f))
    shown = []
    for probe in sorted(by_probe)[:limit]:
        sets = sorted(by_probe[probe])
        _, setting, f = sets[len(sets) // 2]
        item = {"probe": probe, "setting": setting, "others": len(sets) - 1, "image": None, "text": None}
        if f.suffix == ".npz":
            with np.load(f) as z:
                item["image"] = plots.example_grid({k: z[k] for k in z.files}, class_names)
            if item["image"] is None:
                continue
        else:
            item["text"] = _text_rows(json.loads(f.read_text()), class_names)
        shown.append(item)
    return {"sets": shown, "total": len(files), "probes_hidden": max(len(by_probe) - limit, 0)}


def _text_rows(ex: Mapping[str, list], class_names: list[str]) -> list[dict]:
    rows = []
    for i, (a, b) in enumerate(zip(ex.get("x_clean", []), ex.get("x_probed", []))):
        ta, tb = str(a).split(), str(b).split()
        sm = difflib.SequenceMatcher(a=ta, b=tb, autojunk=False)
        left, right = [], []
        for op, i1, i2, j1, j2 in sm.get_opcodes():
            left += [(w, op != "equal") for w in ta[i1:i2]]
            right += [(w, op != "equal") for w in tb[j1:j2]]
        label, cp, p = (ex.get(k, [None] * (i + 1))[i] for k in ("label", "clean_pred", "pred"))
        rows.append({"clean": left, "probed": right, "label": _cls(label, class_names),
                     "clean_pred": _cls(cp, class_names), "pred": _cls(p, class_names),
                     "flipped": p is not None and label is not None and int(p) != int(label)})
    return rows


def _cls(i: Any, names: list[str]) -> str:
    if i is None:
        return "?"
    return names[int(i)] if 0 <= int(i) < len(names) else str(i)


def _classes(names: list[str]) -> str:
    if not names:
        return ""
    return ", ".join(names) if len(names) <= 12 else ", ".join(names[:10]) + f", … ({len(names)} classes)"


def _described(obj: Any) -> dict[str, Any]:
    """A model / data block flattened to short printable values."""
    if not isinstance(obj, Mapping):
        return {"name": str(obj)} if obj else {}
    flat = {}
    for k, v in obj.items():
        if isinstance(v, Mapping):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items() if not isinstance(vv, (Mapping, list))})
        elif isinstance(v, list):
            flat[k] = ", ".join(map(str, v[:12])) + (" …" if len(v) > 12 else "")
        else:
            flat[k] = v
    return flat


def _date(summary: Mapping[str, Any], run_dir: Path) -> str:
    for key in ("finished", "created", "date", "started"):
        if summary.get(key):
            return str(summary[key])
    src = next((p for p in (run_dir / "summary.json", run_dir / "outcomes.parquet") if p.exists()), run_dir)
    return _dt.datetime.fromtimestamp(src.stat().st_mtime, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)


def _pct(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{100 * float(v):.{digits}f}%"


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)) or float(v).is_integer():
        return f"{int(v):,}"
    return f"{float(v):.{digits}g}"


def _duration(v: Any) -> str:
    if v is None:
        return "–"
    s = float(v)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(round(s), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _heat(v: Any) -> str:
    """A background colour for an accuracy cell: red (0) through amber to green (1)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "transparent"
    return f"hsl({120 * min(max(float(v), 0.0), 1.0):.0f}, 70%, 90%)"
