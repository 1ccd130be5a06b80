"""BPDA (Athalye, Carlini & Wagner, 2018): straight-through gradients break shattered-gradient defenses."""

from __future__ import annotations

import pytest
import torch

from robustlab.attacks.bpda import BPDA, bpda_view, straight_through, supports_bpda
from robustlab.attacks.pgd import PGD
from robustlab.core import registry
from robustlab.core.errors import UnsupportedModelError
from robustlab.core.rng import torch_generator
from robustlab.defend.wrap import InputTransform, QuantizedInput, quantize

from .conftest import blobs, trained_mlp


def _acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_straight_through_has_the_transform_value_and_the_surrogate_gradient():
    x = torch.rand(6, 5, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = straight_through(x, lambda t: quantize(t, 4))
    assert torch.equal(out.detach(), quantize(x.detach(), 4))
    (g,) = torch.autograd.grad((out * torch.arange(5.0)).sum(), x)
    assert torch.equal(g, torch.arange(5.0).expand(6, 5))                  # identity backward
    out = straight_through(x, lambda t: quantize(t, 4), surrogate=lambda t: 3 * t)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.allclose(g, torch.full((6, 5), 3.0))


def test_bpda_breaks_quantization_where_pgd_sees_zero_gradients():
    m = trained_mlp()
    x, y = blobs(200, seed=5)
    naive = QuantizedInput(m, levels=8, expose_gradients=True)             # has_gradients=True, grads 0
    honest = QuantizedInput(m, levels=8)
    assert _acc(honest, x, y) > 0.95
    pgd = PGD(eps=0.1, steps=20)(naive, x, y, generator=torch_generator(0))
    bpda = BPDA(eps=0.1, steps=20)(honest, x, y, generator=torch_generator(0))
    acc_pgd, acc_bpda = _acc(honest, pgd.x_adv, y), _acc(honest, bpda.x_adv, y)
    assert acc_pgd > 0.9                                                   # false robustness
    assert acc_bpda < 0.4 and acc_bpda < acc_pgd - 0.5                     # the truth
    assert bool(((bpda.x_adv - x).abs().amax(1) <= 0.1 + 1e-6).all())
    assert bool(bpda.extras["success"].eq(honest(bpda.x_adv).argmax(1) != y).all())


def test_bpda_with_an_identity_transform_is_exactly_pgd():
    m = trained_mlp()
    x, y = blobs(60, seed=2)
    a = BPDA(eps=0.08, steps=10, restarts=2)(InputTransform(m, lambda t: t), x, y, generator=torch_generator(3))
    b = PGD(eps=0.08, steps=10, restarts=2)(m, x, y, generator=torch_generator(3))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)


def test_bpda_refuses_a_model_without_a_surrogate_and_says_how_to_fix_it():
    m = trained_mlp()
    x, y = blobs(4, seed=0)
    assert not supports_bpda(m) and supports_bpda(QuantizedInput(m))
    with pytest.raises(UnsupportedModelError) as err:
        BPDA(eps=0.1)(m, x, y, generator=torch_generator(0))
    assert "bpda_forward" in str(err.value) and "InputTransform" in err.value.fix
    with pytest.raises(UnsupportedModelError):
        BPDA().check_model(m)
    BPDA().check_model(QuantizedInput(m))                                  # gradient-free is fine
    view = bpda_view(QuantizedInput(m))
    assert view.has_gradients and view.num_classes == 3


def test_bpda_is_registered_sweeps_eps_and_stays_in_the_ball_through_evaluate():
    m = QuantizedInput(trained_mlp(), levels=8)
    x, y = blobs(50, seed=6)
    attack = registry.create("bpda_pgd", eps=0.05, steps=10)
    assert isinstance(attack, BPDA) and repr(attack).startswith("BPDA(norm='inf'")
    with torch.no_grad():
        clean_pred = m(x).argmax(1)
    out = attack.evaluate(m, x, y, 0.12, clean_pred=clean_pred, generator=torch_generator(0))
    assert float(out.distance.max()) <= 0.12 + 1e-6
    assert float((out.scores.argmax(1) == y).float().mean()) < 0.2
    r1 = attack(m, x, y, generator=torch_generator(5))
    r2 = attack(m, x, y, generator=torch_generator(5))
    assert torch.equal(r1.x_adv, r2.x_adv)


@pytest.mark.parametrize("norm,eps", [("2", 0.6), ("1", 2.0)])
def test_bpda_works_for_l2_and_l1(norm, eps):
    m = QuantizedInput(trained_mlp(), levels=16)
    x, y = blobs(60, seed=6)
    res = BPDA(norm=norm, eps=eps, steps=20)(m, x, y, generator=torch_generator(0))
    d = (res.x_adv - x).norm(p=float(norm), dim=1)
    assert float(d.max()) <= eps * (1 + 1e-4)
    assert _acc(m, res.x_adv, y) < _acc(m, x, y) - 0.2
