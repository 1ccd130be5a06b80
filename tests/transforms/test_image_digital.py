"""Tests of pixelate, JPEG compression and saturate (robustlab.transforms.image_digital)."""

import colorsys
import io
import itertools

import numpy as np
import pytest
import torch

from robustlab.core import registry
from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import torch_generator
from robustlab.transforms.image import ImageCorruption
from robustlab.transforms.image_digital import (
    DIGITAL_TABLES,
    ElasticTransform,
    JpegCompression,
    Pixelate,
    Saturate,
    box_shrink_matrix,
    jpeg_quant_table,
    reflect_gaussian_matrix,
)

NAMES = ["pixelate", "jpeg_compression", "saturate"]


def images(n=4, c=3, size=32, seed=0, smooth=False):
    g = torch_generator(seed)
    if smooth:  # photo-like content: a smooth field, so JPEG and pixelation act as on real images
        x = torch.rand(n, c, 4, 4, generator=g)
        return torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic").clamp(0, 1)
    return torch.rand(n, c, size, size, generator=g)


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
        if name == "saturate" and channels == 1:
            assert torch.equal(y, x)  # grey images have no saturation
        elif not (name == "pixelate" and size == 8 and s == 1):  # int(8·0.95) = 7: still changes
            assert not torch.equal(y, x)


@pytest.mark.parametrize("name", NAMES)
def test_224_imagenet_table(name):
    x = images(1, 3, 224, smooth=True)
    y = registry.create(name, table="imagenet")(x, severity=5)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert float((y - x).abs().mean()) > 0.005


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtype_preserved_and_severity_zero(name, dtype):
    x = images(2, 3, 16).to(dtype)
    t = registry.create(name)
    y = t(x, severity=3)
    assert y.dtype == dtype and y.shape == x.shape
    assert float(y.float().min()) >= 0.0 and float(y.float().max()) <= 1.0
    z = t(x[0], severity=0)
    assert torch.equal(z, x[0]) and z is not x[0]
    assert torch.equal(t(x, severity=2), t(x, severity=2, generator=torch_generator(5)))  # deterministic


@pytest.mark.parametrize("name", ["pixelate", "jpeg_compression"])
@pytest.mark.parametrize("table", ["cifar", "imagenet"])
@pytest.mark.parametrize("size", [8, 32])
def test_change_grows_with_severity(name, table, size):
    x = images(4, 3, size, seed=2, smooth=True)
    t = registry.create(name, table=table)
    d = [float((t(x, severity=s) - x).abs().mean()) for s in (0, 1, 2, 3, 4, 5)]
    # on 8×8 images the CIFAR pixelate sizes are 7, 7, 6, 6, 5: equal levels give equal changes,
    # and 6 → 5 can shift the box grid so the change barely drops (the reference does the same)
    assert all(a <= b * 1.02 + 1e-4 for a, b in itertools.pairwise(d)) and d[5] > d[1], d


def test_saturate_levels_are_not_monotone_but_follow_the_table():
    # the reference table desaturates at severities 1-2 and oversaturates at 3-5 (not monotone)
    x = images(4, 3, 16)
    t = Saturate()

    def sat(y):
        v = y.amax(1)
        return float(((v - y.amin(1)) / v.clamp_min(1e-6)).mean())

    s = [sat(t(x, severity=k)) for k in (0, 1, 2, 3, 4, 5)]
    assert s[2] < s[1] < s[0] < s[3] < s[4] < s[5], s
    d = [float((t(x, severity=k) - x).abs().mean()) for k in (3, 4, 5)]
    assert d[0] < d[1] < d[2], d


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_saturate_matches_colorsys(table):
    x = images(1, 3, 6).double()
    x[0, :, 0, 0] = 0.5  # grey: hue 0, tinted red by the additive term
    x[0, :, 0, 1] = 0.0  # black
    t = Saturate(table=table)
    for s, (a, b) in zip((1, 2, 3, 4, 5), DIGITAL_TABLES[table]["saturate"]):
        y = t(x, severity=s)[0]
        for i, j in itertools.product(range(6), range(6)):
            h, sat, v = colorsys.rgb_to_hsv(*x[0, :, i, j].tolist())
            ref = colorsys.hsv_to_rgb(h, min(max(sat * a + b, 0.0), 1.0), v)
            assert np.allclose(y[:, i, j].numpy(), ref, atol=1e-12)
    assert t.parameter(0) == (1.0, 0.0) and t.parameter(3.5)[0] == pytest.approx(
        (DIGITAL_TABLES[table]["saturate"][2][0] + DIGITAL_TABLES[table]["saturate"][3][0]) / 2)


