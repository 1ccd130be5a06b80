"""Certified margin lower bounds (IBP, CROWN) and the ``ibp`` / ``crown`` / ``crown_ibp_best`` certifiers.

The input set is the threat model's box (``threat.bounds(x0)``: the L∞ ball ∩ [low, high]; for L2 / L1
balls the enclosing box, sound but looser). The specification is the margin of the true class against
every other class, ``z_y - z_j`` for j != y: an example is certified when every lower bound is > 0.

- IBP: "On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust Models"
  (Gowal et al., 2018); the specification is folded into the last affine layers (as in the paper).
- CROWN: "Efficient Neural Network Robustness Certification with General Activation Functions"
  (Zhang et al., 2018); see :mod:`robustlab.certify.crown`.

Bounds are computed in float64 (the model's float32 weights are exact in float64), batched over
examples; the only Python loops are over layers and over chunks of ``batch_size`` examples.
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.certify.crown import _relus_with_prefix, backsubstitute, crown_lower
from robustlab.certify.layers import Affine, Op, ibp, to_ops, trace_shapes
from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.model import Model, TorchModel, checked_scores
from robustlab.core.probe import Certifier, ProbeOutput
from robustlab.core.registry import register
from robustlab.core.threat import LpBall

__all__ = ["METHODS", "margin_spec", "interval_bounds", "bound_margins", "check_supported",
           "BoundCertifier", "IBPCertifier", "CROWNCertifier", "BestCertifier"]

METHODS = ("ibp", "crown", "crown_ibp_best")


def check_supported(model: Any, method: str = "ibp") -> list[Op]:
    """The model's ops; raises ONE :class:`UnsupportedModelError` listing every unsupported module.

    Every method supports the same modules (``method`` is kept for symmetry with :func:`bound_margins`).
    """
    return to_ops(model)


def margin_spec(y: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Specification rows ``e_y - e_j`` for every j != y: (B, K-1, K), j in increasing order."""
    b = len(y)
    others = torch.arange(num_classes, device=y.device).expand(b, -1)
    others = others[others != y.view(-1, 1)].view(b, num_classes - 1)
    c = torch.zeros(b, num_classes - 1, num_classes, dtype=dtype, device=y.device)
    c.scatter_(2, y.view(-1, 1, 1).expand(-1, num_classes - 1, 1), 1.0)
    c.scatter_(2, others.unsqueeze(2), -1.0)
    return c


