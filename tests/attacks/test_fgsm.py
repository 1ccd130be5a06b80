"""FGSM (Goodfellow et al., 2015): one step, closed form, registry, validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from robustlab.attacks import FGSM, Misclassify
from robustlab.core import registry
from robustlab.core.errors import ConfigError
from robustlab.core.rng import torch_generator
from robustlab.core.threat import LpBall

from .conftest import blobs, mlp, trained_mlp


def _grad(model, x, y):
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    return g


def test_linf_fgsm_is_the_signed_gradient_step():
    model = mlp((1, 6, 6), classes=4, seed=3)
    x = torch.rand(10, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 4, (10,), generator=torch.Generator().manual_seed(1))
    todo = model(x).argmax(1) == y  # FGSM leaves already-misclassified inputs as they are
    res = FGSM(eps=0.05)(model, x, y, generator=torch_generator(0))
    want = (x + 0.05 * _grad(model, x, y).sign()).clamp(0, 1)
    assert torch.allclose(res.x_adv[todo], want[todo], atol=1e-6)
    assert torch.equal(res.x_adv[~todo], x[~todo])
    assert res.queries.tolist() == [1] * 10


def test_l2_fgsm_is_the_normalized_gradient_step():
    model = mlp((8,), classes=3, seed=1)
    x = 0.3 + 0.4 * torch.rand(6, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1).detach()
    res = FGSM(norm=2, eps=0.2)(model, x, y, generator=torch_generator(0))
    g = _grad(model, x, y)
    want = x + 0.2 * g / g.norm(dim=1, keepdim=True)
    assert torch.allclose(res.x_adv, want, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(norm=st.sampled_from(["inf", "2"]), eps=st.floats(0.0, 2.0), batch=st.integers(1, 8),
       seed=st.integers(0, 1000))
def test_fgsm_output_is_inside_the_threat_model(norm, eps, batch, seed):
    model = mlp((2, 3, 3), classes=3, seed=seed % 5)
    x = torch.rand(batch, 2, 3, 3, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 3, (batch,), generator=torch.Generator().manual_seed(seed + 1))
    res = FGSM(norm=norm, eps=eps)(model, x, y, generator=torch_generator(seed))
    assert bool(LpBall(norm, eps).contains(x, res.x_adv).all())
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1


def test_fgsm_lowers_accuracy_of_a_trained_model():
    model = trained_mlp()
    x, y = blobs(200, seed=7)
    clean = (model.predict(x) == y).float().mean()
    res = FGSM(eps=0.1)(model, x, y, generator=torch_generator(0))
    assert (model.predict(res.x_adv) == y).float().mean() < clean - 0.3


def test_eps_zero_and_at():
    model = mlp((5,), seed=0)
    x, y = torch.rand(3, 5), torch.zeros(3, dtype=torch.long)
    res = FGSM(eps=0)(model, x, y, generator=torch_generator(0))
    assert torch.equal(res.x_adv, x) and int(res.queries.sum()) == 0
    a = FGSM(eps=8 / 255)
    b = a.at(4 / 255)
    assert b.eps == pytest.approx(4 / 255) and a.eps == pytest.approx(8 / 255)


def test_registry_repr_and_validation():
    a = registry.create("fgsm", eps=2 / 255, goal="margin")
    assert isinstance(a, FGSM) and a.goal == Misclassify("margin")
    assert repr(a) == "FGSM(norm='inf', eps=2/255, goal=Misclassify('margin'))"
    assert FGSM(norm="l2").eps == 0.5
    for kwargs in ({"norm": 1}, {"eps": -0.1}, {"eps": float("inf")}, {"norm": "3"}, {"goal": "hinge"}):
        with pytest.raises(ConfigError) as info:
            FGSM(**kwargs)
        assert info.value.fix
