"""User-data loaders: npz, torch Dataset, image folder, CSV, JSONL; every malformed input is a DataError."""

import json

import numpy as np
import pytest
import torch

from robustlab.core.errors import DataError
from robustlab.data.loaders import from_torch_dataset, load_csv, load_image_folder, load_jsonl, load_npz


# ------------------------------------------------------------------------------------------- npz
def _npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_npz_uint8_channels_last_is_scaled_and_transposed(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)
    ds = load_npz(_npz(tmp_path, x=x, y=np.arange(6) % 2))
    assert ds.x.shape == (6, 3, 5, 7) and ds.modality == "image"
    assert torch.allclose(ds.x[2, 1], torch.from_numpy(x[2, :, :, 1]).float() / 255)
    assert "255" in ds.source and "channels-last" in ds.source and ds.name == "d"


def test_npz_grey_float_custom_keys_and_string_labels(tmp_path):
    x = np.random.default_rng(1).random((4, 9, 9)).astype(np.float32)
    ds = load_npz(_npz(tmp_path, images=x, labels=np.array(["dog", "cat", "dog", "ant"])), x_key="images",
                  y_key="labels")
    assert ds.x.shape == (4, 1, 9, 9) and ds.class_names == ["ant", "cat", "dog"]
    assert ds.y.tolist() == [2, 1, 2, 0]
    assert torch.allclose(ds.x[:, 0], torch.from_numpy(x))


def test_npz_nchw_tabular_flat_images_and_class_names_key(tmp_path):
    ds = load_npz(_npz(tmp_path, x=np.zeros((3, 3, 4, 4)), y=[0, 1, 1], class_names=np.array(["a", "b"])))
    assert ds.x.shape == (3, 3, 4, 4) and ds.class_names == ["a", "b"]
    tab = load_npz(_npz(tmp_path, "t.npz", x=np.full((5, 6), 0.5), y=np.arange(5.0)))
    assert tab.modality == "tabular" and tab.x.shape == (5, 6) and tab.y.tolist() == [0, 1, 2, 3, 4]
    flat = load_npz(_npz(tmp_path, "f.npz", x=np.zeros((2, 16), dtype=np.uint8), y=[0, 1]), modality="image")
    assert flat.x.shape == (2, 1, 4, 4)


@pytest.mark.parametrize(
    ("arrays", "kwargs", "match"),
    [
        ({"x": np.zeros((2, 3, 4, 4)), "y": [0, 1]}, {"x_key": "images"}, "no array 'images'"),
        ({"x": np.full((2, 3, 4, 4), 2.0), "y": [0, 1]}, {}, "divide by 255"),
        ({"x": np.full((2, 3, 4, 4), -3.0), "y": [0, 1]}, {}, "not \\[0, 1\\]"),
        ({"x": np.zeros((2, 3, 4, 4)), "y": [0, 1, 1]}, {}, "2 inputs"),
        ({"x": np.zeros((2, 3, 4, 4)), "y": [0.5, 1]}, {}, "non-integer"),
        ({"x": np.zeros((2, 3, 4, 4)), "y": np.eye(2)}, {}, "one-hot"),
        ({"x": np.zeros((2, 3, 4, 4)), "y": [-1, 1]}, {}, "-1"),
        ({"x": np.zeros((2, 7, 5, 5)), "y": [0, 1]}, {}, "7 channels"),
        ({"x": np.zeros((2, 4, 4, 4, 4)), "y": [0, 1]}, {}, "shape"),
        ({"x": np.zeros((2, 15)), "y": [0, 1]}, {"modality": "image"}, "square"),
        ({"x": np.array([[np.nan, 0.0]]), "y": [0]}, {}, "NaN"),
    ],
)
def test_npz_errors_name_the_problem(tmp_path, arrays, kwargs, match):
    with pytest.raises(DataError, match=match) as err:
        load_npz(_npz(tmp_path, **arrays), **kwargs)
    assert err.value.fix


def test_npz_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(bad)


