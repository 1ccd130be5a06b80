"""Paper 40 (accuracy-disparity): closed form, exact adversarial logistic regression, and the reproduction."""

import math

import pytest
import torch

from robustlab.core.rng import torch_generator
from robustlab.papers import catalog
from robustlab.papers.accuracy_disparity import closed_form, fit_linear, reproduce, sample_mixture
from robustlab.papers.base import Reproduction


def test_closed_form_is_symmetric_when_balanced_and_robustness_widens_the_gap():
    a_pos, a_neg = closed_form(1, 0.0, eta=0.2, d=100, sigma=1.0)
    assert a_pos == pytest.approx(a_neg) == pytest.approx(0.5 * (1 + math.erf(2 / math.sqrt(2))))
    std = closed_form(10, 0.0, eta=0.2, d=100, sigma=1.0)
    rob = closed_form(10, 1.0, eta=0.2, d=100, sigma=1.0)  # l_inf eps = 0.1: means shrink 2 -> 1
    # tau = ln 10 / (2 m_rob): minority accuracy Phi(2 - tau)
    assert rob[1] == pytest.approx(0.5 * (1 + math.erf((2 - math.log(10) / 2) / math.sqrt(2))))
    assert rob[0] - rob[1] > std[0] - std[1] > 0
    with pytest.raises(ValueError):
        closed_form(2, 2.0, eta=0.2, d=100, sigma=1.0)


def test_exact_adversarial_logistic_regression_finds_the_robust_bayes_rule():
    g = torch_generator(0)
    mu = torch.full((10,), 0.5, dtype=torch.float64)  # projected means +-0.5 sqrt(10)
    x, y = sample_mixture(20_000, mu, 1.0, 5, g)
    assert abs(float((y > 0).double().mean()) - 5 / 6) < 0.01
    for norm, eps, shift in (("inf", 0.2, 0.2 * math.sqrt(10)), ("2", 0.2 * math.sqrt(10), 0.2 * math.sqrt(10))):
        w, b = fit_linear(x, y, eps=eps, norm=norm)
        cos = float(w.sum() / (w.norm() * math.sqrt(10)))
        assert cos > 0.99  # w ~ 1_d
        m_rob = 0.5 * math.sqrt(10) - shift
        tau = math.log(5) / (2 * m_rob)
        assert float(-b / w.norm()) == pytest.approx(-tau, abs=0.1)  # threshold on s = w.x / ||w||


def test_l_inf_robust_regression_drops_weak_coordinates():
    g = torch_generator(1)
    mu = torch.tensor([1.0, 0.05, 0.05, 0.05], dtype=torch.float64)
    x, y = sample_mixture(5_000, mu, 1.0, 1, g)
    w, _ = fit_linear(x, y, eps=0.3, norm="inf")
    assert float(w[0]) > 0.1 and float(w[1:].abs().max()) < 1e-6


def test_quick_reproduction_returns_the_contract_with_measured_numbers():
    assert catalog.status("accuracy-disparity") == "implemented"
    res = reproduce(quick=True)
    assert isinstance(res, Reproduction) and res.key == "accuracy-disparity" and res.error is None
    assert [c.id for c in res.claims] == ["C1", "C2", "C3", "C4", "C5"]
    for c in res.claims:
        assert isinstance(c.held, bool) and c.statement
        nums = [float(v) for v in c.measured.values() if isinstance(v, (int, float))]
        assert nums and all(math.isfinite(v) for v in nums)
    c1, c2, c3, c4, c5 = res.claims
    assert 0.0 <= c2.measured["max_abs_ad_R1"] <= 1.0
    assert c4.measured["max_gap"] >= 0 and c4.measured["configs"] == 3 * 3 * 2
    # the closed-form minority accuracy at the largest eps and R = 10 is Phi(2 - ln 10)
    assert c4.measured["cf_minority_R10"] == pytest.approx(0.5 * (1 + math.erf((2 - math.log(10)) / math.sqrt(2))))
    assert c1.measured["cf_ad_rise_R10"] > c1.measured["cf_ad_rise_R2"] > 0
    assert {"ad_rise_R1_linf", "ad_rise_R10_l2"} <= set(c3.measured)
    assert any("QUICK" in n for n in res.notes) and len(res.notes) >= 5
    assert res.seconds > 0 and res.to_dict()["key"] == "accuracy-disparity"


@pytest.mark.slow
def test_full_reproduction_holds_every_claim():
    res = catalog.run("accuracy-disparity", quick=False)
    assert res.error is None and len(res.claims) == 5
    assert all(c.held for c in res.claims), [(c.id, c.measured) for c in res.claims if not c.held]
