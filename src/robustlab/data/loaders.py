"""Loaders for the user's own data: numpy ``.npz``, a torch ``Dataset``, an image folder, CSV and JSONL text.

Every loader returns a :class:`~robustlab.data.base.Dataset` in the raw domain (images as float
(N, C, H, W) in [0, 1], text as strings) and raises :class:`~robustlab.core.errors.DataError` naming
the file, key or shape that is wrong and saying how to fix it.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab.core.errors import DataError
from robustlab.data.base import Dataset

__all__ = ["IMAGE_EXTENSIONS", "from_torch_dataset", "load_csv", "load_image_folder", "load_jsonl", "load_npz"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_CHANNELS = (1, 3, 4)


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what} {str(p)!r} does not exist", fix="check the path (relative paths start at the "
                        "current working directory)")
    return p


def _labels(raw: Any, where: str, class_names: list[str] | None) -> tuple[torch.Tensor, list[str]]:
    """Integer ids and class names from ints, integer-valued floats or strings (strings sorted)."""
    arr = np.asarray(raw)
    if arr.ndim != 1:
        raise DataError(f"{where}: labels have shape {arr.shape}, expected (N,)",
                        fix="give one integer (or string) class label per example, not one-hot vectors")
    if arr.dtype.kind in "USO":
        names = [str(v) for v in arr.tolist()]
        if all(re.fullmatch(r"-?\d+", s.strip()) for s in names):
            arr = np.array([int(s) for s in names])
        else:
            classes = list(class_names) if class_names else sorted(set(names))
            missing = sorted(set(names) - set(classes))
            if missing:
                raise DataError(f"{where}: labels {missing[:5]} are not in class_names", fix="list every label "
                                "in class_names or leave class_names unset")
            index = {c: i for i, c in enumerate(classes)}
            return torch.tensor([index[s] for s in names], dtype=torch.long), classes
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"{where}: labels are non-integer floats", fix="give integer class ids 0..C-1")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise DataError(f"{where}: labels have dtype {arr.dtype}", fix="give integer class ids or strings")
    y = torch.from_numpy(arr.astype(np.int64))
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{where}: labels include {int(y.min())}", fix="map labels to 0..num_classes-1")
    num = int(y.max()) + 1 if len(y) else 0
    names = list(class_names) if class_names else [str(i) for i in range(num)]
    if len(names) < num:
        raise DataError(f"{where}: label {num - 1} but only {len(names)} class_names",
                        fix="give one class name per class id")
    return y, names


def _images(x: np.ndarray, where: str, layout: str = "auto") -> tuple[torch.Tensor, list[str]]:
    """Float (N, C, H, W) in [0, 1] from uint8 / float arrays in NCHW, NHWC or (N, H, W); notes what was done."""
    notes: list[str] = []
    if x.dtype.kind not in "uif" or x.dtype.kind == "b":
        raise DataError(f"{where}: inputs have dtype {x.dtype}", fix="store images as uint8 or float arrays")
    if x.ndim == 3:
        x, layout = x[:, None], "NCHW"
        notes.append("grey (N, H, W) given a channel axis")
    if x.ndim != 4:
        raise DataError(f"{where}: images have shape {x.shape}", fix="store images as (N, C, H, W), (N, H, W, C) "
                        "or grey (N, H, W)")
    if layout == "auto":
        layout = "NHWC" if x.shape[-1] in _CHANNELS and x.shape[1] not in _CHANNELS else "NCHW"
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        notes.append("channels-last (N, H, W, C) moved to (N, C, H, W)")
    elif layout != "NCHW":
        raise DataError(f"{where}: layout {layout!r} is unknown", fix="use layout='auto', 'NCHW' or 'NHWC'")
    if x.shape[1] not in _CHANNELS:
        raise DataError(f"{where}: images have {x.shape[1]} channels (shape {x.shape})",
                        fix="give 1, 3 or 4 channels, or pass layout='NCHW' / 'NHWC' explicitly")
    return _scaled(x, where, notes), notes


def _scaled(x: np.ndarray, where: str, notes: list[str]) -> torch.Tensor:
    if x.dtype == np.uint8:
        notes.append("uint8 pixels divided by 255")
        return torch.from_numpy(x.astype(np.float32) / 255.0)
    t = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise DataError(f"{where}: inputs contain NaN or infinity", fix="remove or repair those examples")
    if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
        lo, hi = float(t.min()), float(t.max())
        fix = ("divide by 255 (or store uint8)" if hi <= 255 and lo >= 0 else "rescale to [0, 1]; "
               "normalization belongs inside the model")
        raise DataError(f"{where}: inputs range over [{lo:.4g}, {hi:.4g}], not [0, 1]", fix=fix)
    return t


def load_npz(path: str | Path, *, x_key: str = "x", y_key: str = "y", class_names: list[str] | None = None,
             modality: str = "auto", layout: str = "auto", name: str | None = None) -> Dataset:
    """A dataset from a numpy ``.npz`` file with inputs under ``x_key`` and labels under ``y_key``.

    Args:
        path: the ``.npz`` file (``np.savez``); an optional ``class_names`` array in it names classes.
        x_key, y_key: the array names of inputs and labels.
        class_names: class names (overrides the file's); string labels are mapped to sorted names.
        modality: "auto" (2-D -> tabular, 3-D / 4-D -> image), "image" or "tabular". A 2-D array with
            modality="image" and a square width is read as flattened grey images.
        layout: "auto" (channels-last detected when the last axis is 1, 3 or 4 and axis 1 is not),
            "NCHW" or "NHWC".
        name: dataset name (default: the file stem).
    uint8 inputs are divided by 255 (recorded in ``source``); float inputs must already be in [0, 1].
    """
    p = _existing(path, "npz file")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(f"{str(p)!r} is not a readable .npz file ({e})",
                        fix="save it with numpy.savez(path, x=inputs, y=labels) (no pickled objects)") from None
    for key in (x_key, y_key):
        if key not in arrays:
            raise DataError(f"{str(p)!r} has no array {key!r} (it has {sorted(arrays)})",
                            fix=f"pass x_key= / y_key= naming the right arrays, e.g. x_key={min(arrays)!r}")
    x, where = arrays[x_key], f"{p.name}[{x_key!r}]"
    names = class_names or ([str(c) for c in arrays["class_names"].tolist()] if "class_names" in arrays else None)
    y, names = _labels(arrays[y_key], f"{p.name}[{y_key!r}]", names)
    if len(x) != len(y):
        raise DataError(f"{p.name}: {len(x)} inputs under {x_key!r} but {len(y)} labels under {y_key!r}",
                        fix="store exactly one label per input")
    if modality not in ("auto", "image", "tabular"):
        raise DataError(f"{p.name}: modality {modality!r} is unknown", fix="use 'auto', 'image' or 'tabular'")
    notes: list[str] = []
    if x.ndim == 2 and modality == "image":
        side = round(x.shape[1] ** 0.5)
        if side * side != x.shape[1]:
            raise DataError(f"{where}: {x.shape[1]} features are not a square grey image",
                            fix="store images as (N, C, H, W) or (N, H, W)")
        xt, notes = _images(x.reshape(len(x), side, side), where, "auto")
        notes.insert(0, f"flat rows reshaped to {side}x{side}")
        mod = "image"
    elif x.ndim == 2 and modality != "image":
        xt, mod = _scaled(x, where, notes), "tabular"
    elif x.ndim in (3, 4) and modality != "tabular":
        xt, notes = _images(x, where, layout)
        mod = "image"
    else:
        raise DataError(f"{where}: inputs of shape {x.shape} do not fit modality {modality!r}",
                        fix="store tabular data as (N, D) and images as (N, C, H, W), (N, H, W, C) or (N, H, W)")
    source = f"user npz file {p.name}" + (f" ({'; '.join(notes)})" if notes else "")
    return Dataset(x=xt, y=y, modality=mod, class_names=names, name=name or p.stem, source=source)


def _to_array(item: Any, where: str) -> np.ndarray:
    if isinstance(item, torch.Tensor):
        return item.detach().cpu().numpy()
    try:  # numpy arrays, PIL images (H, W) / (H, W, C), nested lists
        return np.asarray(item)
    except Exception as e:  # noqa: BLE001 - any conversion failure is a user data error
        raise DataError(f"{where}: cannot turn an input of type {type(item).__name__} into an array ({e})",
                        fix="make the dataset return tensors, numpy arrays or PIL images") from None


def from_torch_dataset(ds: Any, n: int | None = None, *, class_names: list[str] | None = None,
                       name: str = "torch-dataset", modality: str = "image") -> Dataset:
    """Read the first ``n`` items (all by default) of a map-style torch ``Dataset`` returning (input, label).

    Inputs may be tensors, numpy arrays or PIL images, (C, H, W) or channels-last; uint8 is divided by
    255. Class names come from ``class_names``, else the dataset's ``classes`` attribute (torchvision
    style), else "0".."C-1". This reads item by item: the torch Dataset API gives no batch access.
    """
    try:
        total = len(ds)
    except TypeError:
        raise DataError(f"{type(ds).__name__} has no len()", fix="pass a map-style torch Dataset (with "
                        "__len__ and __getitem__), or n= for the number of items to read") from None
    count = total if n is None else min(int(n), total)
    xs, ys = [], []
    for i in range(count):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"{type(ds).__name__}[{i}] is a {type(item).__name__}, not an (input, label) pair",
                            fix="make __getitem__ return (input, label)")
        xs.append(_to_array(item[0], f"{type(ds).__name__}[{i}]"))
        lab = item[1]
        ys.append(lab.item() if isinstance(lab, torch.Tensor) and lab.numel() == 1 else lab)
    where = type(ds).__name__
    if not xs:
        raise DataError(f"{where} is empty", fix="pass a dataset with at least one item")
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise DataError(f"{type(ds).__name__}: inputs have different shapes {sorted(shapes)[:3]}",
                        fix="resize or crop every input to one shape (e.g. a transform in the dataset)")
    names = class_names or ([str(c) for c in ds.classes] if isinstance(getattr(ds, "classes", None), list) else None)
    y, names = _labels(np.array(ys), where, names)
    x = np.stack(xs)
    if modality == "image":
        xt, notes = _images(x, where)
    else:
        notes = []
        xt = _scaled(x.reshape(len(x), -1), where, notes)
    src = f"user torch dataset {where} ({count} of {total} items" + ("; " + "; ".join(notes) if notes else "") + ")"
    return Dataset(x=xt, y=y, modality=modality, class_names=names, name=name, source=src)


def load_image_folder(root: str | Path, *, class_names: list[str] | None = None, name: str | None = None,
                      extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> Dataset:
    """Images laid out as ``root/<class_name>/<file>.png|jpg|...``; classes are the sorted folder names.

    All images must share one size (no resizing is done). Images are RGB, or grey when every file is
    grey; the file path relative to ``root`` is kept in ``attrs["file"]``.
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow ships with matplotlib
        raise DataError("reading an image folder needs Pillow", fix="pip install pillow") from None
    top = _existing(root, "image folder")
    if not top.is_dir():
        raise DataError(f"{str(top)!r} is not a folder", fix="pass a folder holding one sub-folder per class")
    dirs = sorted(d.name for d in top.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = list(class_names) if class_names else dirs
    if not classes:
        raise DataError(f"{str(top)!r} has no class sub-folders", fix="lay images out as root/<class_name>/<image>")
    missing = [c for c in classes if c not in dirs]
    if missing:
        raise DataError(f"{str(top)!r} has no sub-folder for classes {missing}", fix="create them or fix class_names")
    files: list[tuple[Path, int]] = []
    for ci, c in enumerate(classes):
        found = sorted(f for f in (top / c).iterdir() if f.is_file() and f.suffix.lower() in extensions)
        files += [(f, ci) for f in found]
    if not files:
        raise DataError(f"{str(top)!r}: no image files ({', '.join(extensions)}) in its class folders",
                        fix="put the images in root/<class_name>/")
    pics = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                pics.append(im.copy())
        except Exception as e:  # noqa: BLE001 - any decoder failure is a user data error
            raise DataError(f"cannot read image {str(f)!r} ({e})", fix="remove or re-save that file") from None
    sizes: dict[tuple[int, int], Path] = {}
    for (f, _), im in zip(files, pics):
        sizes.setdefault(im.size, f)
    if len(sizes) > 1:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise DataError(f"images in {str(top)!r} have different sizes: {f1.name} is {s1[0]}x{s1[1]}, "
                        f"{f2.name} is {s2[0]}x{s2[1]}", fix="resize every image to one size first")
    grey = all(im.mode in ("L", "1") for im in pics)
    arr = np.stack([np.asarray(im.convert("L" if grey else "RGB"), dtype=np.uint8) for im in pics])
    x = torch.from_numpy(arr.astype(np.float32) / 255.0)
    x = x[:, None] if grey else x.permute(0, 3, 1, 2).contiguous()
    return Dataset(x=x, y=torch.tensor([c for _, c in files]), modality="image", class_names=classes,
                   name=name or top.name, source=f"user image folder {top.name} ({len(files)} files, pixels / 255)",
                   attrs={"file": [str(f.relative_to(top)) for f, _ in files]})


def _text_dataset(rows: list[tuple[Any, Any, str]], p: Path, text_column: str, label_column: str,
                  class_names: list[str] | None, name: str | None, kind: str) -> Dataset:
    if not rows:
        raise DataError(f"{str(p)!r} has no data rows", fix="add at least one row with text and label")
    texts = []
    for text, _, where in rows:
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: {text_column!r} is empty or not a string ({text!r})",
                            fix="give every row a non-empty text, or drop that row")
        texts.append(text)
    labels = []
    for _, lab, where in rows:
        if lab is None or (isinstance(lab, str) and not lab.strip()) or isinstance(lab, (list, dict)):
            raise DataError(f"{where}: label {label_column!r} is missing or not a scalar ({lab!r})",
                            fix="give every row one class label (an integer or a string)")
        labels.append(str(lab).strip() if isinstance(lab, str) else lab)
    kinds = {type(v) for v in labels}
    raw = np.array([str(v) for v in labels]) if len(kinds) > 1 or str in kinds else np.array(labels)
    y, names = _labels(raw, p.name, class_names)
    return Dataset(x=texts, y=y, modality="text", class_names=names, name=name or p.stem,
                   source=f"user {kind} file {p.name} ({len(texts)} rows)")


