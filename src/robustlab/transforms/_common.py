"""Helpers shared by the transforms: severity checking, table interpolation, seeded draws."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from robustlab.core.errors import ConfigError

__all__ = ["MAX_SEVERITY", "check_generator", "check_severity", "interpolate"]

#: the paper's severities are 1..5; 0 is the identity
MAX_SEVERITY = 5


def check_severity(severity: float, name: str) -> float:
    """``severity`` as a float in ``[0, 5]``, or a :class:`ConfigError` that says the fix."""
    if isinstance(severity, torch.Tensor) and severity.numel() == 1:
        severity = severity.item()
    if isinstance(severity, bool) or not isinstance(severity, numbers.Real) or not math.isfinite(severity):
        raise ConfigError(f"{name}: severity must be a number, got {severity!r}",
                          fix="use a severity between 0 and 5 (1..5 are the paper's levels, 0 is identity)")
    s = float(severity)
    if not 0.0 <= s <= MAX_SEVERITY:
        raise ConfigError(f"{name}: severity {severity!r} is out of range",
                          fix="use a severity between 0 and 5 (1..5 are the paper's levels, 0 is identity; "
                              "fractions interpolate between neighbouring levels)")
    return s


def interpolate(values: Sequence[float], severity: float) -> float:
    """Piecewise-linear ``values[0..5]`` at ``severity`` (``values[0]`` is the identity setting)."""
    lo = min(math.floor(severity), len(values) - 2)
    t = severity - lo
    return float(values[lo]) * (1.0 - t) + float(values[lo + 1]) * t


def check_generator(generator: torch.Generator | None, name: str) -> torch.Generator:
    """``generator`` if it is a ``torch.Generator``; a :class:`ConfigError` otherwise."""
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"{name} is random and needs a torch.Generator, got {type(generator).__name__}",
                          fix="pass generator=robustlab.core.rng.torch_generator(seed)")
    return generator
