"""The bayesian-transfer reproduction: the JSON contract in quick mode; the claims in the full (slow) run."""

from __future__ import annotations

import json
import math

import pytest

from robustlab.papers import catalog
from robustlab.papers.bayesian_transfer import FULL, QUICK, reproduce


@pytest.fixture(scope="module")
def quick_result():
    return reproduce(quick=True, progress=False)


def test_quick_returns_the_contract(quick_result):
    d = json.loads(json.dumps(quick_result.to_dict()))  # JSON-serializable
    assert d["key"] == "bayesian-transfer" and "Bayesian" in d["title"]
    assert {"key", "title", "claims", "seconds", "notes"} <= set(d) and "error" not in d
    assert [c["id"] for c in d["claims"]] == ["C1", "C2", "C3", "C4"]
    for c in d["claims"]:
        assert isinstance(c["held"], bool) and c["statement"] and c["measured"]
        for v in c["measured"].values():
            assert isinstance(v, (int, float)) and math.isfinite(v)
    assert d["seconds"] > 0
    assert quick_result.exit_code in (0, 1)


def test_quick_measures_what_the_claims_say(quick_result):
    c1, c2, c3, c4 = quick_result.claims
    assert c1.measured["max_linf_minus_eps"] <= 1e-6 and c1.measured["inside_box"] == 1  # attack stays in threat
    assert {"white_box_dnn", "white_box_ensemble", "white_box_csgld"} <= set(c1.measured)
    assert c2.measured["n_samples"] == QUICK.cycles * QUICK.samples_per_cycle
    assert all(0.0 <= v <= 1.0 for v in c3.measured.values())
    assert {f"csgld@{e:g}" for e in QUICK.eps_grid} <= set(c3.measured)
    assert c4.measured["epochs_csgld"] < c4.measured["epochs_ensemble"]  # matched, lower training cost
    assert c4.measured["epochs_csgld"] == pytest.approx(1.5 * QUICK.dnn_epochs)


def test_notes_state_the_differences(quick_result):
    text = " ".join(quick_result.notes)
    assert text.startswith("QUICK mode")
    for word in ("digits", "PreResNet110", "epochs", "samples", "eps grid", "temperature"):
        assert word in text


def test_registered_in_the_catalog():
    assert catalog.status("bayesian-transfer") == "implemented"
    assert FULL.cycle_epochs * FULL.cycles == pytest.approx(1.5 * FULL.dnn_epochs)


@pytest.mark.slow
def test_full_reproduction_claims_hold():
    result = reproduce(quick=False, progress=False)
    failed = {c.id: c.measured for c in result.claims if not c.held}
    assert not failed, failed
    assert result.seconds < 600
