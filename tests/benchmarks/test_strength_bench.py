"""Smoke test of benchmarks/strength.py: it runs on a tiny budget and reports every key (no timing asserts)."""

from tests.benchmarks.conftest import load_script


def test_strength_quick_reports_all_keys():
    report = load_script("strength.py").main(["--quick", "--n", "24", "--models", "digits-mlp", "--json"])
    r = report["models"]["digits-mlp"]
    for key in ("pgd20", "apgd_ce", "apgd_t", "fab_t", "square", "autoattack", "pgd_security_curve"):
        assert key in r
    assert 0.0 <= r["autoattack"] <= r["clean_accuracy"]
    assert set(report["masked"]) >= {"pgd_on_naive_quantized", "bpda_pgd", "square", "flagged_by_checks"}
