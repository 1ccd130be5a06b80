"""Smoke test of ``benchmarks/attacks.py``: a tiny ``--quick`` run gives one JSON object with every key.

Timings are never asserted (they mean nothing at this size); only the shape of the report, the
robust accuracies' range and the "peer not installed" path.
"""

from __future__ import annotations

import importlib.util
import json
import statistics

import pytest

from tests.benchmarks.conftest import load_script

CORE_KEYS = {
    "n", "threads", "eps", "versions", "clean_accuracy", "floor_seconds", "forward_seconds", "floor_cpu_seconds",
    "pgd_overhead", "pgd_overhead_all", "pgd_overhead_cpu", "apgd_overhead", "apgd_overhead_all",
    "pgd20_eval_seconds", "pgd20_eval_robust_accuracy", "autoattack_reduced_seconds",
    "autoattack_reduced_robust_accuracy", "autoattack_standard_seconds", "autoattack_standard_robust_accuracy",
    "autoattack_overhead", "autoattack_reduced_overhead", "autoattack_reduced_cost", "autoattack_standard_cost",
    "targets",
}
PEER_KEYS = {
    "torchattacks_pgd20_eval_seconds", "torchattacks_pgd20_eval_robust_accuracy",
    "pgd20_eval_vs_torchattacks_time_ratio", "pgd20_eval_vs_torchattacks_cpu_time_ratio",
    "art_pgd20_eval_seconds", "art_pgd20_eval_robust_accuracy", "pgd20_vs_art_time_ratio",
    "torchattacks_autoattack_seconds", "torchattacks_autoattack_robust_accuracy",
    "autoattack_reduced_vs_torchattacks_time_ratio", "autoattack_standard_vs_torchattacks_time_ratio",
    "torchattacks_apgd_seconds", "apgd_vs_torchattacks_time_ratio",
    "torchattacks_autoattack_full_seconds", "torchattacks_autoattack_full_robust_accuracy",
    "autoattack_standard_vs_torchattacks_full_time_ratio",
}


@pytest.fixture(scope="module")
def bench():
    return load_script("attacks.py")


def _run(bench, capsys, *extra: str) -> tuple[dict, str]:
    returned = bench.main(["--n", "20", "--quick", "--json", "--quiet", *extra])
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout holds exactly one JSON object
    assert report == json.loads(json.dumps(returned))
    return report, captured.err


def test_quick_run_without_peers_reports_every_key(bench, capsys, monkeypatch):
    monkeypatch.setattr(bench.peers, "peer_version", lambda name: None)
    report, table = _run(bench, capsys)
    assert CORE_KEYS | PEER_KEYS <= set(report)
    assert report["n"] == 20 and report["threads"] == 1 and report["quick"] is True
    assert report["versions"]["torchattacks"] is None and report["versions"]["art"] is None
    assert all(report[k] is None for k in PEER_KEYS)
    assert "peer not installed" in table
    for key in ("pgd20_eval_robust_accuracy", "autoattack_reduced_robust_accuracy", "clean_accuracy"):
        assert 0.0 <= report[key] <= 1.0
    # AutoAttack can only lower the robust accuracy that PGD leaves (it runs APGD first, then more)
    assert report["autoattack_reduced_robust_accuracy"] <= report["clean_accuracy"]
    assert report["floor_seconds"] > 0 and report["pgd_mean_queries_all"] == report["pgd_steps"] + 1
    assert set(report["autoattack_reduced_cost"]["attacks"]) == {"apgd-ce", "apgd-t", "fab-t", "square"}
    assert report["autoattack_standard_budget"] == {"n_iter": 5, "square_queries": 20}
    for key in ("autoattack_reduced", "autoattack_standard"):  # the runs' model calls, replayed
        calls = report[f"{key}_model_calls"]
        assert calls["calls"] >= 1 and calls["forward_seconds"] > 0  # at least the clean check
        assert calls["seconds"] == pytest.approx(calls["gradient_seconds"] + calls["forward_seconds"])
        assert report[f"{key}_model_call_share"] == pytest.approx(calls["seconds"] / report[f"{key}_seconds"])
    assert report["autoattack_standard_model_calls_vs_torchattacks"] is None  # no peer
    assert report["autoattack_standard_query_vs_torchattacks"] is None
    assert 0 <= report["autoattack_standard_query_share"] < 1
    targets = report["targets"]
    assert all(v is None for k, v in targets.items() if "torchattacks" in k)
    assert isinstance(targets["pgd_overhead <= 1.15"], bool)


