"""Multi-object ShapeWorld scenes (robustlab.data.scenes): boxes, overlap, determinism, errors."""

import pytest
import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.data.scenes import SceneDataset, SceneWorld, load_scenes, overlap_fraction


@pytest.fixture(scope="module")
def scenes():
    return SceneWorld().generate(40, seed=0)


def test_shapes_counts_and_labels(scenes):
    assert scenes.x.shape == (40, 3, 64, 64) and len(scenes) == 40
    assert float(scenes.x.min()) >= 0 and float(scenes.x.max()) <= 1
    counts = scenes.attrs["num_objects"]
    assert int(counts.min()) >= 1 and int(counts.max()) <= 4 and int(counts.sum()) == scenes.num_objects
    assert counts.float().mean() > 1.8  # most drawn objects find a place
    for b, lab in zip(scenes.boxes, scenes.labels):
        assert b.shape == (len(lab), 4) and bool((lab >= 0).all() & (lab < 8).all())
        assert bool((b >= 0).all() & (b <= 64).all() & (b[:, 2:] > b[:, :2]).all())
        side = (b[:, 2:] - b[:, :2]).amax(1)
        assert bool((side > 6).all() & (side < 30).all())


def test_objects_overlap_at_most_max_overlap(scenes):
    for b in scenes.boxes:
        frac = overlap_fraction(b[:, None], b[None])
        frac.fill_diagonal_(0)
        assert float(frac.max()) <= 0.1 + 1e-6


def test_foreground_pixels_lie_inside_the_boxes():
    ds = SceneWorld(backgrounds=("solid",)).generate(12, seed=1)
    bg = ds.attrs["bg_color"][:, :, None, None]
    fg = (ds.x - bg).abs().amax(1) > 1e-3  # (N, H, W)
    centres = torch.arange(64) + 0.5
    for i in range(len(ds)):
        b = ds.boxes[i]
        inside_x = (centres[None] >= b[:, :1]) & (centres[None] <= b[:, 2:3])  # (k, W)
        inside_y = (centres[None] >= b[:, 1:2]) & (centres[None] <= b[:, 3:4])  # (k, H)
        covered = (inside_y[:, :, None] & inside_x[:, None, :]).any(0)
        assert not bool((fg[i] & ~covered).any())
        for box in b:  # every box holds foreground
            x1, y1, x2, y2 = box.long().tolist()
            assert bool(fg[i, y1:y2 + 1, x1:x2 + 1].any())


def test_seeded_and_splits_differ():
    a, b = SceneWorld().generate(6, seed=4), SceneWorld().generate(6, seed=4)
    assert torch.equal(a.x, b.x) and all(torch.equal(p, q) for p, q in zip(a.boxes, b.boxes))
    assert not torch.equal(a.x, SceneWorld().generate(6, seed=5).x)
    tr, te = load_scenes("train", n=4), load_scenes("test", n=4)
    assert not torch.equal(tr.x, te.x)
    one = SceneWorld(min_objects=1, max_objects=1).generate(5, seed=0)
    assert one.attrs["num_objects"].tolist() == [1] * 5


def test_subset_and_with_images(scenes):
    sub = scenes.subset([3, 1])
    assert len(sub) == 2 and torch.equal(sub.boxes[0], scenes.boxes[3]) and torch.equal(sub.x[1], scenes.x[1])
    assert sub.attrs["num_objects"].tolist() == scenes.attrs["num_objects"][[3, 1]].tolist()
    styled = scenes.with_images(1 - scenes.x, name="inverted", style=["invert"] * len(scenes))
    assert styled.name == "inverted" and styled.attrs["style"][0] == "invert"
    assert torch.equal(styled.boxes[5], scenes.boxes[5])
    with pytest.raises(DataError, match="do not match"):
        scenes.with_images(scenes.x[:3])


def test_bad_inputs_raise_clear_errors(scenes):
    with pytest.raises(ConfigError, match="objects range"):
        SceneWorld(min_objects=3, max_objects=2)
    with pytest.raises(ConfigError, match="size_range"):
        SceneWorld(size_range=(0.3, 0.7))
    with pytest.raises(ConfigError, match="split"):
        load_scenes("dev")
    with pytest.raises(DataError, match="box sets"):
        SceneDataset(scenes.x[:2], scenes.boxes[:1], scenes.labels[:2])
    with pytest.raises(DataError, match="labels outside"):
        SceneDataset(scenes.x[:1], [torch.tensor([[0.0, 0, 5, 5]])], [torch.tensor([9])])
    with pytest.raises(DataError, match="empty box"):
        SceneDataset(scenes.x[:1], [torch.tensor([[5.0, 0, 5, 5]])], [torch.tensor([1])])
