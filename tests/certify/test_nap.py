"""NAPs (Geng et al., 2023): mining closed form, delta semantics, NAP-fixed bounds vs exact MILP, errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from robustlab.certify.bounds import bound_margins
from robustlab.certify.nap import (
    NAPCertifier,
    hidden_preactivations,
    mine_naps,
    nap_coverage,
    nap_falsify,
    nap_margin_bounds,
    nap_max_radius,
    nap_membership,
    nap_milp,
    naps_overlap,
)
from robustlab.core import registry
from robustlab.core.errors import ConfigError, DataError, UnsupportedModelError
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.core.threat import LpBall
from robustlab.models.architectures import ShapeWorldResNet


def hand_net() -> nn.Sequential:
    """z = (x0 - 0.5, x1 - 0.5, -1); logits = (z0 + z1, -z0)."""
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [0, 0]]))
        net[0].bias.copy_(torch.tensor([-0.5, -0.5, -1.0]))
        net[2].weight.copy_(torch.tensor([[1.0, 1, 0], [-1, 0, 0]]))
        net[2].bias.zero_()
    return net


def tiny(seed: int, d: int = 4, hidden=(6, 5), k: int = 3) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    layers, w = [], d
    for h in (*hidden, k):
        lin = nn.Linear(w, h)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(h, w, generator=g))
            lin.bias.copy_(0.5 * torch.randn(h, generator=g))
        layers += [lin, nn.ReLU()]
        w = h
    return nn.Sequential(*layers[:-1])


def data(seed: int, n: int = 200, d: int = 4) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(100 + seed))


def labels(net: nn.Module, x: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Predictions where they cover every class, else round-robin classes (mining needs every class)."""
    p = net(x).argmax(1)
    return p if len(p.unique()) == k else torch.arange(len(x)) % k


def test_mining_closed_form_and_zero_is_inactive():
    net = hand_net()
    # 10 examples: x0 > 0.5 in all, x1 > 0.5 in 9 (one has x1 = 0.5 exactly: z = 0 counts as inactive)
    x = torch.tensor([[0.9, 0.8]] * 9 + [[0.7, 0.5]])
    y = torch.zeros(10, dtype=torch.long)
    x = torch.cat([x, torch.tensor([[0.1, 0.9]] * 4)])  # class 1: x0 inactive, x1 active in all
    y = torch.cat([y, torch.ones(4, dtype=torch.long)])
    n90 = mine_naps(net, x, y, delta=0.9)
    assert n90.counts.tolist() == [10, 4]
    assert n90.active_counts.tolist() == [[10, 9, 0], [0, 4, 0]]
    assert n90.active.tolist() == [[True, True, False], [False, True, False]]
    assert n90.inactive.tolist() == [[False, False, True], [True, False, True]]
    n95 = mine_naps(net, x, y, delta=0.95)  # ceil(9.5) = 10 > 9: neuron 1 is free for class 0
    assert n95.active.tolist() == [[True, False, False], [False, True, False]]
    assert n95.states(torch.tensor([0])).tolist() == [[1.0, 0.0, -1.0]]
    n1 = mine_naps(net, x, y, delta=1.0)
    assert n1.active.tolist() == n95.active.tolist()
    # membership (strict z > 0 / z <= 0) and coverage
    m = nap_membership(net, torch.tensor([[0.9, 0.5], [0.9, 0.6], [0.2, 0.7]]), n90)
    assert m.tolist() == [[False, False], [True, False], [False, True]]
    cov = nap_coverage(net, x, y, n90)
    assert cov["recall"].tolist() == [0.9, 1.0] and cov["precision"].tolist() == [1.0, 1.0]
    # exact integer cut-offs: n = 20, delta = 0.95 -> 19 needed (no float round-up to 20)
    x20 = torch.tensor([[0.9, 0.9]] * 19 + [[0.2, 0.9]])
    n = mine_naps(net, x20, torch.zeros(20, dtype=torch.long), delta=0.95, num_classes=1)
    assert n.active[0].tolist() == [True, True, False]


