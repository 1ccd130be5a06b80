"""Transfer attack: crafted on surrogates only, inside the threat, deterministic, light and full modes."""

from __future__ import annotations

import pytest
import torch

from robustlab.attacks.transfer import TransferAttack, resolve_surrogate, surrogate_scores
from robustlab.core import registry
from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.model import CallableModel, Model
from robustlab.core.rng import torch_generator
from robustlab.core.threat import lp_norm
from tests.attacks.conftest import blobs, mlp, trained_mlp


class Counting(Model):
    """Wraps a model and counts its calls (to check which surrogate member each step uses)."""

    has_gradients = True

    def __init__(self, inner: Model):
        self.inner, self.calls = inner, 0
        self.num_classes, self.modality = inner.num_classes, inner.modality

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def _never_called(x):  # the target of a transfer attack must not be queried while crafting
    raise AssertionError("the target was queried")


TARGET = CallableModel(_never_called, num_classes=3, modality="tabular")


def _members(n: int = 3) -> list[Model]:
    return [mlp((20,), classes=3, seed=s) for s in range(n)]


@pytest.mark.parametrize("norm,eps", [("inf", 0.1), ("2", 0.5), ("1", 2.0)])
@pytest.mark.parametrize("mode", ["light", "full"])
def test_inside_threat_and_box(norm, eps, mode):
    x, y = blobs(32)
    x[:4] = 0.0  # points on the box edge
    atk = TransferAttack(_members(), norm=norm, eps=eps, steps=8, mode=mode)
    res = atk(TARGET, x, y, generator=torch_generator(0))
    assert res.x_adv.shape == x.shape
    assert bool(atk.threat.contains(x, res.x_adv).all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert bool((res.queries == 0).all())  # query-free on the target
    assert float(lp_norm(res.x_adv - x, norm).max()) > 0.5 * eps  # it does move


@pytest.mark.parametrize("mode", ["light", "full"])
def test_deterministic_given_the_generator(mode):
    x, y = blobs(16)
    kw = {"eps": 0.1, "steps": 6, "mode": mode, "restarts": 2, "random_start": True}
    a = TransferAttack(_members(), **kw)(TARGET, x, y, generator=torch_generator(3))
    b = TransferAttack(_members(), **kw)(TARGET, x, y, generator=torch_generator(3))
    c = TransferAttack(_members(), **kw)(TARGET, x, y, generator=torch_generator(4))
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_light_uses_one_member_per_step_full_uses_all():
    x, y = blobs(8)
    light = [Counting(m) for m in _members(3)]
    TransferAttack(light, eps=0.1, steps=9, mode="light")(TARGET, x, y, generator=torch_generator(0))
    # 9 steps over 3 members: 3 gradient calls each, plus one forward each for the final success check
    assert [m.calls for m in light] == [4, 4, 4]
    full = [Counting(m) for m in _members(3)]
    TransferAttack(full, eps=0.1, steps=9, mode="full")(TARGET, x, y, generator=torch_generator(0))
    assert [m.calls for m in full] == [10, 10, 10]


def test_light_order_is_a_seeded_shuffle():
    x, y = blobs(8)
    members = [Counting(m) for m in _members(4)]
    TransferAttack(members, eps=0.1, steps=2, mode="light")(TARGET, x, y, generator=torch_generator(0))
    used = [i for i, m in enumerate(members) if m.calls == 2]  # 2 of 4 members took a gradient step
    assert len(used) == 2
    firsts = set()
    for seed in range(12):
        members = [Counting(m) for m in _members(4)]
        TransferAttack(members, eps=0.1, steps=1, mode="light")(TARGET, x, y, generator=torch_generator(seed))
        firsts.add(next(i for i, m in enumerate(members) if m.calls == 2))
    assert len(firsts) > 1  # the order depends on the generator, not fixed


def test_white_box_strength_on_the_surrogate_itself():
    model = trained_mlp()
    x, y = blobs(200, seed=5)
    ok = model(x).argmax(1) == y
    atk = TransferAttack(model, eps=0.5, steps=30)
    res = atk(TARGET, x[ok], y[ok], generator=torch_generator(0))
    with torch.no_grad():
        fooled = (model(res.x_adv).argmax(1) != y[ok]).float().mean()
    assert fooled > 0.9
    assert bool(res.extras["surrogate_success"].float().mean() > 0.9)


@pytest.mark.parametrize("kw", [{"fuse": "loss", "mode": "full"}, {"momentum": 0.9}, {"loss": "margin"},
                                {"targeted": "random"}])
def test_variants_run_and_fool_the_surrogate(kw):
    model = trained_mlp()
    x, y = blobs(64, seed=2)
    res = TransferAttack([model, model], eps=0.5, steps=20, **kw)(TARGET, x, y, generator=torch_generator(0))
    assert bool(TransferAttack([model], eps=0.5).threat.contains(x, res.x_adv).all())
    assert float(res.extras["surrogate_success"].float().mean()) > 0.5


def test_evaluate_on_a_target_without_gradients():
    surrogate = trained_mlp()
    target = CallableModel(lambda x: surrogate(x).detach(), num_classes=3, modality="tabular")  # no gradients
    x, y = blobs(64, seed=3)
    atk = registry.create("transfer", surrogate=surrogate, eps=0.1, steps=10)
    atk.check_model(target)  # needs_gradients is False: no error
    clean = target(x).argmax(1)
    out = atk.evaluate(target, x, y, 0.4, clean_pred=clean, generator=torch_generator(0))
    assert bool((out.queries == 0).all())
    assert float((out.scores.argmax(1)[out.attempted] != y[out.attempted]).float().mean()) > 0.8
    assert float(out.distance.max()) <= 0.4 + 1e-6


def test_resolve_surrogate_flattens_and_checks():
    class Post:
        models = _members(2)

    assert len(resolve_surrogate([Post(), _members(1)[0]])) == 3
    assert surrogate_scores(_members(2), blobs(4)[0]).shape == (4, 3)
    with pytest.raises(UnsupportedModelError):
        resolve_surrogate(CallableModel(lambda x: x, num_classes=3))
    with pytest.raises(ConfigError):
        resolve_surrogate([])
    with pytest.raises(ConfigError):
        resolve_surrogate(3.0)


@pytest.mark.parametrize("bad", [{"mode": "heavy"}, {"fuse": "max"}, {"steps": 0}, {"restarts": 0},
                                 {"alpha": -1.0}, {"momentum": 2.0}, {"eps": -0.1}])
def test_bad_arguments(bad):
    with pytest.raises(ConfigError):
        TransferAttack(_members(1), **bad)


def test_eps_zero_and_repr():
    x, y = blobs(4)
    atk = TransferAttack(_members(2), eps=0.0)
    assert torch.equal(atk(TARGET, x, y, generator=torch_generator(0)).x_adv, x)
    assert "TransferAttack(" in repr(atk) and "'light'" in repr(atk)
    assert "digits-cnn" in repr(TransferAttack("digits-cnn"))  # a zoo name is not loaded by repr
