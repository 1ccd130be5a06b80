"""CROWN: backward linear relaxation of ReLU networks, batched over examples and specification rows.

From "Efficient Neural Network Robustness Certification with General Activation Functions" (Zhang,
Weng, Chen, Hsieh & Daniel, NeurIPS 2018). Each unstable ReLU (l < 0 < u) is bounded above by the
line through (l, 0) and (u, u) and below by ``a x`` with the adaptive slope ``a = 1 if u >= -l else 0``;
a specification matrix ``C`` is back-substituted through the whole network (so margins are bounded
directly, which is what makes CROWN tight) and concretized on the input box. Pre-activation bounds of
every ReLU layer are computed the same way (layer by layer) and intersected with IBP's. Residual
sums ``main(x) + shortcut(x)`` pass the same coefficients to both branches and add the results.
"""

from __future__ import annotations

import torch

from robustlab.certify.layers import Affine, Bounds, Op, ReLUOp, Residual, ibp, numel
from robustlab.core.errors import UnsupportedModelError

__all__ = ["backsubstitute", "relu_relaxation", "crown_lower"]


def relu_relaxation(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CROWN's ReLU relaxation ``a_l z <= relu(z) <= a_u z + b_u`` for pre-activation bounds ``[lo, hi]``.

    Returns ``(a_l, a_u, b_u)``, each shaped like ``lo``: identity for l >= 0, zero for u <= 0, and for
    unstable neurons the chord through (l, 0), (u, u) above and slope 1 if u >= -l else 0 below.
    """
    active, inactive = lo >= 0, hi <= 0
    unstable = ~(active | inactive)
    denom = torch.where(unstable, hi - lo, torch.ones_like(hi))
    a_u = torch.where(unstable, hi / denom, active.to(lo.dtype))
    b_u = torch.where(unstable, -lo * hi / denom, torch.zeros_like(lo))
    a_l = torch.where(unstable, (hi >= -lo).to(lo.dtype), active.to(lo.dtype))
    return a_l, a_u, b_u


def _back(ops: list[Op], a: torch.Tensor, bias: torch.Tensor,
          relu_bounds: dict[int, Bounds]) -> tuple[torch.Tensor, torch.Tensor]:
    """Back-substitute ``(A, bias)`` from the output of ``ops`` to their input (residual sums included)."""
    for op in reversed(ops):
        if isinstance(op, ReLUOp):
            a_l, a_u, b_u = (t.unsqueeze(1) for t in relu_relaxation(*relu_bounds[id(op)]))
            pos, neg = a.clamp_min(0), a.clamp_max(0)
            bias = bias + (neg * b_u).flatten(2).sum(-1)
            a = pos * a_l + neg * a_u
        elif isinstance(op, Residual):  # A (main(x) + shortcut(x)): both branches get A, then add
            a_main, bias = _back(op.main, a, bias, relu_bounds)
            a_short, bias = _back(op.shortcut, a, bias, relu_bounds)
            a = a_main + a_short
        elif isinstance(op, Affine):
            term = op.bias_term(a)
            if term is not None:
                bias = bias + term
            a = op.back(a)
        else:  # pragma: no cover - to_ops only builds the three kinds
            raise UnsupportedModelError(f"CROWN cannot back-substitute through {type(op).__name__}")
    return a, bias


def backsubstitute(ops: list[Op], a: torch.Tensor, relu_bounds: dict[int, Bounds],
                   lo: torch.Tensor, hi: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Lower bound of ``A · f(x)`` over the box ``[lo, hi]``, where f is the composition of ``ops``.

    Args:
        ops: affine, ReLU and residual-sum ops.
        a: specification (B, S, *output shape of ops).
        relu_bounds: pre-activation bounds ``(l, u)`` (B, *shape) of each ReLU op, by ``id(op)``.
        lo, hi: input box (B, *input shape).
        bias: optional constant (B, S) already accumulated by the caller.

    Returns: (B, S) lower bounds.
    """
    if bias is None:
        bias = torch.zeros(a.shape[:2], dtype=a.dtype, device=a.device)
    a, bias = _back(ops, a, bias, relu_bounds)
    pos, neg = a.clamp_min(0), a.clamp_max(0)
    return (pos * lo.unsqueeze(1) + neg * hi.unsqueeze(1)).flatten(2).sum(-1) + bias


def _relus_with_prefix(ops: list[Op], prefix: list[Op]) -> list[tuple[ReLUOp, list[Op]]]:
    """Every ReLU in forward order with the op sequence computing its input from the network input.

    A ReLU inside a residual branch depends on the block input only through its branch, so its prefix
    is the ops before the block followed by the branch ops before it.
    """
    out: list[tuple[ReLUOp, list[Op]]] = []
    for i, op in enumerate(ops):
        if isinstance(op, ReLUOp):
            out.append((op, prefix + ops[:i]))
        elif isinstance(op, Residual):
            out += _relus_with_prefix(op.main, prefix + ops[:i])
            out += _relus_with_prefix(op.shortcut, prefix + ops[:i])
    return out


def _has_relu(ops: list[Op]) -> bool:
    return any(isinstance(o, ReLUOp) or (isinstance(o, Residual) and _has_relu(o.main + o.shortcut))
               for o in ops)


def crown_lower(ops: list[Op], spec: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                intermediate: str = "crown") -> torch.Tensor:
    """CROWN lower bounds of ``spec · f(x)`` for x in ``[lo, hi]``: (B, S).

    Args:
        ops: traced ops of the network (see :func:`robustlab.certify.layers.to_ops`); residual blocks
            are back-substituted through both branches.
        spec: (B, S, *output shape) specification rows (e.g. margins e_y - e_j).
        lo, hi: input box (B, *input shape), raw input units.
        intermediate: ``"crown"`` (every ReLU layer's bounds by back-substitution, intersected with
            IBP's) or ``"ibp"`` (IBP pre-activation bounds, i.e. CROWN-IBP's cheaper variant).
    """
    ibp_in: dict[int, Bounds] = {}
    ibp(ops, lo, hi, record=ibp_in)
    relu_bounds: dict[int, Bounds] = {}
    for op, prefix in _relus_with_prefix(ops, []):
        l_ibp, u_ibp = ibp_in[id(op)]
        if intermediate == "crown" and _has_relu(prefix):
            b, shape = lo.shape[0], op.in_shape
            n = numel(shape)
            eye = torch.eye(n, dtype=lo.dtype, device=lo.device)
            a = torch.cat([eye, -eye]).reshape(1, 2 * n, *shape)
            bias = torch.zeros(1, 2 * n, dtype=lo.dtype, device=lo.device)
            j = len(prefix)
            while isinstance(prefix[j - 1], Affine):  # example-independent: back-substitute once, then expand
                term = prefix[j - 1].bias_term(a)
                bias = bias if term is None else bias + term
                a, j = prefix[j - 1].back(a), j - 1
            a = a.expand(b, *([-1] * (a.dim() - 1)))
            lb = backsubstitute(prefix[:j], a, relu_bounds, lo, hi, bias=bias.expand(b, -1))
            l_cr, u_cr = lb[:, :n].reshape(b, *shape), (-lb[:, n:]).reshape(b, *shape)
            l_ibp, u_ibp = torch.maximum(l_ibp, l_cr), torch.minimum(u_ibp, u_cr)
        relu_bounds[id(op)] = (l_ibp, u_ibp)
    return backsubstitute(ops, spec, relu_bounds, lo, hi)
