"""IBP / CROWN margin bounds: soundness (sampling, vertices, PGD, exact LP), tightness, errors, certifier."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.attacks import PGD
from robustlab.certify import set_crown_matmul
from robustlab.certify.bounds import bound_margins, interval_bounds, margin_spec
from robustlab.core import registry
from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.core.threat import LpBall
from robustlab.models.architectures import DigitsMLP, ShapeWorldResNet


def _randomize_bn(net: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(1 + 0.5 * torch.randn(n, generator=g))
            m.bias.data.copy_(0.2 * torch.randn(n, generator=g))


def mlp(seed: int, d_in=(1, 4, 4), hidden=(16, 16), k=4) -> TorchModel:
    torch.manual_seed(seed)
    net = DigitsMLP(in_shape=d_in, hidden=hidden, num_classes=k)
    return TorchModel(net, mean=0.4, std=0.3, num_classes=k)


def cnn(seed: int, k=4) -> TorchModel:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Identity(), nn.Flatten(),
                        nn.Linear(24, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, k))
    _randomize_bn(net, seed)
    return TorchModel(net.eval(), mean=(0.5, 0.4), std=(0.2, 0.3), num_classes=k)


def resnet(seed: int) -> TorchModel:
    torch.manual_seed(seed)
    net = ShapeWorldResNet(in_channels=3, num_classes=4, widths=(4, 6), blocks=1, stem_stride=2)
    _randomize_bn(net, seed)
    return TorchModel(net.eval(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=4)


def true_margins(model: TorchModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Exact (float64) margins z_y - z_j, (B, K-1), in the order of margin_spec."""
    double = TorchModel(copy.deepcopy(model.module).double(),
                        mean=None if model._mean is None else model._mean.double(),
                        std=None if model._std is None else model._std.double())
    with torch.no_grad():
        s = double(x.double())
    return torch.einsum("bsk,bk->bs", margin_spec(y, s.shape[1]), s)


def sampled_min(model, x, y, threat, n=1000, seed=0):
    xs = threat.sample(x, torch_generator(seed), n=n)  # (n, B, ...)
    yy = y.repeat(n)
    m = true_margins(model, xs.reshape(-1, *x.shape[1:]), yy)
    return m.view(n, len(y), -1).min(0).values


CASES = [("mlp", mlp, (1, 4, 4)), ("cnn", cnn, (2, 8, 8))]


@pytest.mark.parametrize("name,make,shape", CASES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("eps", [0.02, 0.1])
def test_bounds_are_below_sampled_and_pgd_margins(name, make, shape, seed, eps):
    model = make(seed)
    g = torch.Generator().manual_seed(seed + 10)
    x = torch.rand(6, *shape, generator=g)
    y = torch.randint(0, 4, (6,), generator=g)
    threat = LpBall("inf", eps)
    ibp_lb = bound_margins(model, x, y, threat, "ibp")
    crown_lb = bound_margins(model, x, y, threat, "crown")
    best = bound_margins(model, x, y, threat, "crown_ibp_best")
    cheap = bound_margins(model, x, y, threat, "crown", intermediate="ibp", batch_size=4)
    assert ibp_lb.shape == crown_lb.shape == cheap.shape == (6, 3)
    assert torch.equal(best, torch.maximum(ibp_lb, crown_lb))
    emp = sampled_min(model, x, y, threat, n=1000, seed=seed)
    assert bool((ibp_lb <= emp + 1e-7).all()) and bool((crown_lb <= emp + 1e-7).all())
    assert bool((cheap <= emp + 1e-7).all())
    # the best PGD point, attacking each margin (targeted at class j) from a random start
    spec_classes = [j for j in range(4)]
    for j in spec_classes:
        keep = y != j
        res = PGD(eps=eps, steps=30, loss="margin", targeted=j)(model, x[keep], y[keep],
                                                                 generator=torch_generator(seed))
        assert bool(threat.contains(x[keep], res.x_adv).all())
        m = true_margins(model, res.x_adv, y[keep])
        col = torch.where(j < y[keep], j, j - 1)  # column of class j in margin_spec order
        at_pgd = m.gather(1, col.view(-1, 1)).squeeze(1)
        assert bool((crown_lb[keep].gather(1, col.view(-1, 1)).squeeze(1) <= at_pgd + 1e-7).all())
        assert bool((ibp_lb[keep].gather(1, col.view(-1, 1)).squeeze(1) <= at_pgd + 1e-7).all())


@pytest.mark.parametrize("name,make,shape", CASES + [("resnet", resnet, (3, 16, 16))])
def test_interval_bounds_contain_sampled_logits(name, make, shape):
    model = make(0)
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(5))
    threat = LpBall("inf", 0.05)
    lo, hi = interval_bounds(model, x, threat)
    xs = threat.sample(x, torch_generator(1), n=300).reshape(-1, *shape)
    double = copy.deepcopy(model.module).double()
    with torch.no_grad():
        z = double(model._normalize(xs.double()).double()).view(300, 4, -1)
    assert bool((z >= lo - 1e-9).all()) and bool((z <= hi + 1e-9).all())


