"""IBP / CROWN-IBP certified training: schedules, bounds, loss decrease, seeding, certified gains, errors, zoo."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.certify.bounds import bound_margins
from robustlab.core.errors import ConfigError, DataError, UnsupportedModelError
from robustlab.core.model import TorchModel
from robustlab.core.registry import create
from robustlab.core.threat import LpBall
from robustlab.defend.train import (
    CertifiedTraining,
    CROWNIBPTraining,
    IBPTraining,
    certified_accuracy,
    certified_train,
    margin_lower_bounds,
    ramp_value,
    worst_case_logits,
)
from robustlab.models.training import train_classifier
from tests.defend.train.conftest import mlp, same_weights, weights


def _blobs(n: int, seed: int, classes: int = 3, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded synthetic images (1x4x4 in [0, 1]): a class prototype plus uniform noise."""
    g = torch.Generator().manual_seed(1234)
    protos = 0.2 + 0.6 * torch.rand(classes, d, generator=g)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = (protos[y] + 0.25 * (torch.rand(n, d, generator=g) - 0.5)).clamp(0, 1)
    return x.view(n, 1, 4, 4), y


def _small_mlp(classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, classes))


def _small_cnn(classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, classes))


def test_ramp_value_is_gowals_linear_schedule():
    assert ramp_value(0, 0.0, 0.3, 2, 4) == 0.0
    assert ramp_value(2, 0.0, 0.3, 2, 4) == 0.0
    assert ramp_value(3, 0.0, 0.3, 2, 4) == pytest.approx(0.075)
    assert ramp_value(4, 1.0, 0.5, 2, 4) == pytest.approx(0.75)
    assert ramp_value(6, 1.0, 0.5, 2, 4) == 0.5
    assert ramp_value(60, 1.0, 0.0, 2, 4) == 0.0
    assert ramp_value(1, 0.0, 0.3, 2, 0) == 0.0 and ramp_value(2, 0.0, 0.3, 2, 0) == 0.3


def test_schedules_exact_values_at_given_steps():
    ibp = IBPTraining(epochs=10, warmup_epochs=1, ramp_epochs=4)  # 10 steps/epoch: warm-up 10, ramp 40 steps
    assert ibp.steps(10) == (100, 10, 40)
    assert ibp.schedule_at(5, 0.2, 10) == (0.0, 1.0, 0.0)
    e, k, b = ibp.schedule_at(30, 0.2, 10)
    assert (e, k, b) == (pytest.approx(0.1), pytest.approx(0.75), 0.0)
    assert ibp.schedule_at(50, 0.2, 10) == (pytest.approx(0.2), 0.5, 0.0)
    assert ibp.schedule_at(99, 0.2, 10) == (pytest.approx(0.2), 0.5, 0.0)
    crown = CROWNIBPTraining(epochs=10, warmup_epochs=2)  # ramp = half of the 8 remaining epochs
    assert crown.steps(5) == (50, 10, 20)
    assert crown.schedule_at(0, 0.4, 5) == (0.0, 1.0, 1.0)
    e, k, b = crown.schedule_at(15, 0.4, 5)
    assert (e, k, b) == (pytest.approx(0.1), pytest.approx(0.75), pytest.approx(0.75))
    assert crown.schedule_at(30, 0.4, 5) == (pytest.approx(0.4), 0.0, 0.0)
    assert crown.final_kappa == 0.0 and ibp.final_kappa == 0.5
    assert CROWNIBPTraining(kappa_end=0.5, beta_end=0.25).schedule_at(10**6, 0.1, 3)[1:] == (0.5, 0.25)


