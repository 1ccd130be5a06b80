"""Paper 25 (rscp-plus): the split evaluation helper and the quick reproduction's contract."""

import math

import pytest
import torch

from robustlab.certify.conformal import SmoothedScores
from robustlab.core.rng import torch_generator
from robustlab.papers import catalog
from robustlab.papers.base import Reproduction
from robustlab.papers.rscp_plus import FULL, Setup, evaluate_splits, reproduce


def test_evaluate_splits_split_cp_is_valid_and_rscp_plus_is_more_conservative():
    """On exchangeable synthetic smoothed scores, split CP covers ~1 - alpha; RSCP+ covers at least that."""
    g = torch_generator(3)
    n, c = 400, 5
    p = (2 * torch.randn(n, c, generator=g, dtype=torch.float64)).softmax(1)
    y = torch.multinomial(p, 1, generator=g).squeeze(1)
    sm = SmoothedScores(1 - p, torch.zeros_like(p), 256)
    setup = Setup(splits=40)
    split = evaluate_splits(sm, sm, y, setup, "split", torch_generator(0))
    plus = evaluate_splits(sm, sm, y, setup, "rscp_plus", torch_generator(0))
    rscp = evaluate_splits(sm, sm, y, setup, "rscp", torch_generator(0))
    assert split["coverage"] == pytest.approx(0.9, abs=0.03)
    assert plus["coverage"] >= split["coverage"] and plus["size"] >= split["size"]
    assert rscp["coverage"] >= split["coverage"] and rscp["size"] <= plus["size"]
    again = evaluate_splits(sm, sm, y, setup, "rscp_plus", torch_generator(0))
    assert again == plus  # seeded


def test_full_setup_is_the_spec():
    assert (FULL.alpha, FULL.delta, FULL.sigma, FULL.beta, FULL.n_samples) == (0.1, 0.125, 0.25, 0.001, 256)
    assert (FULL.n_holdout, FULL.splits, FULL.ptt_temperature, FULL.ptt_bias) == (200, 50, 400.0, 0.9)


def test_quick_reproduction_returns_the_contract_with_measured_numbers():
    assert catalog.status("rscp-plus") == "implemented"
    res = reproduce(quick=True)
    assert isinstance(res, Reproduction) and res.key == "rscp-plus" and res.error is None
    assert [c.id for c in res.claims] == ["C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    for c in res.claims:
        assert isinstance(c.held, bool) and c.statement
        nums = [float(v) for v in c.measured.values() if isinstance(v, (int, float))]
        assert nums and all(math.isfinite(v) for v in nums)
    c1, _, c3, _, _, c6, _ = res.claims
    assert all(0.0 <= v <= 1.0 for k, v in c1.measured.items() if k.startswith("coverage"))
    assert 1.0 <= c3.measured["size_tiny_ns"] <= 10.0
    for key in ("base", "base_ptt"):
        assert 0.0 <= c6.measured[f"violation_rate_rscp_plus_{key}"] <= c6.measured[f"violation_rate_rscp_{key}"] <= 1
    assert any("QUICK" in n for n in res.notes)
