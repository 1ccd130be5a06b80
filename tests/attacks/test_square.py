"""Square Attack (Andriushchenko et al., 2020): schedule, threat contract, black-box use, strength."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustlab.attacks import PGD
from robustlab.attacks.search.square import center_surround, square_fraction, window_size
from robustlab.attacks.square import Square
from robustlab.core import registry
from robustlab.core.errors import ConfigError, ProbeError, UnsupportedModelError
from robustlab.core.model import CallableModel, SklearnModel
from robustlab.core.rng import torch_generator
from robustlab.core.threat import LpBall

from .conftest import blobs, mlp, trained_mlp


@pytest.mark.parametrize("it,halvings", [
    (0, 0), (10, 0), (11, 1), (50, 1), (51, 2), (200, 2), (201, 3), (500, 3), (501, 4), (1000, 4),
    (1001, 5), (2000, 5), (2001, 6), (4000, 6), (4001, 7), (6000, 7), (6001, 8), (8000, 8), (8001, 9),
    (9999, 9),
])
def test_square_fraction_is_the_papers_schedule(it, halvings):
    assert square_fraction(it, 10_000, 0.8) == pytest.approx(0.8 / 2 ** halvings)
    assert square_fraction(it, 10_000, 0.05) == pytest.approx(0.05 / 2 ** halvings)


def test_square_fraction_is_rescaled_to_the_budget():
    # iteration i of n_queries is iteration int(i / n_queries * 10000) of the paper's schedule
    assert square_fraction(5, 5000) == 0.8 and square_fraction(6, 5000) == 0.4
    assert square_fraction(25, 5000) == 0.4 and square_fraction(26, 5000) == 0.2
    assert square_fraction(4001, 5000) == pytest.approx(0.8 / 512)
    assert square_fraction(1, 1000) == 0.8 and square_fraction(2, 1000) == 0.4


def test_window_sizes():
    assert window_size(0.8, 32, 32, "inf") == (29, 29)        # round(sqrt(0.8 * 1024))
    assert window_size(0.05, 224, 224, "inf") == (50, 50)
    assert window_size(0.8, 8, 8, "inf") == (7, 7)            # at most h - 1 (paper code)
    assert window_size(1e-4, 32, 32, "inf") == (1, 1)
    assert window_size(1e-4, 32, 32, "2") == (3, 3)           # L2: at least 3, odd
    assert window_size(0.1, 32, 32, "2") == (11, 11)          # round(sqrt(102.4)) = 10 -> 11
    assert window_size(0.5, 1, 20, "inf") == (1, 10)          # flat inputs: segments of p * D


def test_center_surround_bump():
    for a, b in [(5, 5), (6, 6), (3, 3), (1, 7)]:
        e = center_surround(a, b)
        assert e.shape == (a, b) and float(e.norm()) == pytest.approx(1.0)
    e = center_surround(5, 5)
    assert bool((e[:2] > 0).all()) and bool((e[2:] < 0).all())          # two halves, opposite signs
    assert torch.allclose(e, e.flip(1))                                  # symmetric left-right
    assert int(e[:2].abs().argmax()) == 7 and int(e[2:].abs().argmax()) == 7   # peaks at the centers
    # the paper's nested rectangles: 1 + 1/4 + 1/9 at the center of the top half, 1/9 in its corner
    assert float(e[0, 0] / e[1, 2]) == pytest.approx((1 / 9) / (1 + 1 / 4 + 1 / 9))
    assert bool((center_surround(1, 6)[0, :3] > 0).all()) and bool((center_surround(1, 6)[0, 3:] < 0).all())


@settings(max_examples=10, deadline=None)
@given(norm=st.sampled_from(["inf", "2"]), eps=st.floats(0.0, 3.0), batch=st.integers(1, 5),
       shape=st.sampled_from([(6,), (1, 5, 5), (3, 4, 4), (7, 9)]), seed=st.integers(0, 10_000),
       restarts=st.integers(1, 2))
def test_output_is_inside_the_ball_and_the_box(norm, eps, batch, shape, seed, restarts):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *shape, generator=g)
    x[:, ..., :1] = 0.0                                       # some coordinates on the box edge
    model = mlp(shape, classes=3, seed=seed % 7)
    y = torch.randint(0, 3, (batch,), generator=g)
    atk = Square(norm=norm, eps=eps, n_queries=15, restarts=restarts)
    res = atk(model, x, y, generator=torch_generator(seed))
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert bool(LpBall(norm, eps).contains(x, res.x_adv).all())
    assert bool((res.queries <= 15 * restarts).all())
    if norm == "inf" and eps > 0:                             # L∞ points are vertices-ish: |delta| in {0, eps}
        d = (res.x_adv - x).abs()
        ok = (d < 1e-6) | ((d - eps).abs() < 1e-5) | (res.x_adv <= 1e-6) | (res.x_adv >= 1 - 1e-6)
        assert bool(ok.all())


def test_deterministic_given_the_seed():
    model = trained_mlp()
    x, y = blobs(40, seed=4)
    for norm, eps in (("inf", 0.1), ("2", 0.4)):
        atk = Square(norm=norm, eps=eps, n_queries=60)
        a = atk(model, x, y, generator=torch_generator(3))
        b = atk(model, x, y, generator=torch_generator(3))
        c = atk(model, x, y, generator=torch_generator(4))
        assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
        assert not torch.equal(a.x_adv, c.x_adv)


def test_square_lowers_accuracy_and_pays_less_for_early_breaks():
    model = trained_mlp()
    x, y = blobs(150, seed=5)
    assert float((model.predict(x) == y).float().mean()) > 0.95
    out = Square(eps=0.12, n_queries=400).evaluate(model, x, y, 0.12, clean_pred=model.predict(x),
                                                   generator=torch_generator(0))
    adv_acc = float((out.scores.argmax(1) == y).float().mean())
    assert adv_acc < 0.3, adv_acc
    broken = out.attempted & (out.scores.argmax(1) != y)
    robust = out.attempted & ~broken
    assert bool((out.queries <= 400).all()) and bool((out.queries[out.attempted] >= 1).all())
    assert bool((out.queries[robust] == 400).all())           # survivors use the whole budget
    assert bool((out.queries[broken] < 400).all())            # a broken example stops at once
    assert float(out.queries[broken].float().median()) < 100
    # L2 as well
    res = Square(norm=2, eps=0.5, n_queries=400)(model, x, y, generator=torch_generator(0))
    assert float((model.predict(res.x_adv) == y).float().mean()) < 0.4


def test_works_without_gradients_on_a_callable_model():
    net = trained_mlp().module

    def scores(x):
        with torch.no_grad():
            return net(x)

    model = CallableModel(scores, num_classes=3, modality="tabular", has_gradients=False)
    x, y = blobs(60, seed=7)
    Square().check_model(model)                              # no error: scores are enough
    with pytest.raises(UnsupportedModelError):
        PGD(eps=0.12).check_model(model)
    res = Square(eps=0.12, n_queries=300)(model, x, y, generator=torch_generator(0))
    assert float((model.predict(res.x_adv) == y).float().mean()) < 0.4
    assert bool(LpBall("inf", 0.12).contains(x, res.x_adv).all())


def test_works_on_a_sklearn_model_of_image_inputs():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    data, target = load_digits(return_X_y=True)
    clf = LogisticRegression(max_iter=300).fit(data[:800] / 16.0, target[:800])
    model = SklearnModel(clf, modality="image")             # flattens (N, 1, 8, 8) -> (N, 64)
    x = torch.tensor(data[1000:1060] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(target[1000:1060])
    clean = float((model.predict(x) == y).float().mean())
    for norm, eps in (("inf", 0.15), ("2", 1.5)):
        res = Square(norm=norm, eps=eps, n_queries=150)(model, x, y, generator=torch_generator(1))
        assert res.x_adv.shape == x.shape and bool(LpBall(norm, eps).contains(x, res.x_adv).all())
        assert float((model.predict(res.x_adv) == y).float().mean()) < clean - 0.4


def test_targeted_square_hits_the_target():
    model = trained_mlp()
    x, y = blobs(40, seed=8)
    res = Square(eps=0.3, n_queries=200, targeted=0)(model, x, y, generator=torch_generator(0))
    hit = res.extras["success"]
    assert int(hit.sum()) > 20
    assert bool((model.predict(res.x_adv)[hit] == 0).all())


def test_validation_registry_and_repr():
    with pytest.raises(ConfigError):
        Square(norm=1)
    with pytest.raises(ConfigError):
        Square(p_init=0.0)
    with pytest.raises(ConfigError):
        Square(n_queries=0)
    with pytest.raises(ConfigError):
        Square(loss="dlr")
    with pytest.raises(ProbeError):
        Square()(trained_mlp(), ["a text"], torch.tensor([0]), generator=torch_generator(0))
    atk = registry.create("square", norm=2, eps=0.25, n_queries=100)
    assert isinstance(atk, Square) and atk.threat == LpBall("2", 0.25) and not atk.needs_gradients
    assert atk.at(0.5).eps == 0.5 and atk.eps == 0.25
    assert "n_queries=100" in repr(atk) and Square().n_queries == 5000 and Square().search.p_init == 0.8
    x, y = blobs(3)
    res = Square(eps=0.0)(trained_mlp(), x, y, generator=torch_generator(0))
    assert torch.equal(res.x_adv, x) and int(res.queries.sum()) == 0
