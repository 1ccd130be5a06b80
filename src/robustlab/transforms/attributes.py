"""Exact attribute edits of ShapeWorld images: background complexity, object size, position, rotation.

From "ImageNet-E: Benchmarking Neural Network Robustness via Attribute Editing" (Li et al., CVPR 2023).
ImageNet-E removes the object (inpainting), then changes one attribute and pastes the object back
through its mask. On ShapeWorld every attribute is known and the renderer is a pure function of them, so
the edit is exact: change one attribute, re-render; nothing else moves.

Edits (``attribute``) and their levels (severity 1..5; 0 is the identity, fractions interpolate):

==============  ===========================================  ==========================================
attribute       level table (severity 0..5)                  what changes
==============  ===========================================  ==========================================
``background``  noise amplitude 0, .08, .16, .24, .32, .40    band-limited noise (2..8 cycles / image)
                                                              added to the background only, blended
                                                              under the shape mask (ImageNet-E's
                                                              complexity guidance, CPU stand-in)
``size``        scale 1, .9, .8, .7, .6, .45                  circumradius, around the shape centre
``position``    shift 0, .05, .10, .15, .20, .25 (of side)    centre moved in a seeded random direction
``rotation``    angle 0, 15, 30, 45, 60, 75 degrees           added rotation (clockwise; no-op on
                                                              circles and rings)
==============  ===========================================  ==========================================

Differences from the paper: no inpainting or diffusion (the background is known exactly); background
complexity is raised by additive band-limited noise of amplitude λ, not by DDPM guidance on
``C(x) = mean |FFT2(x)|`` (the same ``C`` is measured by :func:`complexity`); size is a relative scale
around the shape's own centre (the paper rescales around the box centre to a target object-pixel rate,
:func:`object_rate` measures that rate); a position shift that would push the centre out of
``[0.1, 0.9]`` goes the opposite way along that axis instead.

Usage: ``edit_dataset(ds, "size", 3)`` on a ShapeWorld :class:`Dataset`; or the registered transforms
``edit_background`` / ``edit_size`` / ``edit_position`` / ``edit_rotation``, which need the shard's
attributes: ``probe.evaluate(..., attrs=shard.attrs)`` (the runner must pass them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.probe import Transform
from robustlab.core.registry import register
from robustlab.core.rng import torch_generator
from robustlab.data.base import Dataset
from robustlab.data.shapeworld import ATTRIBUTES, ShapeWorld
from robustlab.transforms._common import check_generator, check_severity, interpolate

__all__ = [
    "EDITS",
    "LEVELS",
    "AttributeEdit",
    "EditBackground",
    "EditPosition",
    "EditRotation",
    "EditSize",
    "band_noise",
    "complexity",
    "level_value",
    "edit_attrs",
    "edit_dataset",
    "edit_images",
    "object_rate",
    "world_of",
]

#: severity 0..5 -> edit parameter (0 is the identity)
LEVELS: dict[str, tuple[float, ...]] = {
    "background": (0.0, 0.08, 0.16, 0.24, 0.32, 0.40),  # noise amplitude (RMS per channel)
    "size": (1.0, 0.9, 0.8, 0.7, 0.6, 0.45),  # circumradius scale factor
    "position": (0.0, 0.05, 0.10, 0.15, 0.20, 0.25),  # centre shift, fraction of the image side
    "rotation": (0.0, 15.0, 30.0, 45.0, 60.0, 75.0),  # added rotation in degrees
}
EDITS: tuple[str, ...] = tuple(LEVELS)
NOISE_BAND: tuple[float, float] = (2.0, 8.0)  # cycles per image side kept by the background noise
_CENTRE_BOX = (0.1, 0.9)


def _check_attribute(attribute: str) -> str:
    if attribute not in LEVELS:
        raise ConfigError(f"unknown attribute edit {attribute!r}", fix=f"use one of {list(EDITS)}")
    return attribute


def level_value(attribute: str, severity: float) -> float:
    """The edit parameter of ``attribute`` at ``severity`` in [0, 5] (table above, linear in between)."""
    return interpolate(LEVELS[_check_attribute(attribute)], check_severity(severity, f"edit_{attribute}"))


def world_of(ds: Dataset, world: ShapeWorld | None = None) -> ShapeWorld:
    """The :class:`ShapeWorld` that renders ``ds`` (same image side and classes), checking its attrs."""
    missing = [k for k in ATTRIBUTES if k not in ds.attrs]
    if missing or not isinstance(ds.x, torch.Tensor):
        raise DataError(f"dataset {ds.name!r} has no ShapeWorld attributes (missing {missing[:4]})",
                        fix="attribute edits need a ShapeWorld dataset, e.g. load_dataset('shapeworld')")
    return world or ShapeWorld(size=int(ds.x.shape[-1]), classes=tuple(ds.class_names))


def complexity(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-E's background complexity ``C(x) = mean |FFT2(x)|`` per image: (N, C, H, W) -> (N,)."""
    return torch.fft.fft2(x.float()).abs().mean(dim=(1, 2, 3))


