"""Neural activation patterns (NAPs) as specifications: mining, membership and NAP-constrained verification.

From "Towards Reliable Neural Specifications" (Geng, Xu, Shao, Si & Zhang, ICML 2023). For a ReLU
network with hidden pre-activations z_j(x) (every ReLU layer, layer order then unit order) the state
of neuron j is ``a_j(x) = 1[z_j(x) > 0]``.

- Mining (Alg. 1, delta-relaxed, 0.5 < delta <= 1): per class c with mining examples D_c,
  ``P_c = {(j, active): #active >= ceil(delta n_c)} ∪ {(j, inactive): #active <= floor((1 - delta) n_c)}``;
  the other neurons are free. :func:`mine_naps` is batched over examples.
- Membership ``x ⊨ P_c``: z_j(x) > 0 on every active and z_j(x) <= 0 on every inactive neuron.
- NAP-robustness: every x in a region X (the input domain box, optionally ∩ an L∞ ball) with
  ``x ⊨ P_c`` (closed constraints) is classified c. Two checkers:
  :func:`nap_margin_bounds` (robustlab's IBP / CROWN with the NAP's activation states fixed:
  fixed-active ReLUs are the identity, fixed-inactive ones output 0; sound, incomplete) and
  :func:`nap_milp` (exact MILP with ``scipy.optimize.milp`` / HiGHS, big-M ReLU encoding for free
  neurons only, NAP constraints linear; sound and complete: the exact minimum margin).
- :class:`NAPCertifier` (``certifier`` "nap"): an example is certified at eps when it follows the NAP of
  its predicted class and its L∞ ball ∩ that NAP is verified by bound propagation. It is a conditional
  certificate (points of the ball outside the NAP are not covered), so it declares no ``threat`` and is
  not cross-checked against attacks.

Supported networks: Linear / Conv2d / BatchNorm / Flatten / pooling / normalization with ReLU, in a
plain sequence (no residual blocks); the MILP turns each affine segment into a dense matrix, so it is
meant for small networks (tens to hundreds of hidden neurons).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from robustlab.certify.bounds import _ibp_margins, margin_spec
from robustlab.certify.crown import crown_lower
from robustlab.certify.layers import Affine, Op, ReLUOp, fix_states, ibp, run, to_ops, trace_shapes
from robustlab.core.errors import ConfigError, DataError, ModelError, UnsupportedModelError
from robustlab.core.model import Model, TorchModel, checked_scores
from robustlab.core.probe import Certifier, ProbeOutput
from robustlab.core.registry import register

__all__ = ["ReLUNetwork", "NAPs", "NAPBounds", "MILPResult", "relu_network", "hidden_preactivations", "mine_naps",
           "nap_membership", "nap_coverage", "nap_margin_bounds", "nap_max_radius", "nap_milp", "naps_overlap",
           "nap_falsify", "NAPCertifier"]

BOUND_METHODS = ("ibp", "crown", "crown_ibp_best")


# ----------------------------------------------------------------------------------------------- network view
@dataclass
class ReLUNetwork:
    """A plain ReLU network as robustlab bound-propagation ops (float64) plus its hidden-layer layout."""

    ops: list[Op]
    relus: list[ReLUOp]
    layer_shapes: list[tuple[int, ...]]
    in_shape: tuple[int, ...]
    num_classes: int
    low: float = 0.0
    high: float = 1.0

    @property
    def layer_sizes(self) -> list[int]:
        return [math.prod(s) for s in self.layer_shapes]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (B, K) and each ReLU layer's pre-activations (B, *shape), float64, differentiable."""
        zs = []
        x = x.to(torch.float64)
        for op in self.ops:
            if isinstance(op, ReLUOp):
                zs.append(x)
            x = op.forward(x)
        return x, zs

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """(B, N) concatenated per-neuron values -> one (B, *shape) tensor per ReLU layer."""
        parts = torch.split(flat, self.layer_sizes, dim=1)
        return [p.reshape(len(flat), *s) for p, s in zip(parts, self.layer_shapes)]

    def fixed(self, states: torch.Tensor) -> dict[int, torch.Tensor]:
        """(B, N) states -> the ``fixed`` dict of :func:`~robustlab.certify.layers.ibp` / ``crown_lower``."""
        return {id(op): st for op, st in zip(self.relus, self.split(states.to(torch.float64)))}