@pytest.mark.parametrize("seed", [0, 1])
def test_delta_nesting_recall_and_exact_training_recall(seed):
    net, x = tiny(seed), data(seed)
    y = labels(net, x)
    xt = data(seed + 50)
    prev = None
    for delta in (1.0, 0.99, 0.95, 0.9, 0.75, 0.51):
        naps = mine_naps(net, x, y, delta=delta)
        recall = nap_coverage(net, xt, torch.arange(len(xt)) % 3, naps)["recall"]
        if delta == 1.0:
            assert nap_coverage(net, x, y, naps)["recall"].tolist() == [1.0] * 3
        if prev is not None:
            assert bool(naps.contains(prev[0]).all())  # P(delta1) ⊆ P(delta2) for delta2 < delta1
            assert bool((recall <= prev[1] + 1e-12).all())
        prev = (naps, recall)
    xh = torch.tensor([[0.9, 0.1], [0.2, 0.9], [0.8, 0.8]])
    default = mine_naps(hand_net(), xh, None, 0.9, num_classes=1)  # default labels: the predictions (all 0)
    assert default.active.equal(mine_naps(hand_net(), xh, torch.zeros(3, dtype=torch.long), 0.9, num_classes=1).active)


def _feasible_patterns(net: nn.Sequential, lo, hi) -> list[tuple]:
    """Every activation pattern (2 hidden layers) whose closed region meets the box, with its affine pieces."""
    lins = [m for m in net if isinstance(m, nn.Linear)]
    w = [m.weight.detach().double().numpy() for m in lins]
    b = [m.bias.detach().double().numpy() for m in lins]
    n1 = len(b[0])
    out = []
    for pat in itertools.product([0, 1], repeat=n1 + len(b[1])):
        p = np.array(pat, dtype=float)
        d1, d2 = np.diag(p[:n1]), np.diag(p[n1:])
        a2, c2 = w[1] @ d1 @ w[0], w[1] @ d1 @ b[0] + b[1]  # z2 = a2 x + c2 on this pattern
        sgn = 1 - 2 * p  # active: -z <= 0, inactive: z <= 0
        a_ub = sgn[:, None] * np.vstack([w[0], a2])
        b_ub = -sgn * np.concatenate([b[0], c2])
        if linprog(np.zeros(len(lo)), A_ub=a_ub, b_ub=b_ub, bounds=list(zip(lo, hi)), method="highs").status == 0:
            out.append((p, a_ub, b_ub, w[2] @ d2 @ a2, w[2] @ d2 @ c2 + b[2]))
    return out


def _pattern_enumeration_min(patterns: list[tuple], cls: int, states: torch.Tensor, lo, hi) -> list[float]:
    """Exact min of f_c - f_j over box ∩ NAP: one LP per feasible activation pattern that agrees with the NAP."""
    st = states.numpy()
    k = len(patterns[0][4])
    best = [math.inf] * (k - 1)
    for p, a_ub, b_ub, ao, co in patterns:
        if np.any((st > 0) & (p == 0)) or np.any((st < 0) & (p == 1)):
            continue
        for i, j in enumerate(j for j in range(k) if j != cls):
            res = linprog(ao[cls] - ao[j], A_ub=a_ub, b_ub=b_ub, bounds=list(zip(lo, hi)), method="highs")
            if res.status == 0:
                best[i] = min(best[i], res.fun + co[cls] - co[j])
    return best


