"""IBP propagation tightness: how much looser IBP's box is than the optimal box of the linearized network.

From "Understanding Certified Training with Interval Bound Propagation" (Mao, Müller, Fischer & Vechev,
ICLR 2024). For a (locally) linear network ``f(x) = W_L ... W_1 x`` and the per-coordinate input radius
``eps_i = (min(x_i + eps, high) - max(x_i - eps, low)) / 2`` (the L∞ box clipped to the data range):

* optimal box radius ``r_opt = |W_L ... W_1| eps`` (the tightest box of the output over the input box),
* IBP box radius ``r_IBP = |W_L| ... |W_1| eps`` (layer by layer, as IBP propagates radii),
* tightness ``tau = r_opt / r_IBP`` elementwise, in (0, 1].

As in the paper's code, the specification ``C`` is elided into the *last* affine op only
(``W_L <- C W_L``; rows ``e_y - e_j`` when labels are given, the identity otherwise), biases do not
matter (radii only), normalization / folded BatchNorm are diagonal scales, and ReLU networks use the
*local* activation pattern: the rows of neurons inactive at the clean input (pre-activation < 0) are
zeroed (``relu_adjust="local"``; ``"none"`` treats ReLU as the identity). ``r_opt`` is computed by
back-substituting ``C`` through the linearized network (``K`` rows per example, i.e. O(K · forward) as
the paper's efficient variant), ``r_IBP`` by one forward pass with ``|W|``. Any network that
:func:`robustlab.certify.layers.to_ops` converts is supported (Linear, Conv2d, BatchNorm, pooling,
residual blocks); every op (pooling and residual sums included) is a separate IBP step, exactly like
:func:`robustlab.certify.bounds.interval_bounds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from robustlab.certify.bounds import margin_spec
from robustlab.certify.layers import Affine, Op, ReLUOp, Residual, to_ops, trace_shapes
from robustlab.core.errors import ConfigError, UnsupportedModelError

__all__ = ["RELU_ADJUST", "TightnessResult", "tightness", "expected_dln_tightness"]

RELU_ADJUST = ("local", "none")
_TINY = 1e-8  # the paper's clamp of numerator and denominator


@dataclass
class TightnessResult:
    """Per-example IBP tightness (float64, on the CPU).

    Attributes:
        tau: (B, S) tightness of every specification row (margins ``z_y - z_j`` or logits).
        r_opt: (B, S) optimal box radius; r_ibp: (B, S) IBP box radius.
        per_example: (B,) mean of ``tau`` over the rows (the paper averages tightness this way).
        per_layer: ``[(name, (B,) mean tightness over the units)]`` for the pre-activation of every
            top-level ReLU layer and the raw logits (no specification), when requested.
    """

    tau: torch.Tensor
    r_opt: torch.Tensor
    r_ibp: torch.Tensor
    per_example: torch.Tensor
    per_layer: list[tuple[str, torch.Tensor]] = field(default_factory=list)


def expected_dln_tightness(width: int, depth: int) -> float:
    """Closed-form tightness of a depth-``depth`` deep linear network at i.i.d. Gaussian initialization.

    With hidden width ``n`` each optimal-radius entry is a sum over ``n^(L-1)`` paths that is ~Gaussian
    (E|.| = sqrt(2/pi) n^((L-1)/2) prod sigma) while the IBP entry sums |products| (n^(L-1) (2/pi)^(L/2)
    prod sigma), so ``E tau ~ (pi / (2 n))^((L-1)/2)``; for L = 2 this is the paper's sqrt(pi/2)/sqrt(n).
    """
    if width < 1 or depth < 1:
        raise ConfigError(f"width and depth must be >= 1, got {width}, {depth}")
    return (torch.pi / (2.0 * width)) ** ((depth - 1) / 2.0)


def _masks(ops: list[Op], x: torch.Tensor, masks: dict[int, torch.Tensor], adjust: str) -> torch.Tensor:
    """Forward pass recording each ReLU's activation mask at ``x`` (1 = active, pre-activation >= 0)."""
    for op in ops:
        if isinstance(op, ReLUOp):
            masks[id(op)] = (x >= 0).to(x.dtype) if adjust == "local" else torch.ones_like(x)
        if isinstance(op, Residual):
            x = _masks(op.main, x, masks, adjust) + _masks(op.shortcut, x, masks, adjust)
        else:
            x = op.forward(x)
    return x


def _ibp_radius(ops: list[Op], r: torch.Tensor, masks: dict[int, torch.Tensor]) -> torch.Tensor:
    """``|W_k| D ... |W_1| r``: IBP's radius through the linearized ops (masks are non-negative diagonals)."""
    for op in ops:
        if isinstance(op, ReLUOp):
            r = r * masks[id(op)]
        elif isinstance(op, Residual):
            r = _ibp_radius(op.main, r, masks) + _ibp_radius(op.shortcut, r, masks)
        else:
            r = op.abs_linear(r)
    return r


def _back(ops: list[Op], a: torch.Tensor, masks: dict[int, torch.Tensor]) -> torch.Tensor:
    """``A W_k D ... W_1``: rows (B, S, *out) pulled back to the input through the linearized ops."""
    for op in reversed(ops):
        if isinstance(op, ReLUOp):
            a = a * masks[id(op)].unsqueeze(1)
        elif isinstance(op, Residual):
            a = _back(op.main, a, masks) + _back(op.shortcut, a, masks)
        else:
            a = op.back(a)
    return a


