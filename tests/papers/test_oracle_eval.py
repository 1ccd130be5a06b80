"""Contract test of the oracle-eval reproduction (Zhang et al., ICLR 2024) in its quick setting."""

from __future__ import annotations

import math

from robustlab.papers.oracle_eval import reproduce


def test_quick_reproduction_contract():
    rep = reproduce(quick=True)
    assert rep.error is None and rep.key == "oracle-eval"
    assert [c.id for c in rep.claims] == ["C1", "C2", "C3a", "C3b", "C3c", "C4"]
    c1, c2 = rep.claims[0], rep.claims[1]
    assert c1.held and c1.measured["oracle_disagreements"] == 0  # by construction, even for tiny models
    assert c2.measured["fmr"] == 1.0 or c2.measured["n_retained"] == 0
    for name, row in rep.claims[2].measured.items():
        assert math.isfinite(row["fmr"]) and 0 <= row["fmr"] <= 1 and 0 <= row["clean"] <= 1, name
    c4 = rep.claims[5].measured
    assert all(math.isfinite(v) for v in c4["mean_l2"] + c4["fmr"])
    assert rep.notes and rep.seconds > 0
