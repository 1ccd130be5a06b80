"""Smoke test of ``benchmarks/corruptions.py``: a tiny ``--quick`` run gives one JSON object with every key.

Timings are never asserted (they mean nothing at this size); only the shape of the report, that
every registered image corruption (and no attribute edit) is timed, and the "peer not installed"
path.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.benchmarks.conftest import load_script

PER_CORRUPTION = ("seconds", "cifar_seconds", "total_seconds", "imagenet_total_seconds", "error",
                  "imagecorruptions_seconds", "imagecorruptions_error", "imagecorruptions_extrapolated", "speedup")
TOP_KEYS = {"n", "threads", "severity", "versions", "corruptions", "compared", "suite_seconds",
            "imagenet_suite_seconds", "min_speedup", "median_speedup", "targets", "compared_table", "suite_table",
            "suite_speedup", "suite_compared", "suite_imagecorruptions_seconds", "suite_robustlab_seconds"}


@pytest.fixture(scope="module")
def bench():
    return load_script("corruptions.py")


def _run(bench, capsys, *extra: str) -> tuple[dict, str]:
    returned = bench.main(["--quick", "--json", "--quiet", "--threads", "1", "--repeats", "1", *extra])
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout holds exactly one JSON object
    assert report == json.loads(json.dumps(returned))
    return report, captured.err


def test_every_image_corruption_is_listed_and_no_attribute_edit(bench):
    names = bench.image_corruptions()
    assert len(names) >= 18
    assert {"gaussian_noise", "glass_blur", "fog", "jpeg_compression", "elastic_transform"} <= set(names)
    assert not any(n.startswith("edit_") for n in names)


def test_quick_run_without_peer_reports_every_key(bench, capsys, monkeypatch):
    monkeypatch.setattr(bench, "peer_version", lambda: None)
    report, table = _run(bench, capsys, "--n", "3")
    assert TOP_KEYS <= set(report)
    names = report["corruptions"]
    assert set(names) == set(bench.image_corruptions())
    assert report["n"] == 3 and report["threads"] == 1 and report["severity"] == 3
    assert report["versions"]["imagecorruptions"] is None
    for c in names:
        assert {f"{k}[{c}]" for k in PER_CORRUPTION} <= set(report)
        assert report[f"error[{c}]"] is None, report[f"error[{c}]"]  # robustlab runs every one on 32x32
        assert report[f"seconds[{c}]"] > 0 and report[f"total_seconds[{c}]"] > 0
        assert report[f"imagecorruptions_seconds[{c}]"] is None and report[f"speedup[{c}]"] is None
        assert report[f"imagecorruptions_error[{c}]"] == "peer not installed"
    assert report["suite_seconds"] == pytest.approx(sum(report[f"total_seconds[{c}]"] for c in names))
    assert report["imagenet_suite_seconds"] is None  # skipped by --quick
    assert report["min_speedup"] is None and report["compared"] == []
    assert report["suite_speedup"] is None and report["targets"]["suite_speedup >= 5"] is None
    assert report["targets"]["min_speedup >= 5"] is None
    assert isinstance(report["targets"]["suite_seconds <= 60"], bool)
    assert "peer not installed" in table and "gaussian_noise" in table


@pytest.mark.skipif(importlib.util.find_spec("imagecorruptions") is None, reason="imagecorruptions not installed")
def test_quick_run_with_peer_fills_or_explains_every_comparison(bench, capsys):
    report, _ = _run(bench, capsys, "--n", "2")
    assert report["versions"]["imagecorruptions"]
    assert report["compared"]
    for c in report["corruptions"]:
        sp, err = report[f"speedup[{c}]"], report[f"imagecorruptions_error[{c}]"]
        assert (sp is None) == (err is not None), c  # a missing ratio always says why
        if sp is not None:
            assert sp == pytest.approx(report[f"imagecorruptions_seconds[{c}]"] / report[f"seconds[{c}]"])
    assert report["min_speedup"] <= report["median_speedup"]
    same = report["suite_compared"]
    assert "frost" not in same and set(same) <= set(report["compared"])
    assert report["suite_speedup"] == pytest.approx(
        sum(report[f"imagecorruptions_seconds[{c}]"] for c in same) / sum(report[f"seconds[{c}]"] for c in same))


def test_only_runs_the_named_corruptions(bench, capsys, monkeypatch):
    monkeypatch.setattr(bench, "peer_version", lambda: None)
    report, _ = _run(bench, capsys, "--n", "2", "--only", "frost,pixelate")
    assert report["corruptions"] == ["frost", "pixelate"]
    with pytest.raises(SystemExit, match="unknown"):
        bench.main(["--quick", "--quiet", "--n", "2", "--only", "no_such_corruption"])
