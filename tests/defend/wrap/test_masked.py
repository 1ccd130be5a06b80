"""Masking wrappers: each does what it declares (grid, saturation, probabilities, seeded noise, BPDA view)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab.attacks.pgd import PGD
from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.rng import torch_generator
from robustlab.defend.wrap import (
    InputTransform,
    QuantizedInput,
    RandomizedInput,
    SaturatedLogits,
    SoftmaxOutput,
    WrappedModel,
    quantize,
)
from tests.attacks.conftest import blobs, trained_mlp


def _grad(model, x, y):
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


@pytest.mark.parametrize("levels", [2, 3, 8, 256])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 4, 4)])
def test_quantize_maps_onto_the_grid_and_is_idempotent(levels, shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    q = quantize(x, levels)
    assert q.shape == x.shape and q.dtype == x.dtype
    k = q * (levels - 1)
    assert torch.allclose(k, k.round(), atol=1e-4)                  # on the grid i / (levels - 1)
    assert float((q - x).abs().max()) <= 0.5 / (levels - 1) + 1e-6  # nearest grid point
    assert torch.equal(quantize(q, levels), q)
    assert len(torch.unique(quantize(torch.linspace(0, 1, 1000), levels))) == levels


def test_quantized_input_is_honest_and_supplies_a_straight_through_surrogate():
    m = trained_mlp()
    x, y = blobs(40, seed=3)
    q = QuantizedInput(m, levels=8)
    assert not q.has_gradients and q.num_classes == 3 and q.modality == "tabular"
    with torch.no_grad():
        assert torch.equal(q(x), m(quantize(x, 8)))
    with pytest.raises(UnsupportedModelError):
        PGD(eps=0.1)(q, x, y, generator=torch_generator(0))
    xr = x.clone().requires_grad_(True)
    s = q.bpda_forward(xr)
    assert torch.allclose(s.detach(), q(x))                               # same values as the model
    (g,) = torch.autograd.grad(F.cross_entropy(s, y, reduction="sum"), xr)
    assert torch.allclose(g, _grad(m, quantize(x, 8), y), atol=1e-6)      # identity backward at g(x)
    assert "levels=8" in repr(q)


def test_exposed_quantization_gives_exactly_zero_gradients():
    m = trained_mlp()
    x, y = blobs(40, seed=3)
    q = QuantizedInput(m, levels=8, expose_gradients=True)
    assert q.has_gradients
    assert float(_grad(q, x, y).abs().max()) == 0.0
    assert float(_grad(m, x, y).abs().sum(dim=1).min()) > 0               # the honest model has them


def test_input_transform_takes_numpy_transforms_and_custom_surrogates():
    m = trained_mlp()
    x, y = blobs(16, seed=4)
    flip = InputTransform(m, lambda t: np.asarray(1.0 - t.numpy()), surrogate=lambda t: 1.0 - t)
    with torch.no_grad():
        assert torch.allclose(flip(x), m(1.0 - x))
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(flip.bpda_forward(xr), y, reduction="sum"), xr)
    assert torch.allclose(g, -_grad(m, 1.0 - x, y), atol=1e-6)           # chain rule through the surrogate
    with pytest.raises(ConfigError):
        InputTransform(m, "not callable")


def test_saturated_logits_keep_predictions_and_kill_ce_gradients():
    m = trained_mlp()
    x, y = blobs(60, seed=3)
    s = SaturatedLogits(m, scale=1000)
    with torch.no_grad():
        assert torch.equal(s(x).argmax(1), m(x).argmax(1))
        assert torch.allclose(s(x), 1000 * m(x))
    zero = _grad(s, x, y).abs().sum(dim=1) == 0
    assert float(zero.float().mean()) > 0.9
    with pytest.raises(ConfigError):
        SaturatedLogits(m, scale=0)


def test_softmax_output_returns_probabilities_with_the_same_argmax():
    m = trained_mlp()
    x, _ = blobs(30, seed=3)
    p = SoftmaxOutput(m)
    with torch.no_grad():
        out = p(x)
        assert torch.allclose(out.sum(1), torch.ones(30)) and bool((out >= 0).all())
        assert torch.equal(out.argmax(1), m(x).argmax(1))


def test_randomized_input_is_random_per_call_but_seeded():
    m = trained_mlp()
    x, _ = blobs(30, seed=3)
    r = RandomizedInput(m, noise=0.2, generator=torch_generator(7))
    with torch.no_grad():
        a, b = r(x), r(x)
        assert not torch.allclose(a, b)
        r2 = RandomizedInput(m, noise=0.2, generator=torch_generator(7))
        assert torch.equal(r2(x), a) and torch.equal(r2(x), b)             # same seed, same draws
        assert torch.equal(RandomizedInput(m, noise=0.0)(x), m(x))
    assert r.randomized and r.has_gradients and r.masking == "stochastic"
    with pytest.raises(ConfigError):
        RandomizedInput(m, noise=-1.0)


def test_randomized_input_clips_to_the_domain():
    seen = []
    m = trained_mlp()

    class Spy(WrappedModel):
        def __call__(self, x):
            seen.append(x)
            return self.model(x)

    RandomizedInput(Spy(m), noise=5.0)(torch.full((4, 20), 0.5))
    assert float(seen[0].min()) >= 0.0 and float(seen[0].max()) <= 1.0
    assert float(seen[0].std()) > 0.1


def test_wrapped_model_checks_its_argument_and_follows_the_device():
    with pytest.raises(ConfigError):
        SoftmaxOutput(torch.nn.Linear(2, 2))
    s = SaturatedLogits(trained_mlp())
    assert s.to("cpu") is s and s.device == torch.device("cpu")
    assert repr(s).startswith("SaturatedLogits(TorchModel(") and "scale=1000" in repr(s)


def test_pgd_ce_fails_on_saturated_logits_but_margin_losses_break_them():
    m = trained_mlp()
    x, y = blobs(200, seed=5)
    s = SaturatedLogits(m, scale=1000)

    def acc(xa):
        with torch.no_grad():
            return float((s(xa).argmax(1) == y).float().mean())

    ce = PGD(eps=0.1, steps=20, loss="ce")(s, x, y, generator=torch_generator(0))
    margin = PGD(eps=0.1, steps=20, loss="margin")(s, x, y, generator=torch_generator(0))
    honest = PGD(eps=0.1, steps=20, loss="ce")(m, x, y, generator=torch_generator(0))
    assert acc(ce.x_adv) > 0.9                                  # false robustness: CE gradients are 0
    assert acc(margin.x_adv) < 0.4
    assert abs(acc(margin.x_adv) - acc(honest.x_adv)) < 0.1     # the truth about the unwrapped model


def test_apgd_dlr_breaks_saturated_logits_if_available():
    try:
        from robustlab.attacks.apgd import APGD
    except ImportError:
        pytest.skip("robustlab.attacks.apgd is not available")
    m = trained_mlp()
    x, y = blobs(100, seed=5)
    s = SaturatedLogits(m, scale=1000)
    res = APGD(eps=0.1, loss="dlr", n_iter=20)(s, x, y, generator=torch_generator(0))
    with torch.no_grad():
        assert float((s(res.x_adv).argmax(1) == y).float().mean()) < 0.4
