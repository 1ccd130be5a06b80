"""Paper 14 (ibp-tightness): differentiable IBP logits, IBP training, and the quick reproduction."""

import math

import pytest
import torch

from robustlab.certify.bounds import bound_margins
from robustlab.core.threat import LpBall
from robustlab.papers import catalog
from robustlab.papers.base import Reproduction
from robustlab.papers.ibp_tightness import ibp_logits, ibp_train, mlp, reproduce


def test_ibp_worst_case_logits_equal_minus_robustlab_ibp_margin_lower_bounds():
    g = torch.Generator().manual_seed(0)
    net = mlp(16, 8, 4, g).double()
    x = torch.rand(5, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    z = ibp_logits(net, x, y, 0.05)
    lb = bound_margins(net, x, y, LpBall("inf", 0.05), method="ibp")
    others = torch.tensor([[j for j in range(4) if j != t] for t in y.tolist()])
    assert torch.allclose(z.gather(1, others), -lb, atol=1e-10)
    assert torch.all(z.gather(1, y.view(-1, 1)) == 0)
    with torch.no_grad():  # at eps = 0 the worst case is the clean margin
        clean = net(x)
    z0 = ibp_logits(net, x, y, 0.0)
    assert torch.allclose(z0, clean - clean.gather(1, y.view(-1, 1)), atol=1e-10)


def test_ibp_training_lowers_the_ibp_loss_and_is_seeded():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(128, 1, 4, 4, generator=g)
    y = (x.flatten(1)[:, :8].sum(1) > x.flatten(1)[:, 8:].sum(1)).long()
    nets = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(2)
        net = mlp(16, 16, 2, gen)
        with torch.no_grad():
            before = float(torch.nn.functional.cross_entropy(ibp_logits(net, x, y, 0.02), y))
        ibp_train(net, x, y, eps=0.02, epochs=8, ramp_epochs=2, batch_size=32, lr=1e-2, generator=gen)
        with torch.no_grad():
            after = float(torch.nn.functional.cross_entropy(ibp_logits(net, x, y, 0.02), y))
        assert after < before
        nets.append(net)
    assert all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))


def test_quick_reproduction_returns_the_contract_with_measured_numbers():
    assert catalog.status("ibp-tightness") == "implemented"
    res = reproduce(quick=True)
    assert isinstance(res, Reproduction) and res.key == "ibp-tightness" and res.error is None
    assert [c.id for c in res.claims] == ["C1", "C2", "C3", "C4"]
    for c in res.claims:
        assert isinstance(c.held, bool) and c.statement
        nums = [float(v) for v in c.measured.values() if isinstance(v, (int, float))]
        assert nums and all(math.isfinite(v) for v in nums)
    c1, c2, c3, c4 = res.claims
    assert 0 < c1.measured["relu_tau_w256_L4"] < c1.measured["relu_tau_w16_L2"] <= 1
    assert c2.measured["sqrt_pi_over_2"] == pytest.approx(math.sqrt(math.pi / 2))
    assert c2.measured["max_rel_err"] == pytest.approx(abs(c2.measured["tau_sqrt_n_w256"] / math.sqrt(math.pi / 2) - 1))
    assert 0 < c3.measured["tau_std_mean"] <= 1 and 0 < c3.measured["tau_ibp_mean"] <= 1
    assert c3.held == (c3.measured["tau_ibp_w64"] > c3.measured["tau_std_w64"])
    assert all(0 <= c4.measured[k] <= 1 for k in ("clean_acc_std", "clean_acc_ibp", "ibp_cert_acc_ibp"))
    assert any("QUICK" in n for n in res.notes) and any("Differences" in n for n in res.notes)
    assert res.seconds > 0 and res.to_dict()["key"] == "ibp-tightness"


@pytest.mark.slow
def test_full_reproduction_holds_every_claim():
    res = catalog.run("ibp-tightness", quick=False)
    assert res.error is None and len(res.claims) == 4
    assert all(c.held for c in res.claims), [(c.id, c.measured) for c in res.claims if not c.held]
