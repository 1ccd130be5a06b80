"""Shapes and layer types of the zoo architectures, over several input sizes and batch sizes."""

import pytest
import torch
from torch import nn

from robustlab.core.errors import ConfigError
from robustlab.models.architectures import BasicBlock, DigitsCNN, DigitsMLP, ShapeWorldResNet


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (3, 16, 16), (1, 5, 7)])
@pytest.mark.parametrize("batch", [1, 4])
def test_mlp_shapes(in_shape, batch):
    net = DigitsMLP(in_shape=in_shape, num_classes=7)
    out = net(torch.rand(batch, *in_shape))
    assert out.shape == (batch, 7)
    assert net[1].in_features == in_shape[0] * in_shape[1] * in_shape[2]


def test_mlp_default_widths():
    net = DigitsMLP()
    widths = [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)]
    assert widths == [(64, 256), (256, 256), (256, 10)]


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 16, 16), (3, 12, 10)])
@pytest.mark.parametrize("batch", [1, 3])
def test_cnn_shapes(in_shape, batch):
    net = DigitsCNN(in_shape=in_shape)
    assert net(torch.rand(batch, *in_shape)).shape == (batch, 10)


def test_cnn_uses_only_bound_propagation_friendly_layers():
    allowed = (nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear)
    assert all(isinstance(m, allowed) for m in DigitsCNN())


@pytest.mark.parametrize("size", [(16, 16), (32, 32), (48, 48), (16, 24)])
@pytest.mark.parametrize("stem_stride", [1, 2])
def test_resnet_any_size_at_least_16(size, stem_stride):
    net = ShapeWorldResNet(num_classes=9, stem_stride=stem_stride).eval()
    assert net(torch.rand(2, 3, *size)).shape == (2, 9)
    assert net.features(torch.rand(2, 3, *size)).shape == (2, 64)


def test_resnet_blocks_and_widths():
    net = ShapeWorldResNet(in_channels=1, num_classes=4, widths=(8, 16), blocks=(2, 1))
    assert [len(s) for s in net.stages] == [2, 1]
    assert net(torch.rand(3, 1, 20, 20)).shape == (3, 4)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 0


def test_resnet_backward_reaches_every_parameter():
    net = ShapeWorldResNet(num_classes=8)
    net(torch.rand(4, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_resnet_rejects_small_inputs_and_bad_blocks():
    with pytest.raises(ConfigError, match="at least 16"):
        ShapeWorldResNet()(torch.rand(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="blocks"):
        ShapeWorldResNet(widths=(16, 32, 64), blocks=(1, 1))
    with pytest.raises(ConfigError, match="in_shape"):
        DigitsMLP(in_shape=(8, 8))


def test_basic_block_shortcut():
    same = BasicBlock(16, 16)
    down = BasicBlock(16, 32, stride=2)
    assert isinstance(same.shortcut, nn.Identity)
    assert down(torch.rand(2, 16, 8, 8)).shape == (2, 32, 4, 4)
    assert (same.eval()(torch.rand(2, 16, 8, 8)) >= 0).all()  # ends in a ReLU
