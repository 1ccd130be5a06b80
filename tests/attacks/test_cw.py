"""CW-L2 (Carlini & Wagner, 2017): minimum norm on a linear model, the eps contract, strength, cost."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustlab.attacks.cw import CWL2, CWHinge
from robustlab.attacks.goals import margin_loss
from robustlab.attacks.pgd import PGD
from robustlab.core import registry
from robustlab.core.errors import ConfigError
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.core.threat import LpBall, lp_norm

from .conftest import blobs, mlp, trained_mlp

FAST = {"steps": 100, "binary_search_steps": 6}


def _linear_binary(d=10, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(d, 2).double()
    with torch.no_grad():
        lin.weight.copy_(3 * torch.randn(2, d, dtype=torch.float64))
        lin.bias.copy_(torch.tensor([0.0, -0.5 * float((lin.weight[1] - lin.weight[0]).sum())]))
    return TorchModel(nn.Sequential(lin), num_classes=2, modality="tabular"), lin


def test_cw_finds_the_minimum_l2_distance_of_a_linear_model():
    model, lin = _linear_binary()
    x = 0.3 + 0.4 * torch.rand(120, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = model(x).argmax(1).detach()
    w, b = lin.weight.detach(), lin.bias.detach()
    v = w[y] - w[1 - y]
    dist = ((v * x).sum(1) + b[y] - b[1 - y]) / v.norm(dim=1)    # distance to the decision boundary
    near = dist < 0.25                                             # box never binds for these
    res = CWL2(eps=0.5, **FAST)(model, x, y, generator=torch_generator(0))
    found = res.extras["distance"]
    assert int(near.sum()) > 50
    assert bool((found[near] >= dist[near] - 1e-9).all())          # nothing beats the true minimum
    assert float((found[near] - dist[near]).max()) < 0.01          # and CW gets within 0.01 of it
    assert float((found[near] - dist[near]).median()) < 1e-3


def test_cw_output_respects_eps_and_is_adversarial_where_found():
    model = trained_mlp()
    x, y = blobs(60, seed=5)
    for eps in (0.2, 0.35):
        res = CWL2(eps=eps, **FAST)(model, x, y, generator=torch_generator(0))
        d, ok = res.extras["distance"], res.extras["success"]
        assert bool(LpBall("2", eps).contains(x, res.x_adv).all())
        assert bool((ok == (d <= eps)).all()) and 0 < int(ok.sum()) < 60
        assert bool((model.predict(res.x_adv)[ok] != y[ok]).all())
        assert torch.equal(res.x_adv[~ok], x[~ok])                 # nothing within eps: the clean input
        assert torch.allclose(lp_norm(res.x_adv[ok] - x[ok], "2").double(), d[ok], atol=1e-5)


def test_cw_finds_smaller_norms_than_a_successful_pgd_l2_eps():
    model = trained_mlp()
    x, y = blobs(100, seed=5)
    d = CWL2(eps=0.5, **FAST)(model, x, y, generator=torch_generator(0)).extras["distance"]
    for eps in (0.3, 0.4):
        pgd = PGD(norm=2, eps=eps, steps=50)(model, x, y, generator=torch_generator(0))
        broken = model.predict(pgd.x_adv) != y
        assert int(broken.sum()) >= 20
        assert float((d[broken] < eps).float().mean()) >= 0.75, eps   # CW is local: "most", not "all"
    assert float(d.median()) < 0.4


def test_queries_and_abort_early():
    model = trained_mlp()
    x, y = blobs(20, seed=2)
    full = CWL2(eps=0.5, steps=30, binary_search_steps=3, abort_early=False)(model, x, y, generator=torch_generator(0))
    assert bool((full.queries == 90).all())
    early = CWL2(eps=0.5, steps=300, binary_search_steps=3)(model, x, y, generator=torch_generator(0))
    assert bool((early.queries <= 900).all()) and int(early.queries.sum()) < 900 * 20


def test_binary_search_moves_c_and_kappa_demands_a_margin():
    model = trained_mlp()
    x, y = blobs(30, seed=3)
    res = CWL2(eps=3.0, initial_const=1e-3, **FAST)(model, x, y, generator=torch_generator(0))
    c = res.extras["const"]
    assert bool((c > 1e-3).all()) and bool((c < 1e9).all())        # c had to grow, then got bounded
    kappa = 2.0
    hard = CWL2(eps=3.0, kappa=kappa, **FAST)(model, x, y, generator=torch_generator(0))
    ok = hard.extras["success"]
    assert int(ok.sum()) > 20
    with torch.no_grad():
        m = margin_loss(model(hard.x_adv[ok]), y[ok])
    assert bool((m > kappa).all())
    assert bool((hard.extras["distance"][ok] > res.extras["distance"][ok]).all())
    g = CWHinge(1.0)
    s = torch.tensor([[2.0, 2.5, 0.0]])
    assert not bool(g.success(s, torch.tensor([0]))) and bool(CWHinge(0.0).success(s, torch.tensor([0])))
    assert torch.allclose(g.loss(s, torch.tensor([0])), torch.tensor([-0.5]))


@settings(max_examples=8, deadline=None)
@given(eps=st.floats(0.0, 2.0), batch=st.integers(1, 5), shape=st.sampled_from([(6,), (1, 4, 4)]),
       seed=st.integers(0, 10_000))
def test_cw_inside_threat_model_and_deterministic(eps, batch, shape, seed):
    model = mlp(shape, classes=4, seed=seed % 3)
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 4, (batch,), generator=torch.Generator().manual_seed(seed + 1))
    atk = CWL2(eps=eps, steps=20, binary_search_steps=3)
    r1, r2 = atk(model, x, y, generator=torch_generator(0)), atk(model, x, y, generator=torch_generator(1))
    assert bool(LpBall("2", eps).contains(x, r1.x_adv).all())
    assert float(r1.x_adv.min()) >= 0 and float(r1.x_adv.max()) <= 1
    assert torch.equal(r1.x_adv, r2.x_adv) and torch.equal(r1.queries, r2.queries)


def test_registry_defaults_validation_and_evaluate():
    a = registry.create("cw_l2")
    assert isinstance(a, CWL2) and a.eps == 0.5 and a.steps == 1000 and a.binary_search_steps == 9
    assert a.initial_const == 1e-3 and a.lr == 0.01 and a.kappa == 0 and a.abort_early
    assert "CWL2(eps=0.5" in repr(a) and a.at(0.25).eps == 0.25
    for bad in ({"eps": -1.0}, {"initial_const": 0.0}, {"binary_search_steps": 0}, {"steps": 2.5}, {"lr": -1.0},
                {"kappa": -1.0}, {"abort_early": 1}):
        with pytest.raises(ConfigError):
            CWL2(**bad)
    model = trained_mlp()
    x, y = blobs(30, seed=4)
    out = CWL2(eps=0.3, **FAST).evaluate(model, x, y, 0.3, clean_pred=model.predict(x), generator=torch_generator(0))
    assert bool((out.distance <= 0.3 + 1e-5).all()) and int((out.scores.argmax(1) != y).sum()) > 0
