"""Paper 36 (robust-prototypes): the soundness checker, the purity measure and the quick reproduction."""

import math

import pytest
import torch

from robustlab.core.model import CallableModel, TorchModel
from robustlab.core.rng import torch_generator
from robustlab.models.prototypes import RobustCBC
from robustlab.papers import catalog
from robustlab.papers.base import Reproduction
from robustlab.papers.robust_prototypes import QUICK, purity, reproduce, soundness_violations


def _walk(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk(v)
    else:
        yield obj


def test_soundness_checker_flags_an_overclaimed_radius():
    # a linear 2-class model whose true decision boundary is x0 = 0.5; claiming radius 0.4 everywhere is wrong
    model = CallableModel(lambda x: torch.stack([0.5 - x[:, 0], x[:, 0] - 0.5], 1), num_classes=2,
                          has_gradients=True)
    x = torch.full((8, 2), 0.3)
    y = torch.zeros(8, dtype=torch.long)
    bad = soundness_violations(model, x, y, torch.full((8,), 0.4, dtype=torch.float64), QUICK, torch_generator(0))
    assert bad["pgd"] + bad["fab"] + bad["sphere"] > 0
    good = soundness_violations(model, x, y, torch.full((8,), 0.19, dtype=torch.float64), QUICK, torch_generator(0))
    assert good["pgd"] == good["fab"] == good["sphere"] == 0


def test_purity_of_hand_built_cbc():
    x = torch.cat([torch.zeros(10, 2), torch.ones(10, 2)])
    y = torch.cat([torch.zeros(10), torch.ones(10)]).long()
    net = RobustCBC(2, 2, num_components=2, concepts_per_class=1, sigma=1.0, components=x[[0, 10]])
    with torch.no_grad():
        net.reasoning_logits.copy_(torch.tensor([[0.0, -9.0], [-9.0, 0.0], [-9.0, -9.0], [-9.0, -9.0]]))
    assert purity(net, x, y, k=5) == 1.0
    with torch.no_grad():
        net.reasoning_logits.copy_(torch.tensor([[-9.0, 0.0], [0.0, -9.0], [-9.0, -9.0], [-9.0, -9.0]]))
    assert purity(net, x, y, k=5) == 0.0
    assert TorchModel(net)(x).shape == (20, 2)


@pytest.fixture(scope="module")
def quick_run():
    return reproduce(quick=True)


def test_quick_reproduction_contract(quick_run):
    rep = quick_run
    assert isinstance(rep, Reproduction) and rep.error is None
    assert rep.key == "robust-prototypes" and catalog.status("robust-prototypes") != "missing"
    assert [c.id for c in rep.claims] == ["C1", "C2", "C3", "C4", "C5", "C6"]
    for c in rep.claims:
        assert isinstance(c.held, bool) and c.measured
        nums = [v for v in _walk(c.measured) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        assert nums and all(math.isfinite(v) for v in nums), c.id
    # mathematical guarantees hold at any size: soundness and the probability constraints
    c1, c2 = rep.claims[0], rep.claims[1]
    assert c1.held and c1.measured["total_violations"] == 0
    assert c2.held
    assert rep.notes and any("digits" in n for n in rep.notes)
