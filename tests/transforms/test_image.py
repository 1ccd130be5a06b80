"""Tests of the Hendrycks & Dietterich image corruptions (robustlab.transforms.image)."""

import itertools

import numpy as np
import pytest
import torch

from robustlab.core import registry
from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import torch_generator
from robustlab.transforms.image import (
    TABLES,
    Contrast,
    DefocusBlur,
    GaussianBlur,
    GaussianNoise,
    ImageCorruption,
    ShotNoise,
    disk_kernel,
    gaussian_kernel1d,
)

NAMES = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
         "gaussian_blur", "defocus_blur", "contrast", "brightness"]
STOCHASTIC = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"]


def images(n=5, c=3, size=32, seed=0, dtype=torch.float32):
    return torch.rand(n, c, size, size, generator=torch_generator(seed)).to(dtype)


def hf_energy(x):
    """Mean squared difference of neighbouring pixels: the high-frequency energy."""
    return float(((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("batch", [1, 5])
def test_shape_dtype_range(name, size, channels, batch):
    x = images(batch, channels, size)
    t = registry.create(name)
    for s in (1, 3, 5):
        y = t(x, severity=s, generator=torch_generator(1))
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert torch.isfinite(y).all()
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert not torch.equal(y, x) or name == "impulse_noise"  # s&p may miss a tiny image entirely


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtype_preserved(name, dtype):
    x = images(2, 3, 16, dtype=dtype)
    y = registry.create(name)(x, severity=3, generator=torch_generator(0))
    assert y.dtype == dtype and y.shape == x.shape
    assert float(y.float().min()) >= 0.0 and float(y.float().max()) <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_single_image_and_severity_zero(name):
    x = images(1, 3, 16)[0]
    t = registry.create(name)
    y = t(x, severity=2, generator=torch_generator(0))
    assert y.shape == x.shape
    z = t(x, severity=0, generator=torch_generator(0))
    assert torch.equal(z, x) and z is not x


@pytest.mark.parametrize("name", STOCHASTIC)
def test_determinism(name):
    x = images()
    t = registry.create(name)
    a = t(x, severity=3, generator=torch_generator(7))
    b = t(x, severity=3, generator=torch_generator(7))
    c = t(x, severity=3, generator=torch_generator(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the same noise whatever the input dtype (drawn in float32)
    d = t(x.double(), severity=3, generator=torch_generator(7))
    assert torch.allclose(d.float(), a, atol=1e-6)


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "contrast", "brightness"])
def test_deterministic_ones_need_no_generator(name):
    x = images()
    t = registry.create(name)
    assert torch.equal(t(x, severity=4), t(x, severity=4, generator=torch_generator(3)))


@pytest.mark.parametrize("name", STOCHASTIC)
def test_missing_generator_is_a_config_error(name):
    with pytest.raises(ConfigError, match="generator"):
        registry.create(name)(images(), severity=1, generator=None)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("gaussian_blur", "defocus_blur")])
@pytest.mark.parametrize("size", [8, 32])
def test_change_grows_with_severity(name, size):
    x = images(5, 3, size, seed=2)
    t = registry.create(name)
    d = [float((t(x, severity=s, generator=torch_generator(1)) - x).abs().mean()) for s in (0, 1, 2, 3, 4, 5)]
    if name == "impulse_noise" and size == 8:  # few pixels: nested masks, so never fewer hits
        assert all(a <= b for a, b in itertools.pairwise(d)) and d[-1] > 0, d
    else:
        assert all(a < b for a, b in itertools.pairwise(d)), d


@pytest.mark.parametrize("size", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_contrast_std_decreases(size, channels):
    x = images(3, channels, size)
    t = Contrast()
    stds = [float(t(x, severity=s).std(dim=(-2, -1)).mean()) for s in (0, 1, 2, 3, 4, 5)]
    assert all(a > b for a, b in itertools.pairwise(stds)), stds
    # no clipping happens for contrast reduction: std scales exactly by c
    c = TABLES["cifar"]["contrast"]
    assert np.allclose(np.array(stds[1:]) / stds[0], c, rtol=1e-4)


@pytest.mark.parametrize("size", [8, 16, 32, 64])
@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_gaussian_blur_removes_high_frequencies_monotonically(size, table):
    x = images(2, 3, size)
    t = GaussianBlur(table=table)
    e = [hf_energy(t(x, severity=s)) for s in (0, 0.5, 1, 2, 3, 4, 5)]
    assert all(a > b for a, b in itertools.pairwise(e)), e


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_defocus_blur_spreads_monotonically(size):
    x = images(2, 3, size)
    t = DefocusBlur()
    e0 = hf_energy(x)
    for s in (1, 2, 3, 4, 5):
        assert hf_energy(t(x, severity=s)) < 0.8 * e0
    # the kernel's spread (second moment) grows with severity, fractional ones included
    spread = []
    for s in (0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5):
        k = t.kernel(s)
        r = k.shape[0] // 2
        g = torch.arange(-r, r + 1, dtype=torch.float64)
        yy, xx = torch.meshgrid(g, g, indexing="ij")
        assert abs(float(k.sum()) - 1) < 1e-9
        spread.append(float((k * (xx**2 + yy**2)).sum()))
    assert all(a < b for a, b in itertools.pairwise(spread)), spread


def test_gaussian_blur_matches_scipy_reference():
    nd = pytest.importorskip("scipy.ndimage")
    x = images(2, 3, 16, dtype=torch.float64)
    for s, sigma in zip((1, 2, 3, 4, 5), TABLES["cifar"]["gaussian_blur"]):
        ref = np.stack([[nd.gaussian_filter(x[i, c].numpy(), sigma, mode="nearest", truncate=4.0)
                         for c in range(3)] for i in range(2)])
        assert np.allclose(GaussianBlur()(x, severity=s).numpy(), np.clip(ref, 0, 1), atol=1e-12)


def test_defocus_blur_matches_scipy_reference():
    nd = pytest.importorskip("scipy.ndimage")
    x = images(2, 3, 32, dtype=torch.float64)
    t = DefocusBlur()
    for s in (1, 2, 3, 4, 5):
        k = t.kernel(s).numpy()
        ref = np.stack([[nd.correlate(x[i, c].numpy(), k, mode="mirror") for c in range(3)] for i in range(2)])
        assert np.allclose(t(x, severity=s).numpy(), np.clip(ref, 0, 1), atol=1e-12)


def test_kernels():
    k = gaussian_kernel1d(1.0)
    assert k.shape == (9,) and abs(float(k.sum()) - 1) < 1e-12 and int(k.argmax()) == 4
    d = disk_kernel(1.5, 0.1)  # CIFAR severity 5: a 3x3 box, barely anti-aliased
    assert d.shape == (17, 17)
    assert torch.allclose(d[7:10, 7:10], torch.full((3, 3), 1 / 9, dtype=torch.float64), atol=1e-6)
    assert float(d.sum()) == pytest.approx(1.0)
    assert disk_kernel(10.0, 0.5).shape == (21, 21)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [1, 2, 8])
def test_constant_image(name, size):
    """Blur and contrast leave a constant image alone; every corruption keeps it in range."""
    x = torch.full((2, 3, size, size), 0.4)
    y = registry.create(name, table="imagenet")(x, severity=5, generator=torch_generator(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    if name in ("gaussian_blur", "defocus_blur", "contrast"):
        assert torch.allclose(y, x, atol=1e-6)


def test_gaussian_noise_std_matches_table():
    x = torch.full((4, 3, 64, 64), 0.5)
    t = GaussianNoise()
    for s, c in zip((1, 2, 3, 4, 5), TABLES["cifar"]["gaussian_noise"]):
        std = float((t(x, severity=s, generator=torch_generator(s)) - x).std())
        assert std == pytest.approx(c, rel=0.03)
    assert t.parameter(2.5) == pytest.approx((0.06 + 0.08) / 2)
    assert GaussianNoise(table="imagenet").parameter(5) == 0.38


def test_shot_noise_is_unbiased_with_the_right_variance():
    x = torch.full((4, 3, 64, 64), 0.5)
    t = ShotNoise()
    y = t(x, severity=5, generator=torch_generator(0))  # c = 50 photons
    assert float(y.mean()) == pytest.approx(0.5, abs=0.005)
    assert float(y.var()) == pytest.approx(0.5 / 50, rel=0.05)
    assert t.parameter(0) == float("inf") and t.parameter(1) == pytest.approx(500)


def test_impulse_noise_fraction():
    x = torch.full((4, 3, 64, 64), 0.5)
    y = registry.create("impulse_noise")(x, severity=5, generator=torch_generator(0))
    hit = y != 0.5
    assert float(hit.float().mean()) == pytest.approx(0.07, rel=0.1)
    assert set(torch.unique(y[hit]).tolist()) == {0.0, 1.0}


def test_brightness_grey_and_colour():
    t = registry.create("brightness")
    g = torch.full((1, 1, 4, 4), 0.5)
    assert torch.allclose(t(g, severity=5), g + 0.3)
    rgb = torch.tensor([0.2, 0.4, 0.8]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    y = t(rgb, severity=1)  # V 0.8 -> 0.85, hue and saturation kept: channels scale by 0.85 / 0.8
    assert torch.allclose(y, rgb * 0.85 / 0.8)
    black = torch.zeros(1, 3, 2, 2)
    assert torch.allclose(t(black, severity=2), torch.full_like(black, 0.1))


@pytest.mark.parametrize("bad", [-1, 5.5, 6, float("nan"), "3", True, None])
def test_bad_severity(bad):
    with pytest.raises(ConfigError, match="severity"):
        GaussianNoise()(images(), severity=bad, generator=torch_generator(0))


def test_fractional_severity_interpolates():
    x = images()
    t = Contrast()
    assert t.parameter(0) == 1.0 and t.parameter(1) == 0.75 and t.parameter(1.5) == pytest.approx(0.625)
    mid = t(x, severity=3.5)
    assert hf_energy(t(x, severity=3)) > hf_energy(mid) > hf_energy(t(x, severity=4))


def test_bad_inputs_and_table():
    with pytest.raises(DataError):
        Contrast()(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), severity=1)
    with pytest.raises(DataError):
        Contrast()(torch.zeros(4, 4), severity=1)
    with pytest.raises(DataError):
        Contrast()([[0.5]], severity=1)
    with pytest.raises(ConfigError, match="table"):
        registry.create("contrast", table="cifar100")
    with pytest.raises(ConfigError):
        registry.create("contrast", sigma=3)


def test_registry_and_repr():
    assert set(NAMES) <= set(registry.names("transform"))
    for name in NAMES:
        t = registry.create(name)
        assert isinstance(t, ImageCorruption) and t.kind == "transform" and t.modality == "image"
        assert repr(t) == f"{type(t).__name__}(table='cifar')"
    with pytest.raises(ConfigError, match="did you mean"):
        registry.get("gausian_noise")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda(name):
    x = images().cuda()
    t = registry.create(name)
    y = t(x, severity=3, generator=torch_generator(0, "cuda"))
    assert y.is_cuda and y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    # a CPU generator also works on CUDA inputs and gives the CPU result
    y_cpu = t(x.cpu(), severity=3, generator=torch_generator(0))
    y_mix = t(x, severity=3, generator=torch_generator(0))
    assert torch.allclose(y_mix.cpu(), y_cpu, atol=1e-5)


def test_numpy_and_tensor_severities():
    x = images()
    t = GaussianNoise()
    ref = t(x, severity=3, generator=torch_generator(0))
    for s in (np.int64(3), np.float64(3.0), torch.tensor(3), 3.0):
        assert torch.equal(t(x, severity=s, generator=torch_generator(0)), ref)


@pytest.mark.parametrize("mode", ["replicate", "reflect"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kshape", [(1, 9), (7, 1), (3, 3), (15, 15)])
def test_conv_same_fast_paths_match_conv2d(mode, dtype, kshape):
    """Banded matrices (1-D), shifted sums (small float64) and FFT (large) equal a padded conv2d."""
    import torch.nn.functional as F

    from robustlab.transforms.image import _conv_same

    x = images(3, 2, 17, seed=3, dtype=dtype)[..., :16]  # non-square 17×16
    k = torch.rand(kshape, generator=torch_generator(4), dtype=torch.float64)
    k[0, 0] = 0.0  # a zero tap is skipped by the shifted sums
    kh, kw = kshape
    y = F.pad(x.reshape(6, 1, 17, 16), (kw // 2, kw // 2, kh // 2, kh // 2), mode=mode)
    ref = F.conv2d(y.double(), k[None, None]).reshape(3, 2, 17, 16)
    out = _conv_same(x, k, mode)
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.allclose(out.double(), ref, atol=1e-12 if dtype == torch.float64 else 2e-5)


def test_parallel_draws_do_not_depend_on_the_thread_count():
    from robustlab.transforms import image as mod

    x = images(40, 3, 64, seed=1)  # 491520 values: drawn in chunks
    assert x.numel() >= mod.PARALLEL_DRAW_MIN
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append([registry.create(n)(x, severity=3, generator=torch_generator(9))
                         for n in ("shot_noise", "impulse_noise")])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))
    # the chunks are independent: no two chunks repeat each other's noise
    y = outs[0][1].reshape(-1) != x.reshape(-1)
    q = y.numel() // mod.DRAW_CHUNKS
    assert not torch.equal(y[:q], y[q:2 * q])


def test_shot_noise_large_batch_statistics():
    x = torch.full((30, 3, 64, 64), 0.25)  # chunked Poisson draws
    y = ShotNoise(table="imagenet")(x, severity=3, generator=torch_generator(0))  # c = 12: Poisson(3) / 12
    counts = (y * 12).round()
    assert torch.allclose(y * 12, counts, atol=1e-4)
    assert float(counts.mean()) == pytest.approx(3.0, rel=0.01) and float(counts.var()) == pytest.approx(3.0, rel=0.02)
    assert float((counts == 0).float().mean()) == pytest.approx(float(np.exp(-3.0)), rel=0.03)
