"""Networks as a list of bound-propagation ops (affine maps, ReLU, residual sums) + IBP through them.

A supported model (``TorchModel`` or ``nn.Module`` built from Linear, Conv2d, ReLU, Flatten,
BatchNorm1d/2d in eval mode, AvgPool2d, AdaptiveAvgPool2d, Identity, Dropout, and robustlab's
``BasicBlock`` / ``ShapeWorldResNet``) is converted once into ops in float64; every unsupported
module is collected and reported in ONE :class:`UnsupportedModelError`.

Interval Bound Propagation follows "On the Effectiveness of Interval Bound Propagation for Training
Verifiably Robust Models" (Gowal et al., 2018): affine maps propagate the box centre exactly and the
radius through ``|W|``; monotone ReLU maps the bounds.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.errors import UnsupportedModelError

__all__ = ["Op", "Affine", "ReLUOp", "Residual", "to_ops", "trace_shapes", "ibp", "fix_states"]

Bounds = tuple[torch.Tensor, torch.Tensor]


class Op:
    """A bound-propagation op; ``in_shape`` / ``out_shape`` (one example) are set by :func:`trace_shapes`."""

    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - protocol
        raise NotImplementedError

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> Bounds:  # pragma: no cover - protocol
        raise NotImplementedError


class Affine(Op):
    """An affine map ``x -> L(x) + b``. ``back(A)`` is ``A L`` for a batch of row specs A (B, S, *out)."""

    def linear(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - protocol
        raise NotImplementedError

    def abs_linear(self, r: torch.Tensor) -> torch.Tensor:
        """``|L| r`` (elementwise absolute value of the matrix of L)."""
        return self.linear(r)  # non-negative maps (pooling, reshapes)

    def bias(self) -> torch.Tensor | None:
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        b = self.bias()
        return out if b is None else out + b

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> Bounds:
        mid = self.forward((lo + hi) / 2)
        rad = self.abs_linear((hi - lo) / 2)
        return mid - rad, mid + rad

    def back(self, a: torch.Tensor) -> torch.Tensor:
        """Transpose map: (B, S, *out_shape) -> (B, S, *in_shape); default via autograd (linear maps)."""
        b, s = a.shape[:2]
        with torch.enable_grad():
            z = torch.zeros(b * s, *self.in_shape, dtype=a.dtype, device=a.device, requires_grad=True)
            (g,) = torch.autograd.grad(self.linear(z), z, grad_outputs=a.reshape(b * s, *self.out_shape),
                                       create_graph=a.requires_grad)  # differentiable in A for training
        return g.reshape(b, s, *self.in_shape)

    def bias_term(self, a: torch.Tensor) -> torch.Tensor | None:
        """``A b`` per spec row: (B, S), or None without bias."""
        bias = self.bias()
        if bias is None:
            return None
        return (a * bias.expand(self.out_shape)).flatten(2).sum(-1)


def _value(t: torch.Tensor, dtype: torch.dtype, keep_grad: bool) -> torch.Tensor:
    """A parameter in ``dtype``: detached (certification), or differentiable (certified training)."""
    return (t if keep_grad else t.detach()).to(dtype)


class LinearOp(Affine):
    def __init__(self, m: nn.Linear, dtype: torch.dtype, keep_grad: bool = False):
        self.w = _value(m.weight, dtype, keep_grad)
        self.b = None if m.bias is None else _value(m.bias, dtype, keep_grad)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.T

    def abs_linear(self, r: torch.Tensor) -> torch.Tensor:
        return r @ self.w.abs().T

    def bias(self) -> torch.Tensor | None:
        return self.b

    def back(self, a: torch.Tensor) -> torch.Tensor:
        return a @ self.w


class ConvOp(Affine):
    def __init__(self, m: nn.Conv2d, dtype: torch.dtype, keep_grad: bool = False):
        self.w = _value(m.weight, dtype, keep_grad)
        self.b = None if m.bias is None else _value(m.bias, dtype, keep_grad).view(-1, 1, 1)
        self.kw = {"stride": m.stride, "padding": m.padding, "dilation": m.dilation}

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.w, **self.kw)

    def abs_linear(self, r: torch.Tensor) -> torch.Tensor:
        return F.conv2d(r, self.w.abs(), **self.kw)

    def bias(self) -> torch.Tensor | None:
        return self.b

    def back(self, a: torch.Tensor) -> torch.Tensor:
        b, s = a.shape[:2]
        (st_h, st_w), (p_h, p_w), (d_h, d_w) = self.kw["stride"], self.kw["padding"], self.kw["dilation"]
        k_h, k_w = self.w.shape[-2:]
        h_out, w_out = self.out_shape[-2:]
        h_in, w_in = self.in_shape[-2:]
        op_h = h_in - ((h_out - 1) * st_h - 2 * p_h + d_h * (k_h - 1) + 1)
        op_w = w_in - ((w_out - 1) * st_w - 2 * p_w + d_w * (k_w - 1) + 1)
        g = F.conv_transpose2d(a.reshape(b * s, *self.out_shape), self.w, stride=self.kw["stride"],
                               padding=self.kw["padding"], output_padding=(op_h, op_w),
                               dilation=self.kw["dilation"])
        return g.reshape(b, s, *self.in_shape)


class DiagOp(Affine):
    """Per-channel ``x * scale + shift`` (folded BatchNorm, input normalization); channel = dim 1."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        self.scale, self.shift = scale, shift

    def _view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t if t.dim() == 0 else t.view(-1, *([1] * (ndim - 2)))

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._view(self.scale, x.dim())

    def abs_linear(self, r: torch.Tensor) -> torch.Tensor:
        return r * self._view(self.scale.abs(), r.dim())

    def bias(self) -> torch.Tensor:
        return self._view(self.shift, len(self.in_shape) + 1)

    def back(self, a: torch.Tensor) -> torch.Tensor:
        return a * self._view(self.scale, a.dim() - 1)