def test_saturate_needs_rgb():
    with pytest.raises(DataError, match="3 channels"):
        Saturate()(images(1, 4, 8), severity=2)


@pytest.mark.parametrize("size", [8, 16, 32, 224])
@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_pixelate_matches_pillow_box_resizes(size, table):
    image_mod = pytest.importorskip("PIL.Image")
    x = images(1, 1, size, seed=3)
    t = Pixelate(table=table)
    for s, c in zip((1, 2, 3, 4, 5), DIGITAL_TABLES[table]["pixelate"]):
        im = image_mod.fromarray(x[0, 0].numpy().astype(np.float32), mode="F")
        small = max(1, int(size * c))
        ref = np.array(im.resize((small, small), image_mod.BOX).resize((size, size), image_mod.BOX))
        assert np.allclose(t(x, severity=s)[0, 0].numpy(), ref, atol=1e-5)


def test_box_shrink_matrix():
    m = box_shrink_matrix(10, 5)
    assert torch.allclose(m.sum(1), torch.ones(5, dtype=torch.float64))
    assert torch.equal(m[0], torch.tensor([0.5, 0.5] + [0.0] * 8, dtype=torch.float64))
    assert torch.equal(box_shrink_matrix(7, 7), torch.eye(7, dtype=torch.float64))