def test_history_records_the_schedule_per_epoch():
    x, y = _blobs(64, 0)
    hist = certified_train(_small_mlp(), x, y, eps=0.1, epochs=4, batch_size=16, warmup_epochs=1, ramp_epochs=2,
                           progress=False)  # 4 steps/epoch; values at each epoch's last step (3, 7, 11, 15)
    assert hist["eps"] == pytest.approx([0.0, 0.0375, 0.0875, 0.1])
    assert hist["kappa"] == pytest.approx([1.0, 0.8125, 0.5625, 0.5])
    assert hist["beta"] == [0.0] * 4 and hist["method"] == "ibp_training"
    assert hist["steps"] == 16 and hist["warmup_steps"] == 4 and hist["ramp_steps"] == 8
    assert all(0 <= a <= 1 for key in ("clean_acc", "cert_acc") for a in hist[key])


def test_bounds_are_the_certifiers_and_differentiable():
    torch.manual_seed(0)
    net = _small_cnn().double()
    model = TorchModel(net, mean=0.4, std=0.3)
    x, y = _blobs(6, 1)
    x = x.double()
    threat = LpBall("inf", 0.03)
    ibp = bound_margins(model, x, y, threat, method="ibp")
    crown = bound_margins(model, x, y, threat, method="crown", intermediate="ibp")
    for beta in (0.0, 0.4, 1.0):
        lower = margin_lower_bounds(model, x, y, threat, method="crown-ibp", beta=beta)
        assert torch.allclose(lower, beta * crown + (1 - beta) * ibp, atol=1e-10)
    lower = margin_lower_bounds(model, x, y, threat, method="ibp")
    assert torch.allclose(lower, ibp, atol=1e-10)
    lower.sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.parameters())
    z = worst_case_logits(lower.detach(), y)
    assert z.shape == (6, 3) and torch.all(z.gather(1, y.view(-1, 1)) == 0)
    with torch.no_grad():  # the bounds hold: the clean margins lie above them
        clean = model(x)
    assert torch.all(clean - clean.gather(1, y.view(-1, 1)) <= z + 1e-9)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_loss_decreases_and_training_is_seeded(method):
    x, y = _blobs(96, 2)
    nets, hists = [], []
    for _ in range(2):
        net = _small_cnn() if method == "crown-ibp" else _small_mlp()
        hists.append(certified_train(net, x, y, method=method, eps=0.05, epochs=10, batch_size=16, warmup_epochs=0,
                                     ramp_epochs=2, lr=1e-2, seed=3, progress=False))
        nets.append(net)
    assert same_weights(*nets) and hists[0]["loss"] == hists[1]["loss"]
    loss = hists[0]["loss"]
    assert loss[-1] < 0.5 * loss[0], loss
    other = _small_mlp() if method == "ibp" else _small_cnn()
    certified_train(other, x, y, method=method, eps=0.05, epochs=1, batch_size=16, seed=4, progress=False)
    assert not same_weights(nets[0], other)


@pytest.mark.parametrize(("method", "make"), [("ibp", _small_mlp), ("crown-ibp", _small_cnn)])
def test_certified_training_beats_standard_training_at_the_same_eps(method, make):
    x, y = _blobs(240, 5)
    xt, yt = _blobs(200, 6)
    eps = 0.08
    std = make()
    train_classifier(std, _dataset(x, y), epochs=20, batch_size=32, lr=0.05, seed=0, progress=False)
    rob = make()
    certified_train(rob, x, y, method=method, eps=eps, epochs=20, batch_size=32, warmup_epochs=2, ramp_epochs=8,
                    lr=5e-3, seed=0, progress=False)
    cert_std = certified_accuracy(std, xt, yt, eps=eps)
    cert_rob = certified_accuracy(rob, xt, yt, eps=eps)
    assert cert_rob > cert_std + 0.3, (cert_rob, cert_std)
    with torch.no_grad():
        assert float((rob(xt).argmax(1) == yt).float().mean()) > 0.8


def _dataset(x, y):
    from robustlab.data.base import Dataset

    return Dataset(name="blobs", x=x, y=y, class_names=["a", "b", "c"])


