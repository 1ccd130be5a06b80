"""Paper 40 (accuracy-disparity): adversarial robustness and class-wise accuracy disparity, Gaussian mixture.

Hu, Wu, Zhang & Zhao, "Understanding the Impact of Adversarial Robustness on Accuracy Disparity"
(ICML 2023). Data: P(y = +1) = R / (1 + R) (+1 = majority, imbalance ratio R >= 1),
x | y ~ N(y mu, sigma^2 I_d). Linear classifiers sign(w.x + b), trained as logistic regression, standard or
adversarially: for a linear model the worst case of the l_p ball is closed-form (FGSM / FGM are exact),
so the robust loss is softplus(-y (w.x + b) + eps ||w||_q) with q the dual norm (l_inf -> ||w||_1,
l2 -> ||w||_2). Accuracy disparity AD = a_+ - a_- of the *clean* class-wise accuracies, measured on a
balanced test set. With mu = eta 1_d the closed form (the spec's) is: standard threshold
tau = sigma^2 ln R / (2 eta sqrt d), robust = standard with shrunken means (eta - eps) sqrt d (l_inf) or
eta sqrt d - eps (l2); a_+/- = Phi((eta sqrt d +/- tau) / sigma). Logistic regression is well specified
for equal-variance Gaussians (the posterior is logistic), so its population minimiser is that Bayes /
robust-Bayes classifier and the simulation can be checked against the closed form.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from robustlab.core.rng import derive_seed, torch_generator
from robustlab.evaluate.slices import class_disparity
from robustlab.papers.base import Claim, Reproduction

__all__ = ["FULL", "QUICK", "Setup", "closed_form", "fit_linear", "reproduce", "sample_mixture"]

KEY = "accuracy-disparity"
TITLE = "Understanding the Impact of Adversarial Robustness on Accuracy Disparity"
TOL_CF = 0.02  # C4: simulated class accuracies within +-2 points of the closed form (spec)
TOL_AD0 = 0.02  # C2: |AD| <= 2 points when R = 1
MIN_RISE = 0.02  # C1: AD(eps_max) - AD(0) >= 2 points for R > 1
SLACK = 0.01  # C1 / C3 / C5: monotonicity allowed to dip by 1 point (sampling noise)


@dataclass(frozen=True)
class Setup:
    """Sizes of one run (the full run and the seconds-long smoke run differ only here)."""

    d: int = 100
    eta: float = 0.2  # mu = eta * 1_d: projected class means +-eta sqrt(d) = +-2
    sigma: float = 1.0
    n_train: int = 20_000
    n_test_per_class: int = 20_000  # balanced test set, as the paper's test_b
    ratios: tuple[int, ...] = (1, 2, 5, 10)
    eps_linf: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15)  # l2 radii: eps * sqrt(d), the same mean shift
    seeds: tuple[int, ...] = (0, 1, 2)
    iters: int = 500  # max L-BFGS-B iterations (full batch)


FULL = Setup()
_Q = math.sqrt(100 / 20)  # QUICK: d = 20 with eta, eps scaled so the projected geometry equals FULL's
QUICK = Setup(d=20, eta=0.2 * _Q, n_train=20_000, n_test_per_class=10_000, ratios=(1, 2, 10),
              eps_linf=(0.0, 0.075 * _Q, 0.15 * _Q), seeds=(0, 1))


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def closed_form(ratio: float, shift: float, *, eta: float, d: int, sigma: float) -> tuple[float, float]:
    """Clean class accuracies (a_+, a_-) of the (robust) Bayes linear classifier for mu = eta 1_d.

    Args:
        ratio: imbalance ratio R = P(+1) / P(-1).
        shift: how far robust training moves the projected means towards 0: eps sqrt(d) (l_inf), eps (l2).
    """
    m = eta * math.sqrt(d)
    m_rob = m - shift
    if m_rob <= 0:
        raise ValueError("eps must stay below eta (l_inf) / eta sqrt(d) (l2): the robust classifier is 0 beyond")
    tau = sigma**2 * math.log(ratio) / (2.0 * m_rob)
    return _phi((m + tau) / sigma), _phi((m - tau) / sigma)


def sample_mixture(n: int, mu: torch.Tensor, sigma: float, ratio: float, generator: torch.Generator, *,
                   balanced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` draws of the mixture: x (n, d) float64, y (n,) in {-1, +1}; ``balanced`` = n per class."""
    if balanced:
        y = torch.cat([torch.ones(n), -torch.ones(n)]).double()
    else:
        y = torch.where(torch.rand(n, generator=generator, dtype=torch.float64) < ratio / (1 + ratio), 1.0, -1.0)
    x = y[:, None] * mu.double()[None] + sigma * torch.randn(len(y), len(mu), generator=generator,
                                                             dtype=torch.float64)
    return x, y


