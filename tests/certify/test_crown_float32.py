"""CROWN's float32 folded product: its rounding slack keeps every bound sound (and close to float64's)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from robustlab.certify import crown
from robustlab.certify.bounds import bound_margins
from robustlab.certify.layers import ibp, to_ops, trace_shapes
from robustlab.core.model import TorchModel
from robustlab.core.threat import LpBall


@pytest.fixture
def matmul():
    """Set CROWN's folded-product precision for one test, then restore it."""
    old = crown.set_matmul("auto")
    yield crown.set_matmul
    crown.set_matmul(old)


def _net(seed: int, sizes: tuple[int, ...], scale: float = 1.0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    net = nn.Sequential(*layers[:-1])
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(scale)
    return net


def _layer2_bounds(net: nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN pre-activation bounds of the second ReLU layer (the folded product's only caller here)."""
    ops = to_ops(net)
    trace_shapes(ops, lo[:1])
    record: dict = {}
    ibp(ops, lo, hi, record=record)
    relus = [op for op, _ in crown._relus_with_prefix(ops, [])]
    prefix = crown._relus_with_prefix(ops, [])[1][1]
    first = record[id(relus[0])]
    l2, u2 = record[id(relus[1])]
    return crown._tighten(prefix, relus[1].in_shape, {id(relus[0]): first}, lo, hi, l2, u2)


def _both_precisions(matmul, net: nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> tuple:
    """:func:`_layer2_bounds` with every product in float64, then with the float32 fold."""
    out = []
    for mode in ("float64", "float32"):
        matmul(mode)
        out.append(_layer2_bounds(net, lo, hi))
    return tuple(out)


def _true_preacts(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    double = nn.Sequential(*list(net)[:3]).double()
    with torch.no_grad():
        return double(x.double())


@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_float32_bounds_contain_float64_bounds_and_samples(matmul, scale):
    net = _net(0, (20, 48, 40, 5), scale)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 20, generator=g, dtype=torch.float64)
    lo, hi = (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1)
    (l64, u64), (l32, u32) = _both_precisions(matmul, net, lo, hi)
    # float64 is the reference (its own rounding ~1e-13 relative): float32 may only be looser, and barely
    tol = 1e-12 * (1 + u64.abs().max())
    assert bool((l32 <= l64 + tol).all()) and bool((u32 >= u64 - tol).all())
    width = (u64 - l64).abs().max()
    assert float((l64 - l32).max()) <= 1e-3 * float(width) + 1e-9
    samples = lo + torch.rand(2000, *lo.shape, generator=g, dtype=torch.float64) * (hi - lo)
    z = _true_preacts(net, samples.reshape(-1, 20)).view(2000, 12, -1)
    assert bool((z.min(0).values >= l32 - 1e-9).all()) and bool((z.max(0).values <= u32 + 1e-9).all())


def test_float32_slack_covers_catastrophic_cancellation(matmul):
    """Large, nearly cancelling weights and biases (float32 sums lose most digits): the slack still covers it."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 3))
    with torch.no_grad():
        big = 1e4 * torch.randn(32, 16)
        net[0].weight.copy_(torch.cat([big[:16], -big[:16] + 1e-3 * torch.randn(16, 16)]))
        net[0].bias.copy_(1e3 * torch.randn(32))
        net[2].weight.copy_(torch.cat([torch.ones(24, 16), torch.ones(24, 16)], 1) + 1e-4 * torch.randn(24, 32))
    x = torch.rand(6, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    lo, hi = x - 1e-3, x + 1e-3
    (l64, u64), (l32, u32) = _both_precisions(matmul, net, lo, hi)
    tol = 1e-9 * (1 + u64.abs().max())
    assert bool((l32 <= l64 + tol).all()) and bool((u32 >= u64 - tol).all())


def test_auto_uses_float32_only_for_large_products_and_full_precision(matmul):
    a0 = torch.zeros(256, 256, dtype=torch.float64)
    w = torch.zeros(256, 65, dtype=torch.float64)
    assert crown._use_float32(a0, w, 64)  # 256 * 64 * 256 * 65 multiply-adds
    assert not crown._use_float32(a0[:8], w, 4)
    assert not crown._use_float32(a0.float(), w, 64)
    assert not crown._use_float32(a0.requires_grad_(), w, 64)
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")  # TF32 / bf16 allowed: no error bound, no float32
        assert not crown._use_float32(a0.detach(), w, 64)
    finally:
        torch.set_float32_matmul_precision(old)
    matmul("float64")
    assert not crown._use_float32(a0.detach(), w, 64)
    with pytest.raises(ValueError, match="auto"):
        crown.set_matmul("float16")


def test_zoo_sized_mlp_float32_matches_float64_closely(matmul):
    """On a 64-256-256-10 MLP (the benchmark's shape) auto mode is float32 and loses < 1e-3 of margin."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    model = TorchModel(net, num_classes=10, modality="tabular")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 64, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (64,), generator=g)
    threat = LpBall("inf", 0.01)
    matmul("float64")
    ref = bound_margins(model, x, y, threat, "crown")
    matmul("auto")
    fast = bound_margins(model, x, y, threat, "crown")
    assert bool((fast <= ref + 1e-9).all())
    assert float((ref - fast).max()) < 1e-3
