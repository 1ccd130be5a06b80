"""EOT-PGD (Athalye, Engstrom, Ilyas & Kwok, 2018): averaged gradients beat PGD on a randomized model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustlab.attacks.eot import DEFAULT_EOT_SAMPLES, EOTPGD, EOTGoal
from robustlab.attacks.goals import Misclassify
from robustlab.attacks.pgd import PGD
from robustlab.core import registry
from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.rng import torch_generator
from robustlab.defend.wrap import QuantizedInput, RandomizedInput

from .conftest import blobs, trained_mlp


def _expected_acc(model, x, y, draws=20):
    """Accuracy averaged over ``draws`` evaluations of a randomized model."""
    with torch.no_grad():
        return float(torch.stack([(model(x).argmax(1) == y).float() for _ in range(draws)]).mean())


def test_eot_pgd_beats_pgd_on_a_randomized_model():
    m = trained_mlp()
    x, y = blobs(200, seed=5)
    model = RandomizedInput(m, noise=0.1, generator=torch_generator(1))
    assert _expected_acc(model, x, y) > 0.95
    pgd = PGD(eps=0.1, steps=20)(model, x, y, generator=torch_generator(0))
    # the same query budget as EOT spent on restarts does not help plain PGD either
    pgd_r = PGD(eps=0.1, steps=20, restarts=DEFAULT_EOT_SAMPLES)(model, x, y, generator=torch_generator(0))
    eot = EOTPGD(eps=0.1, steps=20)(model, x, y, generator=torch_generator(0))
    judge = RandomizedInput(m, noise=0.1, generator=torch_generator(99))   # fresh draws to judge with
    acc_pgd, acc_pgd_r, acc_eot = (_expected_acc(judge, r.x_adv, y) for r in (pgd, pgd_r, eot))
    assert acc_eot < acc_pgd - 0.1 and acc_eot < acc_pgd_r - 0.1
    assert bool(((eot.x_adv - x).abs().amax(1) <= 0.1 + 1e-6).all())


def test_eot_pgd_is_deterministic_given_the_generators():
    m = trained_mlp()
    x, y = blobs(50, seed=2)
    runs = [EOTPGD(eps=0.08, steps=5, eot_samples=4)(RandomizedInput(m, 0.1, generator=torch_generator(1)), x, y,
                                                       generator=torch_generator(0)) for _ in range(2)]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv) and torch.equal(runs[0].queries, runs[1].queries)


def test_one_sample_on_a_deterministic_model_is_exactly_pgd_and_samples_multiply_queries():
    m = trained_mlp()
    x, y = blobs(60, seed=2)
    a = EOTPGD(eps=0.08, steps=10, eot_samples=1)(m, x, y, generator=torch_generator(3))
    b = PGD(eps=0.08, steps=10)(m, x, y, generator=torch_generator(3))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    c = EOTPGD(eps=0.08, steps=10, eot_samples=3)(m, x, y, generator=torch_generator(3))
    assert torch.equal(c.x_adv, b.x_adv) and torch.equal(c.queries, 3 * b.queries)


def test_eot_goal_returns_the_mean_over_draws():
    m = trained_mlp()
    x, y = blobs(8, seed=1)
    goal = EOTGoal(Misclassify("ce"), samples=5)
    counts = torch.zeros(8, dtype=torch.long)
    ev = goal.query(RandomizedInput(m, 0.2, generator=torch_generator(4)), x, y, queries=counts, grad=True)
    assert torch.equal(counts, torch.full((8,), 5))
    replay = RandomizedInput(m, 0.2, generator=torch_generator(4))     # the same five draws, by hand
    grads, losses, scores = [], [], []
    for _ in range(5):
        xr = x.clone().requires_grad_(True)
        s = replay(xr)
        loss = F.cross_entropy(s, y, reduction="none")
        grads.append(torch.autograd.grad(loss.sum(), xr)[0])
        losses.append(loss.detach())
        scores.append(s.detach())
    assert torch.allclose(ev.grad, torch.stack(grads).mean(0), atol=1e-6)
    assert torch.allclose(ev.loss, torch.stack(losses).mean(0), atol=1e-6)
    assert torch.allclose(ev.scores, torch.stack(scores).mean(0), atol=1e-6)
    assert torch.equal(ev.success, ev.scores.argmax(1) != y)            # judged on the mean scores


def test_eot_with_bpda_attacks_a_randomized_non_differentiable_model():
    m = trained_mlp()
    x, y = blobs(100, seed=5)
    model = QuantizedInput(RandomizedInput(m, 0.05, generator=torch_generator(1)), levels=16)
    with pytest.raises(UnsupportedModelError):
        EOTPGD(eps=0.1).check_model(model)                               # no gradients without bpda
    attack = EOTPGD(eps=0.1, steps=10, eot_samples=5, bpda=True)
    attack.check_model(model)
    res = attack(model, x, y, generator=torch_generator(0))
    assert _expected_acc(model, res.x_adv, y) < _expected_acc(model, x, y) - 0.4


def test_eot_pgd_validates_registers_and_prints():
    with pytest.raises(ConfigError):
        EOTPGD(eot_samples=0)
    with pytest.raises(ConfigError):
        EOTPGD(bpda="yes")
    attack = registry.create("eot_pgd", eps=0.05, eot_samples=7)
    assert isinstance(attack, EOTPGD) and attack.eot_samples == 7 and attack.at(0.1).eps == 0.1
    assert repr(attack).startswith("EOTPGD(norm='inf'") and "eot_samples=7" in repr(attack)
    assert EOTPGD().eot_samples == DEFAULT_EOT_SAMPLES == 20
