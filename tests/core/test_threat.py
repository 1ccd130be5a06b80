"""Tests of ``robustlab.core.threat``: LpBall containment, projection, sampling, bounds, validation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustlab.core.errors import ConfigError
from robustlab.core.threat import LpBall, lp_norm, parse_norm

NORMS = ("inf", "2", "1")
SHAPES = [(1,), (7,), (3, 4), (1, 5, 5), (3, 4, 6)]
FAST = settings(deadline=None, max_examples=30)


def _x0(shape, batch, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *shape), generator=g)


def _far(x0, scale, seed):
    g = torch.Generator().manual_seed(seed + 1)
    return x0 + scale * torch.randn(x0.shape, generator=g)


def _l1_reference(v: np.ndarray, eps: float) -> np.ndarray:
    """Euclidean projection onto the L1 ball by bisection on the soft threshold theta (KKT conditions)."""
    a = np.abs(v)
    if a.sum() <= eps:
        return v.copy()
    lo, hi = 0.0, float(a.max())
    for _ in range(200):
        theta = (lo + hi) / 2
        if np.maximum(a - theta, 0).sum() > eps:
            lo = theta
        else:
            hi = theta
    return np.sign(v) * np.maximum(a - (lo + hi) / 2, 0)


# --------------------------------------------------------------------------------------- project


@FAST
@given(norm=st.sampled_from(NORMS), shape=st.sampled_from(SHAPES), batch=st.integers(1, 5),
       eps=st.one_of(st.just(0.0), st.floats(1e-4, 3.0)), scale=st.floats(0.0, 100.0),
       seed=st.integers(0, 2**16))
def test_project_output_is_contained(norm, shape, batch, eps, scale, seed):
    ball = LpBall(norm, eps)
    x0 = _x0(shape, batch, seed)
    xp = ball.project(x0, _far(x0, scale, seed))
    assert xp.shape == x0.shape
    assert bool(ball.contains(x0, xp).all())


@FAST
@given(norm=st.sampled_from(NORMS), shape=st.sampled_from(SHAPES), batch=st.integers(1, 4),
       eps=st.floats(0.0, 2.0), scale=st.floats(0.0, 50.0), seed=st.integers(0, 2**16))
def test_project_is_idempotent(norm, shape, batch, eps, scale, seed):
    ball = LpBall(norm, eps)
    x0 = _x0(shape, batch, seed)
    once = ball.project(x0, _far(x0, scale, seed))
    twice = ball.project(x0, once)
    torch.testing.assert_close(twice, once, atol=1e-5, rtol=1e-5)


@FAST
@given(norm=st.sampled_from(NORMS), shape=st.sampled_from(SHAPES), batch=st.integers(1, 4),
       eps=st.floats(1e-3, 2.0), seed=st.integers(0, 2**16))
def test_project_of_a_point_inside_is_identity(norm, shape, batch, eps, seed):
    ball = LpBall(norm, eps)
    x0 = _x0(shape, batch, seed)
    g = torch.Generator().manual_seed(seed + 7)
    delta = torch.randn(x0.shape, generator=g)
    # scale each example's perturbation to strictly inside the ball, then keep the point in the box
    delta = delta / lp_norm(delta, norm).clamp_min(1e-12).view(-1, *[1] * len(shape)) * (0.9 * eps)
    x = (x0 + delta).clamp(0, 1)
    assert bool(ball.contains(x0, x).all())
    torch.testing.assert_close(ball.project(x0, x), x, atol=0, rtol=0)


def test_project_identity_when_x_equals_x0():
    x0 = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for norm in NORMS:
        for eps in (0.0, 0.1):
            assert torch.equal(LpBall(norm, eps).project(x0, x0.clone()), x0)


@pytest.mark.parametrize("norm", NORMS)
def test_project_zero_eps_returns_x0(norm):
    x0 = torch.rand(4, 6, generator=torch.Generator().manual_seed(1))
    x = x0 + torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(LpBall(norm, 0.0).project(x0, x), x0)


def test_linf_project_delta_is_clamp():
    delta = torch.tensor([[-0.5, -0.01, 0.0, 0.02, 0.9]])
    out = LpBall("inf", 0.05).project_delta(delta)
    torch.testing.assert_close(out, torch.tensor([[-0.05, -0.01, 0.0, 0.02, 0.05]]))


def test_l2_project_delta_is_scaling():
    g = torch.Generator().manual_seed(3)
    delta = torch.randn(5, 3, 4, generator=g) * 4
    delta[0] *= 1e-3  # one example already inside: unchanged
    eps = 0.7
    out = LpBall("2", eps).project_delta(delta)
    norms = lp_norm(delta, "2")
    expected = delta * torch.where(norms > eps, eps / norms, torch.ones_like(norms)).view(-1, 1, 1)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(lp_norm(out[1:], "2"), torch.full((4,), eps))
    assert torch.equal(out[0], delta[0])
    # a scaling keeps the direction: cosine similarity 1
    cos = torch.nn.functional.cosine_similarity(out.reshape(5, -1), delta.reshape(5, -1), dim=1)
    torch.testing.assert_close(cos, torch.ones(5))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("eps", [0.05, 0.5, 2.0])
def test_l1_project_delta_matches_bisection_reference(seed, eps):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(3, int(rng.integers(1, 9)))) * rng.uniform(0.1, 3)
    out = LpBall("1", eps).project_delta(torch.from_numpy(v)).numpy()
    for row, got in zip(v, out):
        np.testing.assert_allclose(got, _l1_reference(row, eps), atol=1e-9)


@pytest.mark.parametrize("scale", [10.0, 100.0])
@pytest.mark.parametrize("dim", [10, 3000])
def test_l1_project_float32_far_away_stays_in_the_ball(scale, dim):
    """Regression: float32 ``|v| - theta`` cancelled and left the ball by up to 3e-5 (> contains' atol)."""
    eps = 0.5
    for seed in range(10):
        v = scale * torch.randn(8, dim, generator=torch.Generator().manual_seed(seed))
        out = LpBall("1", eps).project_delta(v)
        assert out.dtype == torch.float32
        assert float(out.double().abs().sum(dim=1).max()) <= eps + 1e-6


def test_l1_projection_is_the_nearest_point():
    """No random point of the L1 ball is closer to ``v`` than its projection (checks the reference too)."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(1, 6)) * 2
    eps = 1.0
    p = LpBall("1", eps).project_delta(torch.from_numpy(v)).numpy()[0]
    assert abs(np.abs(p).sum() - eps) < 1e-9
    cand = rng.normal(size=(5000, 6))
    cand = cand / np.abs(cand).sum(axis=1, keepdims=True) * eps * rng.uniform(0, 1, size=(5000, 1))
    assert np.linalg.norm(cand - v, axis=1).min() >= np.linalg.norm(p - v[0]) - 1e-12


def test_l1_project_handles_ties_and_mixed_batches():
    delta = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.1, 0.0, -0.1, 0.0], [-2.0, 0.0, 0.0, 0.0]])
    out = LpBall("1", 1.0).project_delta(delta)
    torch.testing.assert_close(out[0], torch.full((4,), 0.25))
    torch.testing.assert_close(out[1], delta[1])  # inside: untouched
    torch.testing.assert_close(out[2], torch.tensor([-1.0, 0.0, 0.0, 0.0]))


def test_project_clips_to_custom_box():
    ball = LpBall("inf", 0.5, low=-1.0, high=2.0)
    x0 = torch.tensor([[-0.9, 1.9, 0.0]])
    x = torch.tensor([[-5.0, 5.0, 0.3]])
    torch.testing.assert_close(ball.project(x0, x), torch.tensor([[-1.0, 2.0, 0.3]]))


# -------------------------------------------------------------------------------------- contains


def test_contains_checks_ball_and_box_per_example():
    ball = LpBall("inf", 0.1)
    x0 = torch.full((3, 2), 0.5)
    x = torch.tensor([[0.55, 0.45], [0.7, 0.5], [0.5, 0.5]])
    assert ball.contains(x0, x).tolist() == [True, False, True]
    # in the ball but outside the box
    x0b = torch.tensor([[0.98, 0.5]])
    assert not bool(LpBall("inf", 0.1).contains(x0b, torch.tensor([[1.05, 0.5]]))[0])


@pytest.mark.parametrize("norm,inside,outside", [("2", [0.3, 0.4], [0.4, 0.4]), ("1", [0.2, 0.3], [0.3, 0.3])])
def test_contains_uses_the_norm(norm, inside, outside):
    ball = LpBall(norm, 0.5)
    x0 = torch.zeros(2, 2)
    x = torch.tensor([inside, outside])
    assert ball.contains(x0, x).tolist() == [True, False]


# ------------------------------------------------------------------------------ sample and bounds


@FAST
@given(norm=st.sampled_from(NORMS), shape=st.sampled_from(SHAPES), batch=st.integers(1, 4),
       eps=st.one_of(st.just(0.0), st.floats(1e-3, 2.0)), n=st.one_of(st.none(), st.integers(1, 4)),
       seed=st.integers(0, 2**16))
def test_sample_is_inside_in_bounds_and_deterministic(norm, shape, batch, eps, n, seed):
    ball = LpBall(norm, eps)
    x0 = _x0(shape, batch, seed)
    s1 = ball.sample(x0, torch.Generator().manual_seed(seed), n=n)
    s2 = ball.sample(x0, torch.Generator().manual_seed(seed), n=n)
    assert torch.equal(s1, s2)
    expected_shape = x0.shape if n is None else (n, *x0.shape)
    assert s1.shape == expected_shape
    flat = s1.reshape(-1, *x0.shape)
    lo, hi = ball.bounds(x0)
    for s in flat:
        assert bool(ball.contains(x0, s).all())
        assert bool((s >= lo - 1e-6).all()) and bool((s <= hi + 1e-6).all())


def test_sample_differs_between_seeds_and_draws():
    ball = LpBall("2", 0.3)
    x0 = torch.full((2, 8), 0.5)
    g = torch.Generator().manual_seed(0)
    a, b = ball.sample(x0, g), ball.sample(x0, g)
    assert not torch.equal(a, b)
    assert not torch.equal(a, ball.sample(x0, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("norm", NORMS)
def test_sample_with_n_gives_each_example_its_own_ball(norm):
    """With ``n`` copies of a batch, every example's perturbation fills its own ball (not 1/B of it)."""
    eps = 0.2
    ball = LpBall(norm, eps)
    x0 = torch.full((40, 3, 2, 2), 0.5)
    s = ball.sample(x0, torch.Generator().manual_seed(0), n=3)
    d = lp_norm((s - x0).reshape(-1, 12), norm)
    assert bool((d <= eps + 1e-6).all())
    # a uniform draw in a 12-dim ball lies near its surface: mean radius d/(d+1) * eps for L2/L1
    assert float(d.mean()) > 0.7 * eps
    # copies differ from each other
    assert not torch.equal(s[0], s[1])


@pytest.mark.parametrize("norm", NORMS)
def test_sample_n_none_equals_first_draw_distribution_shape(norm):
    ball = LpBall(norm, 0.1)
    x0 = torch.full((5, 4), 0.5)
    s = ball.sample(x0, torch.Generator().manual_seed(0))
    d = lp_norm(s - x0, norm)
    assert bool((d <= 0.1 + 1e-6).all()) and bool((d > 0).all())


def test_bounds_are_box_clipped():
    ball = LpBall("2", 0.3)
    x0 = torch.tensor([[0.1, 0.5, 0.9]])
    lo, hi = ball.bounds(x0)
    torch.testing.assert_close(lo, torch.tensor([[0.0, 0.2, 0.6]]))
    torch.testing.assert_close(hi, torch.tensor([[0.4, 0.8, 1.0]]))


# --------------------------------------------------------------------------------- lp_norm, parse


def test_lp_norm_values():
    d = torch.tensor([[3.0, -4.0], [0.0, 0.0]])
    assert lp_norm(d, "inf").tolist() == [4.0, 0.0]
    assert lp_norm(d, "2").tolist() == [5.0, 0.0]
    assert lp_norm(d, "1").tolist() == [7.0, 0.0]


@pytest.mark.parametrize("spelling,canon", [
    ("inf", "inf"), ("Linf", "inf"), ("L_INF", "inf"), (" linf ", "inf"), ("L∞", "inf"), ("∞", "inf"),
    (math.inf, "inf"), (float("inf"), "inf"), (np.inf, "inf"),
    (2, "2"), ("2", "2"), ("l2", "2"), ("L2", "2"), (2.0, "2"), (np.int64(2), "2"), (np.float32(2), "2"),
    (1, "1"), ("1", "1"), ("L1", "1"), (1.0, "1"),
])
def test_parse_norm_accepts_spellings(spelling, canon):
    assert parse_norm(spelling) == canon
    assert LpBall(spelling, 0.1).norm == canon


@pytest.mark.parametrize("bad", [3, 0, -1, 2.5, 1.5, float("nan"), -math.inf, "l3", "", "two", None, True, "2.5"])
def test_parse_norm_rejects_bad_values(bad):
    with pytest.raises(ConfigError) as info:
        parse_norm(bad)
    assert "fix:" in str(info.value)


@pytest.mark.parametrize("eps", [-0.1, -1, float("nan"), float("inf"), "0.1", None, True, torch.tensor(0.1)])
def test_eps_validation(eps):
    with pytest.raises(ConfigError, match="eps"):
        LpBall("inf", eps)


def test_eps_accepts_numpy_scalars_and_stores_float():
    ball = LpBall("2", np.float32(0.5))
    assert isinstance(ball.eps, float) and ball.eps == 0.5
    assert LpBall("1", 0).eps == 0.0 and isinstance(LpBall("1", 0).eps, float)


def test_low_high_validation_and_with_eps():
    with pytest.raises(ConfigError):
        LpBall("inf", 0.1, low=1.0, high=0.0)
    ball = LpBall("l2", 0.1, low=-1, high=1)
    other = ball.with_eps(0.5)
    assert (other.norm, other.eps, other.low, other.high) == ("2", 0.5, -1, 1)
    assert ball.eps == 0.1  # frozen: unchanged
    with pytest.raises(ConfigError):
        ball.with_eps(-1)
    assert str(LpBall("inf", 8 / 255)) == "L∞(eps=0.03137)"
