"""GREAT Score: closed-form local scores, calibrations, Hoeffding interval, ranking, the probe, soundness."""

import math

import pytest
import torch

from robustlab.attacks.cw import CWL2
from robustlab.attacks.fab import FAB
from robustlab.attacks.pgd import PGD
from robustlab.certify.great import (
    SQRT_HALF_PI,
    GreatScore,
    calibrate,
    calibrate_temperature,
    great_from_scores,
    great_score,
    hoeffding_epsilon,
    local_great_scores,
    mc_margin_tolerance,
    rank_correlation,
    smoothed_great_radius,
    smoothed_margin,
    smoothed_probabilities,
    smoothed_soft_model,
)
from robustlab.core.errors import ConfigError, DataError
from robustlab.core.model import checked_scores
from robustlab.core.registry import get
from robustlab.core.rng import torch_generator
from robustlab.data import load_dataset
from robustlab.models import zoo
from robustlab.models.generative import train_generator


def test_closed_form_local_scores():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [1 / 3, 1 / 3, 1 / 3]])
    logits = probs.log()
    y = torch.tensor([0, 1, 1, 0])
    g = local_great_scores(logits, y, calibration="softmax", temperature=1.0)
    expected = torch.tensor([0.5, 0.0, 0.1, 0.0], dtype=torch.float64) * SQRT_HALF_PI
    assert torch.allclose(g, expected, atol=1e-6)  # row 1 misclassified -> 0; row 3 a tie -> margin 0
    res = great_from_scores(logits, y, calibration="softmax", temperature=1.0, delta=0.1)
    assert res.score == pytest.approx(float(expected.mean()), abs=1e-6)
    assert res.accuracy == 0.75 and res.n == 4 and res.correct.tolist() == [True, False, True, True]


def test_calibration_options_match_formulas():
    z = torch.tensor([[2.0, -1.0, 0.5]])
    t = 0.3
    assert torch.allclose(calibrate(z, "sigmoid", t), torch.sigmoid(z.double() / t))
    assert torch.allclose(calibrate(z, "softmax", t), torch.softmax(z.double() / t, 1))
    assert torch.allclose(calibrate(z, "sigmoid-softmax", t), torch.softmax(torch.sigmoid(z.double()) / t, 1))
    assert torch.allclose(calibrate(z, "softmax-sigmoid", t), torch.sigmoid(torch.softmax(z.double(), 1) / t))
    g = local_great_scores(z, torch.tensor([0]), calibration="sigmoid-softmax", temperature=t)
    p = torch.softmax(torch.sigmoid(z.double()) / t, 1)[0]
    assert float(g) == pytest.approx(SQRT_HALF_PI * float(p[0] - p[2]))
    with pytest.raises(ConfigError, match="calibration"):
        calibrate(z, "platt")
    with pytest.raises(ConfigError, match="temperature"):
        calibrate(z, "softmax", 0.0)


@pytest.mark.parametrize("method", ["sigmoid", "softmax", "sigmoid-softmax", "softmax-sigmoid"])
def test_bounds_and_zero_temperature_limit(method):
    gen = torch_generator(0)
    logits = 3 * torch.randn(300, 10, generator=gen)
    y = torch.randint(0, 10, (300,), generator=gen)
    g = local_great_scores(logits, y, calibration=method, temperature=0.7)
    assert float(g.min()) >= 0 and float(g.max()) <= SQRT_HALF_PI + 1e-12
    assert bool((g[logits.argmax(1) != y] == 0).all())
    if method in ("softmax", "sigmoid-softmax"):  # T -> 0 with confident correct predictions: g -> sqrt(pi/2)
        confident = torch.tensor([[4.0, 1.0, 0.0], [0.0, 5.0, 2.0]])
        g0 = local_great_scores(confident, torch.tensor([0, 1]), calibration=method, temperature=1e-3)
        assert torch.allclose(g0, torch.full((2,), SQRT_HALF_PI, dtype=torch.float64), atol=1e-6)


