"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019) against a plain per-example re-implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from robustlab.certify.smoothing import (
    ABSTAIN,
    RandomizedSmoothing,
    Smooth,
    binomial_test_top2,
    clopper_pearson_lower,
    noise_augment,
    train_noise_augmented,
)
from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.model import CallableModel, TorchModel
from robustlab.core.outcomes import STATUSES, Outcomes
from robustlab.core.rng import torch_generator
from robustlab.data import load_dataset


@pytest.fixture(scope="module")
def digits_linear():
    """A softmax regression trained on digits (full batch, seeded): a small real base classifier."""
    train = load_dataset("digits", split="train")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(train.x), train.y).backward()
        opt.step()
    test = load_dataset("digits", split="test", n=24, seed=1)
    return TorchModel(net.eval(), num_classes=10), test.x, test.y


def _reference_certify(f, x, noise0, noise, sigma, alpha):
    """CERTIFY straight from the paper's pseudocode, one example at a time, on given standard noise."""
    preds, radii = [], []
    for i in range(x.shape[0]):
        counts0 = np.zeros(10, dtype=int)
        for j in range(noise0.shape[0]):  # SAMPLEUNDERNOISE(f, x, n0, sigma)
            with torch.no_grad():
                c = int(f(x[i:i + 1] + noise0[j, i:i + 1] * sigma).argmax(1))
            counts0[c] += 1
        c_hat = int(counts0.argmax())
        counts = np.zeros(10, dtype=int)
        for j in range(noise.shape[0]):  # SAMPLEUNDERNOISE(f, x, n, sigma)
            with torch.no_grad():
                c = int(f(x[i:i + 1] + noise[j, i:i + 1] * sigma).argmax(1))
            counts[c] += 1
        n_a, n = counts[c_hat], noise.shape[0]
        p_lower = beta.ppf(alpha, n_a, n - n_a + 1) if n_a > 0 else 0.0  # LOWERCONFBOUND
        if p_lower < 0.5:
            preds.append(ABSTAIN)
            radii.append(0.0)
        else:
            preds.append(c_hat)
            radii.append(sigma * norm.ppf(p_lower))
    return np.array(preds), np.array(radii)


def _noise(smooth, x, num0, num, batch_size, seed):
    """The standard noise ``certify`` draws with ``seed``: selection then estimation, (num, B, ...) each."""
    g = torch_generator(seed)
    n0 = torch.cat(list(smooth.noise_chunks(x, num0, batch_size, g)))
    n1 = torch.cat(list(smooth.noise_chunks(x, num, batch_size, g)))
    return n0, n1


def test_certify_matches_reference_given_same_noise(digits_linear):
    model, x, _y = digits_linear
    sigma, alpha, n0, n, bs = 0.5, 0.001, 20, 150, 24 * 50
    smooth = Smooth(model, 10, sigma)
    cert = smooth.certify(x, n0, n, alpha, bs, generator=torch_generator(7))
    noise0, noise = _noise(smooth, x, n0, n, bs, seed=7)
    assert noise0.shape == (n0, *x.shape) and noise.shape == (n, *x.shape)
    ref_pred, ref_radius = _reference_certify(model, x, noise0, noise, sigma, alpha)
    assert cert.prediction.tolist() == ref_pred.tolist()
    np.testing.assert_allclose(cert.radius.numpy(), ref_radius, rtol=0, atol=1e-9)
    # the case mix is real: some examples are certified, some abstain
    assert 0 < int(cert.abstained.sum()) < len(x)
    ok = ~cert.abstained
    np.testing.assert_allclose(cert.radius[ok].numpy(), sigma * norm.ppf(cert.p_lower[ok].numpy()), atol=1e-12)
    assert bool((cert.p_lower[cert.abstained] < 0.5).all()) and bool((cert.p_lower[ok] >= 0.5).all())


def test_predict_matches_reference_binomial_test(digits_linear):
    model, x, _y = digits_linear
    smooth, n, alpha, bs = Smooth(model, 10, 0.5), 60, 0.01, 24 * 30
    pred = smooth.predict(x, n, alpha, bs, generator=torch_generator(3))
    noise = torch.cat(list(smooth.noise_chunks(x, n, bs, torch_generator(3))))
    for i in range(len(x)):
        with torch.no_grad():
            labels = model(x[i] + 0.5 * noise[:, i]).argmax(1)
        counts = np.bincount(labels.numpy(), minlength=10)
        top2 = np.argsort(-counts, kind="stable")[:2]
        p = binomtest(int(counts[top2[0]]), int(counts[top2[0]] + counts[top2[1]]), 0.5).pvalue
        assert int(pred[i]) == (ABSTAIN if p > alpha else int(top2[0]))
    assert bool((pred != ABSTAIN).any())


