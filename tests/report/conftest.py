"""A fake run directory (synthetic outcomes, summary, suite and examples) for the report tests."""

import json
from pathlib import Path

import numpy as np
import pytest

from robustlab.core.outcomes import Outcomes

N = 24
CLASSES = ["zero", "one", "two", "three"]


def _rows(probe, kind, setting, param, correct, rng, queries=1, distance=np.nan):
    ids = np.arange(N)
    label = ids % 4
    clean_ok = ids < 21
    correct = np.asarray(correct, bool)
    if kind == "attack":
        correct &= clean_ok
        status = np.where(~clean_ok, "skipped", np.where(correct, "robust", "broken"))
        queries = np.where(clean_ok, queries, 0)
    else:
        status = np.where(correct, "robust", "broken")
    return Outcomes({"example_id": ids, "probe": probe, "kind": kind, "setting": setting, "param": param,
                     "status": status.astype(object), "label": label,
                     "clean_pred": np.where(clean_ok, label, (label + 1) % 4),
                     "pred": np.where(correct, label, (label + 1) % 4), "clean_correct": clean_ok,
                     "correct": correct, "queries": queries, "distance": distance,
                     "seconds": rng.uniform(0.001, 0.01, N), "seed": 0, "job": f"{probe}-{setting}"})


def make_run_dir(root: Path, *, text: bool = True) -> Path:
    """Write a complete fake run directory under ``root`` and return it."""
    rng = np.random.default_rng(0)
    ids = np.arange(N)
    parts = [_rows("clean", "clean", "none", np.nan, ids < 21, rng)]
    for t, rate in (("gaussian_noise", 2), ("contrast", 1), ("motion_blur", 3)):
        for s in range(1, 6):
            parts.append(_rows(t, "transform", f"severity={s}", float(s), ids < 21 - rate * s, rng))
    for a, rate, q in (("pgd_linf", 5, 20), ("fgsm", 3, 1)):
        for e in (0.01, 0.03, 0.1, 0.3):
            k = max(21 - int(rate * e * 100 / 2), 0)
            parts.append(_rows(a, "attack", f"eps={e:g}", e, ids < k, rng, q, e * 0.98))
    run = root / "run"
    Outcomes.concat(parts).save(run / "outcomes.parquet")
    ex = run / "examples"
    ex.mkdir(parents=True)
    x = rng.uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)
    y = np.arange(6) % 4
    np.savez(ex / "pgd_linf__eps=0.03.npz", x_clean=x, x_probed=np.clip(x + rng.uniform(-0.03, 0.03, x.shape), 0, 1),
             label=y, clean_pred=y, pred=(y + 1) % 4)
    xr = rng.uniform(0, 1, (4, 3, 16, 16)).astype(np.float32)
    for s in (1, 3, 5):
        np.savez(ex / f"gaussian_noise__severity={s}.npz", x_clean=xr,
                 x_probed=np.clip(xr + 0.1 * s * rng.normal(size=xr.shape), 0, 1).astype(np.float32),
                 label=np.arange(4), clean_pred=np.arange(4), pred=np.array([0, 1, 3, 3]))
    if text:
        (ex / "typos__severity=2.json").write_text(json.dumps({
            "x_clean": ["a truly wonderful film", "dull <b>plot</b> and see https://example.com"],
            "x_probed": ["a truly wonderfl film", "dull <b>plto</b> and see https://example.com"],
            "label": [1, 0], "clean_pred": [1, 0], "pred": [1, 1]}))
    (run / "suite.yaml").write_text("name: fake-suite\nmodel: digits-cnn\ndata: {name: digits, n: 24}\n"
                                    "probes:\n  - pgd_linf: {eps: [0.01, 0.03, 0.1, 0.3]}\nseed: 0\n")
    summary = {
        "suite": {"name": "fake-suite", "seed": 0},
        "model": {"name": "digits-cnn", "info": {"params": 1234, "modality": "image"}},
        "data": {"name": "digits", "source": "scikit-learn bundled digits (https://scikit-learn.org)", "n": N,
                 "class_names": CLASSES},
        "seed": 0,
        "versions": {"python": "3.11.2", "torch": "2.13.0", "numpy": "2.2", "robustlab": "0.1.0",
                     "platform": "Linux"},
        "wall_seconds": 83.4,
        "jobs": {"total": 26, "reused": 4, "computed": 22},
        "executor": "local",
        "notes": ["synthetic run for tests"],
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return run


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A complete fake run directory."""
    return make_run_dir(tmp_path)


@pytest.fixture
def make_run():
    """The run-directory factory ``make_run(root, text=True)`` (tests import nothing from conftest)."""
    return make_run_dir