def test_defense_train_returns_a_trained_copy_and_is_registered():
    x, y = _blobs(64, 7)
    data = _dataset(x, y)
    net = _small_mlp()
    before = weights(net)
    defense = create("ibp_training", epochs=2, batch_size=16, progress=False)
    assert isinstance(defense, IBPTraining)
    trained = defense.train(net, data, LpBall("inf", 0.05))
    assert isinstance(trained, TorchModel) and trained.train_history["method"] == "ibp_training"
    assert same_weights(net, _restore(before)) and not same_weights(net, trained.module)
    assert isinstance(create("crown_ibp_training", progress=False), CROWNIBPTraining)


def _restore(state):
    net = _small_mlp()
    net.load_state_dict(state)
    return net


def test_errors_name_the_problem():
    x, y = _blobs(32, 8)
    bad = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 4), nn.Sigmoid(), nn.Linear(4, 3))
    before = weights(bad)
    with pytest.raises(UnsupportedModelError) as err:
        certified_train(bad, x, y, eps=0.1, epochs=1, progress=False)
    assert "2 module(s)" in str(err.value) and "2 (Tanh)" in str(err.value) and "4 (Sigmoid)" in str(err.value)
    assert same_weights(bad, _restore_bad(before))  # rejected before any update
    with pytest.raises(ConfigError, match="L∞"):
        certified_train(_small_mlp(), x, y, eps=0.1, norm=2, progress=False)
    with pytest.raises(ConfigError, match="LpBall"):
        IBPTraining(progress=False).train(_small_mlp(), _dataset(x, y), object())
    with pytest.raises(ConfigError, match="kappa_end"):
        IBPTraining(kappa_end=1.5)
    with pytest.raises(ConfigError, match="CROWNIBPTraining"):
        IBPTraining(method="crown-ibp")
    with pytest.raises(ConfigError, match="unknown method"):
        CertifiedTraining(method="pgd")
    with pytest.raises(ConfigError, match="unknown setting"):
        certified_train(_small_mlp(), x, y, eps=0.1, steps=3)
    with pytest.raises(ConfigError, match="eps"):
        certified_train(_small_mlp(), x, y, eps=-1.0)
    with pytest.raises(DataError):
        certified_train(_small_mlp(), x, y[:5], eps=0.1)


def _restore_bad(state):
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 4), nn.Sigmoid(), nn.Linear(4, 3))
    net.load_state_dict(state)
    return net


def test_batchnorm_is_bounded_with_running_statistics():
    x, y = _blobs(64, 9)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    hist = certified_train(net, x, y, eps=0.05, epochs=2, batch_size=16, ramp_epochs=1, progress=False)
    assert all(math.isfinite(v) for v in hist["loss"]) and not net.training
    assert int(net[1].num_batches_tracked) == 8  # one train-mode forward per step, none from the bounds


def test_digits_mlp_ibp_training_gives_meaningful_certificates(digits_train, digits_test):
    net = mlp(64)
    certified_train(net, digits_train, eps=0.1, epochs=10, batch_size=32, warmup_epochs=1, ramp_epochs=5, lr=2e-3,
                    progress=False)
    assert certified_accuracy(net, digits_test, eps=0.05) > 0.3
    with torch.no_grad():
        assert F.cross_entropy(net(digits_test.x), digits_test.y) < 1.5


@pytest.mark.parametrize("name", ["digits-mlp-ibp", "digits-cnn-crownibp", "shapeworld-cnn-ibp"])
def test_quick_zoo_entries_load_with_certified_accuracy(name):
    from robustlab.models import zoo

    model = zoo.load(name, quick=True, progress=False)
    meta = model.zoo_info
    cert = meta["certified_accuracy"]
    assert cert["eps"] == meta["config"]["certified"]["eps"] and cert["n"] == meta["test_n"]
    assert 0 <= cert["ibp"] <= 1 and cert["method"] == meta["config"]["certified"]["method"]
    assert all(0 <= cert[k] <= 1 for k in ("crown", "crown_ibp") if k in cert)
    assert 0 <= meta["test_accuracy"] <= 1 and "cert_acc" in meta["history"]
    again = zoo.load(name, quick=True, progress=False)  # from the cache
    assert again.zoo_info["weights_sha256"] == meta["weights_sha256"]
