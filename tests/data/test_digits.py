"""digits: sklearn's bundled 8x8 digits with a fixed, stratified, disjoint split."""

import pytest
import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.data.digits import digits_split_indices, load_digits


def test_splits_are_disjoint_stratified_and_cover_everything():
    idx = digits_split_indices()
    sets = {k: set(v.tolist()) for k, v in idx.items()}
    assert not (sets["train"] & sets["test"]) and not (sets["train"] & sets["val"]) and not (sets["val"] & sets["test"])
    assert len(sets["train"] | sets["val"] | sets["test"]) == 1797
    test = load_digits("test")
    assert 520 <= len(test) <= 560
    counts = test.y.bincount(minlength=10)
    assert int(counts.min()) >= 50 and int(counts.max()) <= 56  # ~30 % of each class


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_shape_range_and_names(split):
    ds = load_digits(split)
    assert ds.x.shape[1:] == (1, 8, 8) and ds.x.dtype == torch.float32
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert ds.class_names == [str(i) for i in range(10)] and ds.name == "digits"
    assert "scikit-learn" in ds.source and "UCI" in ds.source


def test_pixels_are_sklearn_over_16_and_ids_are_rows():
    from sklearn.datasets import load_digits as sk

    bunch, ds = sk(), load_digits("val")
    rows = ds.ids.numpy()
    assert torch.allclose(ds.x[:, 0], torch.from_numpy(bunch.images[rows]).float() / 16)
    assert ds.y.tolist() == bunch.target[rows].tolist()


def test_seeded_subset_is_repeatable_and_nested():
    a, b = load_digits("test", n=50, seed=3), load_digits("test", n=50, seed=3)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.x, b.x)
    assert not torch.equal(a.ids, load_digits("test", n=50, seed=4).ids)
    assert set(load_digits("test", n=20, seed=3).ids.tolist()) <= set(a.ids.tolist())
    assert torch.equal(a.ids, a.ids.sort().values)


def test_errors():
    with pytest.raises(ConfigError, match="split"):
        load_digits("validation")
    with pytest.raises(DataError, match="n=5000"):
        load_digits("test", n=5000)
