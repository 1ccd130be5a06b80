"""Datasets robustlab ships or generates (no downloads) and loaders for the user's own data.

``load_dataset(name, split=..., n=..., seed=...)`` is the one entry point the CLI and suites use:

==================  =============================================================================
name                what
==================  =============================================================================
``digits``          scikit-learn's bundled 8x8 digits, (N, 1, 8, 8) in [0, 1], fixed stratified split
``shapeworld``      robustlab's procedural shapes world, RGB 32x32 by default, every attribute known
``text-sentiment``  robustlab's synthetic template-generated binary sentiment reviews
``lms``, ``ms``     Shah et al.'s LMS-k / MS-(5,7) slab data (tabular; options ``k``, ``dim``, margins ...)
``digit-dominoes``  digit 0/1 stacked on digit 7/9, (N, 1, 16, 8), each half fully predictive
``npz``             the user's ``.npz`` (``path=``; options ``x_key``, ``y_key``, ``layout``, ...)
``image_folder``    the user's ``root/<class>/*.png|jpg`` (``path=``)
``csv``, ``jsonl``  the user's text table (``path=``; options ``text_column``, ``label_column``)
==================  =============================================================================
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

from robustlab.core.errors import ConfigError, DataError
from robustlab.data._common import SPLITS, seeded_subset
from robustlab.data.base import Dataset
from robustlab.data.digits import load_digits
from robustlab.data.loaders import from_torch_dataset, load_csv, load_image_folder, load_jsonl, load_npz
from robustlab.data.shapeworld import ALL_SHAPES, BACKGROUNDS, SHAPES, ShapeWorld, load_shapeworld
from robustlab.data.simplicity import blocks, load_digit_dominoes, load_lms, load_ms
from robustlab.data.text import load_text_sentiment

__all__ = [
    "ALL_SHAPES", "BACKGROUNDS", "DATASETS", "SHAPES", "Dataset", "ShapeWorld", "from_torch_dataset", "load_csv",
    "load_dataset", "load_digits", "load_image_folder", "load_jsonl", "load_npz", "load_shapeworld",
    "load_text_sentiment", "seeded_subset",
    "blocks", "load_digit_dominoes", "load_lms", "load_ms",
]

BUILTIN = ("digits", "shapeworld", "text-sentiment", "lms", "ms", "digit-dominoes")
GENERATED = {"lms": load_lms, "ms": load_ms, "digit-dominoes": load_digit_dominoes}  # simplicity bias (paper 30)
USER = {"npz": (load_npz, ".npz"), "image_folder": (load_image_folder, ""), "csv": (load_csv, ".csv"),
        "jsonl": (load_jsonl, ".jsonl")}
DATASETS = BUILTIN + tuple(USER)


def _user_path(name: str, path: str | Path | None, split: str, ext: str) -> Path:
    """The file / folder to read; a folder holding ``<split><ext>`` (or ``<split>/`` for images) is resolved."""
    if path is None:
        raise DataError(f"dataset {name!r} reads your own data but no path was given",
                        fix=f"pass path=... (e.g. data: {{name: {name}, path: my_data{ext or '/'}}})")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{name} path {str(p)!r} does not exist", fix="check the path; relative paths start at "
                        "the current working directory")
    if p.is_dir() and ext and (p / f"{split}{ext}").is_file():
        return p / f"{split}{ext}"
    if p.is_dir() and not ext and (p / split).is_dir():
        inner = list((p / split).iterdir())
        if inner and all(c.is_dir() for c in inner if not c.name.startswith(".")):
            return p / split  # root/<split>/<class>/... layout
    if p.is_dir() and ext:
        raise DataError(f"{name} path {str(p)!r} is a folder without {split}{ext}",
                        fix=f"point path at the {ext} file, or put {split}{ext} in that folder")
    return p


def load_dataset(name: str, *, split: str = "test", n: int | None = None, seed: int = 0,
                 path: str | Path | None = None, **options: Any) -> Dataset:
    """Load dataset ``name`` (see the module table); ``n`` keeps a seeded subset, same n + seed -> same examples.

    Args:
        name: one of ``DATASETS``.
        split: "train", "val" or "test". For user data, a folder given as ``path`` holding
            ``<split>.npz`` / ``.csv`` / ``.jsonl`` (or ``<split>/<class>/`` images) resolves to it;
            a file path is read as is.
        n: number of examples (generated datasets draw exactly ``n``; others keep the first ``n`` of a
            seeded permutation, in their original order).
        seed: seed of generation / subset.
        path: the file or folder of user data.
        **options: passed to the loader (e.g. ``size=64`` or ``background="noise"`` for shapeworld,
            ``x_key="images"`` for npz, ``text_column="review"`` for csv / jsonl).
    """
    key = str(name).strip().lower().replace("_", "-")
    key = {"image-folder": "image_folder", "text": "text-sentiment", "sentiment": "text-sentiment"}.get(key, key)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} for dataset {name!r}", fix=f"use one of {list(SPLITS)}")
    if key == "digits":
        _no_options(name, options)
        return load_digits(split, n=n, seed=seed)
    if key == "shapeworld":
        return load_shapeworld(split, n=n, seed=seed, **options)
    if key == "text-sentiment":
        _no_options(name, options)
        return load_text_sentiment(split, n=n, seed=seed)
    if key in GENERATED:
        try:
            inspect.signature(GENERATED[key]).bind(split, n, seed, **options)
        except TypeError as e:
            raise ConfigError(f"dataset {name!r}: bad option ({e})",
                              fix=f"see help(robustlab.data.{GENERATED[key].__name__}) for its options") from None
        return GENERATED[key](split, n=n, seed=seed, **options)
    if key in USER:
        loader, ext = USER[key]
        try:
            inspect.signature(loader).bind(path, **options)
        except TypeError as e:
            raise ConfigError(f"dataset {name!r}: bad option ({e})",
                              fix=f"see help(robustlab.data.{loader.__name__}) for its options") from None
        return seeded_subset(loader(_user_path(key, path, split, ext), **options), n, seed)
    close = difflib.get_close_matches(key, DATASETS, n=3)
    raise ConfigError(f"unknown dataset {name!r}" + (f" (did you mean {close}?)" if close else ""),
                      fix=f"use one of {list(DATASETS)}")


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise ConfigError(f"dataset {name!r} takes no options (got {sorted(options)})",
                          fix="remove them; only split, n and seed apply")

from robustlab.data.scenes import SceneDataset, SceneWorld, load_scenes  # noqa: E402 - detection scenes (paper 13)

__all__ += ["SceneDataset", "SceneWorld", "load_scenes"]
