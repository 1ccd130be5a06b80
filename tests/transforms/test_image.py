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

    x = images(40, 3, 64, seed=1)  # 491520 values: several sampler blocks, multi-threaded ops
    assert x.numel() > max(mod.PARALLEL_DRAW_MIN, mod.BLOCK_VALUES)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append([registry.create(n, table=t)(x, severity=3, generator=torch_generator(9))
                         for n in ("shot_noise", "impulse_noise") for t in ("cifar", "imagenet")])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))
    # no stretch of the noise repeats another one (e.g. two generators seeded alike)
    y = outs[0][2].reshape(-1) != x.reshape(-1)
    q = y.numel() // mod.DRAW_CHUNKS
    assert not torch.equal(y[:q], y[q:2 * q])


def test_shot_noise_large_batch_statistics():
    x = torch.full((30, 3, 64, 64), 0.25)  # chunked Poisson draws
    y = ShotNoise(table="imagenet")(x, severity=3, generator=torch_generator(0))  # c = 12: Poisson(3) / 12
    counts = (y * 12).round()
    assert torch.allclose(y * 12, counts, atol=1e-4)
    assert float(counts.mean()) == pytest.approx(3.0, rel=0.01) and float(counts.var()) == pytest.approx(3.0, rel=0.02)
    assert float((counts == 0).float().mean()) == pytest.approx(float(np.exp(-3.0)), rel=0.03)


def _chi_square_pvalue(observed, expected):
    """Pearson chi-square p-value, bins with expected count < 5 merged into their neighbour."""
    stats = pytest.importorskip("scipy.stats")
    obs, exp = [], []
    o_acc = e_acc = 0.0
    for o, e in zip(observed, expected, strict=True):
        o_acc, e_acc = o_acc + o, e_acc + e
        if e_acc >= 5:
            obs.append(o_acc)
            exp.append(e_acc)
            o_acc = e_acc = 0.0
    obs[-1] += o_acc
    exp[-1] += e_acc
    obs, exp = np.array(obs), np.array(exp)
    return float(stats.chi2.sf(((obs - exp) ** 2 / exp).sum(), len(obs) - 1))


@pytest.mark.parametrize(("value", "c"), [(128 / 255, 60.0), (1.0, 3.0), (0.3, 12.0), (0.77, 25.0),
                                          (0.001, 60.0), (0.5 + 1e-7, 5.0), (40 / 255, 100.0)])
def test_shot_noise_counts_follow_the_poisson_law(value, c):
    """The table sampler (8-bit grid values and values off it) against scipy's Poisson pmf: chi-square,
    mean and variance of the counts (min(X, c) / c; counts ≥ c lumped into one bin)."""
    stats = pytest.importorskip("scipy.stats")
    from robustlab.transforms.image import _poisson_counts

    n = 200_000
    x = torch.full((n,), value, dtype=torch.float32)
    lam = float(x[0]) * c
    y = _poisson_counts(x, c, torch_generator(11))
    counts = torch.where(y >= 1, float(np.ceil(c)), (y.double() * c).round()).long()
    top = int(np.ceil(c))
    observed = torch.bincount(counts, minlength=top + 1)[:top + 1].double().numpy()
    pmf = stats.poisson.pmf(np.arange(top), lam)
    expected = n * np.append(pmf, stats.poisson.sf(top - 1, lam))
    assert _chi_square_pvalue(observed, expected) > 1e-3
    if stats.poisson.sf(top - 1, lam) < 1e-6:  # clipping negligible: the raw moments
        se = np.sqrt(lam / n)
        assert abs(float(counts.double().mean()) - lam) < 5 * se
        assert float(counts.double().var()) == pytest.approx(lam, rel=6 * np.sqrt(2 / n) + 1e-9)


@pytest.mark.parametrize("c", [3.0, 12.0, 60.0, 100.0, 7.3])
def test_poisson_tables_give_the_exact_law(c):
    """Pure cells, mixed cells and their bisection bounds reproduce scipy's pmf to 1e-12 at every 8-bit level."""
    stats = pytest.importorskip("scipy.stats")
    from robustlab.transforms.image import _poisson_table

    tab = _poisson_table(c, torch.device("cpu"))
    cells = 1 << tab.bits
    cdf = tab.cdf.reshape(-1, tab.width).numpy()
    guide = tab.guide.reshape(-1, cells).numpy().astype(np.float64)
    upper = tab.upper.reshape(-1, cells).numpy()
    top = int(np.ceil(c))
    for j in (0, 1, 7, 100, 254, 255):
        lam = float(np.float32(j) / np.float32(255)) * c
        law = np.zeros(top + 1)  # P(min(X, c) = k), k = 0..ceil(c) (the last: X ≥ c)
        for m in range(cells):
            a, b = m / cells, (m + 1) / cells
            if guide[j, m] >= 0:  # pure: one output value
                k = min(int(round(guide[j, m] * c)), top) if guide[j, m] < 1 else top
                law[k] += b - a
                continue
            lo, hi = int(-1 - guide[j, m]), int(upper[j, m])
            for k in range(lo, hi + 1):
                left = cdf[j, k - 1] if k > 0 else 0.0
                law[min(k, top)] += max(0.0, min(b, cdf[j, k]) - max(a, left))
        ref = np.append(stats.poisson.pmf(np.arange(top), lam), stats.poisson.sf(top - 1, lam))
        assert np.allclose(law, ref, rtol=0, atol=1e-12), (j, np.abs(law - ref).max())


