"""APGD (Croce & Hein, 2020): schedule, step-size rule, optimum, strength, survivors-only cost, contract."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustlab.attacks.apgd import APGD, APGDCE, APGDDLR, APGDT, TargetedDLR, dlr_targeted_loss
from robustlab.attacks.goals import Misclassify
from robustlab.attacks.pgd import PGD
from robustlab.attacks.search.apgd import APGDSearch, apgd_start, checkpoints, should_halve
from robustlab.core import registry
from robustlab.core.errors import ConfigError
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.core.threat import LpBall, lp_norm

from .conftest import blobs, mlp, trained_mlp


def trained_mlp5() -> TorchModel:
    """The shared blob MLP on 5-class blobs (APGD-T's targeted DLR needs >= 4 classes)."""
    return trained_mlp(classes=5)


def _official_checkpoints(n_iter: int) -> list[int]:
    """The schedule as the official code runs it (floored fractions of n_iter, shrinking gaps)."""
    k, k_min, decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    out, w = [0], 0
    while w + k <= n_iter:
        w += k
        out.append(w)
        k = max(k - decr, k_min)
    return out


def _robust_acc(model, x_adv, y) -> float:
    return float((model.predict(x_adv) == y).float().mean())


# --- the schedule and the step-size rule ---------------------------------------------------------------

def test_checkpoints_follow_the_paper_formula_and_match_the_official_schedule():
    assert checkpoints(100) == (0, 22, 41, 57, 70, 80, 87, 93, 99)
    p, q, naive = 0.0, 0.22, [0]                      # the formula, recomputed with a float tolerance
    while math.ceil(q * 100 - 1e-9) <= 100:
        naive.append(math.ceil(q * 100 - 1e-9))
        p, q = q, q + max(q - p - 0.03, 0.06)
    assert list(checkpoints(100)) == naive
    for n in (100, 200, 1000):
        assert list(checkpoints(n)) == _official_checkpoints(n)
    small = checkpoints(10)
    assert small[0] == 0 and small[-1] <= 10 and all(a < b for a, b in itertools.pairwise(small))
    with pytest.raises(ConfigError):
        checkpoints(0)


def test_should_halve_implements_both_conditions():
    best, last = torch.tensor([1.0, 1.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.5, 1.0])
    incr = torch.tensor([16, 17, 10, 17])             # gap 22: 0.75 * 22 = 16.5
    halved = torch.tensor([True, True, True, False])
    out = should_halve(incr, 22, 0.75, halved, best, last)
    assert out.tolist() == [True, False, True, False]  # cond 1 / none / cond 1 / improved -> no cond 2
    out2 = should_halve(torch.tensor([22, 22]), 22, 0.75, torch.tensor([False, True]), torch.ones(2), torch.ones(2))
    assert out2.tolist() == [True, False]              # cond 2: no halving last time and no improvement
    assert should_halve(torch.tensor([12]), 16, 0.75, torch.tensor([True]), torch.ones(1), torch.zeros(1)).tolist() \
        == [False]                                     # the paper's strict "<": 12 < 12 is false


@pytest.mark.parametrize("n_iter,n_checks", [(100, 8), (10, 6)])
def test_step_size_halves_at_every_checkpoint_on_a_plateau(n_iter, n_checks):
    lin = nn.Linear(6, 3)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([2.0, 0.0, -1.0]))
    model = TorchModel(lin, num_classes=3, modality="tabular")   # flat loss, zero gradient
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(5, dtype=torch.long)
    res = APGDCE(eps=0.1, n_iter=n_iter)(model, x, y, generator=torch_generator(0))
    assert n_checks == len([w for w in checkpoints(n_iter)[1:] if w < n_iter])  # none at the last iterate
    assert bool((res.extras["n_halvings"] == n_checks).all())
    assert torch.allclose(res.extras["step_size"], torch.full((5,), 2 * 0.1 / 2 ** n_checks, dtype=torch.float64))
    assert bool((res.queries == n_iter + 1).all()) and not bool(res.extras["success"].any())


def test_random_start_lies_on_the_sphere_of_the_ball():
    x = torch.full((4, 3, 5, 5), 0.5)
    for norm, eps in (("inf", 0.1), ("2", 0.3)):
        s = apgd_start(LpBall(norm, eps), x, torch_generator(0))
        assert torch.allclose(lp_norm(s - x, norm), torch.full((4,), eps), atol=1e-6)
        assert not torch.equal(s, apgd_start(LpBall(norm, eps), x, torch_generator(1)))