def fit_linear(x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.0, norm: str = "inf",
               iters: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(Adversarial) logistic regression: min over (w, b) of mean softplus(-y (w.x + b) + eps ||w||_q).

    The inner max over the l_p ball of radius ``eps`` is exact for a linear model (FGSM for l_inf, FGM
    for l2), so this is adversarial training with the exact adversary. Solved to convergence, full batch,
    by L-BFGS-B (scipy, shipped with scikit-learn); for l_inf w = u - v with u, v >= 0 makes ||w||_1 =
    sum(u + v) smooth, so the exact zeros of the robust solution are reachable.

    Args: x (n, d), y (n,) in {-1, +1}; eps >= 0 in input units; norm "inf" or "2"; iters: max L-BFGS
    iterations. Returns w (d,) and b () as float64 tensors.
    """
    from scipy.optimize import minimize

    if str(norm) not in ("inf", "2"):
        raise ValueError(f"norm must be 'inf' or '2', got {norm!r}")
    X, Y = x.double().numpy(), y.double().numpy()
    n, d = X.shape
    l1 = str(norm) == "inf" and eps > 0

    def split(theta: np.ndarray) -> tuple[np.ndarray, float]:
        return (theta[:d] - theta[d:2 * d] if l1 else theta[:d]), float(theta[-1])

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = split(theta)
        if l1:
            pen, dpen = eps * float(theta[:2 * d].sum()), None
        else:
            nw = math.sqrt(float(w @ w) + 1e-18)
            pen, dpen = eps * nw, eps * w / nw
        z = -Y * (X @ w + b) + pen
        loss = float(np.mean(np.logaddexp(0.0, z)))
        sg = 0.5 * (1.0 + np.tanh(0.5 * z)) / n  # sigmoid(z) / n
        gw, gb, gp = -(X.T @ (Y * sg)), -float(Y @ sg), float(sg.sum())
        if l1:
            grad = np.concatenate([gw + eps * gp, -gw + eps * gp, [gb]])
        else:
            grad = np.concatenate([gw + gp * dpen, [gb]])
        return loss, grad

    size = 2 * d + 1 if l1 else d + 1
    bounds = [(0.0, None)] * (2 * d) + [(None, None)] if l1 else None
    res = minimize(fun, np.zeros(size), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": iters, "gtol": 1e-10, "ftol": 1e-14})
    w, b = split(res.x)
    return torch.from_numpy(np.ascontiguousarray(w)), torch.tensor(b, dtype=torch.float64)


def _class_acc(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    pred = torch.where(x @ w + b > 0, 1.0, -1.0)
    ok = pred == y
    return float(ok[y > 0].double().mean()), float(ok[y < 0].double().mean())


def _run(setup: Setup, mu: torch.Tensor, ratio: float, eps: float, norm: str) -> tuple[float, float]:
    """Seed-averaged clean (a_+, a_-) of a model trained at (ratio, eps, norm) on N(+-mu, sigma^2 I)."""
    accs = []
    for seed in setup.seeds:
        g = torch_generator(derive_seed(seed, "accuracy-disparity", float(mu.sum()), ratio, eps, norm))
        x, y = sample_mixture(setup.n_train, mu, setup.sigma, ratio, g)
        w, b = fit_linear(x, y, eps=eps, norm=norm, iters=setup.iters)
        xt, yt = sample_mixture(setup.n_test_per_class, mu, setup.sigma, ratio, g, balanced=True)
        accs.append(_class_acc(w, b, xt, yt))
    a = np.mean(np.array(accs), axis=0)
    return float(a[0]), float(a[1])


def _ad(a: tuple[float, float]) -> float:
    return class_disparity({1: a[0], 0: a[1]}, majority=1, minority=0)["accuracy_disparity"]


def _nondecreasing(v: list[float], slack: float) -> bool:
    return all(b >= a - slack for a, b in zip(v, v[1:]))


def reproduce(quick: bool = False) -> Reproduction:
    """Run the Gaussian-mixture study; ``quick`` is the seconds-long smoke version (tests)."""
    t0 = time.perf_counter()
    s = QUICK if quick else FULL
    root_d = math.sqrt(s.d)
    mu = torch.full((s.d,), s.eta, dtype=torch.float64)
    eps_max = s.eps_linf[-1]
    sim: dict[tuple[float, float, str], tuple[float, float]] = {}
    cf: dict[tuple[float, float], tuple[float, float]] = {}
    for r in s.ratios:
        for e in s.eps_linf:
            cf[(r, e)] = closed_form(r, e * root_d, eta=s.eta, d=s.d, sigma=s.sigma)
            for norm, radius in (("inf", e), ("2", e * root_d)):
                if e == 0 and norm == "2":
                    sim[(r, e, norm)] = sim[(r, e, "inf")]  # eps = 0: the same standard model
                    continue
                sim[(r, e, norm)] = _run(s, mu, r, radius, norm)
    norms = ("inf", "2")
    ad = {k: _ad(v) for k, v in sim.items()}

    # C1: R > 1 -> AD(robust) > AD(standard), rising with eps; the minority class pays
    c1m: dict[str, float] = {}
    ok1 = True
    for r in [r for r in s.ratios if r > 1]:
        for norm in norms:
            seq = [ad[(r, e, norm)] for e in s.eps_linf]
            rise = seq[-1] - seq[0]
            c1m[f"ad_rise_R{r}_l{norm}"] = rise
            ok1 &= rise >= MIN_RISE and _nondecreasing(seq, SLACK)
            std, rob = sim[(r, 0.0, norm)], sim[(r, eps_max, norm)]
            c1m[f"minority_change_R{r}_l{norm}"] = rob[1] - std[1]
            c1m[f"majority_change_R{r}_l{norm}"] = rob[0] - std[0]
            ok1 &= (rob[1] - std[1]) < (rob[0] - std[0])
        cf_seq = [_ad(cf[(r, e)]) for e in s.eps_linf]
        c1m[f"cf_ad_rise_R{r}"] = cf_seq[-1] - cf_seq[0]
        ok1 &= all(b > a for a, b in zip(cf_seq, cf_seq[1:]))
    # C2: R = 1 -> AD ~ 0 at every eps
    bal = [abs(ad[(1, e, n)]) for e in s.eps_linf for n in norms] if 1 in s.ratios else []
    c2m = {"max_abs_ad_R1": max(bal) if bal else float("nan"), "tolerance": TOL_AD0}
    # C3: the rise of AD grows with R
    rises = {n: [ad[(r, eps_max, n)] - ad[(r, 0.0, n)] for r in s.ratios] for n in norms}
    c3m = {f"ad_rise_R{r}_l{n}": rises[n][i] for n in norms for i, r in enumerate(s.ratios)}
    ok3 = all(all(b > a for a, b in zip(v, v[1:])) for v in rises.values())
    # C4: simulation vs closed form
    gaps = {(r, e, n): max(abs(sim[(r, e, n)][0] - cf[(r, e)][0]), abs(sim[(r, e, n)][1] - cf[(r, e)][1]))
            for (r, e, n) in sim}
    worst = max(gaps, key=gaps.get)
    c4m = {"max_gap": gaps[worst], "worst_R": worst[0], "worst_eps_linf": worst[1], "worst_norm": worst[2],
           "tolerance": TOL_CF, "configs": len(gaps)}
    for (r, e, n), (_ap, am) in sorted(sim.items()):
        if e == eps_max and n == "inf":
            c4m[f"sim_minority_R{r}"], c4m[f"cf_minority_R{r}"] = am, cf[(r, e)][1]
    # C5: inherent effect, heterogeneous mu_i ~ 1/i (same ||mu||_2), R = 1, l_inf
    het = 1.0 / torch.arange(1, s.d + 1, dtype=torch.float64)
    het = het * (s.eta * root_d / float(het.norm()))
    eps_het = [e / eps_max * float(het.max()) / 2 for e in s.eps_linf]  # up to max(mu_i) / 2
    het_acc = [_run(s, het, 1, e, "inf") for e in eps_het]
    het_mean = [0.5 * (a + b) for a, b in het_acc]
    ok5 = het_mean[-1] < het_mean[0] - MIN_RISE and _nondecreasing([-v for v in het_mean], SLACK)
    c5m = {f"clean_acc_eps{e:.3g}": v for e, v in zip(eps_het, het_mean)}
    c5m["cf_uniform_mu_clean_acc_eps_max"] = sum(cf[(1, eps_max)]) / 2 if 1 in s.ratios else float("nan")

    claims = [
        Claim("C1", "With class imbalance (R > 1), robust training increases the accuracy disparity "
              "a+ - a- over standard training, more with larger eps, and the minority class loses more "
              "accuracy than the majority class (simulation, l_inf and l2; closed form strictly)", bool(ok1), c1m),
        Claim("C2", f"Balanced classes (R = 1): AD ~ 0 at every eps (|AD| <= {TOL_AD0})",
              bool(bal) and max(bal) <= TOL_AD0, c2m),
        Claim("C3", "The increase of AD caused by robust training grows with the imbalance ratio R",
              bool(ok3), c3m),
        Claim("C4", f"Trained linear models' class accuracies match the closed form within +-{TOL_CF:.0%}",
              gaps[worst] <= TOL_CF, c4m),
        Claim("C5", "Inherent effect: with heterogeneous mu (mu_i ~ 1/i) and l_inf, the clean accuracy of "
              "robust training drops with eps even for balanced classes", bool(ok5), c5m),
    ]
    notes = [
        (f"QUICK smoke run: d={s.d}, n_train={s.n_train}, R in {s.ratios}, {len(s.seeds)} seeds; noisier numbers"
         if quick else f"full run: d={s.d}, n_train={s.n_train}, balanced test {s.n_test_per_class}/class, "
                       f"R in {s.ratios}, {len(s.seeds)} seeds averaged"),
        f"mu = {s.eta:g} * 1_d, sigma = {s.sigma:g} (projected means +-{s.eta * root_d:g}); the paper's "
        "synthetic mu / sigma are not in its released code (it loads pre-generated data files): chosen here; "
        "test sets are balanced (the paper reports balanced and imbalanced test sets)",
        f"eps (l_inf) in {tuple(round(e, 4) for e in s.eps_linf)}; l2 radii eps*sqrt(d) (the same mean shift) "
        "instead of the paper's norm-scale grids (l_inf 0.5-1.0, l2 2.5-5.0)",
        "training: full-batch L-BFGS-B to convergence on the exact (closed-form inner max) adversarial logistic loss, "
        "instead of the paper's Adam, batch 64, 500 epochs, lr grid and early stopping (patience 50); "
        "FGSM / FGM in the paper are the same exact inner maximiser for a linear model",
        "Gaussian case only: the stable-distribution (Cauchy, Holtsmark / Levy) analysis and the "
        "MNIST / FMNIST / CIFAR-10 experiments are not reproduced; equal class variances only (no variance "
        "ratio sweep); only clean (standard) class accuracies are compared, not robust accuracies; the exact "
        "inner max is closed-form, robustlab's PGD (which clips to a [0, 1] box) is not used on Gaussian data",
        "C5 uses mu_i ~ 1/i rescaled to the same ||mu||_2 and l_inf radii from 0 to max(mu_i) / 2; the paper's "
        "exact conditions for the inherent effect are unverified (spec)",
    ]
    return Reproduction(key=KEY, title=TITLE, claims=claims, seconds=time.perf_counter() - t0, notes=notes)
