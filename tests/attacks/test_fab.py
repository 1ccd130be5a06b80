"""FAB / FAB-T (Croce & Hein, 2020): exact projections, minimal distance, threat contract, strength."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustlab.attacks import PGD
from robustlab.attacks.fab import FAB, fab_t
from robustlab.attacks.search.fab import box_hyperplane_projection
from robustlab.core import registry
from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.model import CallableModel, TorchModel
from robustlab.core.rng import torch_generator
from robustlab.core.threat import LpBall, lp_norm

from .conftest import blobs, mlp, trained_mlp


def _reference_projection(t, w, c, norm, iters=200):
    """Independent check: bisection on the multiplier of the box-constrained Lp projection."""
    sign = torch.where(c < 0, -1.0, 1.0).to(t.dtype).unsqueeze(1)
    w, c = w * sign, c.abs()
    room = torch.where(w > 0, t, 1 - t)

    def move(lam):
        if norm == "inf":
            return torch.minimum(lam, room) * (w != 0)
        return torch.minimum(lam * w.abs(), room)

    lo, hi = torch.zeros_like(c), torch.full_like(c, 1e3)
    for _ in range(iters):
        mid = (lo + hi) / 2
        reach = (w.abs() * move(mid.unsqueeze(1))).sum(1)
        lo, hi = torch.where(reach < c, mid, lo), torch.where(reach < c, hi, mid)
    return -w.sign() * move(hi.unsqueeze(1))


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_box_projection_matches_a_bisection(norm):
    g = torch.Generator().manual_seed(0)
    t = torch.rand(200, 9, generator=g, dtype=torch.float64)
    w = torch.randn(200, 9, generator=g, dtype=torch.float64)
    w[:20, :4] = 0.0
    c = 3.0 * torch.randn(200, generator=g, dtype=torch.float64)
    d = box_hyperplane_projection(t, w, c, norm)
    ref = _reference_projection(t, w, c, norm)
    feasible = (c.abs() <= (w.abs() * torch.where(w * c.sign().unsqueeze(1) > 0, t, 1 - t)).sum(1))
    assert 20 < int(feasible.sum()) < 200                      # both cases occur
    assert torch.allclose(d, ref, atol=1e-9)
    assert bool(((t + d) >= -1e-12).all() and ((t + d) <= 1 + 1e-12).all())
    assert torch.allclose((c + (w * d).sum(1))[feasible], torch.zeros(int(feasible.sum()), dtype=torch.float64),
                          atol=1e-10)


def test_l1_box_projection_moves_the_largest_weights_first():
    t = torch.tensor([[0.5, 0.5, 0.5, 0.9]], dtype=torch.float64)
    w = torch.tensor([[1.0, -3.0, 0.5, 2.0]], dtype=torch.float64)
    # need w.d = -2: coordinate 1 (|w| = 3, moves up, room 0.5) gives 1.5, then coordinate 3
    # (|w| = 2, moves down, room 0.9) gives the remaining 0.5 with 0.25
    d = box_hyperplane_projection(t, w, torch.tensor([2.0], dtype=torch.float64), "1")
    assert torch.allclose(d, torch.tensor([[0.0, 0.5, 0.0, -0.25]], dtype=torch.float64))
    far = box_hyperplane_projection(t, w, torch.tensor([100.0], dtype=torch.float64), "1")
    assert torch.allclose(far, torch.tensor([[-0.5, 0.5, -0.5, -0.9]], dtype=torch.float64))  # box corner


def _linear_binary(d=10, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(d, 2).double()
    with torch.no_grad():
        lin.weight.copy_(3 * torch.randn(2, d, dtype=torch.float64))
        lin.bias.copy_(torch.tensor([0.0, -0.5 * float((lin.weight[1] - lin.weight[0]).sum())]))
    return TorchModel(nn.Sequential(lin), num_classes=2, modality="tabular"), lin


def _exact_distance(lin, x, y, dual):
    w, b = lin.weight.detach(), lin.bias.detach()
    v = w[1 - y] - w[y]
    return ((v * x).sum(1) + b[1 - y] - b[y]).abs() / dual(v)


@pytest.mark.parametrize("norm,dual", [
    ("2", lambda v: v.norm(dim=1)),           # |w.x + b| / ||w||_2
    ("inf", lambda v: v.abs().sum(dim=1)),    # |w.x + b| / ||w||_1
    ("1", lambda v: v.abs().amax(dim=1)),     # |w.x + b| / ||w||_inf
])
def test_fab_t_finds_the_minimal_distance_of_a_linear_model(norm, dual):
    model, lin = _linear_binary()
    x = 0.4 + 0.2 * torch.rand(100, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = model.predict(x)
    exact = _exact_distance(lin, x, y, dual)                  # the box never binds here
    res = fab_t(norm=norm, eps=1.0, n_iter=30).minimize(model, x, y, generator=torch_generator(0))
    ratio = res.extras["norm"] / exact
    assert bool(res.extras["success"].all())
    assert bool((ratio >= 1 - 1e-9).all()) and bool((ratio <= 1.01).all()), (ratio.min(), ratio.max())
    assert torch.allclose(lp_norm(res.x_adv - x, norm), res.extras["norm"])
    assert bool((model.predict(res.x_adv) != y).all())


def test_call_returns_the_point_only_within_eps():
    model, lin = _linear_binary()
    x = 0.4 + 0.2 * torch.rand(100, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = model.predict(x)
    exact = _exact_distance(lin, x, y, lambda v: v.norm(dim=1))
    eps = float(exact.median())
    res = FAB(norm=2, eps=eps, n_iter=30, targeted=True)(model, x, y, generator=torch_generator(0))
    broken = model.predict(res.x_adv) != y
    assert bool(LpBall("2", eps).contains(x, res.x_adv).all())
    assert bool(broken[exact < eps / 1.01].all())             # found wherever it is clearly possible
    assert bool((res.x_adv[exact > eps] == x[exact > eps]).all())   # else the clean input, untouched
    assert torch.equal(broken, res.extras["success"])


def test_fab_t_is_as_strong_as_pgd_on_a_trained_mlp():
    model = trained_mlp()
    x, y = blobs(200, seed=5)
    for eps in (0.06, 0.1):
        accs = {}
        for name, atk in {"fab_t": fab_t(eps=eps), "fab": FAB(eps=eps), "pgd": PGD(eps=eps, steps=20)}.items():
            res = atk(model, x, y, generator=torch_generator(0))
            assert bool(LpBall("inf", eps).contains(x, res.x_adv).all())
            accs[name] = float((model.predict(res.x_adv) == y).float().mean())
        # FAB-T (100 steps, 2 targets) vs PGD-20: at most 1 example of 200 worse, measured
        assert accs["fab_t"] <= accs["pgd"] + 0.0051 and accs["fab"] <= accs["pgd"] + 0.0051, (eps, accs)
        assert accs["fab_t"] < 0.95


@settings(max_examples=10, deadline=None)
@given(norm=st.sampled_from(["inf", "2", "1"]), eps=st.floats(0.0, 3.0), batch=st.integers(1, 5),
       shape=st.sampled_from([(6,), (1, 4, 4), (2, 3, 3)]), seed=st.integers(0, 10_000),
       targeted=st.booleans(), restarts=st.integers(1, 2))
def test_output_is_inside_the_ball_and_the_box(norm, eps, batch, shape, seed, targeted, restarts):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *shape, generator=g)
    model = mlp(shape, classes=4, seed=seed % 5)
    y = torch.randint(0, 4, (batch,), generator=g)
    atk = FAB(norm=norm, eps=eps, n_iter=5, n_restarts=restarts, targeted=targeted, n_target_classes=2)
    res = atk(model, x, y, generator=torch_generator(seed))
    assert res.x_adv.shape == x.shape
    assert bool(LpBall(norm, eps).contains(x, res.x_adv).all())
    unchanged = (res.x_adv == x).flatten(1).all(1)
    assert bool((res.extras["success"] | unchanged).all())    # a returned change is an adversarial point


def test_deterministic_with_random_restarts_and_early_stop_saves_queries():
    model = trained_mlp()
    x, y = blobs(60, seed=6)
    atk = fab_t(eps=0.08, n_iter=20, n_restarts=2)
    a = atk(model, x, y, generator=torch_generator(5))
    b = atk(model, x, y, generator=torch_generator(5))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    full = fab_t(eps=0.08, n_iter=20, n_restarts=2, early_stop=False)(model, x, y, generator=torch_generator(5))
    assert torch.equal(a.extras["success"], full.extras["success"])
    assert int(a.queries.sum()) < int(full.queries.sum())
    assert bool((a.queries <= 1 + 2 * 2 * (2 * 20 + 1)).all())  # clean + targets * restarts * (2 n_iter + 1)


@pytest.mark.parametrize("targeted", [True, False])
def test_check_first_order_gives_the_same_points(monkeypatch, targeted):
    """Checking a step with its own forward pass (then the gradient at the pulled-back point) or with
    the next gradient's forward pass is a matter of cost: the same points, norms and successes."""
    from robustlab.attacks.search import fab as fab_search

    model = trained_mlp()
    x, y = blobs(40, seed=3)
    out = {}
    for name, above in (("gradient first", float("inf")), ("check first", -1.0)):
        monkeypatch.setattr(fab_search, "_CHECK_FIRST_ABOVE", above)
        atk = FAB(eps=0.08, n_iter=15, targeted=targeted, n_target_classes=2)
        out[name] = atk.minimize(model, x, y, generator=torch_generator(0))
    a, b = out["gradient first"], out["check first"]
    assert torch.equal(a.extras["success"], b.extras["success"])
    assert torch.allclose(a.extras["norm"], b.extras["norm"], atol=1e-6)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-6)
    assert int(b.queries.sum()) >= int(a.queries.sum())  # a forward pass per step instead of wasted gradients