# --- optimality and strength -----------------------------------------------------------------------------

def _linear_binary(d=10, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(d, 2).double()
    with torch.no_grad():
        lin.weight.copy_(3 * torch.randn(2, d, dtype=torch.float64))
        lin.bias.copy_(torch.tensor([0.0, -0.5 * float((lin.weight[1] - lin.weight[0]).sum())]))
    return TorchModel(nn.Sequential(lin), num_classes=2, modality="tabular"), lin


@pytest.mark.parametrize("norm,eps,dual", [
    ("inf", 0.05, lambda v: v.abs().sum(1)),           # delta* = -eps sign(v)
    ("2", 0.2, lambda v: v.norm(dim=1)),               # delta* = -eps v / ||v||_2
])
def test_apgd_reaches_the_closed_form_optimum_of_a_linear_model(norm, eps, dual):
    model, lin = _linear_binary()
    x = 0.3 + 0.4 * torch.rand(300, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = model(x).argmax(1).detach()
    w, b = lin.weight.detach(), lin.bias.detach()
    v = w[y] - w[1 - y]
    analytic = (v * x).sum(1) + b[y] - b[1 - y] - eps * dual(v)
    res = APGDCE(norm=norm, eps=eps, n_iter=100)(model, x, y, generator=torch_generator(0))
    with torch.no_grad():
        s = model(res.x_adv)
    margin = s.gather(1, y.view(-1, 1)).squeeze(1) - s.gather(1, (1 - y).view(-1, 1)).squeeze(1)
    robust = analytic > 0
    assert 20 < int(robust.sum()) < 280
    assert torch.allclose(margin[robust], analytic[robust], atol=1e-7)
    assert bool((margin[~robust] < 0).all())


def test_apgd_ce_is_at_least_as_strong_as_pgd20():
    model = trained_mlp()
    x, y = blobs(200, seed=5)
    for eps in (0.06, 0.08, 0.1, 0.12):
        pgd = PGD(eps=eps, steps=20)(model, x, y, generator=torch_generator(1))
        apgd = APGDCE(eps=eps)(model, x, y, generator=torch_generator(1))
        assert _robust_acc(model, apgd.x_adv, y) <= _robust_acc(model, pgd.x_adv, y), eps


def test_apgd_t_is_at_least_as_strong_as_apgd_ce():
    model = trained_mlp5()
    x, y = blobs(200, classes=5, seed=5)
    accs = []
    for eps in (0.06, 0.08, 0.1):
        ce = _robust_acc(model, APGDCE(eps=eps)(model, x, y, generator=torch_generator(1)).x_adv, y)
        t = _robust_acc(model, APGDT(eps=eps)(model, x, y, generator=torch_generator(1)).x_adv, y)
        assert t <= ce, (eps, t, ce)
        accs.append(t)
    assert accs[0] > accs[-1] and accs[-1] < 0.5


def test_targeted_dlr_loss_matches_its_formula_and_targets_are_ranked():
    s = torch.tensor([[5.0, 1.0, 3.0, 0.0, 2.0]])
    v = dlr_targeted_loss(s, torch.tensor([0]), torch.tensor([2]))
    assert torch.allclose(v, torch.tensor([-(5.0 - 3.0) / (5.0 - 0.5 * (2.0 + 1.0))]))
    goal = TargetedDLR()
    lab = torch.tensor([[0, 2]])
    assert not bool(goal.success(s, lab)) and bool(goal.success(s, torch.tensor([[1, 2]])))
    with pytest.raises(ConfigError):
        dlr_targeted_loss(s[:, :3], torch.tensor([0]), torch.tensor([1]))


# --- survivors-only accounting, contract, determinism ------------------------------------------------------

class _RowCounter(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.net(x)


@pytest.mark.parametrize("loss,restarts", [("ce", 2), ("dlr-targeted", 1)])
def test_only_survivors_pay_and_queries_count_every_row(loss, restarts):
    base = trained_mlp5()
    counter = _RowCounter(base.module)
    model = TorchModel(counter, num_classes=5, modality="tabular")
    x, y = blobs(80, classes=5, seed=3)
    n_iter = 20
    res = APGD(eps=0.08, loss=loss, n_iter=n_iter, n_restarts=restarts)(model, x, y, generator=torch_generator(0))
    broken = model.predict(res.x_adv) != y
    assert bool((res.extras["success"] == broken).all())
    full = restarts * (n_iter + 1) if loss == "ce" else 1 + 4 * restarts * (n_iter + 1)  # 4 = C - 1 targets
    assert 5 < int(broken.sum()) < 75
    assert bool((res.queries[~broken] == full).all())
    assert bool((res.queries[broken] < full).all())
    assert int(res.queries.sum()) == counter.rows - 80    # predict() above saw 80 rows
    assert int(res.queries.sum()) < 80 * full             # broken examples stopped paying


def test_evaluate_skips_misclassified_examples():
    model = trained_mlp()
    x, y = blobs(40, seed=3)
    y = y.clone()
    y[:5] = (y[:5] + 1) % 3
    out = APGDCE(eps=0.1, n_iter=10).evaluate(model, x, y, 0.1, clean_pred=model.predict(x),
                                              generator=torch_generator(0))
    wrong = model.predict(x) != y
    assert bool((out.queries[wrong] == 0).all()) and bool(out.attempted[~wrong].all())


@settings(max_examples=10, deadline=None)
@given(norm=st.sampled_from(["inf", "2"]), eps=st.floats(0.0, 3.0), batch=st.integers(1, 6),
       shape=st.sampled_from([(6,), (1, 4, 4), (3, 3, 3)]), seed=st.integers(0, 10_000),
       loss=st.sampled_from(["ce", "dlr", "margin", "dlr-targeted"]))
def test_apgd_output_inside_threat_model_and_deterministic(norm, eps, batch, shape, seed, loss):
    model = mlp(shape, classes=5, seed=seed % 3)
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 5, (batch,), generator=torch.Generator().manual_seed(seed + 1))
    atk = APGD(norm=norm, eps=eps, loss=loss, n_iter=6, n_restarts=2, n_target_classes=2)
    r1 = atk(model, x, y, generator=torch_generator(seed))
    r2 = atk(model, x, y, generator=torch_generator(seed))
    assert bool(LpBall(norm, eps).contains(x, r1.x_adv).all())
    assert float(r1.x_adv.min()) >= 0 and float(r1.x_adv.max()) <= 1
    assert torch.equal(r1.x_adv, r2.x_adv) and torch.equal(r1.queries, r2.queries)
    if eps == 0:
        assert torch.equal(r1.x_adv, x) and int(r1.queries.sum()) == 0


def test_search_result_is_the_best_point_for_survivors():
    model = trained_mlp()
    x, y = blobs(30, seed=7)
    goal = Misclassify("ce")
    r = APGDSearch(n_iter=15).run(model, goal, LpBall("inf", 0.02), x, y, generator=torch_generator(0))
    survivors = ~r.success
    assert int(survivors.sum()) > 0
    ev = goal.query(model, r.x_adv[survivors], y[survivors])
    assert torch.allclose(ev.loss.double(), r.loss[survivors], atol=1e-6)


# --- construction -----------------------------------------------------------------------------------

def test_registry_names_defaults_and_validation():
    a = registry.create("apgd_ce", eps=0.1)
    assert isinstance(a, APGDCE) and a.n_iter == 100 and a.n_restarts == 1 and a.search.rho == 0.75
    assert isinstance(registry.create("apgd_dlr"), APGDDLR) and registry.create("apgd_dlr").eps == 8 / 255
    t = registry.create("apgd_t", norm=2)
    assert isinstance(t, APGDT) and t.n_target_classes == 9 and t.eps == 0.5
    assert registry.create("apgd", loss="dlr", n_restarts=5).loss == "dlr"
    assert "APGDT(norm='inf'" in repr(APGDT()) and "n_target_classes=9" in repr(APGDT())
    assert APGDCE(eps=8 / 255).at(4 / 255).eps == 4 / 255
    for bad in ({"norm": 1}, {"loss": "hinge"}, {"n_iter": 0}, {"n_restarts": 1.5}, {"rho": 1.5},
                {"momentum": 0.0}, {"n_target_classes": 0}, {"eps": -1.0}):
        with pytest.raises(ConfigError):
            APGD(**bad)
    x, y = blobs(4, seed=0)
    with pytest.raises(ConfigError):                     # targeted DLR on a 3-class model
        APGDT(eps=0.1, n_iter=2)(trained_mlp(), x, y, generator=torch_generator(0))
