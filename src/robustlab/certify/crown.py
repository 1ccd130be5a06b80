"""CROWN: backward linear relaxation of ReLU networks, batched over examples and specification rows.

From "Efficient Neural Network Robustness Certification with General Activation Functions" (Zhang,
Weng, Chen, Hsieh & Daniel, NeurIPS 2018). Each unstable ReLU (l < 0 < u) is bounded above by the
line through (l, 0) and (u, u) and below by ``a x`` with the adaptive slope ``a = 1 if u >= -l else 0``;
a specification matrix ``C`` is back-substituted through the whole network (so margins are bounded
directly, which is what makes CROWN tight) and concretized on the input box. Pre-activation bounds of
every ReLU layer are computed the same way (layer by layer) and intersected with IBP's. Residual
sums ``main(x) + shortcut(x)`` pass the same coefficients to both branches and add the results.

Speed (results unchanged): intermediate bounds are computed only for neurons unstable under IBP
(:func:`_tighten`), and the first ReLU below an example-independent row block is folded with the affine
layer feeding it into shared matrix products (:func:`_lower_upper`) instead of per-example
(batch, rows, neurons) coefficient tensors. When that fold starts at the input box and is large
(:data:`FLOAT32_MIN_WORK`), its products and concretization run in float32 with a rigorous rounding
slack (:func:`_folded_box32`): about twice as fast, bounds looser by ~1e-5 relative, still sound;
:func:`set_matmul` forces ``"float64"`` or ``"float32"``.
"""

from __future__ import annotations

import torch

from robustlab.certify.layers import Affine, Bounds, LinearOp, Op, ReLUOp, Residual, fix_states, ibp, numel
from robustlab.core.errors import UnsupportedModelError

__all__ = ["backsubstitute", "relu_relaxation", "crown_lower", "set_matmul"]


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
    return _concretize(a, lo, hi) + bias