class ModuleOp(Affine):
    """A parameter-free non-negative linear module (Flatten, average pooling)."""

    def __init__(self, m: nn.Module):
        self.m = m

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)

    def back(self, a: torch.Tensor) -> torch.Tensor:
        if isinstance(self.m, nn.Flatten):
            return a.reshape(*a.shape[:2], *self.in_shape)
        return super().back(a)


class ReLUOp(Op):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_min(0)

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor) -> Bounds:
        return lo.clamp_min(0), hi.clamp_min(0)


class Residual(Op):
    """``main(x) + shortcut(x)`` (the sum of a residual block, before its final ReLU)."""

    def __init__(self, main: list[Op], shortcut: list[Op]):
        self.main, self.shortcut = main, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run(self.main, x) + run(self.shortcut, x)

    def ibp(self, lo: torch.Tensor, hi: torch.Tensor, record: dict[int, Bounds] | None = None,
            fixed: dict[int, torch.Tensor] | None = None) -> Bounds:
        l1, u1 = ibp(self.main, lo, hi, record, fixed)
        l2, u2 = ibp(self.shortcut, lo, hi, record, fixed)
        return l1 + l2, u1 + u2


def run(ops: list[Op], x: torch.Tensor) -> torch.Tensor:
    """The network's output computed through the ops (for checks)."""
    for op in ops:
        x = op.forward(x)
    return x


def fix_states(lo: torch.Tensor, hi: torch.Tensor, state: torch.Tensor | None) -> Bounds:
    """Pre-activation bounds of a ReLU restricted to fixed activation states (``state`` broadcasts to ``lo``).

    ``state > 0``: the neuron is fixed active (the input set is cut to z >= 0, so l <- max(l, 0) and the
    ReLU acts as the identity); ``state < 0``: fixed inactive (z <= 0, so u <- min(u, 0) and the ReLU
    outputs 0); ``0``: free. Bounds with ``l > u`` afterwards mean the restricted set is empty.
    """
    if state is None:
        return lo, hi
    return torch.where(state > 0, lo.clamp_min(0), lo), torch.where(state < 0, hi.clamp_max(0), hi)


def ibp(ops: list[Op], lo: torch.Tensor, hi: torch.Tensor, record: dict[int, Bounds] | None = None,
        fixed: dict[int, torch.Tensor] | None = None) -> Bounds:
    """IBP bounds after ``ops`` for the box ``[lo, hi]``; ``record[id(op)]`` gets the bounds entering op.

    ``record`` also receives the ops inside residual blocks. ``fixed`` (optional) maps ``id(relu_op)`` to
    an activation-state tensor (see :func:`fix_states`): the bounds then hold over the box intersected
    with those activation constraints (used for neural activation patterns, :mod:`robustlab.certify.nap`).
    """
    for op in ops:
        if fixed is not None and isinstance(op, ReLUOp):
            lo, hi = fix_states(lo, hi, fixed.get(id(op)))
        if record is not None:
            record[id(op)] = (lo, hi)
        lo, hi = op.ibp(lo, hi, record, fixed) if isinstance(op, Residual) else op.ibp(lo, hi)
    return lo, hi


def trace_shapes(ops: list[Op], x: torch.Tensor) -> torch.Tensor:
    """Run one example through the ops and store each op's per-example in/out shapes."""
    for op in ops:
        op.in_shape = tuple(x.shape[1:])
        if isinstance(op, Residual):
            trace_shapes(op.main, x)
            trace_shapes(op.shortcut, x)
        x = op.forward(x)
        op.out_shape = tuple(x.shape[1:])
    return x


def _bn(m: nn.Module, dtype: torch.dtype, keep_grad: bool = False) -> DiagOp:
    s = (m.running_var.detach().to(dtype) + m.eps).rsqrt()
    if m.weight is not None:
        s = s * _value(m.weight, dtype, keep_grad)
    t = -m.running_mean.detach().to(dtype) * s
    if m.bias is not None:
        t = t + _value(m.bias, dtype, keep_grad)
    return DiagOp(s, t)