@pytest.mark.parametrize("seed", [0, 1])
def test_milp_matches_pattern_enumeration_on_2d_net(seed):
    net = tiny(seed, d=2, hidden=(4, 3), k=3)
    x = data(seed, n=300, d=2)
    naps = mine_naps(net, x, labels(net, x), delta=0.9)
    patterns = _feasible_patterns(net, [0.0, 0.0], [1.0, 1.0])
    for cls in range(3):
        for use_nap in (False, True):
            st = naps.states(torch.tensor([cls]))[0] if use_nap else torch.zeros(7)
            exact = _pattern_enumeration_min(patterns, cls, st, [0.0, 0.0], [1.0, 1.0])
            r = nap_milp(net, cls, naps if use_nap else None)
            if math.isinf(min(exact)):
                assert r.status == "empty_region"
                continue
            assert r.margins == pytest.approx(exact, abs=1e-6)
            assert r.status == ("verified" if min(exact) > 0 else "counterexample")
            # a dense grid never goes below the MILP minimum (on points following the NAP)
            g = torch.stack(torch.meshgrid(torch.linspace(0, 1, 61), torch.linspace(0, 1, 61), indexing="ij"), -1)
            g = g.reshape(-1, 2).double()
            if use_nap:
                g = g[nap_membership(net, g, naps)[:, cls]]
            with torch.no_grad():
                s = net.double()(g)
            net.float()
            others = [j for j in range(3) if j != cls]
            if len(g):
                assert float((s[:, cls:cls + 1] - s[:, others]).min()) >= r.min_margin - 1e-6
            if r.status == "counterexample":
                assert r.confirmed
                dec = nap_milp(net, cls, naps if use_nap else None, mode="decide")
                assert dec.status == "counterexample" and dec.confirmed


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_nap_bounds_tighter_than_plain_and_below_exact_milp(seed):
    net = tiny(seed)
    x = data(seed)
    naps = mine_naps(net, x, labels(net, x), delta=0.9)
    xc, eps = x[:3], 0.15
    cls = net(xc).argmax(1)
    for method in ("ibp", "crown"):
        plain = nap_margin_bounds(net, None, cls, x=xc, eps=eps, method=method)
        fixed = nap_margin_bounds(net, naps, cls, x=xc, eps=eps, method=method)
        assert bool((fixed.lower >= plain.lower - 1e-9).all())
        ref = bound_margins(net, xc, cls, LpBall("inf", eps), method=method)
        assert torch.allclose(plain.lower, ref)
        for i in range(len(cls)):
            exact = nap_milp(net, int(cls[i]), naps, x=xc[i:i + 1], eps=eps)
            exact_plain = nap_milp(net, int(cls[i]), None, x=xc[i:i + 1], eps=eps)
            assert exact_plain.status != "empty_region"
            assert exact.min_margin >= exact_plain.min_margin - 1e-7  # a subset of the region
            if exact.status == "empty_region":
                continue
            assert all(lb <= m + 1e-6 for lb, m in zip(fixed.lower[i].tolist(), exact.margins))
            assert all(lb <= m + 1e-6 for lb, m in zip(plain.lower[i].tolist(), exact_plain.margins))
    whole = nap_margin_bounds(net, naps, torch.arange(3), method="crown")  # the whole domain box
    for c in range(3):
        r = nap_milp(net, c, naps)
        if r.status != "empty_region":
            assert float(whole.lower[c].min()) <= r.min_margin + 1e-6


def test_bound_margins_fixed_argument():
    net, x = tiny(5), data(5)[:4]
    y = net(x).argmax(1)
    threat = LpBall("inf", 0.1)
    free = [torch.zeros(6), torch.zeros(5)]
    for method in ("ibp", "crown"):
        base = bound_margins(net, x, y, threat, method=method)
        assert torch.equal(bound_margins(net, x, y, threat, method=method, fixed=free), base)
        z = hidden_preactivations(net, x)
        own = torch.where(z > 0, 1.0, -1.0)  # every example's own pattern: valid, non-empty region
        per = [own[:, :6], own[:, 6:]]
        tight = bound_margins(net, x, y, threat, method=method, fixed=per)
        if method == "ibp":
            assert bool((tight >= base - 1e-9).all())
        true = net.double()(x.double())
        net.float()
        others = torch.stack([torch.tensor([j for j in range(3) if j != int(c)]) for c in y])
        margins = true.gather(1, y[:, None]) - true.gather(1, others)
        assert bool((tight <= margins + 1e-9).all())  # x itself follows the fixed pattern
    with pytest.raises(ConfigError, match="ReLU layers"):
        bound_margins(net, x, y, threat, fixed=[torch.zeros(6)])
    with pytest.raises(ConfigError, match="shape"):
        bound_margins(net, x, y, threat, fixed=[torch.zeros(5), torch.zeros(5)])


