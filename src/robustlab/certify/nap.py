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
  :func:`~robustlab.certify.nap_exact.nap_milp` (exact MILP with ``scipy.optimize.milp`` / HiGHS, in
  :mod:`robustlab.certify.nap_exact`, re-exported here; sound and complete: the exact minimum margin).
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
from dataclasses import dataclass
from typing import Any

import torch

from robustlab.certify.bounds import _ibp_margins, margin_spec
from robustlab.certify.crown import crown_lower
from robustlab.certify.layers import Affine, Op, ReLUOp, fix_states, ibp, to_ops, trace_shapes
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


# Re-export the exact MILP checker (moved to nap_exact); imported last because nap_exact imports from this module.
from robustlab.certify.nap_exact import MILPResult, nap_milp, naps_overlap  # noqa: E402