@pytest.mark.parametrize("matmul", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(4))
def test_tiny_net_bounds_below_every_box_vertex(seed, matmul):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    model = TorchModel(net, num_classes=3, modality="tabular")
    x = torch.rand(5, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    threat = LpBall("inf", 0.15)
    lo, hi = threat.bounds(x)
    corners = torch.tensor(list(itertools.product([0, 1], repeat=3)), dtype=torch.float64)  # (8, 3)
    verts = lo.unsqueeze(0) + corners.unsqueeze(1) * (hi - lo).unsqueeze(0)  # (8, 5, 3)
    at_verts = true_margins(model, verts.reshape(-1, 3), y.repeat(8)).view(8, 5, 2).min(0).values
    old = set_crown_matmul(matmul)  # CROWN's folded product in float64, or float32 with its rounding slack
    try:
        for method in ("ibp", "crown"):
            assert bool((bound_margins(model, x, y, threat, method) <= at_verts + 1e-9).all())
    finally:
        set_crown_matmul(old)


def _exact_min_margins(w1, b1, w2, b2, lo, hi, y):
    """Exact min over the box of each margin of a one-hidden-layer ReLU net: one LP per activation pattern."""
    from scipy.optimize import linprog

    h, k = w1.shape[0], w2.shape[0]
    others = [j for j in range(k) if j != y]
    best = np.full(len(others), np.inf)
    for pattern in itertools.product([0, 1], repeat=h):
        s = np.array(pattern, dtype=float)
        # active: w1 x + b1 >= 0  ->  -w1 x <= b1; inactive: w1 x + b1 <= 0
        sign = np.where(s > 0, -1.0, 1.0)[:, None]
        a_ub, b_ub = sign * w1, -sign[:, 0] * b1
        eff_w, eff_b = w2 @ (s[:, None] * w1), w2 @ (s * b1) + b2
        for col, j in enumerate(others):
            c = eff_w[y] - eff_w[j]
            r = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=list(zip(lo, hi)), method="highs")
            if r.status == 0:
                best[col] = min(best[col], r.fun + eff_b[y] - eff_b[j])
    return best


