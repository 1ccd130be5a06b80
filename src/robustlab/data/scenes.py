"""ShapeWorld scenes: several shapes per image with exact boxes and labels, for object detection.

Built for the detection setting of "COCO-O: A Benchmark for Object Detectors under Natural Distribution
Shifts" (Mao et al., ICCV 2023): COCO images hold several objects with boxes; a ShapeWorld scene holds
1 .. ``max_objects`` shapes of the 8 ShapeWorld classes over one ShapeWorld background, every box known
exactly. Objects reuse :class:`~robustlab.data.shapeworld.ShapeWorld`'s sampler, signed-distance
renderer and box geometry: each object slot is one ShapeWorld attribute set that shares the image's
background (so the contrast rule holds against it); slots are composited in order (later on top).

Placement is rejection sampling, vectorised over images: for each slot, ``candidates`` positions are
drawn inside the image and the first whose box overlaps every earlier box by at most ``max_overlap``
(intersection over the smaller box) is kept; a slot with no valid candidate is dropped, so an image
may hold fewer objects than drawn (``attrs["num_objects"]`` is the real count, always >= 1).

Boxes are ``(x1, y1, x2, y2)`` in pixels (ShapeWorld's convention: the half-pixel anti-aliased edge
included, clipped to the image), labels index ``SHAPES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.data._shapeworld_draw import REACH
from robustlab.data.shapeworld import SHAPES, ShapeWorld

__all__ = ["SceneDataset", "SceneWorld", "load_scenes"]

SOURCE = "ShapeWorld scenes: robustlab's procedural multi-object generator (seeded, no download)"
_SPLIT_SIZES = {"train": 4000, "val": 500, "test": 500}


@dataclass
class SceneDataset:
    """Detection data: images with a variable number of boxed, labelled objects each.

    Attributes:
        x: images ``(N, 3, H, W)`` float in [0, 1].
        boxes: ``N`` float tensors ``(k_i, 4)``: x1, y1, x2, y2 in pixels.
        labels: ``N`` int64 tensors ``(k_i,)`` of class indices into ``class_names``.
        class_names: one name per class.
        name, source: short name and an honest statement of where the data comes from.
        attrs: per-image attributes, each of length N (e.g. ``num_objects``, ``background``, ``style``).
    """

    x: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    class_names: list[str] = field(default_factory=lambda: list(SHAPES))
    name: str = "scenes"
    source: str = SOURCE
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.dim() != 4 or not self.x.is_floating_point():
            raise DataError(f"scenes {self.name!r}: images must be a float tensor (N, C, H, W)",
                            fix="pass images as float32 in [0, 1] with shape (N, C, H, W)")
        n = len(self.x)
        if len(self.boxes) != n or len(self.labels) != n:
            raise DataError(f"scenes {self.name!r}: {n} images but {len(self.boxes)} box sets and "
                            f"{len(self.labels)} label sets", fix="give one boxes and one labels tensor per image")
        self.boxes = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in self.boxes]
        self.labels = [torch.as_tensor(lab, dtype=torch.long).reshape(-1) for lab in self.labels]
        k = len(self.class_names)
        for i, (b, lab) in enumerate(zip(self.boxes, self.labels)):
            if len(b) != len(lab):
                raise DataError(f"scenes {self.name!r}: image {i} has {len(b)} boxes but {len(lab)} labels",
                                fix="give one label per box")
            if len(lab) and (int(lab.min()) < 0 or int(lab.max()) >= k):
                raise DataError(f"scenes {self.name!r}: image {i} has labels outside 0..{k - 1}",
                                fix="labels index class_names")
            if len(b) and not bool((b[:, 2:] > b[:, :2]).all()):
                raise DataError(f"scenes {self.name!r}: image {i} has an empty box (x2 <= x1 or y2 <= y1)",
                                fix="boxes are (x1, y1, x2, y2) with x2 > x1 and y2 > y1")
        if n and (not bool(torch.isfinite(self.x).all()) or float(self.x.min()) < 0 or float(self.x.max()) > 1):
            raise DataError(f"scenes {self.name!r}: images must be finite and in [0, 1]",
                            fix="scale pixels to [0, 1]")
        for key, values in self.attrs.items():
            if len(values) != n:
                raise DataError(f"scenes {self.name!r}: attribute {key!r} has {len(values)} values for {n} images",
                                fix="give one attribute value per image")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_objects(self) -> int:
        """Total number of boxes over all images."""
        return sum(len(lab) for lab in self.labels)

    def subset(self, idx: Any) -> SceneDataset:
        """The images at ``idx`` (indices, a slice or a bool mask), boxes and attributes kept."""
        ids = torch.arange(len(self))[idx].reshape(-1).tolist()
        attrs = {k: (v[ids] if isinstance(v, torch.Tensor) else [v[i] for i in ids]) for k, v in self.attrs.items()}
        return SceneDataset(self.x[ids], [self.boxes[i] for i in ids], [self.labels[i] for i in ids],
                            list(self.class_names), self.name, self.source, attrs)

    def with_images(self, x: torch.Tensor, name: str | None = None, **attrs: Any) -> SceneDataset:
        """A copy with the images replaced (e.g. a styled copy; boxes and labels unchanged) and attrs added."""
        if tuple(x.shape[:1]) != (len(self),) or x.shape[-2:] != self.x.shape[-2:]:
            raise DataError(f"scenes {self.name!r}: new images {tuple(x.shape)} do not match {tuple(self.x.shape)}",
                            fix="transform the images without changing their number or size")
        return SceneDataset(x, list(self.boxes), list(self.labels), list(self.class_names), name or self.name,
                            self.source, {**self.attrs, **attrs})


@dataclass(frozen=True)
class SceneWorld:
    """Generator of multi-object ShapeWorld scenes (Mao et al. 2023's detection setting, small and procedural).

    Args:
        size: image side in pixels (64 by default).
        min_objects, max_objects: objects drawn per image, uniform in this range (before placement).
        size_range: object circumradius as a fraction of the image side (ShapeWorld's, smaller by default:
            .10 .. .18 of 64 px is a 13 .. 23 px object).
        max_overlap: largest intersection over the smaller box between two objects of an image.
        candidates: positions tried per object slot.
        classes, backgrounds: as in :class:`~robustlab.data.shapeworld.ShapeWorld`.

    Example:
        >>> ds = SceneWorld().generate(200, seed=0)
        >>> ds.x.shape, ds.boxes[0], ds.labels[0]
    """

    size: int = 64
    min_objects: int = 1
    max_objects: int = 4
    size_range: tuple[float, float] = (0.10, 0.18)
    max_overlap: float = 0.1
    candidates: int = 24
    classes: tuple[str, ...] = SHAPES
    backgrounds: tuple[str, ...] = ("solid", "gradient", "stripes", "checker", "noise")

    def __post_init__(self) -> None:
        if not 1 <= int(self.min_objects) <= int(self.max_objects):
            raise ConfigError(f"SceneWorld: objects range ({self.min_objects}, {self.max_objects}) is invalid",
                              fix="use 1 <= min_objects <= max_objects")
        if not 0.0 <= float(self.max_overlap) <= 1.0 or int(self.candidates) < 1:
            raise ConfigError(f"SceneWorld: max_overlap={self.max_overlap}, candidates={self.candidates}",
                              fix="use 0 <= max_overlap <= 1 and candidates >= 1")
        self.world  # noqa: B018 - validates size, classes, backgrounds and size_range now

    @property
    def world(self) -> ShapeWorld:
        return ShapeWorld(size=int(self.size), classes=tuple(self.classes), backgrounds=tuple(self.backgrounds),
                          size_range=tuple(self.size_range))

    def generate(self, n: int, seed: int = 0) -> SceneDataset:
        """``n`` scenes drawn from ``torch_generator(seed)`` (the same seed gives the same scenes)."""
        n = int(n)
        if n < 0:
            raise ConfigError(f"SceneWorld: n={n} is negative", fix="ask for n >= 0 scenes")
        world, g, slots = self.world, torch_generator(seed), int(self.max_objects)
        count = torch.randint(int(self.min_objects), slots + 1, (n,), generator=g)
        base = world.sample_attributes(n, g)
        shared = {k: base[k] for k in ("background", "bg_color", "bg_color2", "bg_angle", "bg_period", "bg_phase",
                                       "texture_seed")}
        image = world.background_image(base)
        reach_of = torch.tensor([REACH[c] for c in world.classes])
        boxes = torch.zeros(n, slots, 4)
        present = torch.zeros(n, slots, dtype=torch.bool)
        labels = torch.zeros(n, slots, dtype=torch.long)
        for k in range(slots):
            a = base if k == 0 else world.sample_attributes(n, g, **shared)
            free = (1 - 2 * reach_of[a["shape"]] * a["size"]).clamp_min(0)  # (n,)
            u = torch.rand(n, int(self.candidates), 2, generator=g)
            cand = 0.5 - free[:, None, None] / 2 + free[:, None, None] * u  # (n, C, 2)
            chosen = torch.full((n,), -1, dtype=torch.long)
            for c in range(int(self.candidates)):
                box = world.bbox({**a, "cx": cand[:, c, 0], "cy": cand[:, c, 1]})
                ok = (overlap_fraction(box[:, None], boxes[:, :k]) <= self.max_overlap).all(1) & (chosen < 0)
                chosen = torch.where(ok, torch.full_like(chosen, c), chosen)
            place = (k < count) & (chosen >= 0)
            pick = cand[torch.arange(n), chosen.clamp_min(0)]
            a = {**a, "cx": pick[:, 0], "cy": pick[:, 1]}
            a["bbox"] = world.bbox(a)
            idx = place.nonzero().flatten()  # render only the objects placed
            if idx.numel():
                sub = {key: a[key][idx] for key in a}
                alpha = world.mask(sub).expand(-1, 3, -1, -1)
                image[idx] = image[idx].lerp_(sub["color"][:, :, None, None].expand_as(alpha), alpha)
            boxes[:, k], present[:, k], labels[:, k] = a["bbox"] * place[:, None], place, a["shape"]
        return self._dataset(image.clamp_(0, 1), boxes, labels, present, base)

    def _dataset(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, present: torch.Tensor,
                 base: dict[str, torch.Tensor]) -> SceneDataset:
        counts = present.sum(1)
        flat_boxes, flat_labels = boxes[present], labels[present]
        box_list = list(torch.split(flat_boxes, counts.tolist()))
        label_list = list(torch.split(flat_labels, counts.tolist()))
        attrs = {"num_objects": counts, "background": base["background"].clone(),
                 "bg_color": base["bg_color"].clone(), "image_id": torch.arange(len(image))}
        return SceneDataset(image, box_list, label_list, list(self.classes), "shapeworld-scenes", SOURCE, attrs)


def overlap_fraction(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over the smaller box area of boxes ``a (..., 4)`` and ``b (..., 4)`` (broadcast)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0).prod(-1)
    return inter / torch.minimum(area_a, area_b).clamp_min(1e-9)


def load_scenes(split: str = "train", n: int | None = None, seed: int = 0, size: int = 64, *,
                world: SceneWorld | None = None) -> SceneDataset:
    """A split of ShapeWorld scenes; splits draw from seeds derived from (seed, "scenes", split), never shared.

    Args:
        split: "train" (4,000 scenes by default), "val" (500) or "test" (500).
        n: number of scenes (default by split).
        seed: base seed.
        size: image side (ignored when ``world`` is given).
        world: a configured :class:`SceneWorld`.
    """
    if split not in _SPLIT_SIZES:
        raise ConfigError(f"scenes: unknown split {split!r}", fix=f"use one of {list(_SPLIT_SIZES)}")
    world = world or SceneWorld(size=int(size))
    return world.generate(_SPLIT_SIZES[split] if n is None else int(n), derive_seed(seed, "scenes", split))

