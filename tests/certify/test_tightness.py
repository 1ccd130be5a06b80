"""IBP propagation tightness (Mao et al., ICLR 2024): exact cases, brute force, closed form, errors."""

import itertools
import math

import pytest
import torch
from torch import nn

from robustlab.certify.bounds import interval_bounds
from robustlab.certify.tightness import expected_dln_tightness, tightness
from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.model import TorchModel
from robustlab.core.threat import LpBall


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_a_single_affine_layer_is_exact_with_and_without_the_margin_spec():
    g = _gen()
    m = nn.Linear(6, 4)
    x = torch.rand(5, 6, generator=g)
    for y in (None, torch.tensor([0, 1, 2, 3, 0])):
        res = tightness(m, x, 0.1, y)
        assert torch.allclose(res.tau, torch.ones_like(res.tau), atol=1e-12)
        assert res.tau.shape == (5, 4 if y is None else 3) and res.per_example.shape == (5,)


def test_non_negative_weights_are_exact_and_a_sign_mix_is_not():
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.rand(4, 3, generator=_gen(1)))
        net[1].weight.copy_(torch.rand(2, 4, generator=_gen(2)))
    x = torch.full((2, 3), 0.5)
    assert torch.allclose(tightness(net, x, 0.1).tau, torch.ones(2, 2, dtype=torch.float64))
    with torch.no_grad():
        net[1].weight[0, 0] *= -1
    assert float(tightness(net, x, 0.1).tau[:, 0].max()) < 1


def test_two_layer_closed_form_with_known_weights():
    # W1 = [[1, 1], [1, -1]], W2 = [[1, 1]]: W2 W1 = [2, 0] -> r_opt = 2 e1; |W2||W1| = [2, 2] -> r_ibp = 2 (e1 + e2)
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        net[1].weight.copy_(torch.tensor([[1.0, 1.0]]))
    x = torch.tensor([[0.5, 0.5], [0.5, 0.0]])  # second example: x2's box is clipped to [0, 0.1]
    res = tightness(net, x, 0.1)
    assert torch.allclose(res.r_opt[:, 0], torch.tensor([0.2, 0.2], dtype=torch.float64))
    assert torch.allclose(res.r_ibp[:, 0], torch.tensor([0.4, 0.3], dtype=torch.float64))
    assert torch.allclose(res.tau[:, 0], torch.tensor([0.5, 2 / 3], dtype=torch.float64))


def test_r_opt_is_the_brute_force_vertex_maximum_of_the_local_linearization_and_tau_in_0_1():
    g = _gen(3)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3))
    x, y = torch.rand(6, 5, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    res = tightness(net, x, 0.05, y, per_layer=True)
    assert bool(((res.tau > 0) & (res.tau <= 1 + 1e-12)).all())
    eps = ((x + 0.05).clamp(max=1) - (x - 0.05).clamp(min=0)) / 2
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=5)), dtype=torch.float64)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(net, x[i]).double()  # = linearization at x (ReLU net)
        c = torch.eye(3, dtype=torch.float64)[y[i]] - torch.eye(3, dtype=torch.float64)
        c = c[[j for j in range(3) if j != y[i]]]
        best = ((signs * eps[i].double()) @ (c @ jac).T).max(0).values
        assert torch.allclose(best, res.r_opt[i], atol=1e-10)
    names = [n for n, _ in res.per_layer]
    assert names == ["relu1", "relu2", "logits"]
    assert torch.allclose(res.per_layer[0][1], torch.ones(6, dtype=torch.float64))  # first layer: one affine map
    assert all(bool(((v > 0) & (v <= 1 + 1e-12)).all()) for _, v in res.per_layer)


