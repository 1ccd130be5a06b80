"""``robustlab.data.load_dataset``: one entry point, seeded subsets, clear errors."""

import numpy as np
import pytest
import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.data import DATASETS, Dataset, load_dataset
from robustlab.data.base import Dataset as BaseDataset


def test_builtin_datasets_and_options():
    assert Dataset is BaseDataset
    assert load_dataset("digits", n=12).x.shape == (12, 1, 8, 8)
    sw = load_dataset("shapeworld", split="train", n=6, seed=2, size=16, background="noise")
    assert sw.x.shape == (6, 3, 16, 16) and set(sw.attrs["background_name"]) == {"noise"}
    assert torch.equal(sw.x, load_dataset("shapeworld", split="train", n=6, seed=2, size=16, background="noise").x)
    assert load_dataset("text-sentiment", n=7).modality == "text"
    assert len(load_dataset("Text_Sentiment", n=3)) == 3


def test_user_data_by_file_and_by_split_folder(tmp_path):
    np.savez(tmp_path / "test.npz", x=np.zeros((10, 1, 3, 3), np.uint8), y=np.arange(10) % 2)
    np.savez(tmp_path / "train.npz", x=np.zeros((4, 1, 3, 3), np.uint8), y=np.arange(4) % 2)
    assert len(load_dataset("npz", path=tmp_path)) == 10
    assert len(load_dataset("npz", split="train", path=tmp_path)) == 4
    a = load_dataset("npz", path=tmp_path / "test.npz", n=5, seed=1)
    b = load_dataset("npz", path=tmp_path / "test.npz", n=5, seed=1)
    assert len(a) == 5 and torch.equal(a.ids, b.ids)
    (tmp_path / "t.csv").write_text("review,label\nnice,1\nbad,0\n")
    assert load_dataset("csv", path=tmp_path / "t.csv", text_column="review").x == ["nice", "bad"]


def test_image_folder_with_split_subfolders(tmp_path):
    from PIL import Image

    for split, cls in (("train", "a"), ("test", "a"), ("test", "b")):
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / split / cls / "0.png")
    assert load_dataset("image_folder", path=tmp_path).class_names == ["a", "b"]
    assert load_dataset("image-folder", split="train", path=tmp_path).class_names == ["a"]


def test_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean") as err:
        load_dataset("shapeworlds")
    assert "digits" in err.value.fix
    with pytest.raises(DataError, match="no path"):
        load_dataset("csv")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("jsonl", path=tmp_path / "none.jsonl")
    with pytest.raises(DataError, match="without test.npz"):
        load_dataset("npz", path=tmp_path)
    with pytest.raises(ConfigError, match="split"):
        load_dataset("digits", split="dev")
    with pytest.raises(ConfigError, match="no options"):
        load_dataset("digits", size=3)
    (tmp_path / "a.csv").write_text("text,label\nx,1\n")
    with pytest.raises(ConfigError, match="bad option"):
        load_dataset("csv", path=tmp_path / "a.csv", txt_column="x")
    with pytest.raises(DataError, match="n=9"):
        load_dataset("csv", path=tmp_path / "a.csv", n=9)
    assert set(DATASETS) >= {"digits", "shapeworld", "text-sentiment", "npz", "image_folder", "csv", "jsonl"}