def test_radius_overlap_falsify_and_determinism():
    net, x = tiny(7), data(7)
    y = labels(net, x)
    naps = mine_naps(net, x, y, delta=0.95)
    assert mine_naps(net, x, y, delta=0.95).active.equal(naps.active)
    pred = net(x[:5]).argmax(1)
    r0 = nap_max_radius(net, x[:5], pred, None, steps=10)
    r1 = nap_max_radius(net, x[:5], pred, naps, steps=10)
    assert bool((r1 >= r0).all()) and bool((r0 > 0).all())
    a = nap_milp(net, 0, naps)
    b = nap_milp(net, 0, naps)
    assert a.status == b.status and a.margins == b.margins
    assert naps_overlap(net, naps, 0, 0) in ("overlap", "disjoint")
    f1 = nap_falsify(net, naps, 0, torch_generator(3), n=500, steps=10)
    f2 = nap_falsify(net, naps, 0, torch_generator(3), n=500, steps=10)
    assert {k: v for k, v in f1.items() if k != "witness"} == {k: v for k, v in f2.items() if k != "witness"}
    if a.status == "verified":
        assert f1["violations"] == 0


def test_errors_for_bad_input_and_unsupported_networks():
    net, x = tiny(0), data(0)
    y = labels(net, x)
    for d in (0.5, 1.01):
        with pytest.raises(ConfigError, match="delta"):
            mine_naps(net, x, y, delta=d)
    with pytest.raises(DataError, match="class"):
        mine_naps(net, x, torch.zeros(len(x), dtype=torch.long))
    with pytest.raises(DataError, match="shaped"):
        mine_naps(net, x[:, :3], y)
    with pytest.raises(UnsupportedModelError, match="Tanh"):
        mine_naps(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), x, None)
    with pytest.raises(UnsupportedModelError, match="no ReLU"):
        mine_naps(nn.Sequential(nn.Linear(4, 3)), x, None)
    res = ShapeWorldResNet(in_channels=3, num_classes=4, widths=(4, 6), blocks=1, stem_stride=2).eval()
    res.in_shape = (3, 16, 16)
    with pytest.raises(UnsupportedModelError, match="Residual"):
        mine_naps(res, torch.rand(4, 3, 16, 16), None)
    naps = mine_naps(net, x, y, delta=0.9)
    with pytest.raises(ConfigError, match="do not fit"):
        nap_membership(tiny(0, hidden=(3, 3)), x, naps)
    with pytest.raises(ConfigError, match="method"):
        nap_margin_bounds(net, naps, y[:2], x=x[:2], eps=0.1, method="lp")
    with pytest.raises(ConfigError, match="eps"):
        nap_margin_bounds(net, naps, y[:2], x=x[:2])
    with pytest.raises(ConfigError, match="class"):
        nap_milp(net, 7, naps)
    with pytest.raises(ConfigError, match="mode"):
        nap_milp(net, 0, naps, mode="fast")


def test_certifier_statuses():
    torch.manual_seed(0)
    module = tiny(4)
    x = data(4, n=120)
    model = TorchModel(module, num_classes=3)
    y = labels(module, x)
    y[:5] = (model(x[:5]).argmax(1) + 1) % 3  # some clean-wrong examples
    naps = mine_naps(model, x, y, delta=0.9)
    cert = registry.create("nap", naps=naps)
    assert isinstance(cert, NAPCertifier) and not hasattr(cert, "threat")
    pred = model(x).argmax(1)
    out = cert.evaluate(model, x, y, 0.05, clean_pred=pred, generator=torch_generator(0))
    assert len(out.status) == len(y)
    assert all(s == "skipped" for s in out.status[:5])
    certified = torch.tensor([s == "certified" for s in out.status])
    assert bool(out.extras["follows_nap"][certified].all()) and bool((out.score[certified] > 0).all())
    assert certified.any()
    with pytest.raises(ConfigError, match="delta"):
        NAPCertifier(delta=0.3)