def test_impulse_noise_hits_are_independent_bernoulli():
    """Geometric-gap hits: per-block hit counts are Binomial(64, c) (chi-square), salt / pepper even odds."""
    stats = pytest.importorskip("scipy.stats")
    x = torch.full((1, 1, 1000, 640), 0.5)
    c = TABLES["imagenet"]["impulse_noise"][2]
    y = registry.create("impulse_noise", table="imagenet")(x, severity=3, generator=torch_generator(5))
    hit = (y != 0.5).reshape(-1, 64)
    per_block = hit.sum(1)
    observed = torch.bincount(per_block, minlength=65).double().numpy()
    expected = len(per_block) * stats.binom.pmf(np.arange(65), 64, c)
    assert _chi_square_pvalue(observed, expected) > 1e-3
    n_hit = int(hit.sum())
    assert abs(n_hit - c * hit.numel()) < 5 * np.sqrt(hit.numel() * c * (1 - c))
    salt = int((y == 1).sum())
    assert abs(salt - n_hit / 2) < 5 * np.sqrt(n_hit / 4)
    # neighbours are independent: P(hit, hit next) = c²
    pairs = float((hit[:, :-1] & hit[:, 1:]).double().mean())
    assert pairs == pytest.approx(c * c, rel=0.05)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("size", "radius"), [((17, 16), (3, 3)), ((32, 32), (7, 7)), ((5, 9), (4, 2)),
                                              ((2, 3), (1, 1)), ((40, 24), (10, 6))])
def test_conv_same_even_kernels_by_dct_match_conv2d(dtype, size, radius):
    """Even kernels with reflect borders (the DCT-I path, radius up to H - 1) equal a padded conv2d."""
    import torch.nn.functional as F

    from robustlab.transforms.image import _conv_same

    h, w = size
    rh, rw = radius
    x = images(3, 2, max(h, w), seed=6, dtype=dtype)[..., :h, :w].contiguous()
    k = torch.rand(2 * rh + 1, 2 * rw + 1, generator=torch_generator(7), dtype=torch.float64)
    k = k + k.flip(0)
    k = k + k.flip(1)
    k = k / k.sum()
    y = F.pad(x.reshape(6, 1, h, w).double(), (rw, rw, rh, rh), mode="reflect")
    ref = F.conv2d(y, k[None, None]).reshape(3, 2, h, w)
    out = _conv_same(x, k, "reflect")
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.allclose(out.double(), ref, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-6)


def test_defocus_blur_float32_matches_float64():
    x = images(4, 3, 32, seed=8)
    for table in ("cifar", "imagenet"):
        t = DefocusBlur(table=table)
        for s in (1, 2.5, 3, 5):
            assert (t(x, severity=s).double() - t(x.double(), severity=s)).abs().max() < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name):
    x = torch.zeros(0, 3, 8, 8)
    y = registry.create(name, table="imagenet")(x, severity=3, generator=torch_generator(0))
    assert y.shape == x.shape


def test_bernoulli_positions_edge_probabilities():
    from robustlab.transforms.image import _bernoulli_positions

    pos, bits = _bernoulli_positions(50, 1.0, torch_generator(0))
    assert torch.equal(pos, torch.arange(50)) and set(bits.tolist()) <= {0, 1}
    assert _bernoulli_positions(50, 0.0, torch_generator(0))[0].numel() == 0
    pos, _ = _bernoulli_positions(1000, 0.999, torch_generator(0))  # nearly every trial a success
    assert bool((pos[1:] > pos[:-1]).all()) and int(pos.max()) < 1000 and pos.numel() > 980


@pytest.mark.parametrize(("delta", "q"), [(0.047, 0.5), (0.47, 0.6), (0.47, 1.0), (0.2, 0.03)])
def test_thinned_residual_is_poisson(delta, q):
    """The off-grid term of shot noise: Bernoulli(1 - e^-Δ) triggers (geometric gaps), a zero-truncated
    Poisson(Δ) count each, events kept with probability q — together Poisson(q·Δ) (chi-square, mean)."""
    stats = pytest.importorskip("scipy.stats")
    from robustlab.transforms.image import _bernoulli_positions, _thinned_events

    n = 400_000
    g = torch_generator(13)
    pos, _ = _bernoulli_positions(n, -np.expm1(-delta), g)
    counts = torch.zeros(n, dtype=torch.float64)
    counts[pos] = _thinned_events(delta, torch.full((pos.numel(),), q, dtype=torch.float64), g)
    lam = q * delta
    observed = torch.bincount(counts.long(), minlength=6)[:6].double().numpy()
    observed[-1] += float((counts > 5).sum())
    expected = n * np.append(stats.poisson.pmf(np.arange(5), lam), stats.poisson.sf(4, lam))
    assert _chi_square_pvalue(observed, expected) > 1e-3
    assert abs(float(counts.mean()) - lam) < 5 * np.sqrt(lam / n)
