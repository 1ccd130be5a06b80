"""Prototype networks (robust stable CBC, RBF network, GLVQ): shapes, probability constraints, losses, training."""

import math

import pytest
import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.data import load_dataset
from robustlab.models.prototypes import (
    GLVQ,
    RBFNetwork,
    RobustCBC,
    build_prototype_model,
    cbc_margin_loss,
    glvq_loss,
    median_sigma,
    robust_cbc_loss,
    train_prototype_model,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", split="train", n=300, seed=0)


def _cbc(seed=0, **kw):
    return RobustCBC((1, 8, 8), 10, generator=torch_generator(seed), **kw)


def test_cbc_shapes_and_probability_constraints():
    net = _cbc(sigma=2.0)
    x = torch.rand(7, 1, 8, 8, generator=torch_generator(1))
    rp, rn = net.reasoning()
    assert rp.shape == rn.shape == (20, 20)
    assert torch.allclose((rp + rn).sum(0), torch.ones(20), atol=1e-6)  # sum_k (R+ + R-) = 1 per concept
    assert bool((rp >= 0).all() and (rn >= 0).all())
    d = net.detections(x)
    assert d.shape == (7, 20) and bool((d > 0).all() and (d <= 1).all())
    p = net.concept_probabilities(x)
    assert p.shape == (7, 20) and bool((p >= 0).all() and (p <= 1).all())
    out = net(x)
    assert out.shape == (7, 10) and bool((out >= 0).all() and (out <= 1).all())
    # class score = max over the class's concepts (class-major layout)
    assert torch.allclose(out, p.view(7, 10, 2).amax(2))
    # the reasoning formula, written out
    manual = (d.unsqueeze(2) * rp + (1 - d.unsqueeze(2)) * rn).sum(1)
    assert torch.allclose(p, manual, atol=1e-6)


def test_detection_formula_and_sigma_positive():
    w = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    net = RobustCBC(2, 2, num_components=2, concepts_per_class=1, sigma=[1.0, 2.0], components=w)
    d = net.detections(torch.zeros(1, 2))
    assert torch.allclose(d, torch.tensor([[1.0, math.exp(-5.0 / 2.0)]]), atol=1e-6)
    with torch.no_grad():
        net._sigma.mul_(-1)
    assert bool((net.sigma > 0).all())


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ConfigError):
        RobustCBC(4, 1)
    with pytest.raises(ConfigError):
        RobustCBC(4, 3, sigma=-1.0)
    with pytest.raises(DataError):
        _cbc()(torch.rand(2, 10))
    with pytest.raises(ConfigError):
        build_prototype_model("svm", (4,), 3)
    x, y = torch.rand(20, 4), torch.arange(20) % 2
    with pytest.raises(ConfigError):
        train_prototype_model(x, y, model="glvq", loss="robust")


def test_radius_is_nonpositive_exactly_where_misclassified():
    net = _cbc(sigma=1.5)
    x = torch.rand(64, 1, 8, 8, generator=torch_generator(3))
    y = torch.randint(0, 10, (64,), generator=torch_generator(4))
    rho = net.certified_radius(x, y, exact=True)
    wrong = net(x).argmax(1) != y
    assert bool((rho[wrong] <= 1e-9).all())
    assert bool((rho[~wrong] > 0).all())
    # differentiable version agrees with the exact float64 one
    assert torch.allclose(net.certified_radius(x, y).double(), rho, atol=1e-4)


def test_losses():
    net = _cbc(sigma=1.5)
    x = torch.rand(16, 1, 8, 8, generator=torch_generator(5))
    y = torch.randint(0, 10, (16,), generator=torch_generator(6))
    rl = robust_cbc_loss(net, x, y, 1.58)
    assert rl.shape == (16,) and bool((rl >= 0).all())
    assert torch.allclose(rl, torch.relu(1.58 - net.certified_radius(x, y)))
    rl.mean().backward()
    assert net.components.grad is not None and net.reasoning_logits.grad is not None and net._sigma.grad is not None
    s = torch.tensor([[0.9, 0.2, 0.5]])
    assert cbc_margin_loss(s, torch.tensor([0]), 0.3).item() == pytest.approx(0.0)
    assert cbc_margin_loss(s, torch.tensor([2]), 0.3).item() == pytest.approx(0.9 - 0.5 + 0.3)
    g = GLVQ(2, 2, 1, prototypes=torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
    assert glvq_loss(g, torch.tensor([[1.0, 0.0]]), torch.tensor([0])).item() == pytest.approx((1 - 3) / 4, abs=1e-6)


def test_median_sigma():
    x = torch.zeros(3, 2)
    w = torch.tensor([[3.0, 4.0]])
    assert median_sigma(x, w) == pytest.approx(5.0 / math.log(2.0))


@pytest.mark.parametrize("kind, epochs, floor", [("cbc", 6, 0.6), ("rbf", 25, 0.3), ("glvq", 6, 0.6)])
def test_training_learns_and_is_deterministic(digits, kind, epochs, floor):
    kw = dict(model=kind, epochs=epochs, seed=3)
    net, hist = train_prototype_model(digits.x, digits.y, **kw)
    net2, _ = train_prototype_model(digits.x, digits.y, **kw)
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    assert len(hist["loss"]) == epochs and all(math.isfinite(v) for v in hist["loss"])
    acc = (TorchModel(net, num_classes=10).predict(digits.x) == digits.y).float().mean().item()
    assert acc > floor, acc  # chance is 0.1 (the RBF network learns slowest)
    other, _ = train_prototype_model(digits.x, digits.y, model=kind, epochs=1, seed=4)
    net1, _ = train_prototype_model(digits.x, digits.y, model=kind, epochs=1, seed=3)
    assert not all(torch.equal(a, b) for a, b in zip(net1.state_dict().values(), other.state_dict().values()))


def test_build_prototype_model_loads_state_dict(digits):
    net, _ = train_prototype_model(digits.x, digits.y, model="cbc", epochs=1)
    fresh = build_prototype_model("cbc", (1, 8, 8), 10)
    fresh.load_state_dict(net.state_dict(), strict=True)
    assert torch.equal(fresh(digits.x[:5]), net(digits.x[:5]))
    rbf = build_prototype_model("rbf", (1, 8, 8), 10)
    assert isinstance(rbf, RBFNetwork) and rbf(digits.x[:3]).shape == (3, 10)


def test_zoo_entry_trains_caches_and_reloads_the_robust_cbc():
    from robustlab.models import zoo

    model = zoo.load("digits-cbc-rbf", quick=True, progress=False)
    again = zoo.load("digits-cbc-rbf", quick=True, progress=False)  # from the cache
    assert isinstance(model.module, RobustCBC)
    x = load_dataset("digits", n=20).x
    assert torch.equal(model(x), again(x))
    assert set(zoo.info("digits-cbc-rbf", quick=True)["certified_accuracy"]) == {"l2=0.25", "l2=0.5", "l2=1"}
