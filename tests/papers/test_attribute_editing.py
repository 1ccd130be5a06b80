"""Paper 6 (attribute-editing): the quick reproduction returns the contract with measured numbers."""

import math

from robustlab.papers import catalog
from robustlab.papers.attribute_editing import MODELS, SEVERITIES, _monotone, reproduce
from robustlab.papers.base import Reproduction


def test_quick_reproduction_returns_the_contract_with_measured_numbers():
    assert catalog.status("attribute-editing") == "implemented"
    res = reproduce(quick=True)
    assert isinstance(res, Reproduction) and res.key == "attribute-editing" and res.error is None
    assert [c.id for c in res.claims] == ["C1", "C2", "C3", "C4"]
    assert res.exit_code in (0, 1) and len(res.notes) >= 5
    for c in res.claims:
        assert isinstance(c.held, bool) and c.statement and c.measured
    c1, c2, c3, c4 = res.claims
    comp = c1.measured["complexity"]
    assert len(comp) == len(SEVERITIES) and all(b > a for a, b in zip(comp, comp[1:]))
    rate = c2.measured["object_rate"]
    assert all(b < a for a, b in zip(rate, rate[1:]))
    for m in MODELS:
        for acc in (c1.measured[f"acc_{m}"], c2.measured[f"acc_{m}"]):
            assert len(acc) == len(SEVERITIES) and all(0.0 <= a <= 1.0 for a in acc)
        assert c1.measured[f"acc_{m}"][0] == c2.measured[f"acc_{m}"][0]  # same clean images
        assert math.isfinite(c3.measured[f"max_drop_{m}"])
        assert c4.measured["clean_acc"][m] == c1.measured[f"acc_{m}"][0]
    assert c2.held == all(_monotone(c2.measured[f"acc_{m}"]) and c2.measured[f"acc_{m}"][-1]
                          < c2.measured[f"acc_{m}"][0] for m in MODELS)
    assert c4.held == bool(c4.measured["attributes_at_worse"])


def test_monotone_tolerates_one_point_only():
    assert _monotone([0.9, 0.905, 0.8]) and not _monotone([0.9, 0.92, 0.8])
