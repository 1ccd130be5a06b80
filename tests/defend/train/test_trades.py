"""TRADES: the KL term, the KL-maximizing attack, its defaults, and beta=0 == standard training."""

import pytest
import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.core.threat import LpBall
from robustlab.defend.train import TRADES, adversarial_train, kl_divergence, trades_examples
from robustlab.models.training import train_classifier
from tests.defend.train.conftest import bn_cnn, mlp, same_weights


def test_kl_divergence_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    ref = F.kl_div(F.log_softmax(q, 1), F.softmax(p, 1), reduction="none").sum(1)  # KL(p || q)
    assert torch.allclose(kl_divergence(p, q), ref, atol=1e-6)
    assert torch.allclose(kl_divergence(p, p), torch.zeros(5), atol=1e-6)
    assert bool((kl_divergence(p, q) >= 0).all())
    big = torch.tensor([[200.0, -200.0]], requires_grad=True)  # softmax underflows to 0: still finite
    kl_divergence(big, torch.tensor([[0.0, 0.0]])).sum().backward()
    assert bool(torch.isfinite(big.grad).all())


@pytest.mark.parametrize(("norm", "eps"), [("inf", 0.1), ("2", 0.8)])
def test_trades_examples_stay_inside_and_raise_the_kl(tiny_train, norm, eps):
    net = mlp()
    train_classifier(net, tiny_train, epochs=5, batch_size=32, progress=False)
    model = TorchModel(net)
    x = tiny_train.x[:64]
    threat = LpBall(norm, eps)
    alpha = TRADES().default_alpha(norm, eps)
    xa = trades_examples(model, x, threat, steps=10, alpha=alpha, generator=torch_generator(0))
    assert bool(threat.contains(x, xa).all())
    with torch.no_grad():
        start = trades_examples(model, x, threat, steps=0, alpha=alpha, generator=torch_generator(0))
        assert (start - x).abs().max() < 0.01  # the 0.001 * N(0, 1) start, projected
        assert kl_divergence(model(x), model(xa)).mean() > 10 * kl_divergence(model(x), model(start)).mean()
    assert torch.equal(trades_examples(model, x, threat.with_eps(0), steps=2, alpha=0.1,
                                       generator=torch_generator(0)), x)


def test_default_step_sizes_follow_the_official_code():
    assert TRADES(steps=10).default_alpha("inf", 0.031) == pytest.approx(0.007)
    assert TRADES(steps=10).default_alpha("2", 0.5) == pytest.approx(0.1)  # 2 * eps / steps
    assert TRADES().beta == 6.0
    with pytest.raises(ConfigError, match="beta"):
        TRADES(beta=-1.0)


def test_beta_zero_loss_is_the_clean_cross_entropy(tiny_train):
    model = TorchModel(mlp())
    x, y = tiny_train.x[:32], tiny_train.y[:32]
    out = TRADES(beta=0.0, steps=2).batch_loss(model, x, y, LpBall("inf", 0.1), 0.02, torch_generator(0))
    with torch.no_grad():
        ce = F.cross_entropy(model(x), y)
    assert out.loss.item() == pytest.approx(ce.item(), rel=1e-6)
    out6 = TRADES(beta=6.0, steps=2).batch_loss(model, x, y, LpBall("inf", 0.1), 0.02, torch_generator(0))
    assert out6.loss.item() > ce.item()


def test_beta_zero_trains_exactly_like_standard_training(tiny_train):
    kw = {"epochs": 2, "batch_size": 32, "lr": 0.05, "weight_decay": 5e-4, "seed": 3, "progress": False}
    standard, trades = mlp(), mlp()
    train_classifier(standard, tiny_train, **kw)
    adversarial_train(trades, tiny_train, method="trades", beta=0.0, eps=0.1, steps=2, **kw)
    assert same_weights(standard, trades)


def test_bn_statistics_updated_by_the_two_training_forwards_only(tiny_train):
    net = bn_cnn()
    model = TorchModel(net, num_classes=10)
    tracked = int(net[1].num_batches_tracked)
    TRADES(steps=3).batch_loss(model, tiny_train.x[:32], tiny_train.y[:32], LpBall("inf", 0.1), 0.02,
                               torch_generator(0))
    assert int(net[1].num_batches_tracked) == tracked + 2  # f(x) and f(x'), both in train mode