@pytest.mark.parametrize("seed", range(3))
def test_bounds_never_exceed_the_exact_lp_minimum(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    model = TorchModel(net, num_classes=3, modality="tabular")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (4,), generator=g)
    threat = LpBall("inf", 0.25)
    lo, hi = threat.bounds(x)
    ibp_lb = bound_margins(model, x, y, threat, "ibp")
    crown_lb = bound_margins(model, x, y, threat, "crown")
    w1, b1 = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    w2, b2 = net[2].weight.detach().numpy(), net[2].bias.detach().numpy()
    emp = sampled_min(model, x, y, threat, n=2000, seed=seed).numpy()
    gaps = []
    for i in range(4):
        exact = _exact_min_margins(w1, b1, w2, b2, lo[i].numpy(), hi[i].numpy(), int(y[i]))
        assert np.all(exact <= emp[i] + 1e-9)  # the LP minimum is a true minimum
        assert np.all(exact >= emp[i] - 0.05)  # and not far below a dense sample (LP sanity)
        assert np.all(ibp_lb[i].numpy() <= exact + 1e-7)
        assert np.all(crown_lb[i].numpy() <= exact + 1e-7)
        gaps.append(exact - crown_lb[i].numpy())
    assert np.isfinite(np.concatenate(gaps)).all()


@pytest.mark.parametrize("name,make,shape", CASES + [("resnet", resnet, (3, 16, 16))])
def test_eps_zero_bounds_equal_the_true_margin(name, make, shape):
    model = make(3)
    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(0))
    y = torch.arange(5) % 4
    truth = true_margins(model, x, y)
    threat = LpBall("inf", 0.0)
    for method in ("ibp", "crown"):
        assert torch.allclose(bound_margins(model, x, y, threat, method), truth, atol=1e-5)
    lo, hi = interval_bounds(model, x, threat)
    with torch.no_grad():
        logits = model(x).double()
    assert torch.allclose(lo, logits, atol=1e-5) and torch.allclose(hi, logits, atol=1e-5)


def test_resnet_ibp_and_crown_are_sound_through_residual_blocks():
    model = resnet(0)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2])
    threat = LpBall("inf", 0.003)
    emp = sampled_min(model, x, y, threat, n=200)
    ibp_lb = bound_margins(model, x, y, threat, "ibp")
    crown_lb = bound_margins(model, x, y, threat, "crown", batch_size=1)
    assert bool((ibp_lb <= emp + 1e-7).all()) and bool((crown_lb <= emp + 1e-7).all())
    assert crown_lb.mean() > ibp_lb.mean()
    res = PGD(eps=0.003, steps=10, loss="margin")(model, x, y, generator=torch_generator(0))
    at_pgd = true_margins(model, res.x_adv, y).min(1).values
    assert bool((crown_lb.min(1).values <= at_pgd + 1e-7).all())
    lo, hi = interval_bounds(model, x, threat)
    assert bool((lo <= hi).all())


def test_crown_is_tighter_than_ibp_on_an_mlp():
    model = mlp(0, d_in=(1, 8, 8), hidden=(64, 64), k=10)
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(20) % 10
    threat = LpBall("inf", 0.02)
    ibp_lb = bound_margins(model, x, y, threat, "ibp")
    crown_lb = bound_margins(model, x, y, threat, "crown")
    assert crown_lb.mean() > ibp_lb.mean()


def test_unsupported_error_lists_every_offending_module():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Sigmoid(),
                        nn.MaxPool1d(1), nn.Linear(8, 2))
    with pytest.raises(UnsupportedModelError) as info:
        bound_margins(TorchModel(net), torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), LpBall("inf", 0.1))
    msg = str(info.value)
    for needle in ("2 (Tanh)", "4 (Sigmoid)", "5 (MaxPool1d)", "3 module(s)", "fix:"):
        assert needle in msg
    assert "Linear" not in msg.split("fix:")[0]


