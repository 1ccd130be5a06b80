"""Threat models: the set of allowed inputs around a clean input ``x0``.

One object is shared by attacks, certifiers and the report, so "L∞ 8/255" means one thing
everywhere (the habit of auto_LiRPA's ``PerturbationLpNorm``). All tensors are in the *raw* input
domain (pixels in [0, 1]); normalization lives inside the model.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import torch

from robustlab.core.errors import ConfigError

__all__ = ["ThreatModel", "LpBall", "lp_norm", "parse_norm"]

_NORMS = {"inf": "inf", "linf": "inf", "l_inf": "inf", "2": "2", "l2": "2", "1": "1", "l1": "1"}


def parse_norm(norm: object) -> str:
    """Canonical norm name (``"inf"``, ``"2"`` or ``"1"``) from ``inf``, ``2``, ``"Linf"``, ``"l2"``..."""
    if isinstance(norm, numbers.Real) and not isinstance(norm, bool):
        value = float(norm)
        key = "inf" if value == math.inf else (str(int(value)) if value.is_integer() else repr(norm))
    else:
        key = str(norm).strip().lower().replace("∞", "inf")
    if key not in _NORMS:
        raise ConfigError(f"unknown norm {norm!r}", fix="use one of 'inf', 2 or 1 (also 'linf', 'l2', 'l1')")
    return _NORMS[key]


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example Lp norm of ``delta`` (first dimension is the batch)."""
    flat = delta.reshape(delta.shape[0], -1)
    if norm == "inf":
        return flat.abs().amax(dim=1)
    if norm == "2":
        return flat.norm(p=2, dim=1)
    return flat.abs().sum(dim=1)


