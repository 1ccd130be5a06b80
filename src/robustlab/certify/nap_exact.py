"""Exact NAP-robustness and non-ambiguity checks by MILP (``scipy.optimize.milp`` / HiGHS), split from nap.py.

Sound and complete counterpart of :func:`robustlab.certify.nap.nap_margin_bounds`, from "Towards Reliable Neural
Specifications" (Geng, Xu, Shao, Si & Zhang, ICML 2023): ReLUs of free neurons use the big-M encoding with
robustlab's CROWN/IBP pre-activation bounds, NAP constraints are linear. Each affine segment becomes a dense
matrix, so it is meant for small networks (tens to hundreds of hidden neurons).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from robustlab.certify.layers import ReLUOp, run
from robustlab.certify.nap import NAPs, ReLUNetwork, _check_naps, _preact_bounds, _region, relu_network
from robustlab.core.errors import ConfigError

__all__ = ["MILPResult", "nap_milp", "naps_overlap"]


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
