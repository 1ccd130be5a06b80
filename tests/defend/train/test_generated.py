"""Training on real + generated data (Bansal & Grover 2023): generator, counts, modes, determinism, errors."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from robustlab.core import registry
from robustlab.core.errors import ConfigError, DataError
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.data import load_dataset
from robustlab.data.base import Dataset
from robustlab.defend.train import (
    GeneratedDataAugmentation,
    PCAMixtureGenerator,
    generate_dataset,
    generated_counts,
    train_with_generated,
)
from robustlab.models.generative import PCAGaussianGenerator
from robustlab.models.training import train_classifier

MODES = ("labels", "images", "labels+images")


@functools.cache
def _train() -> Dataset:
    return load_dataset("digits", split="train", n=300, seed=0)


@functools.cache
def _gen() -> PCAMixtureGenerator:
    return PCAMixtureGenerator.fit_dataset(_train(), n_pca=6, n_mix=2, seed=0)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def test_generated_counts_copy_the_class_distribution_times_ratio():
    y = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    assert generated_counts(y, 1.0, 3).tolist() == [5, 3, 2]
    assert generated_counts(y, 2.0, 4).tolist() == [10, 6, 4, 0]
    half = generated_counts(y, 0.5, 3)
    assert int(half.sum()) == 5 and half.tolist() in ([3, 1, 1], [2, 2, 1])  # largest remainder
    assert generated_counts(y, 0.0, 3).tolist() == [0, 0, 0]
    for bad in (-1.0, float("nan"), True, "1"):
        with pytest.raises(ConfigError, match="ratio"):
            generated_counts(y, bad, 3)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.5])
def test_each_mode_gives_the_right_counts_labels_and_range(mode, ratio):
    train, gen = _train(), _gen()
    fake = generate_dataset(gen, train, ratio=ratio, mode=mode, seed=3)
    want = generated_counts(train.y, ratio, 10)
    assert len(fake) == round(ratio * len(train)) == int(want.sum())
    assert torch.equal(torch.bincount(fake.y, minlength=10), want)
    assert fake.x.shape[1:] == train.x.shape[1:] and fake.x.dtype == train.x.dtype
    assert float(fake.x.min()) >= 0 and float(fake.x.max()) <= 1
    assert bool((fake.ids < 0).all()) and len(set(fake.ids.tolist())) == len(fake)
    if mode != "labels":  # every image is conditioned on a real image of its own class
        src = fake.attrs["source_row"]
        assert torch.equal(train.y[src], fake.y)
        per_class_sources = [len(set(src[fake.y == c].tolist())) for c in range(10)]
        assert per_class_sources == [min(int(want[c]), int((train.y == c).sum())) for c in range(10)]


def test_generation_is_seeded():
    train, gen = _train(), _gen()
    for mode in MODES:
        a = generate_dataset(gen, train, mode=mode, seed=1)
        b = generate_dataset(gen, train, mode=mode, seed=1)
        c = generate_dataset(gen, train, mode=mode, seed=2)
        assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)


def test_image_modes_stay_near_the_source_and_temperature_sets_diversity():
    train, gen = _train(), _gen()
    proj = gen.decode(gen.encode(train.x, train.y)[0], train.y)
    # strength 0: the image mode reproduces each source's projection on its class's PCA subspace
    same = generate_dataset(gen, train, mode="images", strength=0.0, seed=0)
    assert torch.allclose(same.x, proj[same.attrs["source_row"]], atol=1e-5)
    assert float((proj - train.x).abs().mean()) < 0.1
    near = generate_dataset(gen, train, mode="images", strength=0.3, seed=0)
    free = generate_dataset(gen, train, mode="labels", seed=0)
    d_near = float((near.x - train.x[near.attrs["source_row"]]).abs().mean())
    # labels-mode images are not tied to any source: compare with random same-class real images instead
    rows = torch.cat([torch.nonzero(train.y == c).flatten() for c in range(10)])
    d_free = float((free.x - train.x[rows]).abs().mean())
    assert d_near < 0.7 * d_free
    # temperature 0 collapses labels-mode samples onto the component means: less spread than temperature 1
    cold = generate_dataset(gen, train, mode="labels", temperature=0.0, seed=0)
    assert float(cold.x.std(0).mean()) < float(free.x.std(0).mean())


def test_pca_mixture_samples_the_fitted_mixture():
    gen = _gen()
    g = torch_generator(0)
    z = torch.randn(20000, gen.latent_dim, generator=g)
    y = torch.full((20000,), 3)
    comp = gen._component(z[:, -1], y)
    freq = torch.bincount(comp, minlength=gen.n_mix).double() / len(comp)
    assert torch.allclose(freq, gen.weights[3].double(), atol=0.015)
    x, labels = gen.sample(8, 2, generator=torch_generator(0))
    assert x.shape == (8, 1, 8, 8) and bool((labels == 2).all())
    # encode -> decode is the projection on the class's PCA subspace (clipped), whatever the component
    train = _train()
    code = torch.einsum("bd,bpd->bp", train.x.flatten(1) - gen.mean[train.y], gen.components[train.y])
    proj = (gen.mean[train.y] + torch.einsum("bp,bpd->bd", code, gen.components[train.y])).clamp(0, 1)
    assert torch.allclose(gen.decode(gen.encode(train.x, train.y)[0], train.y).flatten(1), proj, atol=1e-4)


def test_ratio_zero_is_plain_training_and_training_is_deterministic():
    train, gen = _train(), _gen()
    a = train_with_generated(mlp(), train, gen, ratio=0.0, epochs=2, seed=5)
    ref = mlp()
    train_classifier(ref, train, epochs=2, batch_size=64, lr=3e-3, weight_decay=1e-4, seed=5, progress=False,
                     optimizer="adamw", schedule="onecycle")
    assert all(torch.equal(p, q) for p, q in zip(a.module.parameters(), ref.parameters()))
    assert a.train_history["n_generated"] == 0
    b1 = train_with_generated(mlp(), train, gen, ratio=1.0, mode="labels+images", epochs=2, seed=5)
    b2 = train_with_generated(mlp(), train, gen, ratio=1.0, mode="labels+images", epochs=2, seed=5)
    assert isinstance(b1, TorchModel)
    assert all(torch.equal(p, q) for p, q in zip(b1.module.parameters(), b2.module.parameters()))
    h = b1.train_history
    assert h["n_real"] == 300 and h["n_generated"] == 300 and sum(h["generated_counts"]) == 300
    assert h["steps"] == 2 * (600 // 64)  # epochs over the union
    c = train_with_generated("DigitsMLP", train, gen, ratio=0.5, epochs=1, seed=0)
    assert c.train_history["n_generated"] == 150 and c(train.x[:4]).shape == (4, 10)


def test_defense_is_registered_and_trains_a_copy():
    cls = registry.get("generated_data", "defense")
    assert cls is GeneratedDataAugmentation
    net = mlp()
    before = [p.clone() for p in net.parameters()]
    d = GeneratedDataAugmentation(generator=_gen(), epochs=1, ratio=0.5, mode="images")
    out = d.train(net, _train(), threat=None)
    assert isinstance(out, TorchModel) and out.train_history["n_generated"] == 150
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))
    fitted = GeneratedDataAugmentation(n_pca=4, n_mix=2).make_generator(_train())
    assert isinstance(fitted, PCAMixtureGenerator) and fitted.n_pca == 4


def test_errors_say_the_fix():
    train, gen = _train(), _gen()
    with pytest.raises(ConfigError, match="mode"):
        generate_dataset(gen, train, mode="prompts")
    with pytest.raises(ConfigError, match="mode"):
        GeneratedDataAugmentation(mode="prompts")
    with pytest.raises(ConfigError, match="strength"):
        generate_dataset(gen, train, mode="labels+images", strength=1.5)
    with pytest.raises(ConfigError, match="temperature"):
        generate_dataset(gen, train, temperature=-1.0)
    with pytest.raises(ConfigError, match="ConditionalGenerator"):
        generate_dataset(object(), train)
    no_encoder = PCAGaussianGenerator((1, 8, 8), 10, latent_dim=5).fit(train.x, train.y)
    assert len(generate_dataset(no_encoder, train, mode="labels", ratio=0.1)) == 30
    with pytest.raises(ConfigError, match="encode"):
        generate_dataset(no_encoder, train, mode="images")
    other = PCAMixtureGenerator.fit_dataset(load_dataset("digits", split="train", n=300, seed=0), n_pca=3, n_mix=1)
    small = Dataset(x=train.x[:, :, :4, :4].contiguous(), y=train.y, class_names=list(train.class_names))
    with pytest.raises(DataError, match="shape"):
        generate_dataset(other, small)
    with pytest.raises(DataError, match="class 0 has"):
        PCAMixtureGenerator.fit_dataset(Dataset(x=train.x[:12], y=torch.zeros(12, dtype=torch.long),
                                                class_names=["0", "1"]), n_pca=12)
    with pytest.raises(ConfigError, match="architecture"):
        train_with_generated("ResNet999", train, gen, epochs=1)