def load_csv(path: str | Path, *, text_column: str = "text", label_column: str = "label",
             class_names: list[str] | None = None, delimiter: str = ",", name: str | None = None) -> Dataset:
    """Text examples from a CSV file with a header row; integer labels kept, string labels sorted into ids."""
    p = _existing(path, "CSV file")
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            header = reader.fieldnames or []
            for col in (text_column, label_column):
                if col not in header:
                    raise DataError(f"{p.name} has no column {col!r} (columns: {header})",
                                    fix="pass text_column= / label_column= naming the right columns")
            rows = [(r[text_column], r[label_column], f"{p.name} line {i + 2}") for i, r in enumerate(reader)]
    except UnicodeDecodeError:
        raise DataError(f"{p.name} is not UTF-8 text", fix="save the CSV as UTF-8") from None
    except csv.Error as e:
        raise DataError(f"{p.name} is not valid CSV ({e})", fix="check quoting and the delimiter") from None
    return _text_dataset(rows, p, text_column, label_column, class_names, name, "CSV")


def load_jsonl(path: str | Path, *, text_column: str = "text", label_column: str = "label",
               class_names: list[str] | None = None, name: str | None = None) -> Dataset:
    """Text examples from a JSON-lines file, one object per line with a text and a label field."""
    p = _existing(path, "JSONL file")
    rows = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{p.name} is not UTF-8 text", fix="save the file as UTF-8") from None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p.name} line {i + 1} is not valid JSON ({e.msg})",
                            fix='write one JSON object per line, e.g. {"text": "...", "label": 1}') from None
        if not isinstance(obj, dict) or text_column not in obj or label_column not in obj:
            keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise DataError(f"{p.name} line {i + 1} lacks {text_column!r} or {label_column!r} (has {keys})",
                            fix="pass text_column= / label_column= naming the right fields")
        rows.append((obj[text_column], obj[label_column], f"{p.name} line {i + 1}"))
    return _text_dataset(rows, p, text_column, label_column, class_names, name, "JSONL")