def _convert(m: nn.Module, name: str, dtype: torch.dtype, bad: list[str], keep_grad: bool = False) -> list[Op]:
    from robustlab.models.architectures import BasicBlock, ShapeWorldResNet

    label = f"{name or '<root>'} ({type(m).__name__})"
    if isinstance(m, nn.Sequential):
        if type(m).forward is not nn.Sequential.forward:
            bad.append(f"{label}: an nn.Sequential subclass with its own forward()")
            return []
        return [op for k, c in m.named_children()
                for op in _convert(c, f"{name}.{k}" if name else k, dtype, bad, keep_grad)]
    if isinstance(m, ShapeWorldResNet):
        parts = [("stem", m.stem), ("stages", m.stages), ("pool", m.pool), ("flatten", nn.Flatten()), ("fc", m.fc)]
        return [op for k, c in parts for op in _convert(c, f"{name}.{k}" if name else k, dtype, bad, keep_grad)]
    if isinstance(m, BasicBlock):
        sub = lambda k: f"{name}.{k}"  # noqa: E731
        main = [op for k in ("conv1", "bn1", "relu", "conv2", "bn2")
                for op in _convert(getattr(m, k), sub(k), dtype, bad, keep_grad)]
        return [Residual(main, _convert(m.shortcut, sub("shortcut"), dtype, bad, keep_grad)), ReLUOp()]
    if isinstance(m, nn.Linear):
        return [LinearOp(m, dtype, keep_grad)]
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
            bad.append(f"{label}: only groups=1, numeric zero padding is supported")
            return []
        return [ConvOp(m, dtype, keep_grad)]
    if isinstance(m, nn.ReLU):
        return [ReLUOp()]
    if isinstance(m, nn.Flatten):
        if m.start_dim == 0:
            bad.append(f"{label}: start_dim=0 mixes the batch")
            return []
        return [ModuleOp(m)]
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.training or m.running_mean is None:
            bad.append(f"{label}: needs eval mode with running statistics (call model.eval())")
            return []
        return [_bn(m, dtype, keep_grad)]
    if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return [ModuleOp(m)]
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return []
    bad.append(label)
    return []


def to_ops(model: Any, dtype: torch.dtype = torch.float64, keep_grad: bool = False) -> list[Op]:
    """Convert a ``TorchModel`` / ``nn.Module`` (raw-input domain) into ops; one error lists every problem.

    ``keep_grad=True`` keeps the ops' weights attached to the module's parameters, so bounds computed
    through them are differentiable (certified training, :mod:`robustlab.defend.train.certified`).

    Raises:
        UnsupportedModelError: naming each unsupported module (name and type) with the fix.
    """
    from robustlab.core.model import TorchModel

    if isinstance(model, TorchModel):
        module, mean, std = model.module, model._mean, model._std
    elif isinstance(model, nn.Module):
        module, mean, std = model, None, None
    else:
        raise UnsupportedModelError(f"bound propagation needs a torch model, got {type(model).__name__}",
                                    fix="wrap an nn.Module in robustlab.core.model.TorchModel")
    ops: list[Op] = []
    if mean is not None or std is not None:
        m = torch.zeros(()) if mean is None else mean.detach().cpu()
        s = torch.ones(()) if std is None else std.detach().cpu()
        if m.dim() and s.dim() and m.shape != s.shape:
            m, s = torch.broadcast_tensors(m, s)
        elif m.dim() and not s.dim():
            s = s.expand_as(m)
        elif s.dim() and not m.dim():
            m = m.expand_as(s)
        scale = (1.0 / s).to(dtype)
        ops.append(DiagOp(scale, (-m.to(dtype) * scale)))
    bad: list[str] = []
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    ops += _convert(module, "", dtype, bad, keep_grad)
    if bad:
        raise UnsupportedModelError(
            f"IBP/CROWN cannot bound {len(bad)} module(s): " + "; ".join(bad),
            fix="use only Linear, Conv2d, ReLU, Flatten, BatchNorm (eval), AvgPool2d, AdaptiveAvgPool2d, "
                "Identity/Dropout inside nn.Sequential (or robustlab BasicBlock/ShapeWorldResNet); replace "
                "other activations by ReLU and custom forward() code by nn.Sequential")
    for op in _all_ops(ops):
        for k, v in list(vars(op).items()):
            if isinstance(v, torch.Tensor):
                setattr(op, k, v.to(device))
    return ops


def _all_ops(ops: list[Op]) -> list[Op]:
    out: list[Op] = []
    for op in ops:
        out.append(op)
        if isinstance(op, Residual):
            out += _all_ops(op.main) + _all_ops(op.shortcut)
    return out


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
