"""Tests of motion and zoom blur (robustlab.transforms.image_blur)."""

import itertools
import math

import numpy as np
import pytest
import torch

from robustlab.core import registry
from robustlab.core.errors import ConfigError
from robustlab.core.rng import torch_generator
from robustlab.transforms.image import ImageCorruption
from robustlab.transforms.image_blur import GlassBlur, MotionBlur, ZoomBlur, clipped_zoom, local_swaps, motion_blur

NAMES = ["motion_blur", "zoom_blur", "glass_blur"]


def images(n=4, c=3, size=32, seed=0):
    return torch.rand(n, c, size, size, generator=torch_generator(seed))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("batch", [1, 4])
def test_shape_dtype_range(name, size, channels, batch):
    x = images(batch, channels, size)
    t = registry.create(name)
    for s in (1, 3, 5):
        y = t(x, severity=s, generator=torch_generator(1))
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert torch.isfinite(y).all() and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert not torch.equal(y, x)


@pytest.mark.parametrize("name", NAMES)
def test_224_imagenet_table(name):
    x = images(2, 3, 224)
    y = registry.create(name, table="imagenet")(x, severity=5, generator=torch_generator(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert float(y.std()) < 0.5 * float(x.std())  # strong blur of white noise


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtype_preserved_and_severity_zero(name, dtype):
    x = images(2, 3, 16).to(dtype)
    t = registry.create(name)
    y = t(x, severity=3, generator=torch_generator(0))
    assert y.dtype == dtype and y.shape == x.shape
    assert float(y.float().min()) >= 0.0 and float(y.float().max()) <= 1.0
    z = t(x[0], severity=0, generator=torch_generator(0))
    assert torch.equal(z, x[0]) and z is not x[0]


@pytest.mark.parametrize("name", ["motion_blur", "zoom_blur"])
@pytest.mark.parametrize("table", ["cifar", "imagenet"])
@pytest.mark.parametrize("size", [8, 32])
def test_change_grows_with_severity(name, table, size):
    x = images(4, 3, size, seed=2)
    t = registry.create(name, table=table)
    d = [float((t(x, severity=s, generator=torch_generator(1)) - x).abs().mean()) for s in (0, 1, 2, 3, 4, 5)]
    assert all(a <= b + 1e-6 for a, b in itertools.pairwise(d)) and d[5] > d[1] > 0, d


@pytest.mark.parametrize("size", [8, 32])
def test_glass_blur_change_with_severity(size):
    x = images(4, 3, size, seed=2)
    d = [float((GlassBlur(table="imagenet")(x, severity=s, generator=torch_generator(1)) - x).abs().mean())
         for s in range(6)]
    # ImageNet-C: non-decreasing up to a 1% dip (levels 1 and 2 trade σ against shift and passes)
    assert all(a <= b * 1.01 for a, b in itertools.pairwise(d)) and d[5] > d[1] > 0, d
    # the CIFAR-10-C table is not monotone (level 4 has σ 0.25 < level 3's 0.4, level 5 is level 3
    # with two passes); only check every level changes the image
    c = [float((GlassBlur()(x, severity=s, generator=torch_generator(1)) - x).abs().mean()) for s in range(1, 6)]
    assert min(c) > 0.05, c


def test_local_swaps_permute_pixels_locally():
    x = torch.rand(3, 1, 16, 16, generator=torch_generator(0)).expand(3, 3, 16, 16)
    y = local_swaps(x, 2, torch_generator(1))
    flat_x, flat_y = x.reshape(3, 3, -1), y.reshape(3, 3, -1)
    assert torch.equal(flat_x.sort(-1).values, flat_y.sort(-1).values)  # a permutation per image
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])  # channels move together
    assert float((y != x).float().mean()) > 0.3
    assert torch.equal(y[..., 0, :], x[..., 0, :]) and torch.equal(y[..., :, 0], x[..., :, 0])  # never reached
    assert not torch.equal(y[0], y[1])  # independent swaps per image
    assert torch.equal(y, local_swaps(x, 2, torch_generator(1)))
    tiny = torch.rand(1, 1, 8, 8)
    assert torch.equal(local_swaps(tiny, 4, torch_generator(0)), tiny)  # no interior pixel for d = 4


