"""ShapeWorld v1: determinism, shapes and ranges, recorded and settable attributes, exact edits."""

import math

import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.data.shapeworld import ALL_SHAPES, ATTRIBUTES, BACKGROUNDS, SHAPES, ShapeWorld, load_shapeworld


@pytest.fixture(scope="module")
def world():
    return ShapeWorld()


def test_same_seed_same_images_other_seed_other_images(world):
    a, b, c = world.generate(40, seed=3), world.generate(40, seed=3), world.generate(40, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert torch.equal(a.attrs["bbox"], b.attrs["bbox"])
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("n", [1, 7, 33])
def test_shapes_dtype_range(size, n):
    ds = ShapeWorld(size=size).generate(n, seed=1)
    assert ds.x.shape == (n, 3, size, size) and ds.x.dtype == torch.float32
    assert float(ds.x.min()) >= 0 and float(ds.x.max()) <= 1
    assert ds.y.shape == (n,) and ds.num_classes == len(SHAPES)
    for k in ATTRIBUTES:
        assert len(ds.attrs[k]) == n
    assert ds.attrs["bbox"].shape == (n, 4)
    assert ds.name == "shapeworld" and "no download" in ds.source


def test_all_classes_and_backgrounds_present_and_balanced(world):
    ds = world.generate(80, seed=0)
    assert torch.equal(ds.y.bincount(minlength=8), torch.full((8,), 10))
    assert torch.equal(ds.y, ds.attrs["shape"])
    assert set(ds.attrs["background_name"]) == set(BACKGROUNDS)
    assert ds.attrs["shape_name"][0] == SHAPES[int(ds.y[0])]


def test_fixed_attributes_are_set(world):
    ds = world.generate(20, seed=0, shape="star", background="checker", color=(1.0, 0.0, 0.0), size=0.3, rotation=0.5)
    assert (ds.y == SHAPES.index("star")).all()
    assert (ds.attrs["background"] == BACKGROUNDS.index("checker")).all()
    assert torch.allclose(ds.attrs["color"], torch.tensor([1.0, 0.0, 0.0]).expand(20, 3))
    assert torch.allclose(ds.attrs["size"], torch.full((20,), 0.3))
    per_example = world.generate(3, seed=0, shape=["circle", "ring", 2], cx=torch.tensor([0.4, 0.5, 0.6]))
    assert per_example.y.tolist() == [0, 5, 2]
    assert torch.allclose(per_example.attrs["cx"], torch.tensor([0.4, 0.5, 0.6]))


def test_counterfactual_pairs_share_the_other_attributes(world):
    a = world.generate(16, seed=9, background="solid")
    b = world.generate(16, seed=9, background="noise")
    for k in ("shape", "size", "cx", "cy", "rotation"):
        assert torch.equal(a.attrs[k], b.attrs[k])


def test_contrast_rules_hold(world):
    from robustlab.data.shapeworld import _seg_dist
    a = world.sample_attributes(500, torch_generator(0))
    d = _seg_dist(a["color"], a["bg_color"], a["bg_color2"])
    assert float(d.min()) >= world.min_contrast
    solid = a["background"] == BACKGROUNDS.index("solid")
    assert torch.equal(a["bg_color"][solid], a["bg_color2"][solid])
    tex = (a["bg_color"] - a["bg_color2"]).norm(dim=-1)[~solid]
    assert float(tex.min()) >= world.texture_contrast


def test_render_is_background_and_foreground_composed(world):
    a = world.sample_attributes(24, torch_generator(1))
    m, bg, x = world.mask(a), world.background_image(a), world.render(a)
    assert m.shape == (24, 1, 32, 32)
    assert torch.allclose(x, bg * (1 - m) + a["color"][:, :, None, None] * m, atol=1e-6)
    area = m.sum((1, 2, 3))
    assert float(area.min()) > 20  # shapes are reasonably large at 32 px
    textured = a["background"] != BACKGROUNDS.index("solid")
    assert (bg[textured].std((2, 3)).amax(1) > 0.02).all()
    assert (bg[~textured].std((2, 3)).amax(1) < 1e-6).all()


@pytest.mark.parametrize("size", [16, 32, 64])
def test_bbox_contains_shape_pixels_and_is_tight(size):
    w = ShapeWorld(size=size, classes=ALL_SHAPES)
    a = w.sample_attributes(60, torch_generator(2))
    m = w.mask(a)[:, 0] > 0
    rows, cols = m.any(2), m.any(1)
    centres = torch.arange(size) + 0.5
    for i in range(60):
        x0, y0, x1, y1 = a["bbox"][i].tolist()
        xs, ys = centres[cols[i]], centres[rows[i]]
        assert xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1
        assert xs.min() - x0 < 1.5 and x1 - xs.max() < 1.5 and ys.min() - y0 < 1.5 and y1 - ys.max() < 1.5


def test_edit_colour_changes_only_shape_pixels(world):
    a = world.sample_attributes(16, torch_generator(3))
    b = world.edit(a, color=(0.0, 0.0, 0.0))
    diff = (world.render(a) - world.render(b)).abs().amax(1)
    m = world.mask(a)[:, 0]
    assert float(diff[m == 0].max()) == 0.0 and float(diff.max()) > 0
    assert torch.equal(b["bbox"], a["bbox"])


def test_edit_background_changes_only_background_pixels(world):
    a = world.sample_attributes(16, torch_generator(4), background="solid")
    b = world.edit(a, background="stripes", bg_color2=torch.rand(16, 3, generator=torch_generator(0)))
    diff = (world.render(a) - world.render(b)).abs().amax(1)
    m = world.mask(a)[:, 0]
    assert float(diff[m == 1].max()) == 0.0 and float(diff.max()) > 0


def test_edit_position_changes_only_inside_old_and_new_boxes(world):
    a = world.sample_attributes(16, torch_generator(5), size=0.25, background="solid")
    b = world.edit(a, cx=a["cx"] + 0.05)
    assert torch.equal(b["bbox"][:, [1, 3]], a["bbox"][:, [1, 3]])
    free = (b["bbox"][:, 2] < 32) & (a["bbox"][:, 0] > 0)
    assert free.any() and torch.allclose(b["bbox"][free, 0], a["bbox"][free, 0] + 1.6, atol=1e-4)
    diff = (world.render(a) - world.render(b)).abs().amax(1) > 0
    c = torch.arange(32) + 0.5
    for i in range(16):
        inside = torch.zeros(32, 32, dtype=torch.bool)
        for box in (a["bbox"][i], b["bbox"][i]):
            inside |= (c[None, :] >= box[0]) & (c[None, :] <= box[2]) & (c[:, None] >= box[1]) & (c[:, None] <= box[3])
        assert not (diff[i] & ~inside).any() and diff[i].any()


def test_rotation_period_of_square(world):
    a = world.sample_attributes(4, torch_generator(6), shape="square", background="solid")
    b = world.edit(a, rotation=a["rotation"] + math.pi / 2)
    assert torch.allclose(world.render(a), world.render(b), atol=1e-4)


def test_load_shapeworld_splits_are_disjoint_and_sized():
    tr, te = load_shapeworld("train", n=30, seed=0), load_shapeworld("test", n=30, seed=0)
    assert derive_seed(0, "shapeworld", "train") != derive_seed(0, "shapeworld", "test")
    assert not torch.equal(tr.x, te.x)
    assert len(load_shapeworld("val")) == 2000
    assert load_shapeworld("test", n=5, size=16).x.shape == (5, 3, 16, 16)
    assert torch.equal(load_shapeworld("test", n=10, seed=1).x, load_shapeworld("test", n=10, seed=1).x)
    assert (load_shapeworld("test", n=8, background="noise").attrs["background_name"] == ["noise"] * 8)


def test_errors_name_the_problem(world):
    with pytest.raises(ConfigError, match="colour|bbox"):
        world.generate(2, colour=(1, 0, 0))
    with pytest.raises(ConfigError, match="did you mean"):
        world.generate(2, shape="circel")
    with pytest.raises(ConfigError, match="shape"):
        world.generate(3, size=torch.ones(2))
    with pytest.raises(ConfigError, match="min_contrast"):
        world.generate(2, color=(0.5, 0.5, 0.5), bg_color=(0.5, 0.5, 0.5), background="solid")
    with pytest.raises(ConfigError, match="split"):
        load_shapeworld("training")
    with pytest.raises(ConfigError):
        ShapeWorld(classes=("circle", "blob"))
    with pytest.raises(ConfigError):
        ShapeWorld(size_range=(0.3, 0.8))
    with pytest.raises(ConfigError, match="missing"):
        world.render({"shape": torch.zeros(2, dtype=torch.long)})


def test_subset_of_classes_relabels():
    w = ShapeWorld(classes=("ring", "heart"), backgrounds=("gradient",))
    ds = w.generate(10, seed=0)
    assert ds.class_names == ["ring", "heart"] and set(ds.y.tolist()) == {0, 1}
    assert set(ds.attrs["background_name"]) == {"gradient"}


def test_signed_distances_are_exact():
    from robustlab.data._shapeworld_draw import SDF

    x, y = torch.tensor([0.0, 2.0, 0.5, 1.0]), torch.tensor([0.0, 0.0, 0.3, 1.0])
    h = math.sqrt(0.5)  # the square's half side (circumradius 1)
    box = torch.stack([x.abs() - h, y.abs() - h], -1)
    exact = box.clamp_min(0).norm(dim=-1) + box.amax(-1).clamp_max(0)
    assert torch.allclose(SDF["square"](x, y), exact, atol=1e-6)
    assert torch.allclose(SDF["circle"](x, y), (x**2 + y**2).sqrt() - 1)
    assert float(SDF["ring"](torch.tensor(0.0), torch.tensor(0.0))) > 0  # the hole is outside
    assert float(SDF["star"](torch.tensor(0.0), torch.tensor(-0.9))) < 0  # the top point is inside


def test_chunked_render_equals_one_batch():
    a = ShapeWorld().sample_attributes(19, torch_generator(8))
    assert torch.equal(ShapeWorld(chunk=4).render(a), ShapeWorld().render(a))


def test_edit_works_on_a_subset_of_a_dataset(world):
    ds = world.generate(12, seed=0).subset(torch.tensor([1, 5, 7]))
    again = world.render(world.edit(ds.attrs))
    assert torch.allclose(again, ds.x)
