"""PGD (Madry et al., 2018): closed-form optimum, strength, survivors-only, determinism, validation."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustlab.attacks import FGSM, PGD, pgd_l2, pgd_linf
from robustlab.core import registry
from robustlab.core.errors import ConfigError
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.core.threat import LpBall

from .conftest import blobs, linear_model, mlp, trained_mlp


def _linear_binary(d=10, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(d, 2).double()
    with torch.no_grad():  # big weights, decision boundary through the middle of the box
        lin.weight.copy_(3 * torch.randn(2, d, dtype=torch.float64))
        lin.bias.copy_(torch.tensor([0.0, -0.5 * float((lin.weight[1] - lin.weight[0]).sum())]))
    return TorchModel(nn.Sequential(lin), num_classes=2, modality="tabular"), lin


@pytest.mark.parametrize("norm,eps,dual,random_start,loss", [
    ("inf", 0.05, lambda v: v.abs().sum(1), True, "ce"),        # delta* = -eps sign(v)
    ("inf", 0.05, lambda v: v.abs().sum(1), True, "margin"),
    ("2", 0.2, lambda v: v.norm(dim=1), False, "ce"),            # delta* = -eps v / ||v||_2
    ("1", 0.2, lambda v: v.abs().amax(1), False, "margin"),      # delta* = -eps sign(v_j) e_j, j = argmax |v|
])
def test_pgd_reaches_the_closed_form_optimum_of_a_linear_model(norm, eps, dual, random_start, loss):
    model, lin = _linear_binary()
    x = 0.3 + 0.4 * torch.rand(300, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = model(x).argmax(1).detach()
    w, b = lin.weight.detach(), lin.bias.detach()
    v = w[y] - w[1 - y]                                    # margin(x) = v.x + beta, box never binds
    margin0 = (v * x).sum(1) + b[y] - b[1 - y]
    analytic = margin0 - eps * dual(v)
    res = PGD(norm=norm, eps=eps, steps=20, random_start=random_start, loss=loss)(
        model, x, y, generator=torch_generator(0))
    with torch.no_grad():
        s = model(res.x_adv)
    margin = s.gather(1, y.view(-1, 1)).squeeze(1) - s.gather(1, (1 - y).view(-1, 1)).squeeze(1)
    robust = analytic > 0
    assert 20 < int(robust.sum()) < 280                    # both cases are exercised
    assert torch.allclose(margin[robust], analytic[robust], atol=1e-9)
    assert bool((margin[~robust] < 0).all())               # broken exactly where the optimum breaks


def test_pgd_is_at_least_as_strong_as_fgsm_on_a_trained_mlp():
    model = trained_mlp()
    x, y = blobs(200, seed=5)
    for eps in (0.06, 0.08, 0.1, 0.12):
        acc = {}
        for name, atk in {"fgsm": FGSM(eps=eps), "pgd_restarts": PGD(eps=eps, steps=20, restarts=3),
                          "pgd_from_x": PGD(eps=eps, steps=20, random_start=False)}.items():
            res = atk(model, x, y, generator=torch_generator(1))
            acc[name] = float((model.predict(res.x_adv) == y).float().mean())
        assert acc["pgd_restarts"] <= acc["fgsm"] and acc["pgd_from_x"] <= acc["fgsm"], (eps, acc)


def test_robust_accuracy_falls_to_zero_as_eps_grows():
    model = trained_mlp()
    x, y = blobs(200, seed=9)
    accs = []
    for eps in (0.0, 0.05, 0.1, 0.2, 0.5):
        res = PGD(eps=eps, steps=10).evaluate(model, x, y, eps, clean_pred=model.predict(x),
                                             generator=torch_generator(0))
        accs.append(float((res.scores.argmax(1) == y).float().mean()))
    assert accs[0] > 0.95 and accs[-1] <= 0.01
    assert all(a >= b for a, b in itertools.pairwise(accs)), accs


def test_evaluate_skips_misclassified_and_survivors_pay_less():
    model = trained_mlp()
    x, y = blobs(60, seed=3)
    y = y.clone()
    y[:10] = (y[:10] + 1) % 3                               # 10 examples the model gets wrong
    clean_pred = model.predict(x)
    out = PGD(eps=0.1, steps=10, restarts=2).evaluate(model, x, y, 0.1, clean_pred=clean_pred,
                                                      generator=torch_generator(0))
    wrong = clean_pred != y
    assert int(wrong.sum()) >= 10
    assert bool((out.queries[wrong] == 0).all()) and not bool(out.attempted[wrong].any())
    broken = out.attempted & (out.scores.argmax(1) != y)
    assert int(broken.sum()) > 0
    assert bool((out.queries[broken] <= 2 * 11).all())
    assert float((out.queries[broken] < 10).float().mean()) > 0.5   # most broken early, cheaply
    assert bool((out.queries[out.attempted & ~broken] == 2 * 11).all())


def test_attack_leaves_parameter_gradients_alone_and_works_under_no_grad():
    model = trained_mlp()
    x, y = blobs(20, seed=2)
    params = list(model.module.parameters())
    sentinel = [torch.full_like(p, 7.0) for p in params]
    for p, s in zip(params, sentinel):
        p.grad = s.clone()
    try:
        with torch.no_grad():
            res = PGD(eps=0.1, steps=5)(model, x, y, generator=torch_generator(0))
        with torch.inference_mode():
            res2 = PGD(eps=0.1, steps=5)(model, x, y, generator=torch_generator(0))
        assert all(torch.equal(p.grad, s) for p, s in zip(params, sentinel))
        assert torch.equal(res.x_adv, res2.x_adv) and not res.x_adv.requires_grad
    finally:
        for p in params:
            p.grad = None


@settings(max_examples=12, deadline=None)
@given(norm=st.sampled_from(["inf", "2", "1"]), eps=st.floats(0.0, 4.0), batch=st.integers(1, 8),
       shape=st.sampled_from([(6,), (1, 5, 5), (3, 3, 3)]), seed=st.integers(0, 10_000),
       loss=st.sampled_from(["ce", "margin", "dlr"]))
def test_pgd_output_inside_threat_model_and_deterministic(norm, eps, batch, shape, seed, loss):
    model = mlp(shape, classes=4, seed=seed % 3)
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 4, (batch,), generator=torch.Generator().manual_seed(seed + 1))
    atk = PGD(norm=norm, eps=eps, steps=3, restarts=2, loss=loss)
    r1 = atk(model, x, y, generator=torch_generator(seed))
    r2 = atk(model, x, y, generator=torch_generator(seed))
    assert bool(LpBall(norm, eps).contains(x, r1.x_adv).all())
    assert float(r1.x_adv.min()) >= 0 and float(r1.x_adv.max()) <= 1
    assert torch.equal(r1.x_adv, r2.x_adv) and torch.equal(r1.queries, r2.queries)
    if eps == 0:
        assert torch.equal(r1.x_adv, x) and int(r1.queries.sum()) == 0


def test_seed_changes_random_start():
    model = linear_model(d=12, classes=3)
    x = torch.rand(8, 12, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(8, dtype=torch.long)
    atk = PGD(eps=0.05, steps=1, alpha=1e-4)
    a = atk(model, x, y, generator=torch_generator(0)).x_adv
    b = atk(model, x, y, generator=torch_generator(1)).x_adv
    assert not torch.equal(a, b)


def test_targeted_pgd_reaches_the_target():
    model = trained_mlp()
    x, y = blobs(60, seed=4)
    atk = PGD(eps=0.3, steps=30, targeted=2, loss="margin")
    res = atk(model, x, y, generator=torch_generator(0))
    pred = model.predict(res.x_adv)
    assert float((pred == 2).float().mean()) > 0.9
    rnd = PGD(eps=0.3, steps=30, targeted="random")(model, x, y, generator=torch_generator(0))
    assert float((model.predict(rnd.x_adv) != y).float().mean()) > 0.8


def test_registry_entries_and_repr():
    assert {"pgd", "pgd_linf", "pgd_l2"} <= set(registry.names("attack"))
    a = registry.create("pgd", norm=2, eps=1.0, steps=5)
    assert isinstance(a, PGD) and a.norm == "2" and a.steps == 5
    assert registry.create("pgd_linf").norm == "inf" and registry.create("pgd_linf").eps == pytest.approx(8 / 255)
    assert pgd_l2(eps=0.25).norm == "2" and pgd_linf(steps=7).steps == 7
    with pytest.raises(ConfigError):
        registry.create("pgd_linf", norm=2)
    assert repr(PGD()) == ("PGD(norm='inf', eps=8/255, steps=20, alpha=None, random_start=True, restarts=1, "
                           "loss='ce', targeted=None)")
    b = PGD(eps=8 / 255).at(2 / 255)
    assert b.eps == pytest.approx(2 / 255) and "eps=2/255" in repr(b)


@pytest.mark.parametrize("kwargs,word", [
    ({"steps": 0}, "steps"), ({"eps": -1.0}, "eps"), ({"restarts": 0}, "restarts"),
    ({"loss": "hinge"}, "loss"), ({"loss": "dlr", "targeted": 1}, "loss"), ({"alpha": -0.1}, "alpha"),
    ({"norm": "3"}, "norm"), ({"random_start": "yes"}, "random_start"),
])
def test_bad_arguments_raise_config_error_naming_the_argument(kwargs, word):
    with pytest.raises(ConfigError) as info:
        PGD(**kwargs)
    assert word in str(info.value) and info.value.fix


def test_dlr_on_a_binary_model_says_what_to_do():
    model, _ = _linear_binary()
    x = torch.rand(4, 10, dtype=torch.float64)
    with pytest.raises(ConfigError, match="margin"):
        PGD(loss="dlr")(model, x, model.predict(x), generator=torch_generator(0))


def test_bad_inputs_and_gradient_free_models_are_refused():
    from robustlab.core.errors import ProbeError, UnsupportedModelError
    from robustlab.core.model import CallableModel

    model = mlp((5,), seed=0)
    with pytest.raises(ProbeError, match="labels"):
        PGD()(model, torch.rand(3, 5), torch.zeros(2, dtype=torch.long), generator=torch_generator(0))
    with pytest.raises(ProbeError, match="floating-point"):
        PGD()(model, torch.ones(3, 5, dtype=torch.long), torch.zeros(3, dtype=torch.long),
              generator=torch_generator(0))
    blackbox = CallableModel(lambda x: torch.zeros(len(x), 3), num_classes=3)
    with pytest.raises(UnsupportedModelError):
        PGD()(blackbox, torch.rand(2, 5), torch.zeros(2, dtype=torch.long), generator=torch_generator(0))


def test_per_example_targets_on_a_direct_call():
    model = trained_mlp()
    x, y = blobs(12, seed=6)
    targets = (y + 1) % 3
    res = PGD(eps=0.4, steps=40, targeted=targets, loss="margin")(model, x, y, generator=torch_generator(0))
    assert float((model.predict(res.x_adv) == targets).float().mean()) > 0.9
    assert "targeted=<12>" in repr(PGD(targeted=targets))
