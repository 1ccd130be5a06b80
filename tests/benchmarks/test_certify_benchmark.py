"""Smoke test of ``benchmarks/certify.py``: a tiny ``--quick`` run gives one JSON object with every key.

Timings are never asserted (they mean nothing at this size); only the report's shape, the ranges of
the bound values and the "peer not installed" path.
"""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.conftest import load_script

KEYS = {"ibp_seconds_per_500_digits_mlp", "crown_seconds_per_500_digits_mlp",
        "crown_ibp_intermediate_seconds_per_500_digits_mlp", "crown_cpu_seconds_per_500_digits_mlp",
        "bounds_digits_mlp", "smoothing_certify_vs_floor", "smoothing_certify_seconds_digits_mlp",
        "smoothing_floor_seconds_digits_mlp", "smoothing_vs_art_time_ratio", "art_smoothing_seconds_digits_mlp",
        "targets", "versions"}


@pytest.fixture(scope="module")
def bench():
    return load_script("certify.py")


def test_quick_run_reports_every_key_without_art(bench, capsys, monkeypatch):
    monkeypatch.setattr(bench.peers, "peer_version", lambda name: None)
    returned = bench.main(["--quick", "--json", "--quiet", "--models", "digits-mlp", "--n", "12", "--threads", "1"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout holds exactly one JSON object
    assert report == json.loads(json.dumps(returned))
    assert KEYS <= set(report)
    assert report["n"] == 12 and report["threads"] == 1 and report["quick"] is True
    assert report["art_smoothing_seconds_digits_mlp"] is None and report["smoothing_vs_art_time_ratio"] is None
    assert "peer not installed" in captured.err
    row = report["bounds_digits_mlp"]["0.02"]
    # CROWN's bound is never looser than IBP's on average, and certified <= clean accuracy
    assert row["crown_mean_lower_bound"] >= row["ibp_mean_lower_bound"]
    for key in ("ibp_certified_accuracy", "crown_certified_accuracy"):
        assert 0.0 <= row[key] <= report["clean_accuracy_digits_mlp"]
    assert report["crown_seconds_per_500_digits_mlp"] > 0 and report["smoothing_certify_vs_floor"] > 0
    acc = report["smoothing_certified_accuracy_digits_mlp"]
    assert acc["0"] >= acc["0.25"] >= acc["0.5"]
    assert set(report["targets"]) == {"crown digits-mlp <= 0.25 s per 500 examples",
                                      "smoothing CERTIFY <= 1.2x forward floor"}


def test_targets_read_the_right_keys(bench):
    t = bench.targets({"crown_seconds_per_500_digits_mlp": 0.2, "smoothing_certify_vs_floor": 1.3})
    assert t == {"crown digits-mlp <= 0.25 s per 500 examples": True, "smoothing CERTIFY <= 1.2x forward floor": False}
    assert all(v is None for v in bench.targets({}).values())