def object_rate(world: ShapeWorld, attrs: dict[str, Any]) -> torch.Tensor:
    """Object-pixel rate (N,): the share of the image the shape covers (ImageNet-E's size measure)."""
    return world.mask(attrs).mean(dim=(1, 2, 3))


def band_noise(n: int, channels: int, side: int, generator: torch.Generator,
               band: tuple[float, float] = NOISE_BAND) -> torch.Tensor:
    """Zero-mean noise (n, channels, side, side) with unit RMS per map, radial frequencies in ``band``.

    Args:
        band: kept radial frequencies (low, high) in cycles per image side.
    """
    white = torch.randn(n, channels, side, side, generator=check_generator(generator, "band_noise"))
    f = torch.fft.fftfreq(side) * side
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    keep = ((radius >= band[0]) & (radius <= band[1])).float()
    noise = torch.fft.ifft2(torch.fft.fft2(white) * keep).real
    return noise / noise.pow(2).mean(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12)


def edit_attrs(world: ShapeWorld, attrs: dict[str, Any], attribute: str, severity: float,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The attributes after a geometric edit (size / position / rotation); background: unchanged copy."""
    value = level_value(attribute, severity)
    check_generator(generator, f"edit_{attribute}")
    n = len(attrs["shape"])
    if attribute == "position":  # the direction is drawn even at level 0: same draws at every level
        theta = 2 * math.pi * torch.rand(n, generator=generator)
        out = {}
        for key, step in (("cx", theta.cos()), ("cy", theta.sin())):
            c = torch.as_tensor(attrs[key], dtype=torch.float32)
            moved = c + value * step
            outside = (moved < _CENTRE_BOX[0]) | (moved > _CENTRE_BOX[1])
            out[key] = torch.where(outside, c - value * step, moved) if value else c
        return world.edit(attrs, **out)
    if attribute == "size":
        return world.edit(attrs, size=torch.as_tensor(attrs["size"], dtype=torch.float32) * value)
    if attribute == "rotation":
        rot = torch.as_tensor(attrs["rotation"], dtype=torch.float32)
        return world.edit(attrs, rotation=rot + math.radians(value) if value else rot)
    return world.edit(attrs)


def edit_images(world: ShapeWorld, attrs: dict[str, Any], attribute: str, severity: float,
                generator: torch.Generator) -> torch.Tensor:
    """Images (N, 3, S, S) with one attribute edited; severity 0 gives ``world.render(attrs)`` bitwise.

    The background edit adds ``λ · band_noise`` to ``world.background_image`` (clipped to [0, 1]) and
    blends the shape over it with its coverage mask, so fully covered shape pixels are unchanged.
    """
    _check_attribute(attribute)
    if attribute != "background":
        return world.render(edit_attrs(world, attrs, attribute, severity, generator))
    lam = level_value(attribute, severity)
    noise = band_noise(len(attrs["shape"]), 3, world.size, check_generator(generator, "edit_background"))
    if lam == 0:
        return world.render(attrs)
    bg = (world.background_image(attrs) + lam * noise).clamp_(0.0, 1.0)
    alpha = world.mask(attrs).expand_as(bg)
    color = torch.as_tensor(attrs["color"], dtype=torch.float32)[:, :, None, None].expand_as(bg)
    return bg.lerp_(color, alpha).clamp_(0.0, 1.0)


def edit_dataset(ds: Dataset, attribute: str, severity: float, *, seed: int = 0,
                 world: ShapeWorld | None = None) -> Dataset:
    """A copy of the ShapeWorld dataset ``ds`` with one attribute edited (labels, ids kept).

    Args:
        ds: a ShapeWorld dataset (its ``attrs`` hold every scene attribute).
        attribute: one of ``EDITS``.
        severity: level in [0, 5] (see ``LEVELS``).
        seed: seeds the random parts (noise, shift direction); same seed -> same images.
        world: the renderer (default: inferred from ``ds``'s image side and classes).
    """
    world = world_of(ds, world)
    g = torch_generator(seed)
    if attribute == "background":
        x, attrs = edit_images(world, ds.attrs, attribute, severity, g), dict(ds.attrs)
    else:
        new = edit_attrs(world, ds.attrs, attribute, severity, g)
        x = world.render(new)
        attrs = dict(ds.attrs) | new
    attrs["edit"] = [f"{attribute}@{severity:g}"] * len(ds)
    return Dataset(x=x, y=ds.y.clone(), modality=ds.modality, class_names=list(ds.class_names),
                   name=f"{ds.name}+{attribute}", source=ds.source, ids=ds.ids.clone(), attrs=attrs)


@dataclass
class AttributeEdit(Transform):
    """One ShapeWorld attribute edit as a graded transform (ImageNet-E, Li et al. 2023).

    It needs the scene attributes of the batch (``attrs=`` as in ``Dataset.attrs``), since an image alone
    does not say where the shape is; the runner passes ``shard.attrs``. The given images must be the
    rendering of those attributes (checked), else :class:`DataError`.

    Args:
        attribute: one of ``EDITS``.
        world: the renderer; default ``ShapeWorld(size=<image side>)`` with the default classes.
    """

    group = "attribute"

    attribute: str = "background"
    world: ShapeWorld | None = None
    default_settings: ClassVar[tuple[float, ...]] = (1, 2, 3, 4, 5)
    modality: ClassVar[str | None] = "image"
    needs_attrs: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_attribute(self.attribute)

    def __call__(self, x: Any, *, severity: float, generator: torch.Generator,
                 attrs: dict[str, Any] | None = None) -> torch.Tensor:
        name = f"edit_{self.attribute}"
        if attrs is None:
            raise ConfigError(f"{name} needs the ShapeWorld attributes of the batch (attrs=None)",
                              fix="call it with attrs=dataset.attrs, or run it on a ShapeWorld dataset with a "
                                  "runner that passes shard.attrs to probe.evaluate")
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or len(x) != len(attrs.get("shape", ())):
            raise DataError(f"{name}: images {getattr(x, 'shape', type(x))} do not match attrs",
                            fix="pass (N, 3, S, S) images and the attrs of the same N ShapeWorld images")
        world = self.world or ShapeWorld(size=int(x.shape[-1]))
        if not torch.allclose(world.render(attrs).to(x.device), x.float(), atol=1e-4):
            raise DataError(f"{name}: the images are not the rendering of the given attrs",
                            fix="edit clean ShapeWorld images with their own attrs (and the world that drew them)")
        return edit_images(world, attrs, self.attribute, severity, generator).to(device=x.device, dtype=x.dtype)


@register("transform", "edit_background")
@dataclass
class EditBackground(AttributeEdit):
    """Background-complexity edit (band-limited noise of amplitude ``LEVELS["background"]``) under the mask."""

    attribute: str = "background"


@register("transform", "edit_size")
@dataclass
class EditSize(AttributeEdit):
    """Object-size edit: circumradius times ``LEVELS["size"]``, around the shape centre."""

    attribute: str = "size"


@register("transform", "edit_position")
@dataclass
class EditPosition(AttributeEdit):
    """Position edit: centre shifted by ``LEVELS["position"]`` of the side in a seeded random direction."""

    attribute: str = "position"


@register("transform", "edit_rotation")
@dataclass
class EditRotation(AttributeEdit):
    """Rotation edit: ``LEVELS["rotation"]`` degrees added to the shape's rotation."""

    attribute: str = "rotation"