def relu_network(model: Any) -> ReLUNetwork:
    """The model as a :class:`ReLUNetwork`; raises :class:`UnsupportedModelError` for residual / non-ReLU nets."""
    if isinstance(model, ReLUNetwork):
        return model
    ops = to_ops(model)
    bad = [type(op).__name__ for op in ops if not isinstance(op, (Affine, ReLUOp))]
    if bad:
        raise UnsupportedModelError(f"NAPs need a plain feed-forward ReLU network; found {', '.join(sorted(set(bad)))}",
                                    fix="use an nn.Sequential of Linear/Conv2d/ReLU layers (no residual blocks)")
    relus = [op for op in ops if isinstance(op, ReLUOp)]
    if not relus:
        raise UnsupportedModelError("the network has no ReLU layer, so it has no activation pattern",
                                    fix="NAPs are defined for networks with at least one hidden ReLU layer")
    in_shape = _in_shape(model)
    trace_shapes(ops, torch.zeros(1, *in_shape, dtype=torch.float64))
    if len(ops[-1].out_shape) != 1:
        raise UnsupportedModelError(f"the network outputs shape {ops[-1].out_shape}, not (num_classes,)",
                                    fix="end the network with a Linear layer giving one score per class")
    return ReLUNetwork(ops, relus, [tuple(op.in_shape) for op in relus], tuple(in_shape), ops[-1].out_shape[0],
                       float(getattr(model, "low", 0.0)), float(getattr(model, "high", 1.0)))


def _in_shape(model: Any) -> tuple[int, ...]:
    module = model.module if isinstance(model, TorchModel) else model
    shape = getattr(module, "in_shape", None)
    if shape is None:
        first = next((m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))), None)
        if isinstance(first, torch.nn.Linear):
            shape = (first.in_features,)
    if shape is None:
        raise ModelError("cannot tell the network's input shape",
                         fix="give the module an `in_shape` attribute (e.g. (1, 8, 8)) or start it with nn.Linear")
    return tuple(int(s) for s in shape)


def _check_x(net: ReLUNetwork, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != net.in_shape:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"inputs must be a tensor shaped (B, {', '.join(map(str, net.in_shape))}), got {got}",
                        fix="pass raw inputs in the model's input shape")
    return x.to(torch.float64)


