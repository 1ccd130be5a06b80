"""The gradient search engine: steepest steps, projection, restarts, survivors-only bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustlab.attacks.goals import Misclassify
from robustlab.attacks.search.gradient import GradientSearch, default_alpha, sample_start, steepest_direction
from robustlab.core.errors import ConfigError
from robustlab.core.threat import LpBall, lp_norm

from .conftest import linear_model, mlp


def test_steepest_direction_per_norm_has_unit_norm():
    g = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(steepest_direction(g, "inf"), g.sign())
    assert torch.allclose(lp_norm(steepest_direction(g, "2"), "2"), torch.ones(6))
    d1 = steepest_direction(g, "1", l1_quantile=0.9)
    assert torch.allclose(lp_norm(d1, "1"), torch.ones(6))
    k = math.ceil(0.1 * 48)
    assert ((d1 != 0).reshape(6, -1).sum(1) == k).all()
    # the kept coordinates are the k largest |g|, with the gradient's sign
    top = g.reshape(6, -1).abs().topk(k, dim=1).indices
    picked = d1.reshape(6, -1).gather(1, top)
    assert torch.allclose(picked, g.reshape(6, -1).gather(1, top).sign() / k)


def test_l1_direction_skips_coordinates_pushing_out_of_the_box():
    g = torch.tensor([[5.0, -4.0, 1.0, 0.5]])
    x = torch.tensor([[1.0, 0.0, 0.5, 0.5]])  # the two largest push outside [0, 1]
    d = steepest_direction(g, "1", x=x, l1_quantile=0.75)
    assert torch.equal(d, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))


def test_zero_gradient_gives_zero_direction():
    z = torch.zeros(2, 5)
    for norm in ("inf", "2", "1"):
        assert torch.equal(steepest_direction(z, norm), z)


def test_default_alpha_is_madry_rule():
    assert default_alpha(8 / 255, 20) == pytest.approx(2.5 * (8 / 255) / 20)
    assert GradientSearch(steps=10).step_size(LpBall("2", 0.5)) == pytest.approx(0.125)
    assert GradientSearch(steps=10, alpha=0.01).step_size(LpBall("2", 0.5)) == 0.01


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"steps": 2.5}, {"restarts": 0}, {"alpha": 0.0},
                                    {"alpha": float("nan")}, {"l1_quantile": 1.0},
                                    {"final_check": False, "restarts": 2}])
def test_bad_search_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError) as info:
        GradientSearch(**kwargs)
    assert info.value.fix


def _run(search, model, x, y, threat, seed=0):
    return search.run(model, Misclassify("ce"), threat, x, y, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=12, deadline=None)
@given(norm=st.sampled_from(["inf", "2", "1"]), eps=st.floats(0.0, 3.0), batch=st.integers(1, 9),
       shape=st.sampled_from([(5,), (1, 4, 4), (3, 2, 3)]), restarts=st.integers(1, 2),
       seed=st.integers(0, 2**31))
def test_search_stays_in_threat_and_box_and_is_deterministic(norm, eps, batch, shape, restarts, seed):
    model = mlp(shape, classes=3, seed=seed % 7)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *shape, generator=g)
    y = torch.randint(0, 3, (batch,), generator=g)
    threat = LpBall(norm, eps)
    search = GradientSearch(steps=4, restarts=restarts)
    r1, r2 = _run(search, model, x, y, threat, seed), _run(search, model, x, y, threat, seed)
    assert r1.x_adv.shape == x.shape
    assert bool(threat.contains(x, r1.x_adv).all())
    assert float(r1.x_adv.min()) >= 0.0 and float(r1.x_adv.max()) <= 1.0
    assert torch.equal(r1.x_adv, r2.x_adv) and torch.equal(r1.queries, r2.queries)
    assert int(r1.queries.max()) <= restarts * 5
    # success flags are true at the returned points
    with torch.no_grad():
        pred = model(r1.x_adv).argmax(1)
    assert bool((pred[r1.success] != y[r1.success]).all())


def test_only_survivors_are_attacked_and_queries_match_model_rows():
    model = mlp((10,), classes=3, seed=1)
    rows = []
    model.module.register_forward_hook(lambda m, inp, out: rows.append(inp[0].shape[0]))
    x = torch.rand(40, 10, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(1))
    search = GradientSearch(steps=10, restarts=3)
    res = _run(search, model, x, y, LpBall("inf", 0.15))
    assert sum(rows) == int(res.queries.sum())  # no work is spent on frozen examples
    broken = res.success
    assert 0 < int(broken.sum()) < 40
    assert bool((res.queries[broken] < 10 * 3).all())
    assert bool((res.queries[~broken] == 3 * 11).all())
    assert rows[-1] < 40  # later calls see fewer rows


def test_early_stop_when_everything_is_broken():
    model = linear_model(d=8, classes=2)
    x = torch.rand(12, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1).detach()
    res = _run(GradientSearch(steps=50, restarts=5), model, x, y, LpBall("inf", 1.0))
    assert bool(res.success.all())
    assert int(res.queries.max()) < 50  # stopped well before the budget


def test_eps_zero_returns_the_input_without_queries():
    model = mlp((5,), seed=0)
    x = torch.rand(4, 5)
    res = _run(GradientSearch(steps=3), model, x, torch.zeros(4, dtype=torch.long), LpBall("2", 0.0))
    assert torch.equal(res.x_adv, x) and int(res.queries.sum()) == 0


def test_best_point_across_restarts_has_the_highest_recorded_loss():
    model = mlp((6,), classes=3, seed=2)
    x = torch.rand(16, 6, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(5))
    threat = LpBall("inf", 0.02)
    one = _run(GradientSearch(steps=3, restarts=1, alpha=0.002), model, x, y, threat)
    many = _run(GradientSearch(steps=3, restarts=4, alpha=0.002), model, x, y, threat)
    with torch.no_grad():
        loss = Misclassify("ce").loss(model(many.x_adv), y)
    assert torch.allclose(loss.double(), many.loss, atol=1e-5)
    # restart 1 replays the single run (same draws); later restarts can only improve it
    assert bool((many.loss >= one.loss).all()) and bool((many.success | ~one.success).all())
    assert bool((many.loss > one.loss).any())


def test_sample_start_moves_draws_across_devices():
    x0 = torch.rand(3, 4, dtype=torch.float64)
    s = sample_start(LpBall("inf", 0.1), x0, torch.Generator().manual_seed(0))
    assert s.dtype == x0.dtype and bool(LpBall("inf", 0.1).contains(x0, s).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_search_on_cuda_with_cpu_or_cuda_generator():
    model = mlp((6,), seed=0).to("cuda")
    x = torch.rand(8, 6, device="cuda")
    y = torch.zeros(8, dtype=torch.long, device="cuda")
    for gdev in ("cpu", "cuda"):
        res = GradientSearch(steps=3).run(model, Misclassify(), LpBall("inf", 0.1), x, y,
                                          generator=torch.Generator(device=gdev).manual_seed(0))
        assert res.x_adv.device.type == "cuda" and bool(LpBall("inf", 0.1).contains(x, res.x_adv).all())
