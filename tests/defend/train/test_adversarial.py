"""The shared adversarial-training loop: eps warm-up, seeding, model kinds, errors, interrupts."""

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from robustlab.core.errors import ConfigError, DataError, UnsupportedModelError
from robustlab.core.model import SklearnModel, TorchModel
from robustlab.core.registry import create
from robustlab.core.threat import LpBall
from robustlab.data.base import Dataset
from robustlab.defend.train import (
    PGDAT,
    TRADES,
    adversarial_train,
    as_torch_model,
    robust_accuracy,
    warmup_eps,
)
from robustlab.models.training import evaluate_accuracy
from tests.defend.train.conftest import bn_cnn, mlp, same_weights, weights


def test_warmup_eps_values():
    assert warmup_eps(0.3, 0.5, 2) == pytest.approx(0.075)
    assert warmup_eps(0.3, 1.0, 2) == pytest.approx(0.15)
    assert warmup_eps(0.3, 2.0, 2) == pytest.approx(0.3)
    assert warmup_eps(0.3, 7.0, 2) == pytest.approx(0.3)
    assert warmup_eps(0.3, 0.1, 0) == 0.3  # no warm-up
    assert warmup_eps(0.3, 0.0, 1) == 0.0


def test_history_follows_the_warmup_ramp(tiny_train):
    # 128 examples / batch 32 = 4 steps per epoch; the ramp ends after 2 epochs
    hist = adversarial_train(mlp(), tiny_train, eps=0.2, steps=1, epochs=3, batch_size=32, warmup_epochs=2,
                             progress=False)
    assert hist["eps"] == pytest.approx([0.1, 0.2, 0.2])
    assert hist["steps"] == 12 and hist["epochs"] == 3 and hist["method"] == "pgd_at"
    for key in ("loss", "clean_acc", "adv_acc", "lr"):
        assert len(hist[key]) == 3
    assert all(0 <= a <= 1 for a in hist["clean_acc"] + hist["adv_acc"])
    default = adversarial_train(mlp(), tiny_train, eps=0.2, steps=1, epochs=3, batch_size=32, progress=False)
    assert default["eps"] == pytest.approx([0.2, 0.2, 0.2])  # default warm-up: a third of the epochs


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_same_seed_same_weights_and_global_rng_untouched(tiny_train, method):
    a, b, c = mlp(), mlp(), mlp()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    kw = {"method": method, "eps": 0.1, "steps": 2, "epochs": 1, "batch_size": 32, "progress": False}
    adversarial_train(a, tiny_train, seed=5, **kw)
    adversarial_train(b, tiny_train, seed=5, **kw)
    adversarial_train(c, tiny_train, seed=6, **kw)
    assert same_weights(a, b)
    assert not same_weights(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def test_torch_model_keeps_normalization_and_trains_its_module(tiny_train):
    net = mlp()
    model = TorchModel(net, mean=0.3, std=0.4, num_classes=10)
    before = weights(net)
    hist = adversarial_train(model, tiny_train, eps=0.1, steps=2, epochs=2, batch_size=32, progress=False)
    assert not same_weights_dict(before, weights(net))
    assert float(model._mean) == pytest.approx(0.3) and float(model._std) == pytest.approx(0.4)
    assert not net.training  # left in eval mode
    assert hist["clean_acc"][-1] > 0.2


def same_weights_dict(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_defense_train_returns_a_trained_copy(tiny_train):
    net = mlp()
    before = weights(net)
    defense = create("pgd_at", kind="defense", steps=2, epochs=1, batch_size=32, progress=False)
    assert isinstance(defense, PGDAT)
    out = defense.train(net, tiny_train, LpBall("inf", 0.1))
    assert isinstance(out, TorchModel) and out.module is not net
    assert same_weights_dict(before, weights(net))  # the input is untouched
    assert len(out.train_history["loss"]) == 1
    assert out(tiny_train.x[:4]).shape == (4, 10)
    out2 = TRADES(steps=2, epochs=1, batch_size=32, progress=False).train(TorchModel(mlp()), tiny_train,
                                                                          LpBall(2, 0.5))
    assert out2.train_history["method"] == "trades"


def test_validation_history(tiny_train):
    val = tiny_train.subset(torch.arange(40))
    hist = adversarial_train(mlp(), tiny_train, eps=0.1, steps=2, epochs=2, batch_size=32, val=val,
                             progress=False)
    assert len(hist["val_acc"]) == 2 and len(hist["val_adv_acc"]) == 2
    assert all(r <= c for r, c in zip(hist["val_adv_acc"], hist["val_acc"]))


def test_robust_accuracy_bounds(tiny_train):
    net = mlp()
    adversarial_train(net, tiny_train, eps=0.0, steps=1, epochs=2, batch_size=32, progress=False)
    clean = evaluate_accuracy(net, tiny_train)
    assert robust_accuracy(net, tiny_train, eps=0.0) == pytest.approx(clean)
    assert robust_accuracy(net, tiny_train, eps=0.3, steps=10) < clean


def test_interrupt_propagates_and_leaves_eval_mode(tiny_train):
    calls = []

    def interrupting(x, generator):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return x

    net = bn_cnn()
    with pytest.raises(KeyboardInterrupt):
        adversarial_train(net, tiny_train, eps=0.1, steps=1, epochs=1, batch_size=32, augment=interrupting,
                          progress=False)
    assert not net.training


def test_errors(tiny_train):
    with pytest.raises(ConfigError, match="L∞ and L2"):
        adversarial_train(mlp(), tiny_train, norm=1, eps=1.0, epochs=1, progress=False)
    with pytest.raises(ConfigError, match="method"):
        adversarial_train(mlp(), tiny_train, method="fgsm", eps=0.1, epochs=1, progress=False)
    with pytest.raises(ConfigError, match="unknown option"):
        adversarial_train(mlp(), tiny_train, eps=0.1, epochs=1, progress=False, momentum=0.9)
    with pytest.raises(ConfigError, match="eps"):
        adversarial_train(mlp(), tiny_train, eps=-0.1, epochs=1, progress=False)
    with pytest.raises(ConfigError, match="steps"):
        PGDAT(steps=0)
    with pytest.raises(ConfigError, match="alpha"):
        PGDAT(alpha=-1.0)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        PGDAT(warmup_epochs=-1)
    with pytest.raises(ConfigError, match="LpBall"):
        PGDAT().train(mlp(), tiny_train, threat=object())
    text = Dataset(x=["a", "b"], y=torch.tensor([0, 1]), modality="text")
    with pytest.raises(DataError):
        adversarial_train(mlp(), text, eps=0.1, epochs=1, progress=False)
    sk = SklearnModel(LogisticRegression().fit([[0.0], [1.0]], [0, 1]))
    with pytest.raises(UnsupportedModelError):
        as_torch_model(sk)
    with pytest.raises(ConfigError):
        as_torch_model("resnet")