# ------------------------------------------------------------------------------------ torch Dataset
class _Pairs(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items
        self.classes = ["zero", "one", "two"]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_from_torch_dataset_tensors_numpy_and_pil():
    from PIL import Image

    items = [(torch.rand(3, 4, 4), torch.tensor(i % 3)) for i in range(5)]
    ds = from_torch_dataset(_Pairs(items), n=4)
    assert ds.x.shape == (4, 3, 4, 4) and ds.y.tolist() == [0, 1, 2, 0]
    assert ds.class_names == ["zero", "one", "two"] and torch.equal(ds.x[1], items[1][0])
    pil = [(Image.fromarray(np.full((6, 5, 3), 255, np.uint8)), 1), (Image.fromarray(np.zeros((6, 5, 3), np.uint8)), 0)]
    ds2 = from_torch_dataset(_Pairs(pil), class_names=["no", "yes"])
    assert ds2.x.shape == (2, 3, 6, 5) and float(ds2.x[0].min()) == 1.0 and ds2.class_names == ["no", "yes"]


def test_from_torch_dataset_errors():
    with pytest.raises(DataError, match="not an \\(input, label\\) pair"):
        from_torch_dataset(_Pairs([torch.zeros(3)]))
    with pytest.raises(DataError, match="different shapes"):
        from_torch_dataset(_Pairs([(torch.zeros(1, 4, 4), 0), (torch.zeros(1, 5, 5), 1)]))
    with pytest.raises(DataError, match="empty"):
        from_torch_dataset(_Pairs([]))
    with pytest.raises(DataError, match="len"):
        from_torch_dataset(object())


# ------------------------------------------------------------------------------------ image folder
def _save(path, arr):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_rgb_and_grey(tmp_path):
    rng = np.random.default_rng(0)
    for cls, k in (("cat", 2), ("dog", 3)):
        for i in range(k):
            _save(tmp_path / "rgb" / cls / f"{i}.png", rng.integers(0, 256, (5, 6, 3), dtype=np.uint8))
    (tmp_path / "rgb" / "dog" / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path / "rgb")
    assert ds.x.shape == (5, 3, 5, 6) and ds.class_names == ["cat", "dog"] and ds.y.tolist() == [0, 0, 1, 1, 1]
    assert ds.attrs["file"][0] == "cat/0.png" and ds.name == "rgb"
    _save(tmp_path / "grey" / "a" / "x.png", np.full((4, 4), 255, np.uint8))
    _save(tmp_path / "grey" / "b" / "y.jpg", np.zeros((4, 4), np.uint8))
    grey = load_image_folder(tmp_path / "grey")
    assert grey.x.shape == (2, 1, 4, 4) and float(grey.x[0].min()) == 1.0


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        load_image_folder(tmp_path / "noimg")
    _save(tmp_path / "mixed" / "a" / "1.png", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "mixed" / "b" / "2.png", np.zeros((5, 4, 3), np.uint8))
    with pytest.raises(DataError, match="different sizes") as err:
        load_image_folder(tmp_path / "mixed")
    assert "resize" in err.value.fix
    (tmp_path / "broken" / "a").mkdir(parents=True)
    (tmp_path / "broken" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_image_folder(tmp_path / "broken")
    with pytest.raises(DataError, match="no sub-folder"):
        load_image_folder(tmp_path / "mixed", class_names=["a", "zebra"])


# ------------------------------------------------------------------------------------- CSV / JSONL
def test_csv_string_and_integer_labels(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text('text,label\n"great, really",pos\nawful,neg\nfine,pos\n')
    ds = load_csv(p)
    assert ds.x == ["great, really", "awful", "fine"] and ds.class_names == ["neg", "pos"]
    assert ds.y.tolist() == [1, 0, 1]
    q = tmp_path / "q.csv"
    q.write_text("review;stars\nok;1\nbad;0\n")
    ds2 = load_csv(q, text_column="review", label_column="stars", delimiter=";")
    assert ds2.y.tolist() == [1, 0] and ds2.class_names == ["0", "1"] and ds2.modality == "text"


def test_csv_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_csv(tmp_path / "none.csv")
    p = tmp_path / "c.csv"
    p.write_text("sentence,label\nhi,1\n")
    with pytest.raises(DataError, match="no column 'text'") as err:
        load_csv(p)
    assert "text_column" in err.value.fix
    p.write_text("text,label\nhi,\n")
    with pytest.raises(DataError, match="line 2"):
        load_csv(p)
    p.write_text("text,label\n")
    with pytest.raises(DataError, match="no data rows"):
        load_csv(p)
    p.write_bytes(b"text,label\n\xff\xfe,1\n")
    with pytest.raises(DataError, match="UTF-8"):
        load_csv(p)


def test_jsonl_labels_and_errors(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [{"text": "a", "label": 1}, {"text": "b", "label": 0}]) + "\n\n")
    ds = load_jsonl(p)
    assert ds.x == ["a", "b"] and ds.y.tolist() == [1, 0]
    p.write_text('{"body": "a", "y": "spam"}\n{"body": "b", "y": "ham"}\n')
    assert load_jsonl(p, text_column="body", label_column="y").class_names == ["ham", "spam"]
    p.write_text('{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_jsonl(p)
    p.write_text('{"txt": "a", "label": 1}\n')
    with pytest.raises(DataError, match="line 1 lacks 'text'"):
        load_jsonl(p)
    p.write_text('{"text": 3, "label": 1}\n')
    with pytest.raises(DataError, match="not a string"):
        load_jsonl(p)
    p.write_text('{"text": "a", "label": [1]}\n')
    with pytest.raises(DataError, match="not a scalar"):
        load_jsonl(p)