def test_hoeffding_width_formula_and_coverage():
    for n, delta in ((500, 0.05), (200, 0.01), (1, 0.5)):
        eps = hoeffding_epsilon(n, delta)
        assert 2 * math.exp(-4 * n * eps**2 / math.pi) == pytest.approx(delta)
    with pytest.raises(ConfigError, match="delta"):
        hoeffding_epsilon(10, 1.5)
    with pytest.raises(ConfigError, match="samples"):
        hoeffding_epsilon(0, 0.05)
    # empirical spread over 50 resamples of N = 200 lies inside the bound around the large-sample mean
    gen = torch_generator(1)
    logits = 2 * torch.randn(20000, 10, generator=gen)
    y = logits.argmax(1)
    y[::3] = torch.randint(0, 10, (len(y[::3]),), generator=gen)
    g = local_great_scores(logits, y, calibration="softmax", temperature=1.0)
    truth = float(g.mean())
    idx = torch.randint(0, len(g), (50, 200), generator=gen)
    means = g[idx].mean(1)
    eps = hoeffding_epsilon(200, 0.05)
    assert float((means - truth).abs().max()) <= eps
    res = great_from_scores(logits[:200], y[:200], calibration="softmax", temperature=1.0, delta=0.05)
    lo, hi = res.interval
    assert lo == pytest.approx(max(res.score - eps, 0)) and hi == pytest.approx(min(res.score + eps, SQRT_HALF_PI))


def test_rank_correlation_and_errors():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == {"spearman": pytest.approx(1.0),
                                                              "kendall": pytest.approx(1.0)}
    assert rank_correlation([1, 2, 3], [3, 2, 1])["spearman"] == pytest.approx(-1.0)
    with pytest.raises(DataError, match="equal-length"):
        rank_correlation([1, 2], [1, 2, 3])


