"""Paper 30 (simplicity-bias): block accuracies, S-energy, UAPs, and the quick reproduction's contract."""

import math

import torch

from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from robustlab.data.simplicity import load_lms
from robustlab.papers import catalog
from robustlab.papers.base import Reproduction
from robustlab.papers.simplicity_bias import block_accuracies, fcn, reproduce, s_energy, universal_perturbation


def _linear_on_first_coordinate() -> TorchModel:
    """The extreme-SB classifier in closed form: sign of the linear coordinate (x_0 > 0.5 in [0, 1] units)."""
    lin = torch.nn.Linear(20, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[1, 0], lin.bias[1] = 1.0, -0.5
    return TorchModel(lin, modality="tabular", num_classes=2)


def test_block_accuracies_of_the_linear_coordinate_classifier():
    ds = load_lms("test", n=2000, seed=1)
    acc = block_accuracies(_linear_on_first_coordinate(), ds)
    assert acc["clean"] == 1.0 and acc["sc_rand"] == 1.0  # it ignores every slab
    assert 0.45 <= acc["s_rand"] <= 0.55  # permuting x_0 leaves chance
    assert acc["s_swap"] == 0.0  # swapping x_0 from the other class flips every prediction
    assert block_accuracies(_linear_on_first_coordinate(), ds) == acc  # seeded


def test_s_energy_closed_form_and_uap_stays_in_the_ball_along_s():
    d = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    assert torch.allclose(s_energy(d, torch.tensor([0])), torch.tensor([9 / 25, 0.0]))
    ds = load_lms("train", n=300, seed=2)
    model = _linear_on_first_coordinate()
    pos = ds.y == 1
    delta = universal_perturbation(model, ds.x[pos], ds.y[pos], eps=0.2, steps=10, generator=torch_generator(0))
    assert delta.shape == (1, 20) and float(delta.norm()) <= 0.2 + 1e-6
    assert float(delta[0, 0]) < -0.19  # all of it pushes the linear coordinate towards class 0


def test_fcn_shape():
    net = fcn(20, hidden=16)
    assert net(torch.zeros(3, 20)).shape == (3, 2)
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 3


def test_quick_reproduction_returns_the_contract_with_measured_numbers():
    assert catalog.status("simplicity-bias") == "implemented"
    rep = reproduce(quick=True)
    assert isinstance(rep, Reproduction) and rep.key == "simplicity-bias" and rep.error is None
    assert {c.id for c in rep.claims} == {
        "lms5-extreme-sb", "slabs-learnable", "ensemble-keeps-sb", "adversarial-training-keeps-sb",
        "perturbations-along-s", "universal-perturbation", "dominoes-simple-block-dominates"}
    for c in rep.claims:
        assert isinstance(c.held, bool) and c.measured
        assert all(math.isfinite(v) for v in c.measured.values() if isinstance(v, float)), c.id
    assert any("QUICK" in n for n in rep.notes)
