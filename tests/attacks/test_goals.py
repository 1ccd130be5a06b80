"""Goals: losses, success tests, labels and counted queries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustlab.attacks.goals import Misclassify, Targeted, as_goal, dlr_loss, margin_loss
from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.model import CallableModel

from .conftest import linear_model


def _scores(b=7, c=5, seed=0):
    return torch.randn(b, c, generator=torch.Generator().manual_seed(seed)), \
        torch.randint(0, c, (b,), generator=torch.Generator().manual_seed(seed + 1))


def test_margin_loss_matches_hand_computation_and_sign():
    s = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    y = torch.tensor([0, 2])
    assert torch.allclose(margin_loss(s, y), torch.tensor([2.0 - 3.0, 5.0 - (-1.0)]))
    s, y = _scores()
    assert torch.equal(margin_loss(s, y) > 0, s.argmax(1) != y)


def test_dlr_matches_croce_hein_reference_and_is_shift_scale_invariant():
    s, y = _scores(b=32, c=10)
    # reference formula of the auto-attack code (Croce & Hein 2020)
    xs, ind = s.sort(dim=1)
    top_is_y = (ind[:, -1] == y).float()
    u = torch.arange(len(y))
    ref = -(s[u, y] - xs[:, -2] * top_is_y - xs[:, -1] * (1 - top_is_y)) / (xs[:, -1] - xs[:, -3] + 1e-12)
    assert torch.allclose(dlr_loss(s, y), ref, atol=1e-6)
    assert torch.allclose(dlr_loss(3.0 * s + 7.0, y), ref, atol=1e-5)


def test_dlr_needs_three_classes():
    with pytest.raises(ConfigError, match="3 classes"):
        dlr_loss(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))


def test_misclassify_losses_and_success():
    s, y = _scores()
    assert torch.allclose(Misclassify("ce").loss(s, y), F.cross_entropy(s, y, reduction="none"))
    assert torch.allclose(Misclassify("margin").loss(s, y), margin_loss(s, y))
    assert torch.equal(Misclassify().success(s, y), s.argmax(1) != y)
    assert torch.equal(Misclassify().labels(y), y)


def test_targeted_losses_success_and_labels():
    s, y = _scores()
    t = torch.full_like(y, 2)
    g = Targeted(2, loss="ce")
    assert torch.equal(g.labels(y, num_classes=5), t)
    assert torch.allclose(g.loss(s, t), -F.cross_entropy(s, t, reduction="none"))
    assert torch.allclose(Targeted(2, loss="margin").loss(s, t), -margin_loss(s, t))
    assert torch.equal(g.success(s, t), s.argmax(1) == 2)


def test_random_targets_differ_from_true_class_and_are_seeded():
    y = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(0))
    g = Targeted("random")
    t1 = g.labels(y, num_classes=10, generator=torch.Generator().manual_seed(3))
    t2 = g.labels(y, num_classes=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(t1, t2)
    assert bool((t1 != y).all()) and int(t1.min()) >= 0 and int(t1.max()) <= 9
    assert len(set(t1.tolist())) == 10


@pytest.mark.parametrize("make", [
    lambda: Misclassify("foo"), lambda: Targeted(1, loss="dlr"), lambda: Targeted("nearest"),
    lambda: Targeted(-1), lambda: as_goal(3),
])
def test_bad_goal_arguments_raise_config_error(make):
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.fix


def test_per_example_targets_must_match_batch():
    with pytest.raises(ConfigError, match="targets"):
        Targeted([0, 1, 2]).labels(torch.zeros(4, dtype=torch.long), num_classes=3)
    with pytest.raises(ConfigError, match="out of range"):
        Targeted(5).labels(torch.zeros(4, dtype=torch.long), num_classes=3)


def test_query_counts_and_gradient_of_linear_margin():
    model = linear_model(d=6, classes=3)
    w = model.module[1].weight.detach()
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1])
    counts = torch.zeros(10, dtype=torch.long)
    idx = torch.tensor([9, 1, 3, 4, 0])
    with torch.no_grad():  # the goal must switch gradients back on itself
        ev = Misclassify("margin").query(model, x, y, queries=counts, index=idx, grad=True)
    assert counts.tolist() == [1, 1, 0, 1, 1, 0, 0, 0, 0, 1]
    other = (model(x).detach().scatter(1, y.view(-1, 1), float("-inf"))).argmax(1)
    assert torch.allclose(ev.grad, w[other] - w[y], atol=1e-6)
    assert all(p.grad is None for p in model.module.parameters())
    ev2 = Misclassify("margin").query(model, x, y, queries=counts, grad=False)
    assert ev2.grad is None and counts[:5].tolist() == [2, 2, 1, 2, 2]
    assert torch.allclose(ev2.loss, ev.loss)


def test_query_works_under_inference_mode():
    model = linear_model(d=6, classes=3)
    x = torch.rand(4, 6)
    with torch.inference_mode():
        ev = Misclassify().query(model, x, torch.zeros(4, dtype=torch.long), grad=True)
    assert ev.grad is not None and ev.grad.shape == x.shape


def test_non_differentiable_scores_raise_unsupported_model():
    model = CallableModel(lambda x: x.reshape(len(x), -1)[:, :3].detach(), has_gradients=True)
    with pytest.raises(UnsupportedModelError):
        Misclassify().query(model, torch.rand(2, 5), torch.zeros(2, dtype=torch.long), grad=True)


def test_repr_is_readable():
    assert repr(Misclassify("dlr")) == "Misclassify('dlr')"
    assert repr(Targeted(3, loss="margin")) == "Targeted(3, loss='margin')"
    assert as_goal("margin") == Misclassify("margin")
