"""Paper 41 (dta): the reproduction returns the contract with measured numbers (quick), and the full run."""

import math

import pytest

from robustlab.papers import catalog
from robustlab.papers.base import Reproduction


def _numbers(measured: dict) -> list[float]:
    return [float(v) for v in measured.values() if isinstance(v, (int, float))]


def test_quick_reproduction_returns_the_contract_with_measured_numbers():
    from robustlab.papers.dta import reproduce

    assert catalog.status("dta") == "implemented"
    res = reproduce(quick=True)
    assert isinstance(res, Reproduction) and res.key == "dta" and res.error is None
    assert [c.id for c in res.claims] == ["C1", "C2", "C3", "C4"]
    for c in res.claims:
        assert isinstance(c.held, bool) and c.statement
        nums = _numbers(c.measured)
        assert nums and all(math.isfinite(v) for v in nums)
    c1, c2, c3, c4 = res.claims
    assert c1.held  # the threat model holds whatever the run size
    assert c1.measured["max_linf"] <= c1.measured["eps"] + 1e-6
    assert {f"mean_score_l{i}" for i in range(4)} <= set(c2.measured)
    assert c2.measured["min_disruption_ratio"] >= 1.0
    assert all(0.0 <= c3.measured[k] <= 1.0 for k in ("asr_l_star", "asr_last", "asr_random_layer"))
    assert c3.measured["asr_l_star"] in [c3.measured[f"asr_l{i}"] for i in range(4)]  # one encoder in quick mode
    assert c4.measured["asr_dta"] == c3.measured["asr_l_star"]
    assert any("QUICK" in n for n in res.notes) and len(res.notes) >= 5
    assert res.seconds > 0 and res.to_dict()["key"] == "dta"


@pytest.mark.slow
def test_full_reproduction_runs_and_reports_every_claim():
    res = catalog.run("dta", quick=False)
    assert res.error is None, res.error
    assert res.exit_code in (0, 1)
    assert [c.id for c in res.claims] == ["C1", "C2", "C3", "C4"]
    assert res.claims[0].held  # never leaves the threat model
    assert not any("QUICK" in n for n in res.notes)
