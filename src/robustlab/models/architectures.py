"""Small reference networks for the zoo: an MLP and a CNN for 8x8 digits, a small ResNet for ShapeWorld.

Plain torch (no torchvision). The digits networks use only ``Conv2d``, ``ReLU``, ``Flatten`` and
``Linear`` so that bound propagation (IBP / CROWN) supports them without special cases. Inputs are
whatever the model's normalization produces (the zoo wraps each network in a
:class:`~robustlab.core.model.TorchModel` that normalizes raw [0, 1] pixels first).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustlab.core.errors import ConfigError

__all__ = ["BasicBlock", "DigitsCNN", "DigitsMLP", "ShapeWorldResNet"]


def _check_shape(in_shape: Sequence[int], name: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"{name}: in_shape must be (channels, height, width), positive, got {shape}",
                          fix="pass e.g. in_shape=(1, 8, 8)")
    return shape  # type: ignore[return-value]


class DigitsMLP(nn.Sequential):
    """A ReLU multilayer perceptron on flattened images (default 64 -> 256 -> 256 -> 10).

    Args:
        in_shape: input ``(C, H, W)``; default ``(1, 8, 8)`` (scikit-learn digits).
        hidden: widths of the hidden layers.
        num_classes: number of outputs.

    Shapes: ``(B, C, H, W) -> (B, num_classes)`` logits.
    """

    def __init__(self, in_shape: Sequence[int] = (1, 8, 8), hidden: Sequence[int] = (256, 256),
                 num_classes: int = 10):
        c, h, w = _check_shape(in_shape, "DigitsMLP")
        layers: list[nn.Module] = [nn.Flatten()]
        width = c * h * w
        for n in hidden:
            layers += [nn.Linear(width, int(n)), nn.ReLU()]
            width = int(n)
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        self.in_shape, self.num_classes = (c, h, w), num_classes


class DigitsCNN(nn.Sequential):
    """A small all-convolutional network for 1x8x8 digits (strided convs, no pooling, IBP-friendly).

    Layout: conv3x3(32) -> conv3x3/2(64) -> conv3x3/2(64) -> flatten -> linear(128) -> linear(classes),
    ReLU after each hidden layer; ``8x8 -> 8x8 -> 4x4 -> 2x2``. Other input sizes work too (the flatten
    width is computed from ``in_shape``).

    Args:
        in_shape: input ``(C, H, W)``; default ``(1, 8, 8)``.
        channels: widths of the three conv layers.
        hidden: width of the hidden linear layer.
        num_classes: number of outputs.

    Shapes: ``(B, C, H, W) -> (B, num_classes)`` logits.
    """

    def __init__(self, in_shape: Sequence[int] = (1, 8, 8), channels: Sequence[int] = (32, 64, 64),
                 hidden: int = 128, num_classes: int = 10):
        c, h, w = _check_shape(in_shape, "DigitsCNN")
        c1, c2, c3 = (int(v) for v in channels)
        convs = [
            nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        ]
        with torch.no_grad():
            flat = nn.Sequential(*convs)(torch.zeros(1, c, h, w)).shape[1]
        super().__init__(*convs, nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.in_shape, self.num_classes = (c, h, w), num_classes


class BasicBlock(nn.Module):
    """The two-conv residual block of "Deep Residual Learning for Image Recognition" (He et al., 2016).

    ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; the shortcut is a strided 1x1 conv + BN
    when the shape changes (option B of the paper), else the identity.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ShapeWorldResNet(nn.Module):
    """A small CIFAR-style ResNet (He et al., 2016): a 3x3 stem, three stages of BasicBlocks, global pool.

    Stage widths default to 16/32/64 with one block each (a ResNet-8); stages 2 and 3 halve the
    resolution. Global average pooling makes it work for any input size >= 16 pixels.

    Args:
        in_channels: input channels (3 for RGB ShapeWorld).
        num_classes: number of outputs.
        widths: channel width of each stage.
        blocks: number of BasicBlocks per stage (one int for all stages, or one per stage).
        stem_stride: stride of the stem conv (2 quarters the compute on large inputs).

    Shapes: ``(B, in_channels, H, W) -> (B, num_classes)`` logits, any ``H, W >= 16``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 8, widths: Sequence[int] = (16, 32, 64),
                 blocks: int | Sequence[int] = 1, stem_stride: int = 1):
        super().__init__()
        widths = [int(w) for w in widths]
        per_stage = [int(blocks)] * len(widths) if isinstance(blocks, int) else [int(b) for b in blocks]
        if len(per_stage) != len(widths) or min(per_stage) < 1 or not widths:
            raise ConfigError(f"ShapeWorldResNet: blocks={blocks!r} does not match widths={widths}",
                              fix="give one block count (>= 1) per stage, or a single int")
        stem = nn.Conv2d(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False)
        self.stem = nn.Sequential(stem, nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages: list[nn.Module] = []
        ch = widths[0]
        for i, (w, n) in enumerate(zip(widths, per_stage)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(ch, w, stride=2 if (i > 0 and j == 0) else 1))
                ch = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)
        self.num_classes = num_classes
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal conv weights (fan-out), as in the paper; the trainer re-applies it after a reset."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features ``(B, widths[-1])``."""
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or min(x.shape[-2:]) < 16:
            raise ConfigError(f"ShapeWorldResNet needs (B, C, H, W) images, H, W >= 16, got {tuple(x.shape)}",
                              fix="resize the images to at least 16x16")
        return self.fc(self.features(x))