def _concretize(a: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``min over x in [lo, hi] of A x`` = ``A mid - |A| rad``: (B, S), as two batched matrix-vector products."""
    a = a.flatten(2)
    mid, rad = ((hi + lo) / 2).flatten(1).unsqueeze(2), ((hi - lo) / 2).flatten(1).unsqueeze(2)
    return (a @ mid - a.abs() @ rad).squeeze(2)


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


def _tighten(prefix: list[Op], shape: tuple[int, ...], relu_bounds: dict[int, Bounds], lo: torch.Tensor,
             hi: torch.Tensor, l_ibp: torch.Tensor, u_ibp: torch.Tensor) -> Bounds:
    """CROWN pre-activation bounds of a ReLU layer (input ``prefix`` of ops), intersected with IBP's.

    Only the neurons unstable under IBP (l < 0 < u) in some example of the batch get CROWN rows: a
    stable neuron's relaxation (identity or zero) cannot change, so the final bounds are the same.
    The rows start as rows of the identity, go back through the trailing affine ops once (example
    independent), and :func:`_lower_upper` gives their lower and upper bounds in one backward pass.
    """
    b, n = lo.shape[0], numel(shape)
    l_flat, u_flat = l_ibp.reshape(b, n), u_ibp.reshape(b, n)
    rows = ((l_flat < 0) & (u_flat > 0)).any(0).nonzero().squeeze(1)
    if rows.numel() == 0:
        return l_ibp, u_ibp
    j = len(prefix)
    if isinstance(prefix[j - 1], LinearOp):  # rows of the identity through a Linear layer: rows of W
        lin, j = prefix[j - 1], j - 1
        a = lin.w[rows].unsqueeze(0)
        bias = torch.zeros_like(a[:, :, 0]) if lin.b is None else lin.b[rows].unsqueeze(0)
    else:
        a = torch.eye(n, dtype=lo.dtype, device=lo.device)[rows].reshape(1, len(rows), *shape)
        bias = torch.zeros(1, len(rows), dtype=lo.dtype, device=lo.device)
    while isinstance(prefix[j - 1], Affine):  # example-independent: back-substitute once
        term = prefix[j - 1].bias_term(a)
        bias = bias if term is None else bias + term
        a, j = prefix[j - 1].back(a), j - 1
    l_cr, u_cr = _lower_upper(prefix[:j], a, bias, relu_bounds, lo, hi)
    l_new = l_flat.index_copy(1, rows, torch.maximum(l_flat[:, rows], l_cr))
    u_new = u_flat.index_copy(1, rows, torch.minimum(u_flat[:, rows], u_cr))
    return l_new.reshape(l_ibp.shape), u_new.reshape(u_ibp.shape)


def _lower_upper(ops: list[Op], a: torch.Tensor, bias: torch.Tensor, relu_bounds: dict[int, Bounds],
                 lo: torch.Tensor, hi: torch.Tensor) -> Bounds:
    """Lower and upper bounds (B, S) of ``A f(x) + bias`` for an example-independent ``A`` (1, S, *out).

    ``ops`` ends with a ReLU fed by a chain of affine ops (Linear, Conv, ...) whose dense matrix ``W``
    (with its bias ``b`` as a last column) is built once. The relaxed ReLU and ``W`` are folded without
    materializing per-example (B, S, n) coefficients: with ``a_l``, ``a_u``, ``b_u`` the relaxation and
    ``d = a_u - a_l`` (non-zero on unstable neurons only), the lower bound's coefficients are
    ``A diag(a_l) + A^- diag(d)`` and the upper bound's ``A diag(a_l) + A^+ diag(d)``, so both share
    ``A (a_l * [W | b])`` (one batched product) plus a product over each example's unstable neurons.
    Without such a chain (or when a dense ``W`` would cost more than the chain: a non-Linear chain
    that widens, n_in > n), rows ``[A; -A]`` go through :func:`backsubstitute`.
    """
    b, s = lo.shape[0], a.shape[1]
    k = len(ops) - 1
    while k > 0 and isinstance(ops[k - 1], Affine):
        k -= 1
    relu, chain = ops[-1], ops[k:-1]
    n = a[0].flatten(1).shape[1]
    n_in = numel(chain[0].in_shape) if chain else 0
    linear = len(chain) == 1 and isinstance(chain[0], LinearOp)
    if not (isinstance(relu, ReLUOp) and chain and (linear or (n_in <= n and n * n_in <= _DENSE_MAX))):
        a2 = torch.cat([a, -a], 1).expand(b, *([-1] * (a.dim() - 1)))
        lb = backsubstitute(ops, a2, relu_bounds, lo, hi, bias=torch.cat([bias, -bias], 1).expand(b, -1))
        return lb[:, :s], -lb[:, s:]
    w, w_bias = _dense(chain, relu.in_shape, lo)  # (n, n_in), (n,)
    w = torch.cat([w, w_bias.unsqueeze(1)], 1)  # the bias as a last column
    a_l, a_u, b_u = (t.reshape(b, n) for t in relu_relaxation(*relu_bounds[id(relu)]))
    a0 = a[0].reshape(s, n)
    if k == 0 and _use_float32(a0, w, b):  # the chain starts at the input box: all in float32, plus a slack
        lower, upper = _folded_box32(a0, w, a_l, a_u, b_u, lo, hi)
        if torch.isfinite(lower).all() and torch.isfinite(upper).all():
            return lower + bias, upper + bias
    keep = (a_l != 0).any(0).nonzero().squeeze(1)  # neurons not inactive in every example
    scaled = a_l.T[keep].unsqueeze(2) * w[keep].unsqueeze(1)  # (K, B, n_in + 1): one large matrix product
    common = (a0[:, keep] @ scaled.flatten(1)).view(s, b, -1).transpose(0, 1)  # (B, S, n_in + 1)
    low, up = common, common
    terms = _unstable_terms(a0, w, a_l, a_u, b_u, a0.dtype)
    if terms is not None:  # each example's unstable neurons (padded to the batch's largest count with zero rows)
        a_t, extra = terms
        low = low + a_t.clamp_max(0).transpose(1, 2) @ extra
        up = up + a_t.clamp_min(0).transpose(1, 2) @ extra
    rest, shape = ops[:k], (b, s, *chain[0].in_shape)
    lower = backsubstitute(rest, low[..., :-1].reshape(shape), relu_bounds, lo, hi, bias=bias + low[..., -1])
    upper = -backsubstitute(rest, -up[..., :-1].reshape(shape), relu_bounds, lo, hi, bias=-(bias + up[..., -1]))
    return lower, upper


def _unstable_terms(a0: torch.Tensor, w: torch.Tensor, a_l: torch.Tensor, a_u: torch.Tensor, b_u: torch.Tensor,
                    dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A's columns (B, U, S) and the relaxation gaps times ``[W | b]`` (B, U, n_in + 1) of each example's
    unstable neurons, U = the batch's largest count (others padded with zero rows), in dtype ``dt``;
    None when no neuron is unstable. A's transpose is made contiguous first, so gathering its rows is a
    fast copy."""
    unstable = (a_u != a_l) | (b_u != 0)
    width = int(unstable.sum(1).max()) if unstable.numel() else 0
    if not width:
        return None
    a0_t = a0.T.to(dt).contiguous()
    idx = torch.argsort(unstable.to(torch.uint8), dim=1, descending=True, stable=True)[:, :width]  # (B, U)
    on = unstable.gather(1, idx).to(dt)
    rows = idx.flatten()
    w_rows = w.index_select(0, rows).view(*idx.shape, -1).to(dt)  # index_select: much faster than w[idx]
    extra = ((a_u - a_l).gather(1, idx).to(dt) * on).unsqueeze(2) * w_rows  # (B, U, n_in + 1)
    extra = torch.cat([extra[..., :-1], extra[..., -1:] + (b_u.gather(1, idx).to(dt) * on).unsqueeze(2)], 2)
    return a0_t.index_select(0, rows).view(*idx.shape, -1), extra


def _folded_box32(a0: torch.Tensor, w: torch.Tensor, a_l: torch.Tensor, a_u: torch.Tensor, b_u: torch.Tensor,
                  lo: torch.Tensor, hi: torch.Tensor) -> Bounds:
    """Lower and upper bounds (B, S) of ``A0 relu(W [x; 1])`` over the box, computed in float32, made sound.

    The same folded coefficients as the float64 path (``A0 diag(a_l) [W|b]`` plus each example's
    unstable-neuron terms), then concretized on the box, all in float32 (about twice as fast on CPU).
    Every float32 dot product of m terms errs by at most ``gamma_m sum |x_i y_i|`` (Higham, "Accuracy and
    Stability of Numerical Algorithms", 2002, Thm 3.5, any summation order; ``gamma_m = m u / (1 - m u)``,
    ``u = 2^-24``), so with ``reach = max(|lo|, |hi|)`` (and 1 for the bias column) the bounds move by at
    most ``gamma_{K+U+8} (sum_k |A0_rk| |a_l,bk| (|W_k| . reach_b) + sum_u |A0_ru| (|extra_bu| . reach_b))
    + gamma_{n_in+8} |M~| . reach`` (K kept and U unstable neurons, M~ the computed coefficients; the +8
    covers rounding the inputs to float32, the box's centre and radius, and the additions), and the
    radius term by a factor ``1 + gamma_{n_in+8}``. That slack, computed from non-negative float32
    products scaled up by ``1 / (1 - gamma_{K+U+n_in+8})`` (their own rounding), plus an absolute term for
    underflow (flush-to-zero included), is subtracted from the lower and added to the upper bounds.
    Float64 arithmetic elsewhere is, as in the float64 path, taken as exact.
    """
    b, s = a_l.shape[0], a0.shape[0]
    f32 = torch.float32
    keep = (a_l != 0).any(0).nonzero().squeeze(1)
    a_k, w_k = a0[:, keep].to(f32), w[keep].to(f32)
    a_lk = a_l.T[keep].to(f32)  # (K, B)
    reach64 = torch.cat([torch.maximum(lo.abs(), hi.abs()).flatten(1), torch.ones_like(lo.flatten(1)[:, :1])], 1)
    reach = reach64.to(f32) * (1 + 4 * _U32)  # rounded up: every entry >= the float64 value
    common_t = (a_k @ (a_lk.unsqueeze(2) * w_k.unsqueeze(1)).flatten(1)).view(s, b, -1).transpose(0, 1)
    terms = torch.mm(a_lk.T * (reach @ w_k.abs().T), a_k.abs().T)  # (B, S): sum_k |A0||a_l|(|W_k| . reach)
    m = len(keep)
    unstable_terms = _unstable_terms(a0, w, a_l, a_u, b_u, f32)
    if unstable_terms is not None:
        a_t, extra = unstable_terms
        low = torch.baddbmm(common_t, a_t.clamp_max(0).transpose(1, 2), extra)
        up = torch.baddbmm(common_t, a_t.clamp_min(0).transpose(1, 2), extra)
        terms = terms + (a_t.abs().transpose(1, 2) @ (extra.abs() @ reach.unsqueeze(2))).squeeze(2)
        m += a_t.shape[1]
    else:
        low = up = common_t.contiguous()
    mid = ((hi + lo) / 2).flatten(1)
    rad = ((hi - lo) / 2).flatten(1)
    cols = torch.stack([torch.cat([mid, torch.ones_like(mid[:, :1])], 1),
                        torch.cat([rad, torch.zeros_like(rad[:, :1])], 1)], 2).to(f32)  # (B, n_in + 1, 2)
    weights = torch.stack([cols[..., 1], reach], 2)  # (B, n_in + 1, 2): radius and reach

    def concretize(coef: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        centre = (coef @ cols[..., :1]).squeeze(2)
        spread = coef.abs() @ weights  # (B, S, 2): |M~| . rad and |M~| . reach
        return centre.double(), spread[..., 0].double(), spread[..., 1].double()

    c_lo, r_lo, reach_lo = concretize(low)
    c_up, r_up, reach_up = concretize(up)
    n_in = w.shape[1]
    scale = 1 / (1 - _gamma(m + n_in))  # computed non-negative float32 sums are at most this much too low
    slack_terms = _gamma(m) * scale * terms.double()
    lower = c_lo - r_lo * (1 + _gamma(n_in)) - slack_terms - _gamma(n_in) * scale * reach_lo
    upper = c_up + r_up * (1 + _gamma(n_in)) + slack_terms + _gamma(n_in) * scale * reach_up
    big = (1 + float(a0.abs().max())) * (1 + float(w.abs().max())) if a0.numel() and w.numel() else 1.0
    tiny = (m + n_in + 16) * 2.0 ** -120 * big * reach64.sum(1, keepdim=True)  # underflow / flush-to-zero
    return lower - tiny, upper + tiny


#: float32 unit roundoff; :func:`_gamma` counts 8 extra roundings per term (inputs cast, a_l * W, ...)
_U32 = 2.0 ** -24


def _gamma(m: int) -> float:
    """Higham's ``gamma_{m+8}`` for float32 (8 more roundings than terms: see :func:`_folded_box32`)."""
    mu = (m + 8) * _U32
    if mu >= 0.5:
        raise ValueError(f"float32 products of {m} terms have no useful error bound")
    return mu / (1 - mu)


#: folded products of at least this many multiply-adds run in float32 (with a rounding slack), when allowed
FLOAT32_MIN_WORK = 1 << 24


def _use_float32(a0: torch.Tensor, w: torch.Tensor, b: int) -> bool:
    """Whether the folded product may run in float32: large, float64, no autograd, full-precision matmuls."""
    if _MATMUL == "float64" or a0.dtype != torch.float64 or a0.requires_grad or w.requires_grad:
        return False
    if torch.get_float32_matmul_precision() != "highest" or a0.device.type not in ("cpu", "cuda"):
        return False  # TF32 / bf16 matmuls would void the float32 error bound
    if a0.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return False
    if a0.shape[1] + w.shape[1] + 64 > 1 << 20:
        return False
    return _MATMUL == "float32" or a0.shape[0] * b * a0.shape[1] * w.shape[1] >= FLOAT32_MIN_WORK


#: "auto" (float32 for large folded products, see :data:`FLOAT32_MIN_WORK`), "float64" or "float32"
_MATMUL = "auto"


def set_matmul(mode: str) -> str:
    """Choose CROWN's folded-product precision (``"auto"``, ``"float64"``, ``"float32"``); returns the old one.

    Either way the bounds are sound: float32 products carry a rigorous rounding slack (see :func:`_folded`).
    """
    global _MATMUL
    if mode not in ("auto", "float64", "float32"):
        raise ValueError(f"matmul mode must be 'auto', 'float64' or 'float32', got {mode!r}")
    old, _MATMUL = _MATMUL, mode
    return old


#: largest dense matrix (entries) built for an affine chain in :func:`_lower_upper`
_DENSE_MAX = 1 << 22


def _dense(chain: list[Op], out_shape: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The matrix (n_out, n_in) and bias (n_out,) of a chain of affine ops, by back-substituting the identity."""
    if len(chain) == 1 and isinstance(chain[0], LinearOp):
        op = chain[0]
        return op.w, op.b if op.b is not None else torch.zeros_like(op.w[:, 0])
    n = numel(out_shape)
    a = torch.eye(n, dtype=like.dtype, device=like.device).reshape(1, n, *out_shape)
    bias = torch.zeros(1, n, dtype=like.dtype, device=like.device)
    for op in reversed(chain):
        term = op.bias_term(a)
        bias = bias if term is None else bias + term
        a = op.back(a)
    return a[0].reshape(n, -1), bias[0]


def _has_relu(ops: list[Op]) -> bool:
    return any(isinstance(o, ReLUOp) or (isinstance(o, Residual) and _has_relu(o.main + o.shortcut))
               for o in ops)


def crown_lower(ops: list[Op], spec: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                intermediate: str = "crown", fixed: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """CROWN lower bounds of ``spec · f(x)`` for x in ``[lo, hi]``: (B, S).

    Args:
        ops: traced ops of the network (see :func:`robustlab.certify.layers.to_ops`); residual blocks
            are back-substituted through both branches.
        spec: (B, S, *output shape) specification rows (e.g. margins e_y - e_j).
        lo, hi: input box (B, *input shape), raw input units.
        intermediate: ``"crown"`` (every ReLU layer's bounds by back-substitution, intersected with
            IBP's) or ``"ibp"`` (IBP pre-activation bounds, i.e. CROWN-IBP's cheaper variant).
        fixed: optional activation states by ``id(relu_op)`` (see :func:`robustlab.certify.layers.fix_states`):
            the bound then holds over the box intersected with those activation constraints (fixed-active
            ReLUs become the identity, fixed-inactive ones 0, so the bound is at least as tight).
    """
    ibp_in: dict[int, Bounds] = {}
    ibp(ops, lo, hi, record=ibp_in, fixed=fixed)
    relu_bounds: dict[int, Bounds] = {}
    for op, prefix in _relus_with_prefix(ops, []):
        l_ibp, u_ibp = ibp_in[id(op)]
        if intermediate == "crown" and _has_relu(prefix):
            l_ibp, u_ibp = _tighten(prefix, op.in_shape, relu_bounds, lo, hi, l_ibp, u_ibp)
            if fixed is not None:
                l_ibp, u_ibp = fix_states(l_ibp, u_ibp, fixed.get(id(op)))
        relu_bounds[id(op)] = (l_ibp, u_ibp)
    return backsubstitute(ops, spec, relu_bounds, lo, hi)
