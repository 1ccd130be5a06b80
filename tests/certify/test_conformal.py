"""Split conformal, RSCP / RSCP+, PTT and RCT (Yan, Romano & Weng, ICLR 2024): closed forms and guarantees."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from robustlab.certify.conformal import (
    PTT,
    RSCPPlusCertifier,
    SmoothedScores,
    SplitConformalCertifier,
    aps_score,
    bernstein_bound,
    conformal_quantile,
    coverage_and_size,
    evaluate_conformal,
    hoeffding_bound,
    hps_score,
    pgd_l2_score_attack,
    rct_loss,
    rscp_plus_sets,
    rscp_plus_threshold,
    rscp_sets,
    smoothed_scores,
    soft_quantile,
    split_conformal_sets,
)
from robustlab.core import registry
from robustlab.core.errors import ConfigError
from robustlab.core.model import CallableModel, TorchModel
from robustlab.core.outcomes import STATUSES
from robustlab.core.rng import torch_generator
from robustlab.data import load_dataset


@pytest.fixture(scope="module")
def digits_linear():
    """A softmax regression trained on noisy digits (full batch, seeded): a small real base classifier."""
    train = load_dataset("digits", split="train")
    g = torch_generator(0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        xn = train.x + 0.25 * torch.randn(train.x.shape, generator=g)
        nn.functional.cross_entropy(net(xn), train.y).backward()
        opt.step()
    test = load_dataset("digits", split="test", n=60, seed=1)
    return TorchModel(net.eval(), num_classes=10), test.x, test.y


# ----------------------------------------------------------------------------- scores and quantile

def test_scores_closed_form():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], dtype=torch.float64)
    assert torch.allclose(hps_score(p), 1 - p)
    assert torch.allclose(aps_score(p), torch.tensor([[0.5, 0.8, 1.0], [1.0, 0.6, 0.9]], dtype=torch.float64))
    r = aps_score(p, torch_generator(0))  # randomized: mass above + u * p_y, u in [0, 1]
    assert bool(((r >= aps_score(p) - p - 1e-12) & (r <= aps_score(p) + 1e-12)).all())


@pytest.mark.parametrize("n,alpha,k", [(9, 0.1, 9), (19, 0.1, 18), (99, 0.1, 90), (100, 0.05, 96), (4, 0.3, 4)])
def test_quantile_closed_form(n, alpha, k):
    """tau is the ceil((n + 1)(1 - alpha))-th smallest score."""
    assert k == math.ceil((n + 1) * (1 - alpha))
    scores = torch.randperm(n, generator=torch_generator(n)).double() + 1.0  # a shuffled 1..n
    assert float(conformal_quantile(scores, alpha)) == k


def test_quantile_too_few_points_is_infinite():
    assert math.isinf(float(conformal_quantile(torch.arange(8.0), 0.1)))  # ceil(9 * 0.9) = 9 > 8
    sets = split_conformal_sets(torch.rand(3, 5), conformal_quantile(torch.arange(8.0), 0.1))
    assert bool(sets.all())


def test_quantile_batched_matches_rows():
    s = torch.rand(7, 30, generator=torch_generator(1))
    q = conformal_quantile(s, 0.2)
    assert q.shape == (7,)
    assert torch.equal(q, torch.stack([conformal_quantile(r, 0.2) for r in s]))


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_split_conformal_coverage_on_exchangeable_data(alpha):
    """Marginal coverage is in [1 - alpha, 1 - alpha + 1/(n + 1)] (exact: k / (n + 1) for continuous scores).

    4000 independent calibration draws (n = 50) with 40 test points each; the mean of the per-draw
    coverages has standard error <= ~0.001, so a 0.005 tolerance is > 4 standard errors.
    """
    reps, n_cal, n_test, c = 4000, 50, 40, 5
    g = torch_generator(7)
    logits = 2.0 * torch.randn(reps, n_cal + n_test, c, generator=g, dtype=torch.float64)
    p = logits.softmax(-1)
    y = torch.multinomial(p.view(-1, c), 1, generator=g).view(reps, n_cal + n_test)  # labels drawn from p
    s = hps_score(p)
    true = s.gather(2, y.unsqueeze(-1)).squeeze(-1)
    tau = conformal_quantile(true[:, :n_cal], alpha)
    sets = s[:, n_cal:] <= tau.view(-1, 1, 1)
    cov = sets.gather(2, y[:, n_cal:].unsqueeze(-1)).double().mean()
    k = math.ceil((n_cal + 1) * (1 - alpha))
    assert abs(float(cov) - k / (n_cal + 1)) < 0.005
    assert float(cov) >= 1 - alpha - 0.005
    # the flat, per-draw path gives the same sets
    assert torch.equal(split_conformal_sets(s[0, n_cal:], tau[0]), sets[0])


def test_coverage_and_size():
    sets = torch.tensor([[True, False, True], [False, False, True]])
    assert coverage_and_size(sets, torch.tensor([0, 1])) == (0.5, 1.5)


# ----------------------------------------------------------------------------- RSCP / RSCP+

def test_bounds_closed_form():
    assert hoeffding_bound(256, 0.001) == pytest.approx(math.sqrt(math.log(1000) / 512))
    v = torch.tensor([0.0, 0.04], dtype=torch.float64)
    lg = math.log(2000)
    expect = torch.sqrt(2 * v * lg / 256) + 7 * lg / (3 * 255)
    assert torch.allclose(bernstein_bound(v, 256, 0.001), expect)


def test_rscp_plus_threshold_level():
    """(1 - alpha + 2 beta)(1 + 1/n) level: rank ceil((n + 1)(1 - alpha + 2 beta))."""
    s = torch.arange(1.0, 200.0)  # n = 199
    assert float(rscp_plus_threshold(s, 0.1, 0.01)) == math.ceil(200 * 0.92)
    assert float(rscp_plus_threshold(s, 0.1, 0.001)) >= float(conformal_quantile(s, 0.1))


def _sm(b=40, c=6, seed=0, n=256):
    g = torch_generator(seed)
    return SmoothedScores(torch.rand(b, c, generator=g, dtype=torch.float64),
                          0.05 * torch.rand(b, c, generator=g, dtype=torch.float64), n)


def test_rscp_plus_sets_monotone_in_delta_and_sigma():
    sm = _sm()
    prev = None
    for delta in (0.0, 0.05, 0.125, 0.25, 0.5):  # larger radius -> nested, larger sets
        sets = rscp_plus_sets(sm, 0.4, 0.25, delta)
        if prev is not None:
            assert bool((sets | ~prev).all())
        prev = sets
    prev = None
    for sigma in (0.12, 0.25, 0.5, 1.0):  # larger sigma -> smaller delta / sigma -> nested, smaller sets
        sets = rscp_plus_sets(sm, 0.4, sigma, 0.125)
        if prev is not None:
            assert bool((prev | ~sets).all())
        prev = sets


def test_rscp_plus_sets_closed_form_and_contain_rscp():
    sm = _sm(seed=3)
    tau, sigma, delta, beta = 0.3, 0.25, 0.125, 0.001
    lower = np.clip(sm.mean.numpy() - bernstein_bound(sm.var, sm.n, beta).numpy(), 0, None)
    rhs = norm.ppf(min(tau + hoeffding_bound(sm.n, beta), 1.0))
    expect = norm.ppf(lower) - delta / sigma <= rhs
    assert np.array_equal(rscp_plus_sets(sm, tau, sigma, delta, beta).numpy(), expect)
    # same tau: RSCP+ only adds the MC slack, so it contains RSCP's set
    assert bool((rscp_plus_sets(sm, tau, sigma, delta) | ~rscp_sets(sm, tau, sigma, delta)).all())
    # RSCP: S <= Phi(Phi^-1(tau) + delta / sigma)
    expect_rscp = sm.mean.numpy() <= norm.cdf(norm.ppf(tau) + delta / sigma)
    assert np.array_equal(rscp_sets(sm, tau, sigma, delta).numpy(), expect_rscp)


def test_tiny_n_samples_gives_full_sets():
    """With n_s = 16 the Hoeffding term sqrt(ln 1000 / 32) ~ 0.46 pushes tau + b_H past 1 for tau >= 0.54."""
    sm = _sm(n=16)
    assert bool(rscp_plus_sets(sm, 0.6, 0.25, 0.125).all())


def test_smoothed_scores_constant_model_and_determinism(digits_linear):
    const = CallableModel(lambda x: torch.tensor([[2.0, 0.0, 1.0]]).expand(x.shape[0], 3), num_classes=3)
    x = torch.rand(5, 1, 8, 8)
    sm = smoothed_scores(const, x, 0.25, 32, generator=torch_generator(0))
    p = torch.tensor([2.0, 0.0, 1.0]).double().softmax(0)
    assert torch.allclose(sm.mean, (1 - p).expand(5, 3), atol=1e-6)
    assert float(sm.var.max()) < 1e-10
    model, xs, _ = digits_linear
    a = smoothed_scores(model, xs[:10], 0.25, 64, batch_size=128, generator=torch_generator(5))
    b = smoothed_scores(model, xs[:10], 0.25, 64, batch_size=128, generator=torch_generator(5))
    assert torch.equal(a.mean, b.mean) and torch.equal(a.var, b.var)
    assert bool(((a.mean >= 0) & (a.mean <= 1)).all())
    assert torch.allclose(a.mean.sum(1), torch.full((10,), 9.0, dtype=torch.float64))  # HPS sums to C - 1


def test_pgd_l2_attack_stays_in_ball_and_raises_score(digits_linear):
    model, x, y = digits_linear
    for sigma in (0.0, 0.25):
        xa = pgd_l2_score_attack(model, x, y, 0.5, steps=10, sigma=sigma, m=4, generator=torch_generator(1))
        assert float((xa - x).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5
        assert float(xa.min()) >= 0 and float(xa.max()) <= 1
        with torch.no_grad():
            s0 = hps_score(model(x).softmax(1)).gather(1, y.view(-1, 1))
            s1 = hps_score(model(xa).softmax(1)).gather(1, y.view(-1, 1))
        assert float(s1.mean()) > float(s0.mean())


def test_evaluate_conformal_clean_and_pgd(digits_linear):
    model, x, y = digits_linear
    cal_x, cal_y, test_x, test_y = x[:30], y[:30], x[30:], y[30:]
    kw = {"delta": 0.5, "steps": 5, "m": 4, "n_samples": 64}
    split = evaluate_conformal(model, cal_x, cal_y, test_x, test_y, method="split", generator=torch_generator(0), **kw)
    plus = evaluate_conformal(model, cal_x, cal_y, test_x, test_y, generator=torch_generator(0), **kw)
    again = evaluate_conformal(model, cal_x, cal_y, test_x, test_y, generator=torch_generator(0), **kw)
    assert plus == again
    for res in (split, plus):
        assert set(res) == {"clean", "pgd"}
        assert all(0 <= r["coverage"] <= 1 and 0 <= r["size"] <= 10 for r in res.values())
    assert split["pgd"]["coverage"] <= split["clean"]["coverage"]  # the attack lowers the true-label probability
    assert plus["pgd"]["size"] >= split["pgd"]["size"]  # robust sets pay in size
    with pytest.raises(ConfigError, match="method"):
        evaluate_conformal(model, cal_x, cal_y, test_x, test_y, method="nope", generator=torch_generator(0))


# ----------------------------------------------------------------------------- PTT

def test_ptt_rank_closed_form_and_monotone():
    ptt = PTT.fit(torch.tensor([0.3, 0.1, 0.2, 0.2]), temperature=10, bias=0.5)
    q = ptt.rank(torch.tensor([0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.9]))
    assert q.tolist() == [0.0, 0.25, 0.25, 0.75, 0.75, 1.0, 1.0]
    assert torch.allclose(ptt(torch.tensor([0.2])), torch.sigmoid(torch.tensor([10 * 0.25], dtype=torch.float64)))
    s = torch.linspace(-0.5, 1.5, 2001, dtype=torch.float64)
    assert bool((ptt(s).diff() >= 0).all())  # ranking preserved (non-decreasing)
    interp = PTT.fit(torch.tensor([0.3, 0.1, 0.2, 0.2]), temperature=10, bias=0.5, interpolate=True)
    assert bool((interp(s).diff() > 0).all())  # strictly increasing


def test_ptt_leaves_split_cp_sets_unchanged():
    """A strictly increasing transform gives the same split-CP sets; the step ECDF can only add labels (ties)."""
    g = torch_generator(11)
    p = (2 * torch.randn(400, 6, generator=g, dtype=torch.float64)).softmax(1)
    y = torch.multinomial(p, 1, generator=g).squeeze(1)
    s = hps_score(p)
    hold, cal, test = slice(0, 100), slice(100, 250), slice(250, 400)
    base = split_conformal_sets(s[test], conformal_quantile(s[cal].gather(1, y[cal].view(-1, 1)).squeeze(1), 0.1))
    true_h = s[hold].gather(1, y[hold].view(-1, 1))
    for interpolate in (True, False):
        ptt = PTT.fit(true_h, temperature=5.0, bias=0.9, interpolate=interpolate)
        t = ptt(s)
        sets = split_conformal_sets(t[test], conformal_quantile(t[cal].gather(1, y[cal].view(-1, 1)).squeeze(1), 0.1))
        if interpolate:
            assert torch.equal(sets, base)
        else:
            assert bool((sets | ~base).all())


# ----------------------------------------------------------------------------- RCT

def test_soft_quantile_limit_and_gradient():
    v = torch.randn(201, generator=torch_generator(2), dtype=torch.float64).requires_grad_(True)
    t = soft_quantile(v, 0.1, dispersion=1e-4)
    assert float(t.detach()) == pytest.approx(float(v.detach().quantile(0.1)), abs=1e-2)
    (grad,) = torch.autograd.grad(soft_quantile(v, 0.1, dispersion=0.1), v)
    assert float(grad.sum()) == pytest.approx(1.0) and bool((grad >= 0).all())


def test_rct_loss_finite_and_differentiable(digits_linear):
    model, x, y = digits_linear
    net = model.module
    loss = rct_loss(net, x[:40], y[:40], sigma=0.25, delta=0.125, generator=torch_generator(0))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    net.zero_grad()


# ----------------------------------------------------------------------------- probes

def test_probes_registered():
    assert registry.get("rscp_plus", "certifier") is RSCPPlusCertifier
    assert registry.get("conformal", "certifier") is SplitConformalCertifier


def test_rscp_plus_probe_outcomes(digits_linear):
    model, x, y = digits_linear
    probe = RSCPPlusCertifier(n_samples=128)
    clean_pred = model(x).argmax(1)
    outs = [probe.evaluate(model, x, y, eps, clean_pred=clean_pred, generator=torch_generator(0))
            for eps in (0.0, 0.125, 0.125)]
    for out in outs:
        assert set(out.status) <= set(STATUSES) and len(out.status) == len(y)
        assert torch.equal(out.score, out.extras["set_size"].double())
        cov = np.array([s in ("certified", "robust") for s in out.status])
        assert np.array_equal(cov, out.extras["covered"].numpy())
        assert out.scores.shape == (len(y), 10)
    assert torch.equal(outs[1].extras["sets"], outs[2].extras["sets"])  # deterministic
    assert bool((outs[1].extras["sets"] | ~outs[0].extras["sets"]).all())  # larger eps, larger sets
    assert sum(s == "certified" for s in outs[1].status) > 0


def test_conformal_probe_outcomes(digits_linear):
    model, x, y = digits_linear
    probe = SplitConformalCertifier(steps=5)
    clean_pred = model(x).argmax(1)
    clean = probe.evaluate(model, x, y, 0.0, clean_pred=clean_pred, generator=torch_generator(0))
    adv = probe.evaluate(model, x, y, 1.0, clean_pred=clean_pred, generator=torch_generator(0))
    assert set(clean.status) | set(adv.status) <= {"robust", "broken"}
    assert float(adv.distance.max()) <= 1.0 + 1e-5
    assert adv.extras["covered"].float().mean() <= clean.extras["covered"].float().mean()


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": 1.0}, {"alpha": -0.1}, {"sigma": 0.0},
                                    {"sigma": -1.0}, {"sigma": float("nan")}, {"beta": 0.0}, {"beta": 0.06},
                                    {"n_samples": 1}, {"score": "nope"}])
def test_rscp_plus_bad_config(kwargs):
    with pytest.raises(ConfigError):
        RSCPPlusCertifier(**kwargs)


def test_bad_inputs_raise():
    sm = _sm()
    with pytest.raises(ConfigError, match="alpha"):
        conformal_quantile(torch.rand(10), 1.5)
    with pytest.raises(ConfigError, match="sigma"):
        rscp_plus_sets(sm, 0.5, 0.0, 0.1)
    with pytest.raises(ConfigError, match="delta"):
        rscp_sets(sm, 0.5, 0.25, -0.1)
    with pytest.raises(ConfigError, match="alpha > 2 beta"):
        rscp_plus_threshold(torch.rand(10), 0.1, 0.05)
    with pytest.raises(ConfigError):
        SplitConformalCertifier(alpha=2.0)
    with pytest.raises(ConfigError, match="hold-out"):
        PTT.fit(torch.tensor([]))