def test_r_ibp_matches_robustlab_ibp_radius_on_an_active_pattern_and_normalization_is_a_scale():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    g = _gen(4)
    with torch.no_grad():
        for lin in (net[1], net[2]):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g))
    x = torch.rand(3, 1, 2, 2, generator=g) * 0.5 + 0.25
    plain = tightness(net, x, 0.02)
    wrapped = tightness(TorchModel(net, mean=[0.3], std=[0.5], num_classes=2), x, 0.02)
    assert torch.allclose(plain.tau, wrapped.tau, atol=1e-12)
    assert torch.allclose(wrapped.r_ibp, plain.r_ibp / 0.5, atol=1e-12)
    w1, w2 = net[1].weight.double(), net[2].weight.double()
    assert torch.allclose(plain.r_ibp, torch.full((3, 4), 0.02, dtype=torch.float64) @ (w2.abs() @ w1.abs()).T)
    lo, hi = interval_bounds(net, x, LpBall("inf", 0.02))  # robustlab's IBP (logits, no spec)
    assert torch.allclose(plain.r_ibp, (hi - lo) / 2, atol=1e-12)


def test_local_pattern_drops_inactive_rows_and_none_keeps_them():
    net = nn.Sequential(nn.Linear(1, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
    x = torch.tensor([[0.5]])
    assert float(tightness(net, x, 0.1, relu_adjust="local").tau) == pytest.approx(1.0)
    res = tightness(net, x, 0.1, relu_adjust="none")  # identity ReLU: W2 W1 = 0, IBP radius 0.2
    assert float(res.r_opt) == pytest.approx(0.0) and float(res.r_ibp) == pytest.approx(0.2)


def test_dln_at_gaussian_init_matches_the_closed_form_and_decreases_with_width_and_depth():
    g = _gen(5)
    x = torch.rand(20, 32, generator=g, dtype=torch.float64) * 0.8 + 0.1
    y = torch.randint(0, 10, (20,), generator=g)
    vals = {}
    for depth in (2, 3):
        for width in (16, 512):
            dims = [32] + [width] * (depth - 1) + [10]
            net = nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(dims, dims[1:])])
            with torch.no_grad():
                for lin in net:
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=g))
            vals[(width, depth)] = float(tightness(net, x, 0.01, y).per_example.mean())
    assert vals[(512, 2)] * math.sqrt(512) == pytest.approx(math.sqrt(math.pi / 2), rel=0.1)
    assert expected_dln_tightness(512, 2) == pytest.approx(math.sqrt(math.pi / 2) / math.sqrt(512))
    assert vals[(16, 2)] > vals[(512, 2)] and vals[(16, 2)] > vals[(16, 3)] > vals[(512, 3)]


def test_errors_are_reported_with_a_fix():
    m = nn.Linear(2, 2)
    with pytest.raises(ConfigError):
        tightness(m, torch.rand(1, 2), 0.0)
    with pytest.raises(ConfigError):
        tightness(m, torch.rand(1, 2), 0.1, relu_adjust="center")
    with pytest.raises(ConfigError):
        tightness(m, torch.rand(0, 2), 0.1)
    with pytest.raises(UnsupportedModelError):
        tightness(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), torch.rand(1, 2), 0.1)
    with pytest.raises(UnsupportedModelError):
        tightness(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), torch.rand(1, 2), 0.1)


def test_conv_batchnorm_residual_pooling_and_normalization_match_the_autograd_jacobian():
    from robustlab.models.architectures import BasicBlock

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), BasicBlock(4, 6, stride=2),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(24, 5))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.0, 1.0)
    model = TorchModel(net.eval(), mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.25], num_classes=5)
    x, y = torch.rand(3, 3, 8, 8, generator=_gen(6)), torch.tensor([0, 2, 4])
    res = tightness(model, x, 0.03, y, per_layer=True, batch_size=2)
    eps = ((x + 0.03).clamp(max=1) - (x - 0.03).clamp(min=0)) / 2
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x[i]).double().flatten(1)
        c = torch.eye(5, dtype=torch.float64)[y[i]] - torch.eye(5, dtype=torch.float64)
        c = c[[j for j in range(5) if j != y[i]]]
        assert torch.allclose((c @ jac).abs() @ eps[i].flatten().double(), res.r_opt[i], rtol=1e-5)
    assert bool(((res.tau > 0) & (res.tau <= 1 + 1e-12)).all()) and float(res.tau.max()) < 1
    assert [n for n, _ in res.per_layer] == ["relu1", "relu2", "logits"]
    assert torch.allclose(res.per_layer[0][1], torch.ones(3, dtype=torch.float64))  # conv + BN: one layer
