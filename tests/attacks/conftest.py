"""Tiny seeded models and data shared by the attack tests."""

from __future__ import annotations

import functools

import torch
from torch import nn

from robustlab.core.model import TorchModel


def linear_model(d: int = 12, classes: int = 3, seed: int = 0, dtype=torch.float32) -> TorchModel:
    """A random linear classifier on flat inputs of size ``d``."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(d, classes)).to(dtype)
    return TorchModel(net, num_classes=classes, modality="tabular")


def mlp(shape: tuple[int, ...], classes: int = 4, seed: int = 0) -> TorchModel:
    """A random small MLP on inputs of ``shape`` (per example)."""
    torch.manual_seed(seed)
    d = 1
    for s in shape:
        d *= s
    net = nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, classes))
    return TorchModel(net, num_classes=classes)


def blobs(n: int, d: int = 20, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs in [0, 1]^d with fixed class means (same means for every seed)."""
    g = torch.Generator().manual_seed(1234)
    means = 0.25 + 0.5 * torch.rand(classes, d, generator=g)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = (means[y] + 0.08 * torch.randn(n, d, generator=g)).clamp(0, 1)
    return x, y


@functools.cache
def trained_mlp(classes: int = 3, steps: int = 300) -> TorchModel:
    """A small MLP trained (full batch, ``steps`` Adam steps) on ``classes``-class blobs: ~100% clean accuracy."""
    torch.manual_seed(0)
    x, y = blobs(600, classes=classes, seed=1)
    net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, classes))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for p in net.parameters():
        p.grad = None
    return TorchModel(net, num_classes=classes, modality="tabular")