def _jacobian_layers(ops: list[Op], eps: torch.Tensor, masks: dict[int, torch.Tensor]) -> list[torch.Tensor]:
    """Mean unit tightness at every top-level ReLU input and at the output (forward-mode, O(d · forward))."""
    b, shape = eps.shape[0], eps.shape[1:]
    d = eps[0].numel()
    jac = torch.eye(d, dtype=eps.dtype, device=eps.device).expand(b, d, d).reshape(b * d, *shape)
    r = eps
    out = []

    def ratio(j: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:
        num = (j.reshape(b, d, -1).abs() * eps.reshape(b, d, 1)).sum(1)
        return (num.clamp_min(_TINY) / rr.reshape(b, -1).clamp_min(_TINY)).mean(1)

    def lin(op: Op, j: torch.Tensor) -> torch.Tensor:
        if isinstance(op, ReLUOp):
            m = masks[id(op)]
            return (j.reshape(b, d, *m.shape[1:]) * m.unsqueeze(1)).reshape(j.shape)
        if isinstance(op, Residual):
            return run_lin(op.main, j) + run_lin(op.shortcut, j)
        return op.linear(j)

    def run_lin(seq: list[Op], j: torch.Tensor) -> torch.Tensor:
        for op in seq:
            j = lin(op, j)
        return j

    for op in ops:
        if isinstance(op, ReLUOp):
            out.append(ratio(jac, r))
        jac = lin(op, jac)
        r = _ibp_radius([op], r, masks)
    out.append(ratio(jac, r))
    return out


def tightness(model: Any, x: torch.Tensor, eps: float, y: torch.Tensor | None = None, *,
              relu_adjust: str = "local", per_layer: bool = False, batch_size: int = 256,
              low: float | None = None, high: float | None = None) -> TightnessResult:
    """IBP propagation tightness ``r_opt / r_IBP`` of ``model`` at ``x`` (see the module docstring).

    Args:
        model: a :class:`~robustlab.core.model.TorchModel` (normalization included) or ``nn.Module``
            built from ops :func:`~robustlab.certify.layers.to_ops` supports.
        x: clean inputs (B, *input shape), raw units.
        eps: L∞ radius in raw input units (> 0); the box is clipped to ``[low, high]``.
        y: labels (B,) -> margin rows ``e_y - e_j`` (j != y, increasing); None -> every logit.
        relu_adjust: ``"local"`` (activation pattern at ``x``, the paper's default) or ``"none"``.
        per_layer: also return the mean unit tightness after every ReLU layer (costs O(d · forward)).
        batch_size: examples per chunk.
        low, high: data range (default: the model's ``low`` / ``high``, else 0 and 1).

    Returns: a :class:`TightnessResult`.
    """
    if relu_adjust not in RELU_ADJUST:
        raise ConfigError(f"unknown relu_adjust {relu_adjust!r}", fix=f"use one of {', '.join(RELU_ADJUST)}")
    if not float(eps) > 0:
        raise ConfigError(f"eps must be > 0, got {eps!r}", fix="pass the L∞ radius in raw input units")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    if len(x) == 0:
        raise ConfigError("tightness needs at least one input", fix="pass a non-empty batch x (B, ...)")
    ops = to_ops(model)
    if not ops or not isinstance(ops[-1], Affine):
        raise UnsupportedModelError("tightness needs a network ending in an affine layer",
                                    fix="end the network with a Linear layer giving one score per class")
    low = float(getattr(model, "low", 0.0) if low is None else low)
    high = float(getattr(model, "high", 1.0) if high is None else high)
    dev = next((v.device for o in ops for v in vars(o).values() if isinstance(v, torch.Tensor)), x.device)
    x = x.to(dev, torch.float64)
    k = trace_shapes(ops, x[:1]).shape[1:]
    if len(k) != 1:
        raise UnsupportedModelError(f"the network outputs shape {tuple(k)}, not (num_classes,)",
                                    fix="end the network with a Linear layer giving one score per class")
    k = k[0]
    parts: dict[str, list[torch.Tensor]] = {"tau": [], "opt": [], "ibp": []}
    layers: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for i in range(0, len(x), int(batch_size)):
            xb = x[i:i + int(batch_size)]
            epsb = ((xb + eps).clamp(max=high) - (xb - eps).clamp(min=low)) / 2
            if y is None:
                c = torch.eye(k, dtype=x.dtype, device=dev).expand(len(xb), k, k)
            else:
                c = margin_spec(y[i:i + int(batch_size)].to(dev).long(), k)
            masks: dict[int, torch.Tensor] = {}
            _masks(ops, xb, masks, relu_adjust)
            a = _back(ops, c, masks).flatten(2)
            r_opt = (a.abs() * epsb.flatten(1).unsqueeze(1)).sum(-1)
            r_mid = _ibp_radius(ops[:-1], epsb, masks)
            c_last = ops[-1].back(c).flatten(2)  # the specification elided into the last affine op
            r_ibp = (c_last.abs() * r_mid.flatten(1).unsqueeze(1)).sum(-1)
            parts["tau"].append(r_opt.clamp_min(_TINY) / r_ibp.clamp_min(_TINY))
            parts["opt"].append(r_opt)
            parts["ibp"].append(r_ibp)
            if per_layer:
                layers.append(_jacobian_layers(ops, epsb, masks))
    tau = torch.cat(parts["tau"]).cpu()
    names = [f"relu{j + 1}" for j in range(len(layers[0]) - 1)] + ["logits"] if layers else []
    per = [(n, torch.cat([chunk[j] for chunk in layers]).cpu()) for j, n in enumerate(names)]
    return TightnessResult(tau=tau, r_opt=torch.cat(parts["opt"]).cpu(), r_ibp=torch.cat(parts["ibp"]).cpu(),
                           per_example=tau.mean(1), per_layer=per)