def _prepare(model: Any, x: torch.Tensor, threat: LpBall, method: str) -> tuple[list[Op], torch.Tensor, torch.Tensor]:
    if method not in METHODS:
        raise ConfigError(f"unknown bound method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    if not isinstance(threat, LpBall):
        raise ConfigError(f"bounds need an LpBall threat model, got {type(threat).__name__}",
                          fix="pass robustlab.core.threat.LpBall(norm='inf', eps=...)")
    ops = check_supported(model, method)
    dev = getattr(model, "device", None) or x.device
    lo, hi = threat.bounds(x.to(dev, torch.float64))
    trace_shapes(ops, lo[:1])
    return ops, lo, hi


def interval_bounds(model: Any, x: torch.Tensor, threat: LpBall) -> tuple[torch.Tensor, torch.Tensor]:
    """IBP lower and upper bounds of the logits over ``threat``'s box around ``x``: two (B, K) tensors."""
    ops, lo, hi = _prepare(model, x, threat, "ibp")
    return ibp(ops, lo, hi)


def _ibp_margins(ops: list[Op], spec: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                 fixed: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """IBP up to the last non-affine op, then the trailing affine layers folded with the spec (exact)."""
    cut = max((i + 1 for i, op in enumerate(ops) if not isinstance(op, Affine)), default=0)
    l_mid, u_mid = ibp(ops[:cut], lo, hi, fixed=fixed)
    return backsubstitute(ops[cut:], spec, {}, l_mid, u_mid)


def _fixed_by_id(ops: list[Op], fixed: Any, n: int) -> list[torch.Tensor | None] | None:
    """Check the per-ReLU-layer ``fixed`` states of :func:`bound_margins`; one (n or 1, *shape) tensor per layer."""
    if fixed is None:
        return None
    relus = [op for op, _ in _relus_with_prefix(ops, [])]
    fixed = list(fixed)
    if len(fixed) != len(relus):
        raise ConfigError(f"fixed has {len(fixed)} entries but the network has {len(relus)} ReLU layers",
                          fix="pass one activation-state tensor (or None) per ReLU layer, in forward order")
    out: list[torch.Tensor | None] = []
    for i, (op, st) in enumerate(zip(relus, fixed)):
        if st is None:
            out.append(None)
            continue
        st = torch.as_tensor(st)
        shape = tuple(op.in_shape)
        if tuple(st.shape) == shape:
            st = st.unsqueeze(0)
        if tuple(st.shape[1:]) != shape or st.shape[0] not in (1, n):
            raise ConfigError(f"fixed[{i}] has shape {tuple(st.shape)}; ReLU layer {i} has shape {shape}",
                              fix=f"pass a tensor shaped {shape} or ({n}, *{shape}) with values -1 / 0 / +1")
        out.append(st.to(torch.float64).sign())
    return out


def bound_margins(model: Any, x: torch.Tensor, y: torch.Tensor, threat: LpBall, method: str = "ibp",
                  batch_size: int = 64, intermediate: str = "crown", fixed: Any = None) -> torch.Tensor:
    """Lower bounds of the margins ``z_y - z_j`` (j != y, increasing j) over ``threat`` around ``x``.

    Args:
        model: a :class:`~robustlab.core.model.TorchModel` (normalization included) or ``nn.Module``.
        x: clean inputs (B, *input shape), raw units; y: labels (B,).
        threat: the :class:`LpBall` (its box ``threat.bounds(x)`` is bounded).
        method: ``"ibp"``, ``"crown"`` or ``"crown_ibp_best"`` (elementwise max of both).
        batch_size: examples per chunk (CROWN's intermediate bounds use O(batch · neurons²) memory).
        intermediate: CROWN pre-activation bounds, ``"crown"`` (tighter) or ``"ibp"`` (cheaper).
        fixed: optional activation states, one entry per ReLU layer in forward order: None (free) or a
            tensor shaped like the layer (or (B, *layer shape)) with +1 = fixed active (z >= 0, identity),
            -1 = fixed inactive (z <= 0, output 0), 0 = free. The bounds then hold over the box intersected
            with those constraints (see :mod:`robustlab.certify.nap`); if that set is empty they are
            meaningless (check with :func:`robustlab.certify.layers.fix_states`: some l > u).

    Returns: (B, K-1) float64 lower bounds; every example is certified iff its row is > 0.
    """
    ops, lo, hi = _prepare(model, x, threat, method)
    k = ops[-1].out_shape[0] if len(ops[-1].out_shape) == 1 else None
    if k is None:
        raise UnsupportedModelError(f"the network outputs shape {ops[-1].out_shape}, not (num_classes,)",
                                    fix="end the network with a Linear layer giving one score per class")
    y = y.to(lo.device).long()
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ConfigError(f"labels must lie in [0, {k}), got [{int(y.min())}, {int(y.max())}]")
    states = _fixed_by_id(ops, fixed, len(y))
    relus = [op for op, _ in _relus_with_prefix(ops, [])]
    out = []
    with torch.no_grad():
        for i in range(0, len(y), max(1, int(batch_size))):
            sl = slice(i, i + batch_size)
            spec = margin_spec(y[sl], k)
            fx = None if states is None else {id(op): (st if st.shape[0] == 1 else st[sl]).to(lo.device)
                                              for op, st in zip(relus, states) if st is not None}
            parts = []
            if method in ("ibp", "crown_ibp_best"):
                parts.append(_ibp_margins(ops, spec, lo[sl], hi[sl], fixed=fx))
            if method in ("crown", "crown_ibp_best"):
                parts.append(crown_lower(ops, spec, lo[sl], hi[sl], intermediate=intermediate, fixed=fx))
            out.append(parts[0] if len(parts) == 1 else torch.maximum(*parts))
    if not out:
        return torch.empty(0, k - 1, dtype=torch.float64)
    return torch.cat(out).cpu()


class BoundCertifier(Certifier):
    """Certify the true-class margin in an Lp ball by bound propagation (see the module docstring).

    Args:
        norm: threat norm (``"inf"`` default; L2 / L1 are bounded through their enclosing box).
        batch_size: examples per bound-propagation chunk.
        intermediate: CROWN pre-activation bounds (``"crown"`` or ``"ibp"``).

    Per example: status ``"certified"`` (clean-correct and every margin lower bound > 0),
    ``"abstained"`` (clean-correct, not certified) or ``"skipped"`` (clean-wrong); score = the smallest
    margin lower bound; scores = clean scores (so pred = clean pred).
    """

    method = "ibp"
    default_settings = (0.01, 0.02, 0.05, 0.1)

    def __init__(self, norm: str | float = "inf", batch_size: int = 64, intermediate: str = "crown"):
        if intermediate not in ("crown", "ibp"):
            raise ConfigError(f"intermediate must be 'crown' or 'ibp', got {intermediate!r}")
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
        self.threat = LpBall(norm=norm, eps=0.0)
        self.batch_size, self.intermediate = int(batch_size), intermediate

    def check_model(self, model: Model) -> None:
        if not isinstance(model, TorchModel):
            raise UnsupportedModelError(f"{self.method} needs a TorchModel, got {type(model).__name__}",
                                        fix="certify a torch network (the zoo's digits-mlp / digits-cnn)")
        check_supported(model, self.method)

    def evaluate(self, model: Model, x: Any, y: torch.Tensor, setting: float, *,
                 clean_pred: torch.Tensor, generator: torch.Generator) -> ProbeOutput:
        self.check_model(model)
        threat = LpBall(norm=self.threat.norm, eps=float(setting), low=model.low, high=model.high)
        scores = checked_scores(model, x)
        attempted = clean_pred.cpu() == y.cpu()
        lower = bound_margins(model, x, y, threat, method=self.method, batch_size=self.batch_size,
                              intermediate=self.intermediate)
        worst = lower.min(dim=1).values if lower.shape[1] else torch.full((len(y),), float("inf"))
        certified = attempted & (worst > 0)
        status = ["certified" if c else ("abstained" if a else "skipped")
                  for c, a in zip(certified.tolist(), attempted.tolist())]
        return ProbeOutput(scores=scores, attempted=attempted, queries=torch.zeros(len(y), dtype=torch.long),
                           x_probed=x, status=status, score=worst.float(),
                           extras={"margin_lower": lower, "method": self.method})

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(norm={self.threat.norm!r}, batch_size={self.batch_size}, "
                f"intermediate={self.intermediate!r})")


@register("certifier", "ibp")
class IBPCertifier(BoundCertifier):
    """Interval Bound Propagation certifier (Gowal et al., 2018); see :class:`BoundCertifier`."""

    method = "ibp"


@register("certifier", "crown")
class CROWNCertifier(BoundCertifier):
    """CROWN certifier (Zhang et al., 2018); see :class:`BoundCertifier`."""

    method = "crown"


@register("certifier", "crown_ibp_best")
class BestCertifier(BoundCertifier):
    """Elementwise max of the IBP and CROWN margin lower bounds (both sound, so the max is too)."""

    method = "crown_ibp_best"