@pytest.mark.parametrize("d", [1, 2, 3])
def test_local_swaps_classes_are_conflict_free(d):
    # swapping a whole class at once must equal swapping its pixels one by one (in class order)
    size = 14
    x = torch.arange(2.0 * size * size).reshape(2, 1, size, size)
    y = local_swaps(x, d, torch_generator(0))
    shifts = torch.randint(-d, d, (2, 2, size, size), generator=torch_generator(0))
    ref = x.clone()
    p = 2 * d + 1
    for n in range(2):
        for a, b in itertools.product(reversed(range(p)), reversed(range(p))):
            for h, w in itertools.product(range(d + 1, size - d + 1), repeat=2):
                if h % p == a and w % p == b:
                    dy, dx = int(shifts[n, 0, h, w]), int(shifts[n, 1, h, w])
                    src, tgt = ref[n, 0, h, w].clone(), ref[n, 0, h + dy, w + dx].clone()
                    ref[n, 0, h, w], ref[n, 0, h + dy, w + dx] = tgt, src
    assert torch.equal(y, ref)


def test_glass_blur_parameters():
    assert GlassBlur().parameter(3) == (0.4, 1, 1) and GlassBlur(table="imagenet").parameter(5) == (1.5, 4, 2)
    assert GlassBlur().parameter(3.5) == (pytest.approx(0.325), 1, 2)


def test_motion_blur_seeded():
    x = images()
    t = MotionBlur()
    a = t(x, severity=3, generator=torch_generator(7))
    assert torch.equal(a, t(x, severity=3, generator=torch_generator(7)))
    assert not torch.equal(a, t(x, severity=3, generator=torch_generator(8)))
    d = t(x.double(), severity=3, generator=torch_generator(7))
    assert torch.allclose(d.float(), a, atol=1e-6)
    with pytest.raises(ConfigError, match="generator"):
        t(x, severity=3, generator=None)


def test_motion_blur_kernel_along_the_angle():
    # one bright pixel: the result is the kernel traced from it backwards along the direction
    x = torch.zeros(2, 1, 21, 21)
    x[:, :, 10, 10] = 1.0
    y = motion_blur(x, radius=3, sigma=2.0, angle=torch.tensor([0.0, 90.0]))
    k = torch.exp(-torch.arange(7.0) ** 2 / 8)
    k = k / k.sum()
    # angle 0: out(y, x) sums x(y, x + i), so the bright pixel shows up at columns 10 - i
    assert torch.allclose(y[0, 0, 10, 4:11].flip(0), k, atol=1e-6)
    assert float(y[0].sum()) == pytest.approx(1.0, abs=1e-5) and float(y[0, 0, :10].abs().sum()) == 0
    # angle 90: along +y (down), so the trace goes up from the pixel
    assert torch.allclose(y[1, 0, 4:11, 10].flip(0), k, atol=1e-6)
    # a constant image is unchanged (edges are repeated)
    c = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(motion_blur(c, 9, 2.5, torch.tensor([33.0])), c, atol=1e-6)


def test_motion_blur_angles_in_range():
    x = torch.zeros(64, 1, 21, 21)
    x[:, :, 10, 10] = 1.0
    y = MotionBlur()(x, severity=5, generator=torch_generator(0))
    # every trace stays in the half-plane to the left (angles in [-45°, 45°] point right)
    assert float(y[..., 11:].sum()) == 0.0
    assert float(y[..., :10].sum(dim=(1, 2, 3)).min()) > 0.3
    assert MotionBlur().parameter(2.5) == pytest.approx((6.0, 1.75))
    assert MotionBlur(table="imagenet").parameter(5) == (20.0, 15.0)


def test_clipped_zoom_matches_scipy():
    nd = pytest.importorskip("scipy.ndimage")
    x = images(1, 1, 32).double()
    for f in (1.0, 1.01, 1.06, 1.15, 1.25, 1.3):
        ch = math.ceil(32 / f)
        top = (32 - ch) // 2
        ref = nd.zoom(x[0, 0, top:top + ch, top:top + ch].numpy(), f, order=1)
        trim = (ref.shape[0] - 32) // 2
        assert np.allclose(clipped_zoom(x, f)[0, 0].numpy(), ref[trim:trim + 32, trim:trim + 32], atol=1e-12)


