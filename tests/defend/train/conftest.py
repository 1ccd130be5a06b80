"""Tiny seeded networks and digits subsets shared by the adversarial-training tests."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from robustlab.data import load_dataset
from robustlab.data.base import Dataset


def mlp(hidden: int = 32) -> nn.Module:
    """A ReLU MLP on 1x8x8 digits (weights are re-initialized from the trainer's seed)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def bn_cnn() -> nn.Module:
    """A tiny conv net with BatchNorm, to check which forward passes update the running statistics."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 10))


@functools.cache
def _digits(split: str, n: int) -> Dataset:
    return load_dataset("digits", split=split, n=n, seed=0)


@pytest.fixture
def digits_train() -> Dataset:
    return _digits("train", 600)


@pytest.fixture
def digits_test() -> Dataset:
    return _digits("test", 300)


@pytest.fixture
def tiny_train() -> Dataset:
    return _digits("train", 128)


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
