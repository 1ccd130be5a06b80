"""Smoke test of benchmarks/strength.py: it runs on a tiny budget and reports every key (no timing asserts)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "strength.py"


def test_strength_quick_reports_all_keys():
    spec = importlib.util.spec_from_file_location("strength_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    report = mod.main(["--quick", "--n", "24", "--models", "digits-mlp", "--json"])
    r = report["models"]["digits-mlp"]
    for key in ("pgd20", "apgd_ce", "apgd_t", "fab_t", "square", "autoattack", "pgd_security_curve"):
        assert key in r
    assert 0.0 <= r["autoattack"] <= r["clean_accuracy"]
    assert set(report["masked"]) >= {"pgd_on_naive_quantized", "bpda_pgd", "square", "flagged_by_checks"}