@pytest.mark.skipif(importlib.util.find_spec("torchattacks") is None, reason="torchattacks not installed")
def test_quick_run_with_torchattacks_fills_the_comparisons(bench, capsys):
    report, _ = _run(bench, capsys, "--skip-standard")
    assert report["versions"]["torchattacks"]
    for key in ("torchattacks_pgd20_eval_seconds", "pgd20_eval_vs_torchattacks_time_ratio",
                "autoattack_reduced_vs_torchattacks_time_ratio", "torchattacks_autoattack_robust_accuracy"):
        assert isinstance(report[key], float), key
    assert report["torchattacks_autoattack_budget"]["Square"] == 20  # --quick shrinks the peer's budget too
    assert report["autoattack_standard_seconds"] is None  # --skip-standard


@pytest.mark.skipif(importlib.util.find_spec("torchattacks") is None, reason="torchattacks not installed")
def test_quick_run_times_torchattacks_at_the_faithful_budget_too(bench, capsys):
    report, _ = _run(bench, capsys)
    budget = report["torchattacks_autoattack_full_budget"]
    assert budget["APGD"] == budget["APGDT"] == budget["FAB"] == report["autoattack_standard_budget"]["n_iter"]
    ours, peer = report["autoattack_standard_seconds_runs"], report["torchattacks_autoattack_full_seconds_runs"]
    assert len(ours) == len(peer) == 3  # --aa-repeats 3: interleaved rounds, the ratio is the median of theirs
    assert report["autoattack_standard_vs_torchattacks_full_time_ratio"] == pytest.approx(
        statistics.median(a / b for a, b in zip(ours, peer)))
    assert report["autoattack_standard_seconds"] == pytest.approx(statistics.median(ours))
    floors = report["autoattack_standard_model_calls_vs_torchattacks_runs"]  # one per round, from back-to-back replays
    assert len(floors) == 3 and all(f > 0 for f in floors)
    assert report["autoattack_standard_model_calls_vs_torchattacks"] == pytest.approx(statistics.median(floors))
    queries = report["autoattack_standard_query_seconds_runs"]  # the searches' queries, timed inside each run
    assert len(queries) == 3 and all(0 <= q < s for q, s in zip(queries, ours))  # quick model: may break all at once
    assert report["autoattack_standard_query_vs_torchattacks"] == pytest.approx(
        statistics.median(q / b for q, b in zip(queries, report["torchattacks_autoattack_seconds_runs"])))
    assert 0.0 <= report["torchattacks_autoattack_full_robust_accuracy"] <= 1.0


def test_targets_read_the_right_keys(bench):
    r = {"pgd_overhead": 1.1, "pgd_overhead_cpu": 1.2, "pgd20_eval_robust_accuracy": 0.305,
         "torchattacks_pgd20_eval_robust_accuracy": 0.30, "pgd20_eval_vs_torchattacks_time_ratio": 0.5,
         "pgd20_eval_vs_torchattacks_cpu_time_ratio": 0.8, "torchattacks_autoattack_robust_accuracy": 0.2,
         "autoattack_reduced_robust_accuracy": 0.2, "autoattack_reduced_vs_torchattacks_time_ratio": 0.9,
         "autoattack_reduced_vs_torchattacks_cpu_time_ratio": 1.1, "autoattack_standard_robust_accuracy": 0.21,
         "autoattack_standard_vs_torchattacks_time_ratio": 1.2,
         "autoattack_standard_vs_torchattacks_cpu_time_ratio": None}
    t = bench.targets(r)
    assert t["pgd_overhead <= 1.15"] is True and t["pgd_overhead <= 1.15 (cpu time)"] is False
    assert t["pgd20_eval <= 0.7x torchattacks at same robust accuracy"] is True      # 0.305 within 1 point
    assert t["pgd20_eval <= 0.7x torchattacks at same robust accuracy (cpu time)"] is False
    assert t["autoattack reduced faster than torchattacks at <= robust accuracy"] is True
    assert t["autoattack reduced faster than torchattacks at <= robust accuracy (cpu time)"] is False
    assert t["autoattack standard <= 1.5x torchattacks with <= robust accuracy"] is False  # 0.21 > 0.2
    assert t["autoattack standard <= 1.5x torchattacks with <= robust accuracy (cpu time)"] is None


def test_never_succeeds_goal_disables_early_stopping(bench):
    import torch

    scores = torch.tensor([[0.0, 5.0], [5.0, 0.0]])
    assert not bool(bench.NeverSucceeds("ce").success(scores, torch.tensor([0, 0])).any())
