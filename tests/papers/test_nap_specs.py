"""Paper 21 (nap-specs): the quick reproduction's contract; exact claims (mining, nesting, soundness) must hold."""

import math

from robustlab.papers import catalog
from robustlab.papers.base import Reproduction
from robustlab.papers.nap_specs import FULL, QUICK, reproduce


def test_setups_follow_the_spec():
    assert FULL.deltas == (1.0, 0.99, 0.95, 0.9) and FULL.delta == 0.95 and FULL.hidden == (32, 32)
    assert FULL.n_falsify == 10_000 and FULL.time_limit == 30.0 and FULL.max_pairs == 45
    assert 1.0 in QUICK.deltas and QUICK.delta in QUICK.deltas


def test_quick_reproduction_returns_the_contract_with_measured_numbers():
    assert catalog.status("nap-specs") == "implemented"
    res = reproduce(quick=True)
    assert isinstance(res, Reproduction) and res.key == "nap-specs" and res.error is None
    assert [c.id for c in res.claims] == [f"C{i}" for i in range(1, 10)]
    for c in res.claims:
        assert isinstance(c.held, bool) and c.statement
        nums = [float(v) for v in c.measured.values() if isinstance(v, (int, float))]
        assert nums and all(math.isfinite(v) for v in nums)
    by = {c.id: c for c in res.claims}
    # exact by construction / soundness: these may never fail, whatever the network
    assert by["C1"].held and by["C2"].held and by["C9"].held
    assert by["C1"].measured["train_recall_delta1"] == [1.0] * 10
    assert 0 <= by["C8"].measured["test_in_verified_train_balls"] <= 1
    assert by["C7"].measured["crown_median_radius_nap"] >= by["C7"].measured["crown_median_radius_plain"]
    assert res.notes and res.seconds > 0