def test_calibrate_temperature_recovers_the_reference_order():
    """Three models whose ranking by margin flips with the temperature: the search finds the T that matches."""
    y = torch.zeros(2, dtype=torch.long)
    # model A: one very confident, one barely correct sample; model B: two moderately confident samples
    a = torch.tensor([[9.0, 0.0], [0.05, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    c = torch.tensor([[0.5, 0.0], [0.5, 0.0]])
    # at T = 10 margins follow the mean logit gap: A > B > C (rho -0.5 against the reference B > C > A);
    # at T = 0.02 B and C saturate (equal up to round-off: a tie) while A's second sample does not: B = C > A
    assert calibrate_temperature([a, b, c], y, [1.0, 3.0, 2.0], method="softmax", grid=[10.0])[1] == pytest.approx(-0.5)
    t, rho = calibrate_temperature([a, b, c], y, [1.0, 3.0, 2.0], method="softmax", grid=[10.0, 0.02])
    assert t == 0.02 and rho == pytest.approx(math.sqrt(3) / 2)
    t2, rho2 = calibrate_temperature([a, b, c], y, [1.0, 3.0, 2.0], method="softmax", grid=[10.0, 0.02],
                                     upper_bounds=[10, 10, 10])
    assert (t2, rho2) == (t, rho)
    with pytest.raises(ConfigError, match="upper bounds"):
        calibrate_temperature([a, b, c], y, [1.0, 3.0, 2.0], method="softmax", grid=[0.02], upper_bounds=[0, 0, 0])


@pytest.fixture(scope="module")
def digits_setup():
    train = load_dataset("digits", split="train", n=300, seed=0)
    gen = train_generator(train, kind="pca-gaussian", latent_dim=20)
    model = zoo.load("digits-mlp", quick=True, progress=False)
    return gen, model


def test_great_score_with_a_generator_is_seeded(digits_setup):
    gen, model = digits_setup
    r1 = great_score(model, gen, 200, calibration="softmax", temperature=1.0, generator=torch_generator(0))
    r2 = great_score(model, gen, 200, calibration="softmax", temperature=1.0, generator=torch_generator(0))
    assert r1.score == r2.score and torch.equal(r1.local, r2.local) and r1.n == 200
    assert 0 < r1.score < SQRT_HALF_PI and r1.accuracy > 0.5
    assert r1.epsilon == pytest.approx(hoeffding_epsilon(200, 0.05))
    x, y = gen.sample(200, generator=torch_generator(0))
    r3 = great_score(model, (x, y), None, calibration="softmax", temperature=1.0)
    assert r3.score == pytest.approx(r1.score)
    with pytest.raises(ConfigError, match="generator"):
        great_score(model, gen, 10)
    with pytest.raises(ConfigError, match="ConditionalGenerator"):
        great_score(model, "digits", 10, generator=torch_generator(0))


def test_great_probe_registered_and_statuses(digits_setup):
    gen, model = digits_setup
    x, y = gen.sample(64, generator=torch_generator(2))
    probe = get("great", "certifier")(calibration="softmax", temperature=1.0)
    assert isinstance(probe, GreatScore)
    out = probe.evaluate(model, x, y, 0.5, clean_pred=model.predict(x), generator=torch_generator(0))
    local = local_great_scores(checked_scores(model, x), y, calibration="softmax", temperature=1.0)
    assert torch.allclose(out.score.double(), local, atol=1e-6)
    for s, g, a in zip(out.status, local.tolist(), out.attempted.tolist()):
        assert s == ("robust" if a and g > 0.5 else "abstained" if a else "skipped")
    assert out.extras["great"] == pytest.approx(float(local.mean()))
    with pytest.raises(ConfigError, match="eps"):
        probe.evaluate(model, x, y, -1.0, clean_pred=model.predict(x), generator=torch_generator(0))


def test_smoothed_great_radius_is_sound_against_l2_attacks(digits_setup):
    """The sound case (spec test 4): on the Gaussian-smoothed soft classifier, sigma * sqrt(pi/2) * margin
    is a certified L2 radius. Every point CW-L2, FAB-L2 and PGD-L2 reach at distance d keeps a fresh
    Monte-Carlo margin >= margin(x) - d / (sigma sqrt(pi/2)) - tolerance, so none flips inside the radius."""
    gen, model = digits_setup
    sigma, n_cert, n_attack, n_check = 0.25, 1000, 32, 2000
    x, y = gen.sample(10, generator=torch_generator(3))
    keep = model.predict(x) == y
    x, y = x[keep], y[keep]
    margin0 = smoothed_margin(smoothed_probabilities(model, x, sigma=sigma, n=n_cert, generator=torch_generator(4)), y)
    radius = sigma * SQRT_HALF_PI * margin0.clamp_min(0)
    again = smoothed_great_radius(model, x, y, sigma=sigma, n=n_cert, generator=torch_generator(4))
    assert torch.allclose(radius, again)
    assert float(radius.max()) > 0.05  # non-trivial radii, or the check below would be vacuous
    smooth = smoothed_soft_model(model, sigma, n_attack, generator=torch_generator(5), input_shape=tuple(x.shape[1:]))
    g = torch_generator(6)
    points = [CWL2(eps=100.0, steps=30, binary_search_steps=3, initial_const=1.0)(smooth, x, y, generator=g).x_adv,
              FAB(norm=2, eps=2.0, n_iter=10).minimize(smooth, x, y, generator=g).x_adv]
    for frac in (0.5, 1.0):  # PGD at a fraction of each example's own radius (one run per example)
        points.append(torch.cat([PGD(norm=2, eps=max(float(radius[i]) * frac, 1e-6), steps=20)(
            smooth, x[i:i + 1], y[i:i + 1], generator=g).x_adv for i in range(len(x))]))
    xa = torch.cat(points)
    d = (xa - x.repeat(len(points), 1, 1, 1)).flatten(1).norm(dim=1).double()
    ya, m0 = y.repeat(len(points)), margin0.repeat(len(points))
    fresh = smoothed_margin(smoothed_probabilities(model, xa, sigma=sigma, n=n_check, generator=torch_generator(7)), ya)
    assert bool((fresh[: 2 * len(x)] < 0).any())  # CW / FAB do flip the smoothed model (beyond the radius)
    tol = mc_margin_tolerance(n_cert, 10, 0.01) + mc_margin_tolerance(n_check, 10, 0.01)
    assert bool((fresh >= m0 - d / (sigma * SQRT_HALF_PI) - tol).all())
    inside = d < radius.repeat(len(points))
    assert not bool((fresh[inside] < -tol).any())
