"""Simplicity-bias datasets (Shah et al. 2020): LMS-k geometry, blocks, determinism, dominoes, errors."""

import pytest
import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import torch_generator
from robustlab.data import load_dataset
from robustlab.data.simplicity import (
    blocks,
    load_digit_dominoes,
    load_lms,
    load_ms,
    paper_coords,
    slab_arrays,
)


def _separation(v: torch.Tensor, y: torch.Tensor) -> tuple[int, float]:
    """(number of class changes along the sorted values, smallest gap at a change)."""
    s, o = v.sort()
    yy = y[o]
    ch = (yy[1:] != yy[:-1]).nonzero().flatten()
    return len(ch), float((s[ch + 1] - s[ch]).min())


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_every_kind_is_k_intervals_separated_by_twice_the_margin(k):
    x, y = slab_arrays(40_000, [k], lin_margin=0.1, slab_margin=0.1, width=1.0, generator=torch_generator(0))
    assert x.abs().max() <= 1.0 and x.shape == (40_000, 1)
    changes, gap = _separation(x[:, 0], y)
    assert changes == max(k - 1, 1)  # linear: one threshold; k slabs: k - 1 class boundaries
    assert gap >= 0.2 - 1e-9  # gap 2 γ: fully separable with margin γ = 0.1
    assert gap < 0.2 + 5e-3  # and the slabs reach their edges (the margin is tight)


def test_five_slab_probabilities_and_linear_sign_follow_the_paper():
    x, y = slab_arrays(40_000, [1, 5], generator=torch_generator(1))
    assert torch.equal(x[:, 0] > 0, y == 1)
    neg = x[y == 0, 1].abs()
    w = (2 - 0.8) / 5
    assert abs(float((neg <= w / 2).float().mean()) - 0.75) < 0.02  # centre slab with prob. 3/4
    pos = x[y == 1, 1].abs()
    assert float(pos.min()) >= (1 + 0.6) / 5 - 1e-9 and float(pos.max()) <= (1 + 0.6) / 5 + w + 1e-9


def test_lms_dataset_blocks_each_fully_predictive_in_unit_domain():
    ds = load_lms("test", n=3000, k=5, dim=22, num_slabs=19)
    s, sc = blocks(ds)
    assert torch.equal(s, torch.tensor([0])) and torch.equal(sc, torch.arange(1, 20))
    assert ds.modality == "tabular" and ds.x.shape == (3000, 22) and 0 <= float(ds.x.min()) and float(ds.x.max()) <= 1
    raw = paper_coords(ds.x.double())
    assert torch.equal(raw[:, 0] > 0, ds.y == 1)
    for j in range(1, 20):  # every slab coordinate alone separates the classes (margin 0.1 -> gap 0.2 raw)
        assert _separation(raw[:, j], ds.y)[1] >= 0.2 - 1e-5
    noise = raw[:, 20:]
    assert float(noise.min()) >= 0 and float(noise.max()) <= 1  # U[0, B] noise coordinates, label-free
    assert abs(float(noise[ds.y == 0].mean() - noise[ds.y == 1].mean())) < 0.05


def test_lms_is_seeded_and_splits_differ():
    a, b = load_lms("train", n=500, seed=3), load_lms("train", n=500, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, load_lms("test", n=500, seed=3).x)
    assert not torch.equal(a.x, load_lms("train", n=500, seed=4).x)
    assert len(load_lms("val")) == 2000 and len(load_lms("train")) == 20_000


def test_slab_only_and_ms_variants():
    ms = load_lms("test", n=200, num_linear=0)
    assert ms.name == "ms-5" and len(blocks(ms)[0]) == 0 and len(blocks(ms)[1]) == 20
    m57 = load_ms("test", n=200)
    assert torch.equal(blocks(m57)[0], torch.tensor([0])) and len(blocks(m57)[1]) == 19


def test_digit_dominoes_halves_come_from_the_right_digits():
    from sklearn.datasets import load_digits

    target = torch.as_tensor(load_digits().target)
    ds = load_digit_dominoes("test", n=300, seed=1, noise=0.3)
    assert ds.x.shape == (300, 1, 16, 8) and ds.modality == "image"
    assert torch.equal(target[ds.attrs["top_id"]], torch.where(ds.y == 1, 1, 0))
    assert torch.equal(target[ds.attrs["bottom_id"]], torch.where(ds.y == 1, 9, 7))
    s, sc = blocks(ds)
    assert torch.equal(s, torch.arange(64)) and torch.equal(sc, torch.arange(64, 128))
    clean = load_digit_dominoes("test", n=300, seed=1, noise=0.0)
    assert torch.equal(clean.x[:, :, :8], ds.x[:, :, :8])  # the noise is on the complex half only
    assert not torch.equal(clean.x[:, :, 8:], ds.x[:, :, 8:])
    assert torch.equal(ds.x, load_digit_dominoes("test", n=300, seed=1, noise=0.3).x)
    # no digit image is shared between the train and test dominoes
    tr = load_digit_dominoes("train", n=500)
    assert not set(tr.attrs["top_id"].tolist()) & set(ds.attrs["top_id"].tolist())


def test_blocks_survive_subsets_and_load_dataset_names():
    ds = load_dataset("lms", split="test", n=100, k=7)
    assert ds.name == "lms-7" and torch.equal(blocks(ds.subset(slice(0, 10)))[0], torch.tensor([0]))
    assert load_dataset("digit_dominoes", n=20).x.shape == (20, 1, 16, 8)
    assert load_dataset("ms", n=20, simple_k=3).name == "ms-37"
    with pytest.raises(ConfigError, match="bad option"):
        load_dataset("lms", n=10, slabs=5)


@pytest.mark.parametrize("call, match", [
    (lambda: load_lms(k=4), "k=4"),
    (lambda: load_lms(dim=20, num_linear=1, num_slabs=25), "num_slabs"),
    (lambda: load_lms(slab_margin=0.3), "slab_margin"),
    (lambda: load_lms(lin_margin=1.5), "lin_margin"),
    (lambda: load_lms(n=0), "n must be"),
    (lambda: load_lms("holdout"), "unknown split"),
    (lambda: load_digit_dominoes(top=(0, 1), bottom=(1, 9)), "distinct"),
    (lambda: load_digit_dominoes(noise=-1), "noise"),
    (lambda: slab_arrays(10, [2], generator=torch_generator(0)), "kinds"),
    (lambda: slab_arrays(10, [1, 5], generator=None), "Generator"),
])
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises((ConfigError, DataError), match=match):
        call()


def test_blocks_needs_simplicity_attrs():
    with pytest.raises(DataError, match="simple_block"):
        blocks(load_dataset("digits", n=5))