def test_bad_method_and_batch_chunking():
    model = mlp(2)
    x = torch.rand(9, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    y = torch.arange(9) % 4
    with pytest.raises(ConfigError, match="unknown bound method"):
        bound_margins(model, x, y, LpBall("inf", 0.1), "deeppoly")
    one = bound_margins(model, x, y, LpBall("inf", 0.05), "crown", batch_size=100)
    chunked = bound_margins(model, x, y, LpBall("inf", 0.05), "crown", batch_size=2)
    assert torch.allclose(one, chunked, atol=1e-12)


def test_sequential_with_custom_forward_is_refused():
    class Doubling(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(UnsupportedModelError, match="own forward"):
        bound_margins(TorchModel(Doubling(nn.Flatten(), nn.Linear(4, 2))), torch.rand(2, 1, 2, 2),
                      torch.tensor([0, 1]), LpBall("inf", 0.1))


def test_training_mode_batchnorm_is_refused():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    model = TorchModel(net)
    net.train()
    with pytest.raises(UnsupportedModelError, match="eval"):
        bound_margins(model, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), LpBall("inf", 0.1))


def test_certifier_probe_statuses_and_registry():
    model = mlp(1)
    x = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        clean = model(x).argmax(1)
    y = clean.clone()
    y[:5] = (y[:5] + 1) % 4  # five clean-wrong examples
    probe = registry.create("crown")
    assert probe.kind == "certifier" and probe.setting_name == "eps"
    out = probe.evaluate(model, x, y, 0.0, clean_pred=clean, generator=torch_generator(0))
    assert out.status[:5] == ["skipped"] * 5
    assert all(s == "certified" for s in out.status[5:])  # eps=0: every correct example certified
    assert torch.equal(out.scores.argmax(1), clean)
    best = registry.create("crown_ibp_best").evaluate(model, x, y, 0.05, clean_pred=clean,
                                                      generator=torch_generator(0))
    crown = probe.evaluate(model, x, y, 0.05, clean_pred=clean, generator=torch_generator(0))
    assert bool((best.score >= crown.score).all())
    big = registry.create("ibp").evaluate(model, x, y, 5.0, clean_pred=clean, generator=torch_generator(0))
    assert all(s == "abstained" for s in big.status[5:])
    assert float(big.score.max()) <= 0.0


def test_crown_beats_ibp_on_the_zoo_mlp():
    from robustlab.data import load_dataset
    from robustlab.models import zoo

    model = zoo.load("digits-mlp", quick=True, progress=False)
    data = load_dataset("digits", n=60, seed=0)
    threat = LpBall("inf", 0.01)
    ibp_lb = bound_margins(model, data.x, data.y, threat, "ibp")
    crown_lb = bound_margins(model, data.x, data.y, threat, "crown")
    assert crown_lb.mean() > ibp_lb.mean()
    assert bool((crown_lb <= true_margins(model, data.x, data.y) + 1e-6).all())


def test_certified_examples_survive_pgd_in_run_suite(tmp_path):
    from robustlab.core.outcomes import Outcomes
    from robustlab.evaluate.runner import run_suite
    from robustlab.evaluate.suite import parse_suite

    suite = parse_suite({
        "name": "certify-tiny", "model": {"zoo": "digits-mlp", "quick": True},
        "data": {"name": "digits", "n": 40, "seed": 0},
        "probes": [{"name": "crown", "eps": [0.01, 0.05]},
                   {"name": "pgd", "eps": [0.01, 0.05], "steps": 20, "loss": "margin"}],
        "shard_size": 40, "examples": 0,
    })
    result = run_suite(suite, out_dir=tmp_path / "r", progress=False)
    f = Outcomes.load(result.run_dir / "outcomes.parquet").to_frame()
    cert = f[f["probe"] == "crown"].set_index(["example_id", "setting"])
    pgd = f[f["probe"] == "pgd"].set_index(["example_id", "setting"])
    assert set(cert["status"]) <= {"certified", "abstained", "skipped"}
    assert (cert["status"] == "certified").any()
    joined = cert.join(pgd, lsuffix="_c", rsuffix="_p")
    assert not ((joined["status_c"] == "certified") & (joined["status_p"] == "broken")).any()
    assert ((joined["status_c"] == "skipped") == ~joined["clean_correct_c"]).all()
    m = result.summary["metrics"]
    assert m["crown.certified_accuracy[eps=0.01]"] >= m["crown.certified_accuracy[eps=0.05]"]
