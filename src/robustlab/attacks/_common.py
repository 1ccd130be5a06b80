"""Small shared helpers of the Lp attacks: per-norm default radii and argument checks."""

from __future__ import annotations

import math

from robustlab.core.errors import ConfigError
from robustlab.core.threat import parse_norm

__all__ = ["DEFAULT_EPS", "DEFAULT_SWEEP", "fmt_eps", "resolve_eps"]

#: the usual radii on [0, 1] images (RobustBench L∞ 8/255 and L2 0.5; L1 12 as in Croce & Hein's
#: APGD-L1 on CIFAR-10, "Mind the box", 2021)
DEFAULT_EPS = {"inf": 8 / 255, "2": 0.5, "1": 12.0}

#: eps sweeps used when a suite gives none
DEFAULT_SWEEP = {
    "inf": (1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255),
    "2": (0.125, 0.25, 0.5, 1.0, 2.0),
    "1": (1.0, 2.0, 4.0, 8.0, 16.0),
}


def resolve_eps(norm: object, eps: float | None, name: str) -> tuple[str, float]:
    """Canonical norm and a checked radius (``None`` -> the norm's default)."""
    norm = parse_norm(norm)
    if eps is None:
        return norm, DEFAULT_EPS[norm]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ConfigError(f"{name}: eps must be a finite number >= 0, got {eps!r}",
                          fix="pass eps in raw input units, e.g. eps=8/255 for L∞ on [0, 1] images")
    return norm, float(eps)


def fmt_eps(eps: float) -> str:
    """``0.0313725...`` -> ``'8/255'`` where exact, else a short float."""
    k = eps * 255
    if eps > 0 and abs(k - round(k)) < 1e-9 and round(k) < 255:
        return f"{round(k)}/255"
    return f"{eps:.6g}"
