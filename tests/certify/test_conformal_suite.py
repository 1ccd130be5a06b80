"""Conformal certifiers in a suite: coverage and set size reach the metrics and the report."""

import json

import pandas as pd
import pytest

from robustlab.evaluate.runner import run_suite
from robustlab.evaluate.suite import parse_suite


def test_rscp_plus_and_split_conformal_in_a_suite(tmp_path):
    suite = parse_suite({
        "name": "conformal", "model": {"zoo": "digits-mlp", "quick": True},
        "data": {"name": "digits", "n": 60, "seed": 0},
        "probes": [{"name": "rscp_plus", "n_samples": 32, "eps": [0.0, 0.1]},
                   {"name": "conformal", "steps": 3, "eps": [0.0, 0.5]}],
        "shard_size": 60, "examples": 0})
    d = run_suite(suite, out_dir=tmp_path / "r", progress=False).run_dir
    m = json.loads((d / "summary.json").read_text())["metrics"]
    frame = pd.read_parquet(d / "outcomes.parquet")
    for probe, eps in (("rscp_plus", "eps=0.1"), ("conformal", "eps=0.5")):
        g = frame[(frame.probe == probe) & (frame.setting == eps)]
        assert m[f"{probe}.coverage[{eps}]"] == pytest.approx(g.status.isin(["certified", "robust"]).mean())
        assert m[f"{probe}.mean_set_size[{eps}]"] == pytest.approx(g.score.mean())
        assert 1.0 <= m[f"{probe}.mean_set_size[{eps}]"] <= 10.0
    html = (d / "report.html").read_text()
    assert "Conformal prediction sets" in html and "mean set size" in html
    assert "strongest attack" not in html  # set certificates are not compared with top-1 attacks