def test_jpeg_quant_table_ijg_scaling():
    assert torch.equal(jpeg_quant_table(50), jpeg_quant_table(50.0))
    assert float(jpeg_quant_table(50)[0, 0]) == 16 and float(jpeg_quant_table(50, chroma=True)[0, 0]) == 17
    assert float(jpeg_quant_table(80)[0, 0]) == 6  # floor((16·40 + 50) / 100)
    assert float(jpeg_quant_table(10)[0, 0]) == 80  # scale 500: floor((16·500 + 50) / 100)
    assert float(jpeg_quant_table(100).max()) == 1 and float(jpeg_quant_table(1).max()) == 255


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_jpeg_close_to_pillow(channels, table):
    image_mod = pytest.importorskip("PIL.Image")
    x = images(2, channels, 8, seed=4)
    x = torch.nn.functional.interpolate(x, size=(37, 45), mode="bilinear")  # odd, non-square size
    x = torch.round(x * 255) / 255
    t = JpegCompression(table=table)
    for s in (1, 5):
        q = DIGITAL_TABLES[table]["jpeg_compression"][s - 1]
        y = t(x, severity=s)
        assert torch.equal(torch.round(y * 255), y * 255)  # decoded to 8 bits
        for i in range(2):
            arr = (x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            buf = io.BytesIO()
            image_mod.fromarray(arr[..., 0] if channels == 1 else arr).save(buf, "JPEG", quality=q)
            ref = np.asarray(image_mod.open(buf), dtype=np.float64).reshape(37, 45, channels) / 255
            ours = y[i].permute(1, 2, 0).numpy()
            jpeg_err = np.abs(ref - x[i].permute(1, 2, 0).numpy()).mean()
            gap = np.abs(ours - ref).mean()
            # float vs libjpeg's integer DCT (and its chroma resampling details): a small fraction of
            # the JPEG error itself; grey images (no chroma) differ by under half a level on average
            assert gap < 0.15 * jpeg_err, (gap, jpeg_err)
            if channels == 1:
                assert gap < 0.5 / 255, gap


def test_jpeg_idempotent_on_flat_blocks():
    x = torch.full((1, 3, 16, 16), 100 / 255)
    y = JpegCompression()(x, severity=5)
    assert float((y - x).abs().max()) <= 1.5 / 255


@pytest.mark.parametrize("bad", [-1, 5.5, float("nan"), "3", None])
@pytest.mark.parametrize("name", NAMES)
def test_bad_severity(name, bad):
    with pytest.raises(ConfigError, match="severity"):
        registry.create(name)(images(), severity=bad)


@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("batch", [1, 4])
def test_elastic_shape_dtype_range(size, channels, batch):
    x = images(batch, channels, size)
    t = ElasticTransform()
    for s in (1, 3, 5):
        y = t(x, severity=s, generator=torch_generator(1))
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert torch.isfinite(y).all() and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert not torch.equal(y, x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_elastic_dtype_seed_and_severity_zero(dtype):
    x = images(2, 3, 16).to(dtype)
    t = ElasticTransform()
    y = t(x, severity=3, generator=torch_generator(0))
    assert y.dtype == dtype and y.shape == x.shape
    assert float(y.float().min()) >= 0.0 and float(y.float().max()) <= 1.0
    assert torch.equal(t(x[0], severity=0, generator=torch_generator(0)), x[0])
    x = images(2, 3, 16)
    a = t(x, severity=3, generator=torch_generator(7))
    assert torch.equal(a, t(x, severity=3, generator=torch_generator(7)))
    assert not torch.equal(a, t(x, severity=3, generator=torch_generator(8)))
    assert torch.allclose(t(x.double(), severity=3, generator=torch_generator(7)).float(), a, atol=1e-5)
    with pytest.raises(ConfigError, match="generator"):
        t(x, severity=3, generator=None)


def test_elastic_224_imagenet_table():
    x = images(1, 3, 224, smooth=True)
    y = ElasticTransform(table="imagenet")(x, severity=5, generator=torch_generator(0))
    assert y.shape == x.shape and float((y - x).abs().mean()) > 0.005


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_elastic_changes_at_every_severity(table):
    # the reference table is not monotone in effect (CIFAR level 1 is a pure affine jitter of
    # 2.56 px, larger than level 2's), so only check that every level moves pixels, boundedly
    x = images(4, 3, 32, seed=2, smooth=True)
    t = ElasticTransform(table=table)
    d = [float((t(x, severity=s, generator=torch_generator(1)) - x).abs().mean()) for s in (1, 2, 3, 4, 5)]
    assert all(0.002 < v < 0.3 for v in d), d
    assert t.parameter(0) == (0.0, 0.0, 0.0) and t.parameter(1)[2] == pytest.approx(
        {"cifar": 2.56, "imagenet": 24.4}[table])


def test_elastic_level_one_is_affine_and_level_five_is_not():
    # a linear ramp stays linear under an affine map (away from the reflected borders)
    r = torch.arange(32, dtype=torch.float64)
    ramp = (0.2 + 0.6 * (r[:, None] * 0.4 + r[None, :] * 0.6) / 31)[None, None].expand(2, 1, 32, 32)
    t = ElasticTransform()

    def curvature(y):
        inner = y[..., 8:24, 8:24]
        return float((inner[..., 2:, :] - 2 * inner[..., 1:-1, :] + inner[..., :-2, :]).abs().max()
                     + (inner[..., :, 2:] - 2 * inner[..., :, 1:-1] + inner[..., :, :-2]).abs().max())

    y1 = t(ramp, severity=1, generator=torch_generator(3))
    assert curvature(y1) < 1e-9 and not torch.allclose(y1, ramp)
    assert curvature(t(ramp, severity=5, generator=torch_generator(3))) > 1e-4


def test_reflect_gaussian_matrix_matches_scipy():
    nd = pytest.importorskip("scipy.ndimage")
    u = np.random.default_rng(0).random(10)
    for sigma in (0.5, 2.0, 6.4, 30.0):
        ref = nd.gaussian_filter1d(u, sigma, mode="reflect", truncate=3.0)
        assert np.allclose(reflect_gaussian_matrix(10, sigma).numpy() @ u, ref, atol=1e-12)
    assert torch.equal(reflect_gaussian_matrix(4, 0.0), torch.eye(4, dtype=torch.float64))


def test_registry():
    assert set(NAMES) <= set(registry.names("transform"))
    assert "elastic_transform" in registry.names("transform")
    for name in NAMES:
        t = registry.create(name, table="imagenet")
        assert isinstance(t, ImageCorruption) and t.kind == "transform" and t.modality == "image"
        assert repr(t) == f"{type(t).__name__}(table='imagenet')"
    with pytest.raises(ConfigError, match="table"):
        registry.create("pixelate", table="svhn")


@pytest.mark.parametrize("name", ["pixelate", "jpeg_compression", "saturate", "elastic_transform"])
@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (2, 3, 2, 2), (1, 1, 3, 3), (2, 3, 5, 9)])
def test_tiny_and_non_square_constant_images(name, shape):
    """Any size works; geometric corruptions leave a constant image (nearly) alone."""
    x = torch.full(shape, 0.4)
    for table in ("cifar", "imagenet"):
        y = registry.create(name, table=table)(x, severity=4.5, generator=torch_generator(0))
        assert y.shape == x.shape and torch.isfinite(y).all() and float(y.min()) >= 0 and float(y.max()) <= 1
        if name in ("pixelate", "elastic_transform"):
            assert torch.allclose(y, x, atol=2 / 255)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["pixelate", "jpeg_compression", "saturate", "elastic_transform"])
