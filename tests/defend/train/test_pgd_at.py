"""PGD-AT: the training attack, eval-mode crafting, loss decrease, and real robustness gains."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.core.threat import LpBall
from robustlab.defend.train import PGDAT, adversarial_train, pgd_examples, robust_accuracy
from robustlab.models.training import evaluate_accuracy, train_classifier
from tests.defend.train.conftest import bn_cnn, mlp


def _trained(data):
    net = mlp()
    train_classifier(net, data, epochs=5, batch_size=32, lr=0.05, progress=False)
    for p in net.parameters():
        p.grad = None
    return TorchModel(net, num_classes=10)


@pytest.mark.parametrize(("norm", "eps"), [("inf", 0.1), ("2", 0.8)])
def test_pgd_examples_stay_inside_and_raise_the_loss(tiny_train, norm, eps):
    model = _trained(tiny_train)
    x, y = tiny_train.x[:64], tiny_train.y[:64]
    threat = LpBall(norm, eps)
    xa = pgd_examples(model, x, y, threat, steps=10, alpha=2.5 * eps / 10, generator=torch_generator(0))
    assert bool(threat.contains(x, xa).all())
    with torch.no_grad():
        assert F.cross_entropy(model(xa), y) > F.cross_entropy(model(x), y) + 0.1
    assert all(p.grad is None for p in model.module.parameters())
    assert torch.equal(pgd_examples(model, x, y, threat.with_eps(0), steps=3, alpha=0.1,
                                    generator=torch_generator(0)), x)


def test_default_alpha_is_madrys_rule():
    assert PGDAT(steps=10).default_alpha("inf", 0.1) == pytest.approx(0.025)
    assert PGDAT(steps=5).default_alpha("2", 1.0) == pytest.approx(0.5)


def test_attack_runs_in_eval_mode_and_training_in_train_mode(tiny_train):
    net = bn_cnn()
    model = TorchModel(net, num_classes=10)
    bn = net[1]
    tracked = int(bn.num_batches_tracked)
    out = PGDAT(steps=3).batch_loss(model, tiny_train.x[:32], tiny_train.y[:32], LpBall("inf", 0.1), 0.05,
                                    torch_generator(0))
    assert int(bn.num_batches_tracked) == tracked + 1  # only the training forward updates BatchNorm
    assert net.training and out.loss.requires_grad
    assert 0 <= int(out.adv_correct) <= 32 and 0 <= int(out.clean_correct) <= 32


def test_loss_decreases(digits_train):
    hist = adversarial_train(mlp(), digits_train, eps=0.1, steps=3, epochs=8, batch_size=32, lr=0.1,
                             warmup_epochs=0, progress=False)
    loss = hist["loss"]
    assert all(b < a for a, b in itertools.pairwise(loss))
    assert loss[-1] < 0.5 * loss[0]
    assert hist["adv_acc"][-1] > hist["adv_acc"][0] + 0.3


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_adversarial_training_beats_standard_training_under_pgd(digits_train, digits_test, method):
    eps = 0.2
    std = mlp(64)
    train_classifier(std, digits_train, epochs=15, batch_size=64, lr=0.05, seed=0, progress=False)
    rob = mlp(64)
    adversarial_train(rob, digits_train, method=method, eps=eps, steps=5, epochs=15, batch_size=64, lr=0.05,
                      seed=0, progress=False)
    std_rob = robust_accuracy(std, digits_test, eps=eps, steps=20)
    at_rob = robust_accuracy(rob, digits_test, eps=eps, steps=20)
    assert at_rob > std_rob + 0.15, (at_rob, std_rob)
    assert evaluate_accuracy(rob, digits_test) > 0.8


def test_l2_adversarial_training_helps_under_l2_pgd(digits_train, digits_test):
    eps = 1.0
    std = mlp(64)
    train_classifier(std, digits_train, epochs=15, batch_size=64, lr=0.05, seed=0, progress=False)
    rob = mlp(64)
    adversarial_train(rob, digits_train, norm=2, eps=eps, steps=5, epochs=15, batch_size=64, lr=0.05, seed=0,
                      progress=False)
    assert robust_accuracy(rob, digits_test, norm=2, eps=eps) > robust_accuracy(std, digits_test, norm=2, eps=eps)
