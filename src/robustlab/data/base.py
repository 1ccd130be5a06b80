"""``Dataset``: inputs, integer labels, stable example ids and known attributes, in one object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from robustlab.core.errors import DataError

__all__ = ["MODALITIES", "Dataset"]

MODALITIES = ("image", "tabular", "text")


@dataclass
class Dataset:
    """A labelled dataset in the raw input domain.

    Attributes:
        x: a float tensor ``(N, C, H, W)`` / ``(N, D)`` in [0, 1], or a list of ``N`` strings (text).
        y: ``(N,)`` int64 labels in ``[0, num_classes)``.
        ids: ``(N,)`` int64 stable example ids (kept through shards and subsets).
        modality: ``"image"``, ``"tabular"`` or ``"text"``.
        class_names: one name per class.
        name: short name; ``source`` says honestly where the data comes from.
        attrs: per-example known attributes (e.g. ShapeWorld's size, colour, background), each a
            tensor or list of length N.
    """

    x: Any
    y: torch.Tensor
    modality: str = "image"
    class_names: list[str] = field(default_factory=list)
    name: str = "data"
    source: str = ""
    ids: torch.Tensor | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise DataError(f"dataset {self.name!r}: unknown modality {self.modality!r}",
                            fix=f"use one of {', '.join(MODALITIES)}")
        if isinstance(self.x, (str, bytes)):
            raise DataError(f"dataset {self.name!r}: x is a single string, not a list of inputs",
                            fix="pass a list of strings, one per example")
        n = len(self.x)
        y = torch.as_tensor(self.y).reshape(-1)
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise DataError(f"dataset {self.name!r} has non-integer labels",
                            fix="give integer class indices 0..num_classes-1")
        self.y = y.long()
        if len(self.y) != n:
            raise DataError(f"dataset {self.name!r} has {n} inputs but {len(self.y)} labels",
                            fix="give exactly one integer label per input")
        if self.ids is None:
            self.ids = torch.arange(n, dtype=torch.long)
        self.ids = torch.as_tensor(self.ids, dtype=torch.long).reshape(-1)
        if len(self.ids) != n or len(torch.unique(self.ids)) != n:
            raise DataError(f"dataset {self.name!r} needs {n} distinct ids, got {len(self.ids)} "
                            f"({len(torch.unique(self.ids))} distinct)", fix="give one unique id per example")
        for key, values in self.attrs.items():
            if len(values) != n:
                raise DataError(f"dataset {self.name!r}: attribute {key!r} has {len(values)} values for {n} "
                                "examples", fix="give one attribute value per example")
        if self.modality in ("image", "tabular"):
            if not isinstance(self.x, torch.Tensor) or not self.x.is_floating_point():
                raise DataError(f"dataset {self.name!r}: {self.modality} inputs must be a float tensor",
                                fix="convert to float32 in [0, 1] (divide uint8 pixels by 255)")
            if self.modality == "image" and self.x.dim() != 4:
                raise DataError(f"dataset {self.name!r}: images must have shape (N, C, H, W), got "
                                f"{tuple(self.x.shape)}", fix="add the channel axis, e.g. x[:, None] for grey images")
            if n and not bool(torch.isfinite(self.x).all()):
                raise DataError(f"dataset {self.name!r}: inputs contain NaN or infinite values",
                                fix="remove or repair those examples before loading")
            if n and (float(self.x.min()) < 0 or float(self.x.max()) > 1):
                raise DataError(f"dataset {self.name!r}: inputs range over [{float(self.x.min()):.3g}, "
                                f"{float(self.x.max()):.3g}], not [0, 1]",
                                fix="pass raw inputs scaled to [0, 1]; normalization belongs inside the model")
        elif self.modality == "text":
            if not all(isinstance(s, str) for s in self.x):
                raise DataError(f"dataset {self.name!r}: text inputs must be strings",
                                fix="pass a list of str, one per example (decode bytes first)")
            self.x = list(self.x)
        if n and int(self.y.min()) < 0:
            raise DataError(f"dataset {self.name!r} has negative labels", fix="map labels to 0..num_classes-1")
        if not self.class_names:
            self.class_names = [str(i) for i in range(int(self.y.max()) + 1 if n else 0)]
        elif n and int(self.y.max()) >= len(self.class_names):
            raise DataError(f"dataset {self.name!r} has label {int(self.y.max())} but only "
                            f"{len(self.class_names)} class names",
                            fix="give one name per class, in label order")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, index: Any) -> Dataset:
        """The examples at ``index`` (a slice, an index tensor or a boolean mask), ids kept."""
        if isinstance(index, slice):  # via range: torch slicing rejects negative steps
            idx = torch.tensor(range(len(self))[index], dtype=torch.long)
        else:
            idx = torch.arange(len(self))[index] if not isinstance(index, torch.Tensor) else index
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        idx = idx.reshape(-1).long().cpu()  # a single int index gives a one-example dataset
        il = idx.tolist()
        x = self.x[idx] if isinstance(self.x, torch.Tensor) else [self.x[i] for i in il]
        attrs = {k: (v[idx] if isinstance(v, torch.Tensor) else [v[i] for i in il]) for k, v in self.attrs.items()}
        return Dataset(x=x, y=self.y[idx], modality=self.modality, class_names=list(self.class_names),
                       name=self.name, source=self.source, ids=self.ids[idx], attrs=attrs)

    def shards(self, size: int) -> list[Dataset]:
        """Consecutive shards of at most ``size`` examples."""
        if int(size) < 1:
            raise DataError(f"shard size must be >= 1, got {size}", fix="pass a positive shard size")
        return [self.subset(slice(i, i + size)) for i in range(0, len(self), size)]

    def __repr__(self) -> str:
        shape = tuple(self.x.shape) if isinstance(self.x, torch.Tensor) else (len(self.x),)
        return (f"Dataset(name={self.name!r}, modality={self.modality!r}, x={shape}, "
                f"classes={self.num_classes})")
