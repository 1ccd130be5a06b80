"""Tests of the COCO-O-like style shifts (robustlab.transforms.styles)."""

import pytest
import torch

from robustlab.core import registry
from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import torch_generator
from robustlab.data import load_shapeworld
from robustlab.transforms.styles import STYLES, Style, kuwahara, shift_dataset, sobel_magnitude, style_images

NAMES = [f"style_{s}" for s in STYLES]


def images(n=3, c=3, size=16, seed=0):
    """Smooth-ish images with structure (a bright square on a ramp) plus a little noise."""
    g = torch_generator(seed)
    ramp = torch.linspace(0.1, 0.6, size).view(1, 1, 1, size).expand(n, c, size, size).clone()
    lo, hi = size // 4, size - size // 4
    ramp[:, :, lo:hi, lo:hi] = 0.95
    return (ramp + 0.03 * torch.rand(n, c, size, size, generator=g)).clamp(0, 1)


def test_registered_names():
    assert set(NAMES) <= set(registry.names("transform"))
    for name in NAMES:
        assert isinstance(registry.create(name), Style)
    assert len(STYLES) >= 6


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size,channels", [(8, 1), (8, 3), (13, 3), (32, 1), (32, 3)])
def test_shape_dtype_domain_and_change(name, size, channels):
    x = images(2, channels, size)
    t = registry.create(name)
    for s in (1, 3, 5):
        y = t(x, severity=s, generator=torch_generator(1))
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all() and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert float((y - x).abs().mean()) > 0.005, (name, s)


@pytest.mark.parametrize("name", NAMES)
def test_224_and_single_image_and_dtypes(name):
    t = registry.create(name)
    x = images(1, 3, 224)
    y = t(x, severity=5, generator=torch_generator(0))
    assert y.shape == x.shape and float((y - x).abs().mean()) > 0.01
    one = t(x[0].double(), severity=2.5, generator=torch_generator(0))
    assert one.shape == x[0].shape and one.dtype == torch.float64
    half = t(images(2, 3, 16).to(torch.bfloat16), severity=3, generator=torch_generator(0))
    assert half.dtype == torch.bfloat16


@pytest.mark.parametrize("name", NAMES)
def test_seeded_and_identity(name):
    t = registry.create(name)
    x = images(4, 3, 16)
    a = t(x, severity=3, generator=torch_generator(7))
    b = t(x, severity=3, generator=torch_generator(7))
    assert torch.equal(a, b)
    z = t(x, severity=0, generator=torch_generator(7))
    assert torch.equal(z, x) and z is not x
    if t.stochastic:
        assert not torch.equal(a, t(x, severity=3, generator=torch_generator(8)))
        with pytest.raises(ConfigError):
            t(x, severity=3, generator=None)


@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_per_image_for_deterministic_styles_and_severity_grows(name):
    t = registry.create(name)
    x = images(3, 3, 16)
    if not t.stochastic:
        whole = t(x, severity=4, generator=torch_generator(0))
        for i in range(3):
            assert torch.allclose(whole[i], t(x[i], severity=4, generator=torch_generator(0)), atol=1e-6)
    d1 = (t(x, severity=1, generator=torch_generator(0)) - x).abs().mean()
    d5 = (t(x, severity=5, generator=torch_generator(0)) - x).abs().mean()
    assert d5 > d1


def test_bad_inputs_raise_clear_errors():
    t = registry.create("style_sketch")
    with pytest.raises(ConfigError):
        t(images(), severity=6)
    with pytest.raises(DataError):
        t(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), severity=1)
    with pytest.raises(ConfigError):
        style_images(images(), "oil")


def test_sketch_is_white_paper_with_dark_edges():
    x = images(1, 3, 32)
    y = registry.create("style_sketch")(x, severity=5)
    edge = sobel_magnitude(x) > 0.5 * sobel_magnitude(x).max()
    assert float(y[:, :, ~edge[0, 0]].mean()) > 0.85  # flat regions become paper
    assert float(y[:, :, edge[0, 0]].mean()) < 0.6  # edges become strokes


def test_kuwahara_keeps_constant_and_step_edges():
    flat = torch.full((1, 3, 10, 10), 0.3)
    assert torch.allclose(kuwahara(flat, 2), flat)
    step = torch.zeros(1, 1, 10, 10)
    step[..., 5:] = 1.0
    assert torch.allclose(kuwahara(step, 2), step)  # an edge-preserving smoother keeps a clean step


def test_shift_dataset_keeps_labels_and_marks_style():
    clean = load_shapeworld("test", n=16, size=16)
    ds = shift_dataset(clean, "cartoon", severity=5, seed=3)
    assert torch.equal(ds.y, clean.y) and torch.equal(ds.ids, clean.ids)
    assert ds.attrs["style"][0] == "cartoon@5" and ds.x.shape == clean.x.shape
    assert not torch.equal(ds.x, clean.x)
    by_name = shift_dataset("shapeworld", "style_painting", n=8, seed=1, size=16)
    assert len(by_name) == 8 and by_name.name.endswith("+painting")
    assert torch.equal(by_name.x, shift_dataset("shapeworld", "painting", n=8, seed=1, size=16).x)


@pytest.mark.parametrize("shape", [(2, 3, 8, 13), (2, 2, 9, 8), (1, 1, 3, 3)])
def test_non_square_tiny_and_other_channel_counts(shape):
    x = torch.rand(shape, generator=torch_generator(0))
    for style in STYLES:
        y = style_images(x, style, 4, seed=0)
        assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
