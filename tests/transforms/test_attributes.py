"""ShapeWorld attribute edits (ImageNet-E, Li et al. 2023): exact, deterministic, graded, one attribute at a time."""

import math

import pytest
import torch

from robustlab.core import registry
from robustlab.core.errors import ConfigError, DataError
from robustlab.core.model import CallableModel
from robustlab.core.rng import torch_generator
from robustlab.data import load_dataset
from robustlab.data.shapeworld import ShapeWorld
from robustlab.transforms.attributes import (
    EDITS,
    LEVELS,
    AttributeEdit,
    EditSize,
    band_noise,
    complexity,
    edit_dataset,
    object_rate,
    world_of,
)


@pytest.fixture(scope="module")
def ds():
    return load_dataset("shapeworld", split="test", n=48, seed=3)


@pytest.mark.parametrize("attribute", EDITS)
def test_severity_zero_is_the_identity_bitwise(ds, attribute):
    out = edit_dataset(ds, attribute, 0, seed=1)
    assert torch.equal(out.x, ds.x)
    assert torch.equal(out.y, ds.y) and torch.equal(out.ids, ds.ids)


@pytest.mark.parametrize("attribute", EDITS)
def test_edits_are_deterministic_and_change_the_images(ds, attribute):
    a, b = edit_dataset(ds, attribute, 3, seed=5), edit_dataset(ds, attribute, 3, seed=5)
    assert torch.equal(a.x, b.x)
    assert a.x.shape == ds.x.shape and float(a.x.min()) >= 0 and float(a.x.max()) <= 1
    changed = (a.x - ds.x).abs().amax(dim=(1, 2, 3)).gt(0.05)
    if attribute == "rotation":  # circles and rings look the same at any rotation
        symmetric = torch.isin(ds.y, torch.tensor([ds.class_names.index("circle"), ds.class_names.index("ring")]))
        assert torch.equal(changed, ~symmetric)
    else:
        assert bool(changed.all())
    if attribute in ("background", "position"):  # seeded parts: another seed, other images
        assert not torch.equal(a.x, edit_dataset(ds, attribute, 3, seed=6).x)


@pytest.mark.parametrize("attribute", ["size", "position", "rotation"])
def test_geometric_edits_leave_pixels_outside_both_masks_unchanged(ds, attribute):
    world = world_of(ds)
    out = edit_dataset(ds, attribute, 4, seed=2)
    outside = (world.mask(ds.attrs) == 0) & (world.mask(out.attrs) == 0)
    outside = outside.expand_as(ds.x)
    assert outside.float().mean() > 0.5
    assert torch.equal(out.x[outside], ds.x[outside])
    for key in ("color", "background", "bg_color", "bg_color2", "shape", "texture_seed"):
        assert torch.equal(out.attrs[key], ds.attrs[key])


def test_background_edit_keeps_the_shape_pixels_and_the_geometry(ds):
    world = world_of(ds)
    out = edit_dataset(ds, "background", 5, seed=0)
    inside = (world.mask(ds.attrs) == 1).expand_as(ds.x)
    assert inside.any()
    assert torch.equal(out.x[inside], ds.x[inside])
    assert torch.equal(out.attrs["size"], ds.attrs["size"]) and torch.equal(out.attrs["cx"], ds.attrs["cx"])
    assert (out.x[~inside] - ds.x[~inside]).abs().mean() > 0.1


def test_levels_are_monotone_in_effect(ds):
    world = world_of(ds)
    comp = [float(complexity(edit_dataset(ds, "background", s).x).mean()) for s in range(6)]
    assert all(b > a for a, b in zip(comp, comp[1:])), comp
    rate = [float(object_rate(world, edit_dataset(ds, "size", s).attrs).mean()) for s in range(6)]
    assert all(b < a for a, b in zip(rate, rate[1:])), rate
    for s in range(6):
        moved = edit_dataset(ds, "position", s, seed=4).attrs
        shift = torch.hypot(moved["cx"] - ds.attrs["cx"], moved["cy"] - ds.attrs["cy"])
        torch.testing.assert_close(shift, torch.full_like(shift, LEVELS["position"][s]), atol=1e-5, rtol=0)
        rot = edit_dataset(ds, "rotation", s).attrs["rotation"] - ds.attrs["rotation"]
        torch.testing.assert_close(rot, torch.full_like(rot, math.radians(LEVELS["rotation"][s])), atol=1e-5, rtol=0)
    torch.testing.assert_close(edit_dataset(ds, "size", 5).attrs["size"], ds.attrs["size"] * 0.45)


def test_band_noise_is_band_limited_with_unit_rms():
    n = band_noise(4, 3, 32, torch_generator(0), band=(2.0, 8.0))
    torch.testing.assert_close(n.pow(2).mean(dim=(2, 3)), torch.ones(4, 3))
    f = torch.fft.fftfreq(32) * 32
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    spec = torch.fft.fft2(n).abs()
    assert float(spec[..., (radius < 2) | (radius > 8)].max()) < 1e-3
    assert float(n.mean(dim=(2, 3)).abs().max()) < 1e-5


def test_transform_needs_matching_attrs(ds):
    edit = registry.create("edit_size")
    assert isinstance(edit, EditSize) and edit.attribute == "size"
    assert {"edit_background", "edit_position", "edit_rotation"} <= set(registry.names("transform"))
    with pytest.raises(ConfigError, match="attrs"):
        edit(ds.x, severity=2, generator=torch_generator(0))
    with pytest.raises(DataError):
        edit(torch.rand_like(ds.x), severity=2, generator=torch_generator(0), attrs=ds.attrs)
    out = edit(ds.x, severity=2, generator=torch_generator(0), attrs=ds.attrs)
    assert torch.equal(out, edit_dataset(ds, "size", 2).x)
    with pytest.raises(ConfigError):
        AttributeEdit(attribute="colour")
    with pytest.raises(ConfigError):
        edit(ds.x, severity=7, generator=torch_generator(0), attrs=ds.attrs)


def test_transform_evaluate_scores_the_edited_images(ds):
    edit = registry.create("edit_background", world=ShapeWorld(size=32))
    model = CallableModel(lambda x: torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], 1), num_classes=2)
    y = torch.zeros(len(ds), dtype=torch.long)
    out = edit.evaluate(model, ds.x, y, 3, clean_pred=y, generator=torch_generator(1), attrs=ds.attrs)
    assert out.scores.shape == (len(ds), 2) and bool(out.attempted.all())
    assert torch.equal(out.x_probed, edit_dataset(ds, "background", 3, seed=1).x)
    with pytest.raises(ConfigError):
        edit.evaluate(model, ds.x, y, 3, clean_pred=y, generator=torch_generator(1))


def test_non_shapeworld_data_is_refused():
    digits = load_dataset("digits", n=8)
    with pytest.raises(DataError, match="ShapeWorld"):
        edit_dataset(digits, "size", 1)