def test_binomial_test_top2_equals_scipy():
    for total in (1, 2, 7, 30, 101):
        for c1 in range((total + 1) // 2, total + 1):
            c2 = total - c1
            assert binomial_test_top2(c1, c2) == pytest.approx(binomtest(c1, total, 0.5).pvalue, rel=1e-12, abs=0)


def test_clopper_pearson_known_values():
    # the 95% two-sided Clopper-Pearson interval of 50/100 is [0.39832, 0.60168]
    assert float(clopper_pearson_lower(50, 100, 0.025)) == pytest.approx(0.398321, abs=1e-6)
    assert float(clopper_pearson_lower(0, 100, 0.001)) == 0.0
    # all successes: the bound solves p^n = alpha
    assert float(clopper_pearson_lower(1000, 1000, 0.001)) == pytest.approx(0.001 ** (1 / 1000), rel=1e-12)
    lo = clopper_pearson_lower(np.arange(0, 101), 100, 0.001)
    assert np.all(np.diff(lo) > 0) and np.all(lo < np.arange(0, 101) / 100 + 1e-12)


def test_constant_classifier_gets_the_closed_form_radius():
    const = CallableModel(lambda x: torch.tensor([0.0, 3.0, 1.0]).expand(x.shape[0], 3), num_classes=3)
    x = torch.rand(5, 1, 4, 4, generator=torch_generator(0))
    sigma, n, alpha = 0.25, 1000, 0.001
    cert = Smooth(const, 3, sigma).certify(x, 10, n, alpha, 500, generator=torch_generator(1))
    assert cert.prediction.tolist() == [1] * 5
    assert cert.counts[:, 1].tolist() == [n] * 5
    expected = sigma * norm.ppf(alpha ** (1 / n))
    np.testing.assert_allclose(cert.radius.numpy(), expected, rtol=0, atol=1e-9)
    assert expected == pytest.approx(0.6155, abs=1e-3)


def test_seed_determines_everything(digits_linear):
    model, x, _y = digits_linear
    smooth = Smooth(model, 10, 0.5)
    a = smooth.certify(x, 10, 100, 0.001, 500, generator=torch_generator(5))
    b = smooth.certify(x, 10, 100, 0.001, 500, generator=torch_generator(5))
    c = smooth.certify(x, 10, 100, 0.001, 500, generator=torch_generator(6))
    assert torch.equal(a.counts, b.counts) and torch.equal(a.radius, b.radius)
    assert not torch.equal(a.counts, c.counts)


class _GivenNoise(Smooth):
    """Smooth whose noise is a fixed (num, B, ...) tensor, cut into chunks of ``batch_size // B`` samples."""

    def __init__(self, *args, noise):
        super().__init__(*args)
        self.noise = noise

    def noise_chunks(self, x, num, batch_size, generator):
        k = max(1, batch_size // x.shape[0])
        for i in range(0, num, k):
            yield self.noise[i:min(i + k, num)]


def test_chunked_counts_equal_one_big_batch(digits_linear):
    model, x, _y = digits_linear
    noise = torch.randn(90, *x.shape, generator=torch_generator(2))
    smooth = _GivenNoise(model, 10, 0.5, noise=noise)
    big = smooth.sample_counts(x, 90, 90 * len(x), None)
    for bs in (len(x), 7 * len(x), 50 * len(x) + 3):
        assert torch.equal(smooth.sample_counts(x, 90, bs, None), big)
    assert big.sum(1).tolist() == [90] * len(x)


def test_examples_in_groups_when_the_batch_is_small(digits_linear):
    model, x, _y = digits_linear
    cert = Smooth(model, 10, 0.25).certify(x, 5, 40, 0.001, 10, generator=torch_generator(0))
    assert cert.counts.shape == (len(x), 10) and cert.counts.sum(1).tolist() == [40] * len(x)


def test_noise_is_not_clipped():
    seen = []

    def f(x):
        seen.append(x.clone())
        return torch.zeros(x.shape[0], 2)

    Smooth(CallableModel(f, num_classes=2), 2, 1.0).certify(torch.zeros(2, 3), 5, 5, 0.1, 100,
                                                             generator=torch_generator(0))
    allx = torch.cat(seen)
    assert float(allx.min()) < 0.0 and float(allx.max()) > 0.0


def test_bad_parameters_and_text_models_fail_clearly():
    with pytest.raises(ConfigError):
        RandomizedSmoothing(n=0)
    with pytest.raises(ConfigError):
        RandomizedSmoothing(alpha=1.0)
    with pytest.raises(ConfigError):
        RandomizedSmoothing(sigma=0.0)
    with pytest.raises(ConfigError):
        Smooth(CallableModel(lambda x: x, num_classes=2), 1, 0.25)
    text = CallableModel(lambda x: torch.zeros(len(x), 2), num_classes=2, modality="text")
    with pytest.raises(UnsupportedModelError):
        RandomizedSmoothing().check_model(text)


def test_probe_statuses_and_shared_noise_across_eps():
    const = CallableModel(lambda x: torch.tensor([0.0, 3.0]).expand(x.shape[0], 2), num_classes=2)
    x, y = torch.rand(4, 1, 3, 3), torch.tensor([1, 1, 0, 1])
    probe = RandomizedSmoothing(sigma=0.25, n0=10, n=1000, alpha=0.001)
    radius = 0.25 * norm.ppf(0.001 ** (1 / 1000))
    out = probe.evaluate(const, x, y, 0.5, clean_pred=torch.ones(4, dtype=torch.long), generator=None)
    assert out.status == ["certified", "certified", "broken", "certified"]
    assert out.scores.argmax(1).tolist() == [1, 1, 1, 1] and out.queries.tolist() == [1010] * 4
    np.testing.assert_allclose(out.score.numpy(), radius, atol=1e-9)
    far = probe.evaluate(const, x, y, 1.0, clean_pred=torch.ones(4, dtype=torch.long), generator=None)
    assert far.status == ["robust", "robust", "broken", "robust"]


def test_run_suite_outcomes(tmp_path):
    import robustlab.certify.smoothing  # noqa: F401  (registers "smoothing")
    from robustlab.evaluate.runner import run_suite
    from robustlab.evaluate.suite import parse_suite

    suite = parse_suite({"name": "smooth", "model": {"zoo": "digits-mlp", "quick": True},
                         "data": {"name": "digits", "n": 20, "seed": 0},
                         "probes": [{"name": "smoothing", "eps": [0.0, 0.5], "n": 200, "n0": 20}]})
    result = run_suite(suite, out_dir=tmp_path / "run", progress=False)
    f = Outcomes.load(result.run_dir / "outcomes.parquet").to_frame()
    cert = f[f["kind"] == "certifier"]
    assert len(cert) == 40 and set(cert["status"]) <= set(STATUSES)
    assert (cert["queries"] == 220).all() and (cert["score"] >= 0).all()
    by_eps = {p: g.sort_values("example_id").reset_index(drop=True) for p, g in cert.groupby("param")}
    # the same noise for every eps job: identical predictions and radii, certified at 0.5 => certified at 0
    assert by_eps[0.0]["score"].tolist() == by_eps[0.5]["score"].tolist()
    assert by_eps[0.0]["pred"].tolist() == by_eps[0.5]["pred"].tolist()
    # n=200 caps the radius at sigma * Phi^-1(alpha^(1/n)) = 0.457 < 0.5: certified at 0 -> "robust" at 0.5
    cap = 0.25 * norm.ppf(0.001 ** (1 / 200))
    assert (cert["score"] <= cap + 1e-12).all() and not (by_eps[0.5]["status"] == "certified").any()
    at0 = by_eps[0.0]["status"] == "certified"
    assert at0.any() and set(by_eps[0.5]["status"][at0]) == {"robust"}


def test_noise_augmented_training_learns_noisy_digits():
    train = load_dataset("digits", split="train", n=400)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    hist = train_noise_augmented(net, train, 0.25, epochs=4, batch_size=64, lr=0.1, seed=0, progress=False)
    assert hist["acc"][-1] > 0.6
    aug = noise_augment(0.25)(torch.zeros(2, 3), torch_generator(0))
    assert float(aug.min()) < 0.0