def test_needs_gradients_and_works_under_inference_mode():
    net = trained_mlp().module
    blind = CallableModel(lambda x: net(x).detach(), num_classes=3, modality="tabular")
    x, y = blobs(10, seed=2)
    with pytest.raises(UnsupportedModelError):
        fab_t(eps=0.1)(blind, x, y, generator=torch_generator(0))
    model = trained_mlp()
    with torch.inference_mode():
        for atk in (fab_t(eps=0.1, n_iter=10), FAB(eps=0.1, n_iter=10)):
            res = atk(model, x, y, generator=torch_generator(0))
            assert not res.x_adv.requires_grad
    assert all(p.grad is None for p in model.module.parameters())


def test_validation_registry_and_repr():
    with pytest.raises(ConfigError):
        FAB(n_iter=0)
    with pytest.raises(ConfigError):
        FAB(eta=0.5)
    with pytest.raises(ConfigError):
        FAB(alpha_max=2.0)
    atk = registry.create("fab_t", eps=0.1)
    assert isinstance(atk, FAB) and atk.targeted and atk.search.n_target_classes == 9
    assert atk.search.n_iter == 100 and (atk.search.alpha_max, atk.search.eta, atk.search.beta) == (0.1, 1.05, 0.9)
    assert not registry.create("fab", norm=2).targeted and registry.create("fab", norm=2).threat.norm == "2"
    assert "targeted=True" in repr(atk) and atk.at(0.2).eps == 0.2 and atk.eps == 0.1