def test_cuda(name):
    x = images(2, 3, 32).cuda()
    t = registry.create(name)
    y = t(x, severity=3, generator=torch_generator(0, "cuda"))
    assert y.is_cuda and y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    # a CPU generator also works on CUDA inputs and gives the CPU result
    y_cpu = t(x.cpu(), severity=3, generator=torch_generator(0))
    assert torch.allclose(t(x, severity=3, generator=torch_generator(0)).cpu(), y_cpu, atol=1e-4)


def test_jpeg_quantisation_rounds_ties_away_from_zero_like_libjpeg():
    from robustlab.transforms.image_digital import _code_blocks, _jpeg_code_matrices

    # a flat block of 12 (level-shifted) has DC coefficient 8·12 = 96; with a DC step of 64 that is
    # 1.5 steps: libjpeg rounds to 2 (128 → flat 16), round-half-even would too; -96 must go to -2
    fwd = _jpeg_code_matrices(50, False, torch.float32, torch.device("cpu"))[0]
    q = torch.full((8, 8, 1), 64.0)
    for v, want in ((12.0, 16.0), (-12.0, -16.0), (4.0, 8.0), (-4.0, -8.0)):  # 4: DC 32 = 0.5 steps → 1
        out = _code_blocks(torch.full((8, 8, 3), v), (fwd, 4 * q, 8 * q, q / 8), 0.0)
        assert torch.equal(out, torch.full_like(out, want)), (v, out[..., 0])


def test_jpeg_exact_ties_of_rational_coefficients_and_samples():
    """(u, v) ∈ {0, 4}² coefficients and blocks made of them are exact in float32: ties decided like libjpeg."""
    from robustlab.transforms.image_digital import _code_blocks, _jpeg_code_matrices

    fwd = _jpeg_code_matrices(50, False, torch.float32, torch.device("cpu"))[0]
    s4 = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0])  # signs of the v = 4 basis along a row
    g = torch.Generator().manual_seed(0)
    dc = torch.randint(-100, 101, (4096,), generator=g).double()
    amp = torch.randint(-20, 21, (4096,), generator=g).double()
    blocks = (dc + amp * s4.double()[:, None]).expand(8, 8, -1).float().contiguous()  # (i, j, block)
    # steps: 48 for (0, 0) (DC 8·dc ties at half a step when dc is an odd multiple of 3), 12 for the rest
    # ((0, 4) = 8·amp is never a tie, but its decoded contribution 12·r/8 is a half level for odd r)
    q = torch.full((8, 8, 1), 12.0)
    q[0, 0] = 48.0
    out = _code_blocks(blocks, (fwd, 4 * q, 8 * q, q / 8), 0.5)

    def away(r):
        return torch.sign(r) * torch.floor(r.abs() + 0.5)

    r00, r04 = 8 * dc / 48, 8 * amp / 12
    assert bool(((r00 % 1) == 0.5).any())  # exact coefficient ties are present
    sample = (48 * away(r00) + 12 * away(r04) * s4.double()[:, None]) / 8  # (j, block)
    assert bool(((sample % 1) == 0.5).any())  # exact half-level samples are present
    want = torch.floor(sample + 0.5).expand(8, 8, -1)  # libjpeg's islow IDCT descale: round half up
    assert torch.equal(out.double(), want)


def test_pixelate_single_matrix_form_matches_shrink_then_enlarge():
    from robustlab.transforms.image_digital import _box_enlarge_index

    x = images(2, 3, 8, seed=2)
    x = torch.nn.functional.interpolate(x, size=(21, 30), mode="bilinear")
    for table in ("cifar", "imagenet"):
        t = Pixelate(table=table)
        for s in (1, 3, 5):
            c = t.parameter(s)
            sh, sw = max(1, int(21 * c)), max(1, int(30 * c))
            small = box_shrink_matrix(21, sh).float() @ x @ box_shrink_matrix(30, sw).float().T
            ref = small[..., _box_enlarge_index(sh, 21, x.device)[:, None], _box_enlarge_index(sw, 30, x.device)]
            assert torch.allclose(t(x, severity=s), ref.clamp(0, 1), atol=1e-6)


def test_jpeg_chunks_do_not_change_the_result(monkeypatch):
    import robustlab.transforms.image_digital as digital

    x = images(11, 3, 24, seed=5, smooth=True)
    t = JpegCompression(table="imagenet")
    whole = t(x, severity=3)
    monkeypatch.setattr(digital, "JPEG_CHUNK_PIXELS", 24 * 24 * 4)  # chunks of 4 images
    assert torch.equal(t(x, severity=3), whole)
