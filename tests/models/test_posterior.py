"""cSGLD, SWAG and LGV samplers: schedule, noise placement, sample counts, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustlab.core.errors import ConfigError
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.data.base import Dataset
from robustlab.models.posterior import (
    CSGLDConfig,
    LGVConfig,
    SWAGConfig,
    cyclical_lr,
    fit_swag,
    sample_csgld,
    sample_lgv,
)


def _data(n: int = 64, d: int = 6, classes: int = 3, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(classes, d, generator=torch.Generator().manual_seed(99))
    y = torch.randint(0, classes, (n,), generator=g)
    x = (means[y] + 0.1 * torch.randn(n, d, generator=g)).clamp(0, 1)
    return Dataset(x=x, y=y, modality="tabular", class_names=[str(i) for i in range(classes)], name="blobs")


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _flat(model: TorchModel) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(model.module.parameters())


def _config(**kw) -> CSGLDConfig:
    base = {"cycles": 2, "cycle_epochs": 4, "samples_per_cycle": 2, "lr": 0.1, "batch_size": 16, "temperature": 1.0}
    base.update(kw)
    return CSGLDConfig(**base)


def test_cyclical_lr_matches_closed_form():
    total, cycles, lr0 = 120, 3, 0.5
    per = total // cycles
    for k in range(total):
        expected = lr0 / 2 * (math.cos(math.pi * (k % per) / per) + 1)
        assert cyclical_lr(k, total, cycles, lr0) == pytest.approx(expected, abs=1e-12)
    assert cyclical_lr(0, total, cycles, lr0) == pytest.approx(lr0)
    assert cyclical_lr(per, total, cycles, lr0) == pytest.approx(lr0)  # restart of cycle 2
    assert cyclical_lr(per // 2, total, cycles, lr0) == pytest.approx(lr0 / 2)
    assert cyclical_lr(per - 1, total, cycles, lr0) < 0.01 * lr0  # decays to ~0 at a cycle's end


def test_training_uses_the_cyclical_schedule():
    data = _data()
    post = sample_csgld(_net(), data, _config(), seed=0, progress=False)
    steps = len(data) // 16  # 4 steps per epoch, 32 steps in all
    expected = [cyclical_lr((e + 1) * steps - 1, 32, 2, 0.1) for e in range(8)]
    assert post.history["lr"] == pytest.approx(expected)


def test_noise_epochs_placement():
    cfg = _config(cycle_epochs=5, samples_per_cycle=2, noise_epochs=3)
    assert [cfg.is_noise_epoch(e) for e in range(10)] == [False, False, True, True, True] * 2
    assert [cfg.is_sample_epoch(e) for e in range(10)] == [False, False, False, True, True] * 2
    assert _config(samples_per_cycle=3).noise == 3  # default: as many noise epochs as saves (reference)


def test_noise_is_added_only_in_the_noise_epochs():
    data = _data()
    # one cycle of 4 epochs, samples after epochs 2 and 3, noise only in epoch 3
    cfg = {"cycles": 1, "cycle_epochs": 4, "samples_per_cycle": 2, "noise_epochs": 1}
    cold = sample_csgld(_net(), data, _config(**cfg, temperature=0.0), seed=3, progress=False)
    hot = sample_csgld(_net(), data, _config(**cfg, temperature=1.0), seed=3, progress=False)
    assert hot.history["noise"] == [False, False, False, True]
    assert torch.equal(_flat(cold[0]), _flat(hot[0]))  # before the noise epoch: the same SGD path
    assert not torch.equal(_flat(cold[1]), _flat(hot[1]))  # after it: noise was added


def test_sample_count_is_cycles_times_samples():
    post = sample_csgld(_net(), _data(), _config(cycles=3, cycle_epochs=3, samples_per_cycle=2), progress=False)
    assert len(post) == 6 and post.method == "csgld" and post.epochs == 9
    assert [i["cycle"] for i in post.info] == [0, 0, 1, 1, 2, 2]
    assert [i["epoch"] for i in post.info] == [1, 2, 4, 5, 7, 8]
    flats = [_flat(m) for m in post]
    assert all(not torch.equal(a, b) for i, a in enumerate(flats) for b in flats[i + 1:])  # distinct copies
    assert all(not m.module.training and not any(p.requires_grad for p in m.module.parameters()) for m in post)


def test_csgld_is_deterministic_given_the_seed():
    data = _data()
    a = sample_csgld(_net(), data, _config(), seed=7, progress=False)
    b = sample_csgld(_net(), data, _config(), seed=7, progress=False)
    c = sample_csgld(_net(), data, _config(), seed=8, progress=False)
    assert all(torch.equal(_flat(p), _flat(q)) for p, q in zip(a, b))
    assert not torch.equal(_flat(a[-1]), _flat(c[-1]))


def test_csgld_keeps_the_normalization_and_learns():
    data = _data(n=96)
    model = TorchModel(_net(), mean=0.5, std=0.25, num_classes=3)
    post = sample_csgld(model, data, _config(cycle_epochs=10, lr=0.5), seed=0, progress=False)
    acc = [float((m(data.x).argmax(1) == data.y).float().mean()) for m in post]
    assert min(acc) > 0.8
    assert all(m._mean is not None for m in post)


def test_reference_temperature_default():
    data = _data()
    post = sample_csgld(_net(), data, _config(temperature=None, cycles=1, cycle_epochs=1, samples_per_cycle=1),
                        progress=False)
    assert post.history["temperature"] == pytest.approx(16 ** 2 / len(data))


@pytest.mark.parametrize("bad", [{"cycles": 0}, {"samples_per_cycle": 5}, {"noise_epochs": 9}, {"lr": 0.0},
                                 {"momentum": 1.0}, {"temperature": -1.0}])
def test_config_errors(bad):
    with pytest.raises(ConfigError):
        _config(**bad)


def test_swag_sampling():
    data = _data()
    net = _net()
    sample_csgld(net, data, _config(cycles=1, samples_per_cycle=1), seed=0, progress=False)  # "pre-training"
    swag = fit_swag(net, data, SWAGConfig(epochs=5, rank=3, batch_size=16, lr=0.05), seed=0, progress=False)
    assert swag.deviations.shape == (3, swag.mean.numel()) and swag.n_collected == 5
    assert bool((swag.variance > 0).all())
    a = swag.sample(4, generator=torch_generator(1))
    b = swag.sample(4, generator=torch_generator(1))
    assert len(a) == 4 and a.method == "swag"
    assert all(torch.equal(_flat(p), _flat(q)) for p, q in zip(a, b))
    mean_model = swag.sample(1, generator=torch_generator(2), scale=0.0)[0]
    assert torch.allclose(_flat(mean_model), swag.mean)  # scale 0: the SWA solution
    assert not torch.equal(_flat(a[0]), _flat(a[1]))


def test_lgv_collects_iterates():
    data = _data()
    net = _net()
    post = sample_lgv(net, data, LGVConfig(epochs=3, per_epoch=2, batch_size=16), seed=0, progress=False)
    assert len(post) == 6 and post.method == "lgv" and post.epochs == 3
    assert torch.equal(_flat(post[-1]), torch.nn.utils.parameters_to_vector(net.parameters()))
    assert not torch.equal(_flat(post[0]), _flat(post[1]))


@pytest.mark.parametrize("cls,bad", [(SWAGConfig, {"epochs": 0}), (SWAGConfig, {"rank": 0}), (SWAGConfig, {"lr": 0.0}),
                                     (LGVConfig, {"per_epoch": 0}), (LGVConfig, {"batch_size": 1.5})])
def test_swag_lgv_config_errors(cls, bad):
    with pytest.raises(ConfigError):
        cls(**bad)
