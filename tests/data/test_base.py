"""Tests of ``robustlab.data.base.Dataset``: validation, subsets and shards keep ids and attributes."""

import numpy as np
import pytest
import torch

from robustlab.core.errors import DataError
from robustlab.data.base import Dataset


def _images(n=10, c=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Dataset(x=torch.rand(n, c, 4, 4, generator=g), y=torch.arange(n) % 3, name="toy",
                   ids=torch.arange(n) * 10 + 5,
                   attrs={"size": torch.arange(n) * 0.5, "colour": [f"c{i}" for i in range(n)]})


def _text():
    return Dataset(x=("good", "bad", "fine", "awful"), y=[1, 0, 1, 0], modality="text",
                   class_names=["neg", "pos"], attrs={"length": [4, 3, 4, 5]})


# ------------------------------------------------------------------------------------- validation


def test_defaults():
    d = Dataset(x=torch.rand(4, 3), y=[0, 2, 1, 2], modality="tabular")
    assert d.ids.tolist() == [0, 1, 2, 3] and d.ids.dtype == torch.long
    assert d.y.dtype == torch.long
    assert d.class_names == ["0", "1", "2"] and d.num_classes == 3 and len(d) == 4
    t = _text()
    assert t.x == ["good", "bad", "fine", "awful"] and isinstance(t.x, list) and t.num_classes == 2
    assert "toy" in repr(_images()) and "(10, 1, 4, 4)" in repr(_images())


def test_label_count_mismatch():
    with pytest.raises(DataError, match="3 inputs but 2 labels") as info:
        Dataset(x=torch.rand(3, 1, 2, 2), y=[0, 1])
    assert info.value.fix


@pytest.mark.parametrize("shape", [(3, 4), (3, 2, 2), (3, 1, 1, 2, 2)])
def test_wrong_image_dims(shape):
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        Dataset(x=torch.rand(*shape), y=[0, 1, 0])


@pytest.mark.parametrize("lo,hi", [(-0.1, 0.5), (0.0, 255.0), (0.0, 1.0001)])
def test_out_of_range_pixels(lo, hi):
    x = torch.full((2, 1, 2, 2), 0.5)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = lo, hi
    with pytest.raises(DataError, match="not \\[0, 1\\]") as info:
        Dataset(x=x, y=[0, 1])
    assert "normalization" in info.value.fix


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels(bad):
    """Regression: NaN inputs passed the range check (NaN < 0 and NaN > 1 are both False)."""
    x = torch.full((2, 1, 2, 2), 0.5)
    x[1, 0, 1, 1] = bad
    with pytest.raises(DataError, match="NaN or infinite"):
        Dataset(x=x, y=[0, 1])


@pytest.mark.parametrize("x", [torch.zeros(2, 1, 2, 2, dtype=torch.uint8), np.zeros((2, 1, 2, 2)),
                               [[0.0], [1.0]]], ids=["uint8", "numpy", "list"])
def test_non_float_tensor(x):
    with pytest.raises(DataError, match="float tensor") as info:
        Dataset(x=x, y=[0, 1])
    assert "255" in info.value.fix


def test_non_string_text():
    with pytest.raises(DataError, match="strings"):
        Dataset(x=["ok", 3], y=[0, 1], modality="text")
    with pytest.raises(DataError, match="single string"):
        Dataset(x="abc", y=[0, 1, 0], modality="text")


def test_labels_ids_attrs_and_modality_validation():
    x = torch.rand(3, 1, 2, 2)
    with pytest.raises(DataError, match="negative labels"):
        Dataset(x=x, y=[0, -1, 1])
    with pytest.raises(DataError, match="non-integer labels"):
        Dataset(x=x, y=[0.0, 0.5, 1.0])
    assert Dataset(x=x, y=[0.0, 1.0, 2.0]).y.tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="label 2 but only 2 class names"):
        Dataset(x=x, y=[0, 1, 2], class_names=["a", "b"])
    with pytest.raises(DataError, match="3 distinct ids"):
        Dataset(x=x, y=[0, 1, 1], ids=[1, 2])
    with pytest.raises(DataError, match="distinct ids"):
        Dataset(x=x, y=[0, 1, 1], ids=[1, 2, 2])
    with pytest.raises(DataError, match="attribute 'size'"):
        Dataset(x=x, y=[0, 1, 1], attrs={"size": [1, 2]})
    with pytest.raises(DataError, match="unknown modality 'audio'"):
        Dataset(x=x, y=[0, 1, 1], modality="audio")


def test_empty_dataset():
    d = Dataset(x=torch.zeros(0, 1, 2, 2), y=[])
    assert len(d) == 0 and d.num_classes == 0 and d.shards(4) == []


# ------------------------------------------------------------------------------- subset and shards


def _check_consistent(sub: Dataset, full: Dataset, rows: list[int]):
    assert sub.ids.tolist() == [full.ids[i].item() for i in rows]
    assert sub.y.tolist() == [full.y[i].item() for i in rows]
    if isinstance(full.x, torch.Tensor):
        assert torch.equal(sub.x, full.x[rows])
    else:
        assert sub.x == [full.x[i] for i in rows]
    for k, v in full.attrs.items():
        got = sub.attrs[k].tolist() if isinstance(sub.attrs[k], torch.Tensor) else sub.attrs[k]
        want = [v[i].item() if isinstance(v, torch.Tensor) else v[i] for i in rows]
        assert got == want, k
    assert sub.class_names == full.class_names and sub.name == full.name and sub.modality == full.modality


@pytest.mark.parametrize("index,rows", [
    (slice(2, 7, 2), [2, 4, 6]),
    (slice(None, None, -3), [9, 6, 3, 0]),
    (torch.tensor([9, 0, 3]), [9, 0, 3]),
    ([1, 8], [1, 8]),
    (np.array([4, 2]), [4, 2]),
    (torch.arange(10) % 4 == 0, [0, 4, 8]),
    (np.arange(10) >= 8, [8, 9]),
    (3, [3]),
    (slice(0, 0), []),
])
def test_subset_keeps_ids_and_attrs(index, rows):
    full = _images()
    sub = full.subset(index)
    assert len(sub) == len(rows)
    _check_consistent(sub, full, rows)


def test_subset_of_text_and_of_a_subset():
    t = _text()
    sub = t.subset(torch.tensor([True, False, False, True]))
    _check_consistent(sub, t, [0, 3])
    full = _images()
    twice = full.subset(slice(2, 9)).subset(torch.tensor([0, 6]))
    _check_consistent(twice, full, [2, 8])
    assert twice.num_classes == full.num_classes  # class names survive even if a class is absent


@pytest.mark.parametrize("size", [1, 3, 4, 10, 25])
def test_shards_cover_everything_in_order(size):
    full = _images(10)
    shards = full.shards(size)
    assert all(0 < len(s) <= size for s in shards)
    assert len(shards) == -(-10 // size)
    assert torch.cat([s.ids for s in shards]).tolist() == full.ids.tolist()
    assert torch.equal(torch.cat([s.x for s in shards]), full.x)
    assert [c for s in shards for c in s.attrs["colour"]] == full.attrs["colour"]


def test_shards_of_text_and_bad_size():
    t = _text()
    assert [v for s in t.shards(3) for v in s.x] == t.x
    for bad in (0, -2):
        with pytest.raises(DataError, match="shard size"):
            t.shards(bad)
