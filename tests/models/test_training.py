"""The seeded trainer: it learns, it is deterministic, it leaves global RNG alone, it can be interrupted."""

import itertools

import pytest
import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.model import TorchModel
from robustlab.data.base import Dataset
from robustlab.models.architectures import DigitsCNN, DigitsMLP
from robustlab.models.training import (
    _lr_factor,
    evaluate_accuracy,
    gaussian_noise,
    make_augment,
    random_shift_flip,
    train_classifier,
)


def _toy(n: int = 256, seed: int = 0) -> Dataset:
    """Two classes of 8x8 images: bright left half (0) or bright right half (1), plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 * torch.rand(n, 1, 8, 8, generator=g)
    x[y == 0, :, :, :4] += 0.6
    x[y == 1, :, :, 4:] += 0.6
    return Dataset(x.clamp(0, 1), y, name="toy")


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_learns_a_separable_task_and_records_history():
    net = DigitsMLP(hidden=(32,), num_classes=2)
    hist = train_classifier(net, _toy(), epochs=3, batch_size=32, lr=0.05, seed=0, progress=False,
                            val=_toy(128, seed=1))
    assert evaluate_accuracy(net, _toy(200, seed=2)) > 0.95
    assert len(hist["loss"]) == len(hist["acc"]) == len(hist["val_acc"]) == 3
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["steps"] == 3 * (256 // 32) and hist["seconds"] > 0
    assert not net.training  # left in eval mode


def test_same_seed_same_weights_other_seed_other_weights():
    kw = {"epochs": 2, "batch_size": 32, "lr": 0.05, "progress": False, "augment": random_shift_flip(1)}
    a, b, c = DigitsCNN(num_classes=2), DigitsCNN(num_classes=2), DigitsCNN(num_classes=2)
    train_classifier(a, _toy(), seed=3, **kw)
    train_classifier(b, _toy(), seed=3, **kw)
    train_classifier(c, _toy(), seed=4, **kw)
    sa, sb, sc = _state(a), _state(b), _state(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_global_rng_untouched():
    net, data = DigitsMLP(hidden=(16,), num_classes=2), _toy(64)
    before = torch.get_rng_state()
    train_classifier(net, data, epochs=1, batch_size=16, seed=0, progress=False, augment=random_shift_flip(1))
    assert torch.equal(before, torch.get_rng_state())


def test_trains_through_torchmodel_normalization_with_adamw():
    model = TorchModel(DigitsMLP(hidden=(32,), num_classes=2), mean=0.4, std=0.3, num_classes=2)
    train_classifier(model, _toy(), epochs=3, batch_size=32, lr=3e-3, seed=0, progress=False,
                     optimizer="adamw", schedule="cosine")
    assert evaluate_accuracy(model, _toy(200, seed=2)) > 0.95
    assert not model.module.training


def test_progress_bar_runs():
    hist = train_classifier(DigitsMLP(hidden=(8,), num_classes=2), _toy(64), epochs=2, batch_size=16, seed=0,
                            progress=True)
    assert len(hist["acc"]) == 2


def test_keyboard_interrupt_propagates():
    calls = []

    def interrupting(x, g):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return x

    net = DigitsMLP(hidden=(8,), num_classes=2)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(net, _toy(), epochs=2, batch_size=32, seed=0, progress=True, augment=interrupting)
    assert len(calls) == 3 and not net.training


def test_bad_arguments():
    text = Dataset(["a", "b"], [0, 1], modality="text")
    with pytest.raises(DataError, match="tensor"):
        train_classifier(DigitsMLP(), text, progress=False)
    with pytest.raises(ConfigError, match="schedule"):
        train_classifier(DigitsMLP(num_classes=2), _toy(32), schedule="step", progress=False)
    with pytest.raises(ConfigError, match="optimizer"):
        train_classifier(DigitsMLP(num_classes=2), _toy(32), optimizer="lion", progress=False)
    with pytest.raises(ConfigError):
        train_classifier(DigitsMLP(num_classes=2), _toy(32), epochs=0, progress=False)


def test_lr_schedule_warms_up_then_decays_to_zero():
    total = 100
    f = [_lr_factor("onecycle", s, total, 0.2) for s in range(total)]
    assert f[0] == pytest.approx(0.05) and max(f) == pytest.approx(1.0)
    assert f.index(max(f)) in (19, 20) and f[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(f[20:]))
    assert _lr_factor("cosine", 0, total, 0.2) == 1.0 and _lr_factor("constant", 99, total, 0.2) == 1.0


def test_random_shift_flip():
    x = torch.zeros(64, 2, 8, 8)
    x[:, :, 4, 4] = 1.0
    aug = random_shift_flip(max_shift=2)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(0)))
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 8, pos % 8
    assert ((rows - 4).abs() <= 2).all() and ((cols - 4).abs() <= 2).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # really random per example
    assert torch.equal(out[:, 0], out[:, 1])  # channels move together
    assert torch.equal(random_shift_flip(0)(x, torch.Generator()), x)
    flipped = random_shift_flip(0, flip=True)(x, torch.Generator().manual_seed(1))
    assert all(torch.equal(f, x[0]) or torch.equal(f, x[0].flip(2)) for f in flipped)
    assert any(not torch.equal(f, x[0]) for f in flipped)
    with pytest.raises(ConfigError):
        random_shift_flip(-1)


def test_gaussian_noise_and_make_augment():
    x = torch.full((200, 1, 8, 8), 0.5)
    noisy = gaussian_noise(0.1)(x, torch.Generator().manual_seed(0))
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert (noisy - x).std().item() == pytest.approx(0.1, rel=0.05)
    assert make_augment(None) is None and make_augment({}) is None
    aug = make_augment({"max_shift": 1, "flip": True, "noise": 0.05})
    a = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, aug(x, torch.Generator().manual_seed(1)))
    with pytest.raises(ConfigError, match="rotate"):
        make_augment({"rotate": 10})
    with pytest.raises(ConfigError):
        gaussian_noise(-1.0)
