"""Tests of effective robustness (robustlab.evaluate.effective): closed forms, fit, bootstrap, sweep, plot."""

import math

import numpy as np
import pytest
import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.data.base import Dataset
from robustlab.evaluate.effective import (
    bootstrap_effective_robustness,
    effective_robustness,
    effective_robustness_plot,
    fit_baseline,
    inverse_transform,
    model_family_sweep,
    transform_accuracy,
)


def logit(p):
    return math.log(p / (1 - p))


def on_line(ida, a, b, scale="logit"):
    return inverse_transform(a * transform_accuracy(ida, scale) + b, scale)


@pytest.mark.parametrize("scale", ["logit", "probit", "linear"])
def test_fit_recovers_slope_and_intercept(scale):
    ida = np.linspace(0.3, 0.9, 7)
    a, b = (0.8, -0.5) if scale != "linear" else (0.45, 0.02)
    fit = fit_baseline(ida, on_line(ida, a, b, scale), scale=scale)
    assert abs(fit.slope - a) < 1e-6 and abs(fit.intercept - b) < 1e-6 and fit.r2 == pytest.approx(1.0)
    assert fit.n_points == 7


def test_points_on_the_line_have_zero_er_and_above_positive():
    ida = np.array([0.4, 0.6, 0.8, 0.9])
    fit = fit_baseline(ida, on_line(ida, 0.7, -0.3))
    assert np.allclose(effective_robustness(fit, ida, on_line(ida, 0.7, -0.3)), 0.0, atol=1e-12)
    x = 0.7  # a new model: exactly on the line -> 0; 5 points above -> +0.05
    y_line = 1 / (1 + math.exp(-(0.7 * logit(x) - 0.3)))
    assert effective_robustness(fit, x, y_line) == pytest.approx(0.0, abs=1e-12)
    assert effective_robustness(fit, x, y_line + 0.05) == pytest.approx(0.05, abs=1e-12)
    assert effective_robustness(fit, x, y_line - 0.02) < 0
    assert isinstance(fit.predict(x), float)


def test_ols_residuals_sum_to_zero_on_noisy_points():
    rng = np.random.default_rng(0)
    ida = rng.uniform(0.2, 0.95, 20)
    ood = on_line(ida, 0.6, -0.8) + rng.normal(0, 0.01, 20)
    fit = fit_baseline(ida, ood)
    resid = transform_accuracy(ood) - (fit.slope * transform_accuracy(ida) + fit.intercept)
    assert abs(resid.sum()) < 1e-9


def test_clipping_and_errors():
    assert np.isfinite(transform_accuracy([0.0, 1.0])).all()
    with pytest.raises(DataError):
        fit_baseline([0.5], [0.4])
    with pytest.raises(DataError):
        fit_baseline([0.5, 0.5], [0.4, 0.3])
    with pytest.raises(DataError):
        fit_baseline([0.5, 0.6], [0.4])
    with pytest.raises(DataError):
        fit_baseline([50, 60], [40, 45])  # percentages
    with pytest.raises(ConfigError):
        fit_baseline([0.5, 0.6], [0.4, 0.5], scale="log")
    with pytest.raises(ConfigError):
        effective_robustness((0.5, 0.1), 0.5, 0.4)


def test_bootstrap_matches_point_estimate_and_orders_groups():
    g = torch.Generator().manual_seed(0)
    p_id = torch.tensor([0.5, 0.6, 0.7, 0.8, 0.6, 0.7])
    p_ood = torch.tensor([0.3, 0.4, 0.5, 0.6, 0.6, 0.7])  # last two: well above the baseline line
    cid = torch.rand(6, 2000, generator=g) < p_id[:, None]
    cood = torch.rand(6, 2000, generator=g) < p_ood[:, None]
    out = bootstrap_effective_robustness(cid, cood, [0, 1, 2, 3], {"base": [0, 1, 2, 3], "robust": [4, 5]},
                                         n_boot=100)
    fit = fit_baseline(cid.double().mean(1)[:4], cood.double().mean(1)[:4])
    er = effective_robustness(fit, cid.double().mean(1)[4:], cood.double().mean(1)[4:])
    assert out["robust"][0] == pytest.approx(float(np.mean(er)))
    assert out["robust"][1] <= out["robust"][0] <= out["robust"][2]
    assert out["robust"][1] > out["base"][2]  # clearly above the line
    with pytest.raises(DataError):
        bootstrap_effective_robustness(cid, cood[:3], [0, 1], {"a": [0]})


def test_sweep_is_seeded_and_records_every_model():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(120, 1, 4, 4, generator=g)
    y = (x.flatten(1)[:, :8].sum(1) > x.flatten(1)[:, 8:].sum(1)).long()
    ds = Dataset(x=x, y=y, class_names=["a", "b"])
    shifted = Dataset(x=(1 - x), y=y, class_names=["a", "b"])
    kw = dict(sizes=(40, 80), widths=(4,), epochs=(2,), seed=3)
    r1 = model_family_sweep({"s": ds}, ds, {"inv": shifted}, **kw)
    r2 = model_family_sweep({"s": ds}, ds, {"inv": shifted}, **kw)
    assert [r["n"] for r in r1.records] == [40, 80] and r1.correct_id.shape == (2, 120)
    assert torch.equal(r1.correct_id, r2.correct_id) and torch.equal(r1.correct_ood["inv"], r2.correct_ood["inv"])
    assert r1.rows(source="s", n=80) == [1]
    assert r1.ood_acc().shape == (2,)
    cnn = model_family_sweep({"s": ds}, ds, {"inv": shifted}, sizes=(40,), widths=(2,), epochs=(1,), arch="cnn")
    assert cnn.correct_id.shape == (1, 120)
    with pytest.raises(DataError):
        model_family_sweep({"s": ds}, ds, {"inv": shifted}, sizes=(500,))
    with pytest.raises(ConfigError):
        model_family_sweep({"s": ds}, ds, {"inv": shifted}, arch="vit")


def test_plot_returns_png_data_uri():
    ida = np.array([0.4, 0.6, 0.8])
    fit = fit_baseline(ida, on_line(ida, 0.7, -0.3))
    uri = effective_robustness_plot({"base": (ida, on_line(ida, 0.7, -0.3)), "robust": ([0.7], [0.6])},
                                    {"base": fit}, title="t")
    assert uri.startswith("data:image/png;base64,") and len(uri) > 1000