def test_zoom_blur_factors_follow_the_reference():
    assert ZoomBlur().factors(1) == pytest.approx(list(np.arange(1, 1.06, 0.01)))
    assert len(ZoomBlur().factors(5)) == len(np.arange(1, 1.26, 0.01))
    assert ZoomBlur(table="imagenet").factors(5) == pytest.approx(list(np.arange(1, 1.31, 0.03)))
    assert ZoomBlur().factors(0) == [] and ZoomBlur().factors(0.5) == pytest.approx([1.0, 1.01, 1.02, 1.03])
    # mean of the image and its zooms: the centre pixel of a symmetric image is kept
    x = torch.zeros(1, 1, 9, 9)
    x[..., 4, 4] = 1.0
    assert float(ZoomBlur()(x, severity=1)[0, 0, 4, 4]) > 0.2


@pytest.mark.parametrize("bad", [-1, 5.5, float("nan"), "3", None])
@pytest.mark.parametrize("name", NAMES)
def test_bad_severity(name, bad):
    with pytest.raises(ConfigError, match="severity"):
        registry.create(name)(images(), severity=bad, generator=torch_generator(0))


def test_registry():
    assert set(NAMES) <= set(registry.names("transform"))
    for name in NAMES:
        t = registry.create(name, table="imagenet")
        assert isinstance(t, ImageCorruption) and t.kind == "transform" and t.modality == "image"
    with pytest.raises(ConfigError, match="table"):
        registry.create("zoom_blur", table="svhn")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (2, 3, 2, 2), (1, 1, 3, 3), (2, 3, 5, 9)])
def test_tiny_and_non_square_constant_images(name, shape):
    """Any size works; geometric corruptions leave a constant image (nearly) alone."""
    x = torch.full(shape, 0.4)
    for table in ("cifar", "imagenet"):
        y = registry.create(name, table=table)(x, severity=4.5, generator=torch_generator(0))
        assert y.shape == x.shape and torch.isfinite(y).all() and float(y.min()) >= 0 and float(y.max()) <= 1
        if name in NAMES:
            assert torch.allclose(y, x, atol=2 / 255)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda(name):
    x = images(2, 3, 32).cuda()
    t = registry.create(name)
    y = t(x, severity=3, generator=torch_generator(0, "cuda"))
    assert y.is_cuda and y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    # a CPU generator also works on CUDA inputs and gives the CPU result
    y_cpu = t(x.cpu(), severity=3, generator=torch_generator(0))
    assert torch.allclose(t(x, severity=3, generator=torch_generator(0)).cpu(), y_cpu, atol=1e-4)


@pytest.mark.parametrize("shape", [(3, 3, 17, 23), (2, 1, 9, 5), (2, 2, 1, 6)])
def test_motion_blur_matches_clamped_shifted_sums(shape):
    """The row-gather implementation equals Σ_i k_i · x(clamp(p + d_i)) for any angle (incl. leftward, upward)."""
    g = torch_generator(4)
    x = torch.rand(*shape, generator=g, dtype=torch.float64)
    n, _, h, w = shape
    angle = torch.tensor([-170.0, -100.0, 30.0][:n])
    radius, sigma = 4.0, 2.0
    taps = torch.arange(2 * math.ceil(radius) + 1, dtype=torch.float64)
    k = torch.exp(-(taps**2) / (2 * sigma**2))
    k = k / k.sum()
    want = torch.zeros_like(x)
    ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]
    for m in range(n):
        th = float(angle[m]) * math.pi / 180
        for i, kv in enumerate(k.tolist()):
            dx, dy = math.ceil(i * math.cos(th) - 0.5), math.ceil(i * math.sin(th) - 0.5)
            want[m] += kv * x[m][:, (ys + dy).clamp(0, h - 1), (xs + dx).clamp(0, w - 1)]
    assert torch.allclose(motion_blur(x, radius, sigma, angle), want, atol=1e-12)


def test_motion_blur_chunks_do_not_change_the_result(monkeypatch):
    import robustlab.transforms.image_blur as blur

    x = images(11, 3, 16, seed=3)
    angle = torch.rand(11, generator=torch_generator(2)) * 360 - 180
    whole = motion_blur(x, 6.0, 3.0, angle)
    monkeypatch.setattr(blur, "MOTION_CHUNK_PIXELS", 16 * 16 * 4)  # chunks of 4 images
    assert torch.equal(motion_blur(x, 6.0, 3.0, angle), whole)