def hidden_preactivations(model: Any, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """All hidden pre-activations z(x), layers concatenated in forward order: (B, N) float64."""
    net = relu_network(model)
    x = _check_x(net, x)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            _, zs = net.forward(x[i:i + batch_size])
            out.append(torch.cat([z.flatten(1) for z in zs], 1))
    return torch.cat(out) if out else torch.empty(0, sum(net.layer_sizes), dtype=torch.float64)


# ------------------------------------------------------------------------------------------------------- mining
@dataclass(frozen=True)
class NAPs:
    """One NAP per class: ``active[c, j]`` / ``inactive[c, j]`` mark the constrained neurons (K, N) bool.

    ``counts[c]`` mining examples of class c, ``active_counts[c, j]`` how many of them had neuron j active.
    """

    active: torch.Tensor
    inactive: torch.Tensor
    delta: float
    counts: torch.Tensor
    active_counts: torch.Tensor
    layer_sizes: tuple[int, ...] = ()

    @property
    def num_classes(self) -> int:
        return self.active.shape[0]

    def states(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Activation states (B, N) float64 of the NAPs of ``classes`` (default all): +1 / -1 / 0 (free)."""
        st = self.active.to(torch.float64) - self.inactive.to(torch.float64)
        return st if classes is None else st[torch.as_tensor(classes).long()]

    def num_constraints(self) -> torch.Tensor:
        """Constrained neurons per class (K,)."""
        return (self.active | self.inactive).sum(1)

    def contains(self, other: NAPs) -> torch.Tensor:
        """(K,) bool: every constraint of ``other``'s NAP of class c is in this NAP of class c."""
        return ((other.active & ~self.active) | (other.inactive & ~self.inactive)).sum(1) == 0


def _cutoffs(delta: float, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact integer cut-offs ceil(delta n), floor((1 - delta) n) (rounded to 1e-9 against float noise)."""
    hi = torch.ceil(torch.round(delta * n.double() * 1e9) / 1e9)
    lo = torch.floor(torch.round((1 - delta) * n.double() * 1e9) / 1e9)
    return hi.long(), lo.long()


def mine_naps(model: Any, x: torch.Tensor, y: torch.Tensor | None = None, delta: float = 0.95,
              num_classes: int | None = None, batch_size: int = 1024) -> NAPs:
    """Mine each class's NAP (Alg. 1 of Geng et al., 2023, delta-relaxed), batched over examples.

    Args:
        model: a plain ReLU network (``TorchModel`` or ``nn.Module``).
        x: mining inputs (B, *input shape), raw units; y: their classes (ground-truth labels or the
            model's predictions; default: the predictions).
        delta: 0.5 < delta <= 1; a neuron is fixed active (inactive) for class c when at least
            ceil(delta n_c) (at most floor((1 - delta) n_c)) of the n_c examples activate it.
        num_classes: default: the network's outputs.

    Raises: ConfigError for delta out of range; DataError when a class has no mining example.
    """
    delta = float(delta)
    if not 0.5 < delta <= 1.0:
        raise ConfigError(f"delta must satisfy 0.5 < delta <= 1, got {delta}",
                          fix="use e.g. delta=0.95 (the paper's default) or 1.0 (every example agrees)")
    net = relu_network(model)
    z = hidden_preactivations(net, x, batch_size)
    k = int(num_classes or net.num_classes)
    if y is None:
        with torch.no_grad():
            y = torch.cat([net.forward(x[i:i + batch_size].to(torch.float64))[0].argmax(1)
                           for i in range(0, len(x), batch_size)])
    y = torch.as_tensor(y).long().cpu()
    if y.shape != (len(x),) or (len(y) and (int(y.min()) < 0 or int(y.max()) >= k)):
        raise DataError(f"labels must be shaped ({len(x)},) with values in [0, {k})",
                        fix="pass one class index per mining example")
    onehot = torch.nn.functional.one_hot(y, k).to(torch.float64)  # (B, K)
    counts = onehot.sum(0).long()
    if bool((counts == 0).any()):
        missing = (counts == 0).nonzero().flatten().tolist()
        raise DataError(f"no mining example for class(es) {missing}",
                        fix="mine on data covering every class (e.g. the whole training split)")
    act = (onehot.T @ (z.cpu() > 0).to(torch.float64)).round().long()  # (K, N)
    need_on, max_on = _cutoffs(delta, counts)
    return NAPs(active=act >= need_on[:, None], inactive=act <= max_on[:, None], delta=delta, counts=counts,
                active_counts=act, layer_sizes=tuple(net.layer_sizes))


def _check_naps(net: ReLUNetwork, naps: NAPs) -> None:
    n = sum(net.layer_sizes)
    if not isinstance(naps, NAPs) or naps.active.shape[1] != n:
        raise ConfigError(f"the NAPs do not fit this network ({n} hidden neurons)",
                          fix="mine the NAPs on the same network with mine_naps(model, x, y)")


def nap_membership(model: Any, x: torch.Tensor, naps: NAPs, margin: float = 0.0) -> torch.Tensor:
    """(B, K) bool: ``x ⊨ P_c`` (z > margin on active, z <= -margin on inactive neurons)."""
    net = relu_network(model)
    _check_naps(net, naps)
    z = hidden_preactivations(net, x).cpu()
    on, off = (z > margin).to(torch.float64), (z <= -margin).to(torch.float64)
    a, i = naps.active.to(torch.float64), naps.inactive.to(torch.float64)
    ok = on @ a.T + off @ i.T  # satisfied constraints per (example, class)
    return ok.round().long() == (naps.active.sum(1) + naps.inactive.sum(1))[None]


def nap_coverage(model: Any, x: torch.Tensor, y: torch.Tensor, naps: NAPs) -> dict[str, Any]:
    """Precision P(y=c | x ⊨ P_c), recall P(x ⊨ P_c | y=c) per class (NaN where undefined) and their means."""
    m = nap_membership(model, x, naps).to(torch.float64)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(y).long(), naps.num_classes).to(torch.float64)
    hits = (m * onehot).sum(0)
    precision = hits / m.sum(0)
    recall = hits / onehot.sum(0)
    follow_own = float((m * onehot).sum() / max(len(y), 1))
    return {"precision": precision, "recall": recall, "mean_precision": float(precision.nanmean()),
            "mean_recall": float(recall.nanmean()), "follow_own": follow_own,
            "follow_any": float((m.sum(1) > 0).double().mean()) if len(y) else float("nan"),
            "follow_several": float((m.sum(1) > 1).double().mean()) if len(y) else float("nan")}


# -------------------------------------------------------------------------------------------- bound propagation
@dataclass
class NAPBounds:
    """Margin lower bounds ``f_c - f_j`` (B, K-1) over each region ∩ NAP, and whether the region is empty."""

    lower: torch.Tensor
    empty: torch.Tensor

    @property
    def verified(self) -> torch.Tensor:
        return self.empty | (self.lower.min(1).values > 0)


def _region(net: ReLUNetwork, b: int, x: torch.Tensor | None, eps: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The input box: the whole domain (x None) or the L∞ ball of radius eps (scalar or (B,)) ∩ the domain."""
    if x is None:
        lo = torch.full((b, *net.in_shape), net.low, dtype=torch.float64)
        return lo, torch.full_like(lo, net.high)
    x = _check_x(net, x)
    if eps is None:
        raise ConfigError("eps is required when x is given", fix="pass eps (L∞ radius, raw units) or x=None")
    e = torch.as_tensor(eps, dtype=torch.float64).reshape(-1, *([1] * len(net.in_shape)))
    if bool((e < 0).any()):
        raise ConfigError(f"eps must be >= 0, got {eps}")
    return (x - e).clamp(net.low, net.high), (x + e).clamp(net.low, net.high)


def _preact_bounds(net: ReLUNetwork, lo: torch.Tensor, hi: torch.Tensor, fixed: dict[int, torch.Tensor] | None,
                   method: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pre-activation bounds of every ReLU layer over box ∩ fixed states (IBP, intersected with CROWN's)."""
    rec: dict[int, Any] = {}
    ibp(net.ops, lo, hi, record=rec, fixed=fixed)
    out = []
    for op in net.relus:
        l_b, u_b = rec[id(op)]
        if method != "ibp":
            idx = next(i for i, o in enumerate(net.ops) if o is op)
            n, shape = math.prod(op.in_shape), op.in_shape
            eye = torch.eye(n, dtype=torch.float64)
            spec = torch.cat([eye, -eye]).reshape(1, 2 * n, *shape).expand(len(lo), -1, *([-1] * len(shape)))
            lb = crown_lower(net.ops[:idx], spec, lo, hi, fixed=fixed)
            l_b = torch.maximum(l_b, lb[:, :n].reshape(len(lo), *shape))
            u_b = torch.minimum(u_b, (-lb[:, n:]).reshape(len(lo), *shape))
            l_b, u_b = fix_states(l_b, u_b, None if fixed is None else fixed.get(id(op)))
        out.append((l_b, u_b))
    return out


def nap_margin_bounds(model: Any, naps: NAPs | None, classes: torch.Tensor, x: torch.Tensor | None = None,
                      eps: Any = None, method: str = "crown", batch_size: int = 64) -> NAPBounds:
    """Sound lower bounds of ``f_c - f_j`` over (domain box or L∞ ball ∩ domain) ∩ ``x ⊨ P_c`` (closed).

    Args:
        model: a plain ReLU network. naps: the NAPs (None: no NAP constraint, plain IBP / CROWN).
        classes: (B,) class c per region. x: ball centres (B, *input shape) or None for the whole domain.
        eps: L∞ radius (scalar or (B,)), raw units. method: "ibp", "crown" or "crown_ibp_best".

    Returns: :class:`NAPBounds`; rows of provably empty regions are +inf (the minimum over an empty set).
    With a NAP the bound is the max of the NAP-fixed and the unconstrained propagation (both sound on the
    constrained region): fixing states always tightens IBP, but CROWN's linear relaxation of a fixed-active
    neuron (the identity, valid only where z >= 0) is concretized over the whole box, so it can be looser.
    """
    if method not in BOUND_METHODS:
        raise ConfigError(f"unknown bound method {method!r}", fix=f"use one of {', '.join(BOUND_METHODS)}")
    net = relu_network(model)
    if naps is not None:
        _check_naps(net, naps)
    classes = torch.as_tensor(classes).long().reshape(-1)
    lo, hi = _region(net, len(classes), x, eps)
    if len(lo) != len(classes):
        raise ConfigError(f"{len(lo)} inputs but {len(classes)} classes", fix="pass one class per input")
    lowers, empties = [], []
    with torch.no_grad():
        for i in range(0, len(classes), batch_size):
            c, l_b, u_b = classes[i:i + batch_size], lo[i:i + batch_size], hi[i:i + batch_size]
            fx = None if naps is None else net.fixed(naps.states(c))
            spec = margin_spec(c, net.num_classes)
            parts = []
            for f in ([None] if fx is None else [None, fx]):  # with a NAP: max of both, each sound on it
                if method in ("ibp", "crown_ibp_best"):
                    parts.append(_ibp_margins(net.ops, spec, l_b, u_b, fixed=f))
                if method in ("crown", "crown_ibp_best"):
                    parts.append(crown_lower(net.ops, spec, l_b, u_b, fixed=f))
            low = torch.stack(parts).max(0).values
            empty = torch.zeros(len(c), dtype=torch.bool)
            if fx is not None:
                for pl, pu in _preact_bounds(net, l_b, u_b, fx, "ibp" if method == "ibp" else "crown"):
                    empty |= (pl > pu).flatten(1).any(1)
            lowers.append(torch.where(empty[:, None], torch.full_like(low, math.inf), low))
            empties.append(empty)
    k = net.num_classes
    if not lowers:
        return NAPBounds(torch.empty(0, k - 1, dtype=torch.float64), torch.empty(0, dtype=torch.bool))
    return NAPBounds(torch.cat(lowers), torch.cat(empties))


def nap_max_radius(model: Any, x: torch.Tensor, classes: torch.Tensor, naps: NAPs | None = None,
                   method: str = "crown", max_eps: float = 1.0, steps: int = 14) -> torch.Tensor:
    """Largest L∞ radius (bisection, batched) whose ball ∩ NAP is verified by bound propagation: (B,)."""
    classes = torch.as_tensor(classes).long()
    lo_e = torch.zeros(len(classes), dtype=torch.float64)
    hi_e = torch.full_like(lo_e, float(max_eps))
    for _ in range(int(steps)):
        mid = (lo_e + hi_e) / 2
        ok = nap_margin_bounds(model, naps, classes, x=x, eps=mid, method=method).verified
        lo_e, hi_e = torch.where(ok, mid, lo_e), torch.where(ok, hi_e, mid)
    return lo_e


# ---------------------------------------------------------------------------------------------------------- MILP
@dataclass
class MILPResult:
    """An exact NAP-robustness query: min over region ∩ NAP of ``f_c - f_j`` for every j != c.

    status: "verified" (min margin > output_margin), "counterexample" (a witness with margin <=
    output_margin; ``confirmed`` when re-evaluating it in float64 agrees), "empty_region" (infeasible),
    or "inconclusive" (solver time limit; ``lower`` still is a sound dual bound).
    """

    status: str
    min_margin: float
    lower: float
    margins: list[float]
    witness: torch.Tensor | None = None
    confirmed: bool | None = None
    seconds: float = 0.0
    binaries: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def _dense_layers(net: ReLUNetwork) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each affine segment between ReLUs (and the last one) as a dense (W, b) on flattened vectors."""
    segs, cur = [], []
    for op in net.ops:
        if isinstance(op, ReLUOp):
            segs.append(cur)
            cur = []
        else:
            cur.append(op)
    segs.append(cur)
    shapes = [net.in_shape] + net.layer_shapes
    out = []
    with torch.no_grad():
        for seg, shape in zip(segs, shapes):
            n = math.prod(shape)
            b = run(seg, torch.zeros(1, *shape, dtype=torch.float64)).flatten(1)
            w = run(seg, torch.eye(n, dtype=torch.float64).reshape(n, *shape)).flatten(1) - b
            out.append((w.T.numpy().copy(), b[0].numpy().copy()))
    return out


def _milp_model(net: ReLUNetwork, lo: torch.Tensor, hi: torch.Tensor, states: list[np.ndarray],
                act_margin: float) -> dict[str, Any] | None:
    """Variables [x, h_1.., d], constraints and bounds; None when the region is provably empty."""
    from scipy.sparse import coo_matrix

    layers = _dense_layers(net)
    fx = {id(op): torch.as_tensor(s).reshape(1, *shp) for op, s, shp in zip(net.relus, states, net.layer_shapes)}
    pre = _preact_bounds(net, lo, hi, fx, "crown")
    n0 = math.prod(net.in_shape)
    sizes = [n0] + net.layer_sizes
    offs = np.cumsum([0] + sizes)
    n_cont = int(offs[-1])
    rows, cols, vals, lb_c, ub_c = [], [], [], [], []
    var_lb = np.concatenate([lo.flatten().numpy(), np.zeros(n_cont - n0)])
    var_ub = np.concatenate([hi.flatten().numpy(), np.zeros(n_cont - n0)])
    n_bin, bin_cols = 0, []
    r = 0

    def add(entries: list[tuple[np.ndarray, np.ndarray]], lb: float, ub: float) -> None:
        nonlocal r
        for c_idx, v in entries:
            rows.extend([r] * len(c_idx))
            cols.extend(c_idx.tolist())
            vals.extend(v.tolist())
        lb_c.append(lb)
        ub_c.append(ub)
        r += 1

    for li, ((w, b), st, (pl, pu)) in enumerate(zip(layers[:-1], states, pre)):
        l_np, u_np = pl.flatten().numpy(), pu.flatten().numpy()
        if bool((l_np > u_np).any()):
            return None
        prev = np.arange(offs[li], offs[li + 1])
        for j in range(w.shape[0]):
            hj = int(offs[li + 1] + j)
            nz = np.flatnonzero(w[j])
            zexpr = (prev[nz], w[j, nz])
            lj, uj = float(l_np[j]), float(u_np[j])
            if st[j] > 0:
                add([zexpr], act_margin - b[j], math.inf)  # z >= m
                add([(np.array([hj]), np.array([1.0])), (zexpr[0], -zexpr[1])], b[j], b[j])  # h = z
                var_lb[hj], var_ub[hj] = max(lj, 0.0), max(uj, 0.0)
            elif st[j] < 0:
                add([zexpr], -math.inf, -act_margin - b[j])  # z <= -m, h = 0
            elif lj >= 0:
                add([(np.array([hj]), np.array([1.0])), (zexpr[0], -zexpr[1])], b[j], b[j])
                var_lb[hj], var_ub[hj] = lj, uj
            elif uj > 0:  # unstable: h >= z, h <= u d, h <= z - l (1 - d)
                d = n_cont + n_bin
                n_bin += 1
                bin_cols.append(d)
                var_ub[hj] = uj
                add([(np.array([hj]), np.array([1.0])), (zexpr[0], -zexpr[1])], b[j], math.inf)
                add([(np.array([hj, d]), np.array([1.0, -uj]))], -math.inf, 0.0)
                add([(np.array([hj, d]), np.array([1.0, -lj])), (zexpr[0], -zexpr[1])], -math.inf, b[j] - lj)
    n_var = n_cont + n_bin
    a = coo_matrix((vals, (rows, cols)), shape=(r, n_var)).tocsr()
    integrality = np.zeros(n_var)
    integrality[bin_cols] = 1
    return {"A": a, "lb": np.array(lb_c), "ub": np.array(ub_c), "var_lb": np.concatenate([var_lb, np.zeros(n_bin)]),
            "var_ub": np.concatenate([var_ub, np.ones(n_bin)]), "integrality": integrality, "n0": n0,
            "last": layers[-1], "h_last": np.arange(offs[-2], offs[-1]), "n_var": n_var, "binaries": n_bin}


def _solve(mm: dict[str, Any], obj: np.ndarray, time_limit: float, cap: float | None = None) -> Any:
    """Minimize ``obj · v``; with ``cap`` solve the feasibility problem ``obj · v <= cap`` instead."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    cons = [LinearConstraint(mm["A"], mm["lb"], mm["ub"])] if mm["A"].shape[0] else []
    if cap is not None:
        cons.append(LinearConstraint(obj.reshape(1, -1), -np.inf, cap))
        obj = np.zeros_like(obj)
    return milp(obj, constraints=cons, integrality=mm["integrality"], bounds=Bounds(mm["var_lb"], mm["var_ub"]),
                options={"time_limit": float(time_limit), "mip_rel_gap": 1e-9, "disp": False})


def nap_milp(model: Any, cls: int, naps: NAPs | None = None, x: torch.Tensor | None = None, eps: float | None = None,
             output_margin: float = 0.0, act_margin: float = 0.0, time_limit: float = 30.0,
             mode: str = "minimize") -> MILPResult:
    """Exact NAP-robustness check by MILP (scipy.optimize.milp / HiGHS): one query per j != ``cls``.

    Region: the domain box (x None) or the L∞ ball of radius ``eps`` around one input ``x`` (1, *shape)
    ∩ the domain, intersected with ``x ⊨ P_cls`` (closed: z >= act_margin / z <= -act_margin; no NAP
    when ``naps`` is None). Free neurons use the big-M encoding with robustlab's CROWN/IBP pre-activation
    bounds on the constrained region (so the encoding is exact); binaries only for unstable free neurons.

    mode: ``"minimize"`` computes the exact minimum margin of every j (sound and complete);
    ``"decide"`` solves the paper's satisfiability queries "∃x: f_c - f_j <= output_margin" and stops at
    the first counterexample (faster; ``margins`` then hold the witness margin or +inf for UNSAT rows).
    """
    if mode not in ("minimize", "decide"):
        raise ConfigError(f"mode must be 'minimize' or 'decide', got {mode!r}")
    net = relu_network(model)
    k = net.num_classes
    cls = int(cls)
    if not 0 <= cls < k:
        raise ConfigError(f"class must lie in [0, {k}), got {cls}")
    if x is not None and len(x) != 1:
        raise ConfigError(f"nap_milp checks one region; x has {len(x)} rows", fix="pass x[i:i+1]")
    t0 = time.perf_counter()
    if naps is not None:
        _check_naps(net, naps)
        flat = naps.states(torch.tensor([cls]))[0].numpy()
    else:
        flat = np.zeros(sum(net.layer_sizes))
    states = np.split(flat, np.cumsum(net.layer_sizes)[:-1])
    lo, hi = _region(net, 1, x, eps)
    mm = _milp_model(net, lo, hi, states, float(act_margin))
    if mm is None:
        return MILPResult("empty_region", math.inf, math.inf, [math.inf] * (k - 1), seconds=time.perf_counter() - t0)
    w_l, b_l = mm["last"]
    if mode == "decide" and _solve(mm, np.zeros(mm["n_var"]), time_limit).status == 2:
        return MILPResult("empty_region", math.inf, math.inf, [math.inf] * (k - 1),
                          seconds=time.perf_counter() - t0, binaries=mm["binaries"])
    margins, lowers, best, best_x, limited, sat = [], [], math.inf, None, False, False
    for j in (j for j in range(k) if j != cls):
        obj = np.zeros(mm["n_var"])
        obj[mm["h_last"]] = w_l[cls] - w_l[j]
        const = float(b_l[cls] - b_l[j])
        res = _solve(mm, obj, time_limit, cap=None if mode == "minimize" else output_margin - const)
        if mode == "decide":
            if res.status == 2:  # UNSAT: this margin is > output_margin everywhere in the region
                margins.append(math.inf)
                lowers.append(output_margin)
                continue
            if res.status == 0:
                val = float(obj @ res.x) + const
                margins.append(val)
                best, best_x, sat = val, res.x[:mm["n0"]], True  # SAT (within solver tolerance)
                break
            limited = True
            margins.append(math.inf)
            lowers.append(-math.inf)
            continue
        if res.status == 2:
            return MILPResult("empty_region", math.inf, math.inf, [math.inf] * (k - 1),
                              seconds=time.perf_counter() - t0, binaries=mm["binaries"])
        val = math.inf if res.x is None else float(res.fun) + const
        dual = getattr(res, "mip_dual_bound", None)
        lowers.append((float(dual) if dual is not None and np.isfinite(dual) else -math.inf) + const
                      if res.status != 0 else val)
        limited |= res.status != 0
        margins.append(val)
        if val < best:
            best, best_x = val, res.x[:mm["n0"]]
    lower = min(lowers) if lowers else -math.inf
    info = {"pre_activation_bounds": "crown", "act_margin": act_margin, "mode": mode}
    if (sat or best <= output_margin) and best_x is not None:
        wx = torch.as_tensor(best_x, dtype=torch.float64).reshape(1, *net.in_shape)
        with torch.no_grad():
            logits, _ = net.forward(wx)
        s = logits[0]
        confirmed = bool(s[cls] - torch.cat([s[:cls], s[cls + 1:]]).max() <= output_margin + 1e-6)
        return MILPResult("counterexample", best, lower, margins, wx, confirmed, time.perf_counter() - t0,
                          mm["binaries"], info)
    status = "inconclusive" if limited and lower <= output_margin else "verified"
    return MILPResult(status, best, lower, margins, None, None, time.perf_counter() - t0, mm["binaries"], info)


def naps_overlap(model: Any, naps: NAPs, c1: int, c2: int, act_margin: float = 1e-3, time_limit: float = 30.0,
                 x: torch.Tensor | None = None, eps: float | None = None) -> str:
    """Non-ambiguity query ``∃x ∈ X: x ⊨ P_c1 ∧ x ⊨ P_c2`` (z >= m / z <= -m): "disjoint", "overlap" or
    "inconclusive"; "disjoint" without a solver call when the NAPs fix a neuron to opposite states."""
    net = relu_network(model)
    _check_naps(net, naps)
    s1, s2 = naps.states(torch.tensor([c1]))[0], naps.states(torch.tensor([c2]))[0]
    if bool(((s1 * s2) < 0).any()):
        return "disjoint"
    flat = torch.where(s1 != 0, s1, s2).numpy()
    lo, hi = _region(net, 1, x, eps)
    mm = _milp_model(net, lo, hi, np.split(flat, np.cumsum(net.layer_sizes)[:-1]), float(act_margin))
    if mm is None:
        return "disjoint"
    res = _solve(mm, np.zeros(mm["n_var"]), time_limit)
    return {0: "overlap", 2: "disjoint"}.get(res.status, "inconclusive")


# ------------------------------------------------------------------------------------------------- falsification
def nap_falsify(model: Any, naps: NAPs, cls: int, generator: torch.Generator, n: int = 10_000, steps: int = 50,
                step_size: float = 0.02, penalty: float = 10.0, starts: torch.Tensor | None = None) -> dict[str, Any]:
    """Search for x in the domain with ``x ⊨ P_cls`` and argmax f(x) != cls: random starts (and ``starts``),
    then signed-gradient descent on ``margin + penalty · Σ violated NAP constraints`` (the spec's soundness test).

    Returns {"in_region": points found inside the NAP region, "violations": those misclassified, "witness"}.
    """
    net = relu_network(model)
    _check_naps(net, naps)
    x = net.low + (net.high - net.low) * torch.rand(n, *net.in_shape, generator=generator, dtype=torch.float64)
    if starts is not None:
        x = torch.cat([_check_x(net, starts), x])
    st = net.split(naps.states(torch.full((1,), int(cls))).expand(len(x), -1))
    others = [j for j in range(net.num_classes) if j != cls]

    def objective(xx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, zs = net.forward(xx)
        viol = sum(((-z).clamp_min(0) * (s > 0) + z.clamp_min(0) * (s < 0)).flatten(1).sum(1) for z, s in zip(zs, st))
        margin = logits[:, cls] - logits[:, others].max(1).values
        return margin + penalty * viol, margin

    for _ in range(int(steps)):
        xx = x.clone().requires_grad_(True)
        loss, _ = objective(xx)
        (g,) = torch.autograd.grad(loss.sum(), xx)
        x = (x - step_size * g.sign()).clamp(net.low, net.high)
    with torch.no_grad():
        _, margin = objective(x)
    inside = nap_membership(net, x, naps)[:, cls]
    bad = inside & (margin <= 0)
    return {"in_region": int(inside.sum()), "violations": int(bad.sum()), "tried": len(x),
            "min_margin_in_region": float(margin[inside].min()) if bool(inside.any()) else math.inf,
            "witness": x[bad][:1] if bool(bad.any()) else None}


# ---------------------------------------------------------------------------------------------------- certifier
@register("certifier", "nap")
class NAPCertifier(Certifier):
    """NAP-constrained L∞ certificate (Geng et al., "Towards Reliable Neural Specifications", 2023).

    Args:
        delta: mining relaxation (0.5 < delta <= 1; the paper's default 0.95).
        data, split, n: the mining data (``robustlab.data.load_dataset``), default the digits training split.
        labels: mine on ground-truth ``"true"`` labels or the model's ``"pred"`` predictions.
        method: bound propagation ("ibp", "crown", "crown_ibp_best").
        naps: precomputed :class:`NAPs` (skips mining).

    Per example: ``"certified"`` (clean-correct, follows the NAP of its predicted class, and the L∞ ball
    ∩ that NAP is verified), ``"abstained"`` (clean-correct otherwise), ``"skipped"`` (clean-wrong). The
    certificate covers only the points of the ball that follow the NAP.
    """

    default_settings = (0.01, 0.02, 0.05, 0.1)

    def __init__(self, delta: float = 0.95, data: str = "digits", split: str = "train", n: int | None = None,
                 labels: str = "true", method: str = "crown", batch_size: int = 64, naps: NAPs | None = None):
        if not 0.5 < float(delta) <= 1.0:
            raise ConfigError(f"delta must satisfy 0.5 < delta <= 1, got {delta}", fix="use e.g. 0.95")
        if labels not in ("true", "pred"):
            raise ConfigError(f"labels must be 'true' or 'pred', got {labels!r}")
        if method not in BOUND_METHODS:
            raise ConfigError(f"unknown bound method {method!r}", fix=f"use one of {', '.join(BOUND_METHODS)}")
        self.delta, self.data, self.split, self.n, self.labels = float(delta), data, split, n, labels
        self.method, self.batch_size, self.naps = method, int(batch_size), naps
        self._mined: tuple[int, NAPs] | None = None

    def check_model(self, model: Model) -> None:
        if not isinstance(model, TorchModel):
            raise UnsupportedModelError(f"the NAP certifier needs a TorchModel, got {type(model).__name__}",
                                        fix="certify a plain ReLU network such as the zoo's digits-mlp")
        relu_network(model)

    def naps_for(self, model: Model) -> NAPs:
        """The given NAPs, or NAPs mined once per model on the mining data."""
        if self.naps is not None:
            return self.naps
        if self._mined is None or self._mined[0] != id(model):
            from robustlab.data import load_dataset

            ds = load_dataset(self.data, split=self.split, n=self.n)
            y = None if self.labels == "pred" else ds.y
            self._mined = (id(model), mine_naps(model, ds.x, y, self.delta, num_classes=model.num_classes))
        return self._mined[1]

    def evaluate(self, model: Model, x: Any, y: torch.Tensor, setting: float, *,
                 clean_pred: torch.Tensor, generator: torch.Generator) -> ProbeOutput:
        self.check_model(model)
        naps = self.naps_for(model)
        scores = checked_scores(model, x)
        pred = clean_pred.cpu().long()
        attempted = pred == y.cpu()
        follows = nap_membership(model, x, naps)[torch.arange(len(pred)), pred]
        nb = nap_margin_bounds(model, naps, pred, x=x, eps=float(setting), method=self.method,
                               batch_size=self.batch_size)
        worst = nb.lower.min(1).values if nb.lower.shape[1] else torch.full((len(y),), math.inf)
        certified = attempted & follows & (worst > 0)
        status = ["certified" if c else ("abstained" if a else "skipped")
                  for c, a in zip(certified.tolist(), attempted.tolist())]
        return ProbeOutput(scores=scores, attempted=attempted, queries=torch.zeros(len(y), dtype=torch.long),
                           x_probed=x, status=status, score=worst.float(),
                           extras={"margin_lower": nb.lower, "follows_nap": follows, "delta": self.delta,
                                   "method": self.method})

    def __repr__(self) -> str:
        return (f"NAPCertifier(delta={self.delta}, data={self.data!r}, split={self.split!r}, n={self.n}, "
                f"labels={self.labels!r}, method={self.method!r})")