class ThreatModel(ABC):
    """The set of inputs an adversary may choose around ``x0`` (batched: first dim is the example)."""

    @abstractmethod
    def contains(self, x0: torch.Tensor, x: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
        """Boolean per example: is ``x`` an allowed input around ``x0``?"""

    @abstractmethod
    def project(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The allowed input closest to ``x`` (continuous threat models)."""

    @abstractmethod
    def bounds(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Elementwise lower and upper bounds that contain the set (for IBP / CROWN)."""

    @abstractmethod
    def sample(self, x0: torch.Tensor, generator: torch.Generator, n: int | None = None) -> torch.Tensor:
        """Random allowed inputs: shape of ``x0`` if ``n`` is None, else ``(n, *x0.shape)``."""


@dataclass(frozen=True)
class LpBall(ThreatModel):
    """An Lp ball of radius ``eps`` (L∞, L2 or L1) intersected with the box ``[low, high]``.

    Args:
        norm: ``"inf"``, ``"2"`` or ``"1"`` (``inf``, ``2``, ``"linf"`` ... are accepted).
        eps: radius in raw input units (e.g. ``8/255`` for L∞ on [0, 1] pixels).
        low, high: the input domain; every point returned by ``project`` / ``sample`` lies inside.

    ``project`` projects the perturbation onto the ball, then clips to the box. Clipping only moves
    coordinates towards ``x0``, so the result stays in the ball (exact for L∞, a feasible but not
    always nearest point for L2 / L1, as in every attack library).
    """

    norm: str = "inf"
    eps: float = 8 / 255
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", parse_norm(self.norm))
        eps = self.eps
        is_number = isinstance(eps, numbers.Real) and not isinstance(eps, bool)
        if not (is_number and math.isfinite(eps) and eps >= 0):
            raise ConfigError(f"LpBall eps must be a finite number >= 0, got {self.eps!r}",
                              fix="pass eps in raw input units, e.g. eps=8/255 for L∞ on [0,1] images")
        object.__setattr__(self, "eps", float(eps))
        if not self.low < self.high:
            raise ConfigError(f"LpBall needs low < high, got low={self.low}, high={self.high}")

    def with_eps(self, eps: float) -> LpBall:
        """The same ball with another radius."""
        return replace(self, eps=float(eps))

    def __str__(self) -> str:
        return f"L{'∞' if self.norm == 'inf' else self.norm}(eps={self.eps:.4g})"

    def contains(self, x0: torch.Tensor, x: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
        inside = lp_norm(x - x0, self.norm) <= self.eps + atol
        flat = x.reshape(x.shape[0], -1)
        in_box = (flat >= self.low - atol).all(dim=1) & (flat <= self.high + atol).all(dim=1)
        return inside & in_box

    def project_delta(self, delta: torch.Tensor) -> torch.Tensor:
        """Project a batch of perturbations onto the ball (no box clipping)."""
        if self.norm == "inf":
            return delta.clamp(-self.eps, self.eps)
        if self.norm == "2":
            n = lp_norm(delta, "2").clamp_min(1e-12)
            factor = (self.eps / n).clamp(max=1.0)
            return delta * factor.view(-1, *([1] * (delta.dim() - 1)))
        return _project_l1(delta, self.eps)

    def project(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        delta = self.project_delta(x - x0)
        return (x0 + delta).clamp(self.low, self.high)

    def bounds(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # For L2 / L1 the box [x0 - eps, x0 + eps] still contains the ball (sound, looser).
        return (x0 - self.eps).clamp(self.low, self.high), (x0 + self.eps).clamp(self.low, self.high)

    def sample(self, x0: torch.Tensor, generator: torch.Generator, n: int | None = None) -> torch.Tensor:
        base = x0 if n is None else x0.unsqueeze(0).expand(n, *x0.shape)
        per_example = math.prod(x0.shape[1:])  # x0 is a batch: each example gets its own ball
        flat_shape = (math.prod(base.shape[: base.dim() - x0.dim() + 1]), per_example)
        dev, dt = x0.device, x0.dtype
        if self.norm == "inf":
            d = torch.rand(flat_shape, generator=generator, device=dev, dtype=dt) * 2 - 1
            d = d * self.eps
        elif self.norm == "2":
            g = torch.randn(flat_shape, generator=generator, device=dev, dtype=dt)
            g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
            r = torch.rand(flat_shape[0], 1, generator=generator, device=dev, dtype=dt) ** (1.0 / flat_shape[1])
            d = g * r * self.eps
        else:
            e = -torch.rand((flat_shape[0], flat_shape[1] + 1), generator=generator, device=dev,
                            dtype=dt).clamp_min(1e-12).log()
            mag = e[:, :-1] / e.sum(dim=1, keepdim=True)
            sign = torch.randint(0, 2, flat_shape, generator=generator, device=dev).to(dt) * 2 - 1
            d = mag * sign * self.eps
        return (base + d.view(base.shape)).clamp(self.low, self.high)


def _project_l1(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Exact Euclidean projection of each row onto the L1 ball (Duchi et al., ICML 2008).

    Computed in float64: in float32 ``|v| - theta`` cancels catastrophically when ``delta`` is much
    larger than ``eps`` and the result could leave the ball by more than ``contains``' tolerance.
    """
    flat = delta.reshape(delta.shape[0], -1)
    work = flat.double()
    abs_ = work.abs()
    outside = abs_.sum(dim=1) > eps
    if not bool(outside.any()):
        return delta
    if eps == 0:
        return torch.zeros_like(delta)
    mu, _ = abs_.sort(dim=1, descending=True)
    cssv = mu.cumsum(dim=1) - eps
    ind = torch.arange(1, flat.shape[1] + 1, device=delta.device, dtype=work.dtype)
    cond = (mu - cssv / ind) > 0
    rho = cond.to(torch.int64).cumsum(dim=1).argmax(dim=1)  # last True index
    theta = cssv.gather(1, rho.unsqueeze(1)) / (rho.to(work.dtype) + 1).unsqueeze(1)
    proj = (work.sign() * (abs_ - theta).clamp_min(0)).to(flat.dtype)
    out = torch.where(outside.unsqueeze(1), proj, flat)
    return out.view_as(delta)
