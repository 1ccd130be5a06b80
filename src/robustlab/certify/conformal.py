"""Conformal prediction sets that stay valid under L2 attacks: split CP, RSCP and RSCP+ (sets, attack, probes).

From "Provably Robust Conformal Prediction with Improved Efficiency" (Yan, Romano & Weng, ICLR 2024),
built on RSCP ("Adversarially Robust Conformal Prediction", Gendler et al., ICLR 2022) and split
conformal prediction ("Classification with Valid and Adaptive Coverage", Romano, Sesia & Candès, 2020).
The paper's efficiency tools, PTT and RCT, live in :mod:`robustlab.certify.conformal_training` and are
re-exported here (``PTT``, ``soft_quantile``, ``rct_loss``, ``rct_train``).

* Scores ``S(x, y)`` in [0, 1], lower = more conforming: HPS ``1 - pi_y(x)``; APS = probability mass
  ranked above ``y`` plus ``u * pi_y`` (``u ~ U[0, 1]`` when randomized, ``u = 1`` otherwise).
* Split CP: ``tau`` = the ``ceil((n + 1)(1 - alpha))``-th smallest calibration score (the
  ``(1 - alpha)(1 + 1/n)`` empirical quantile), ``C(x) = {y : S(x, y) <= tau}``.
* Smoothed score (Monte Carlo, noise from :class:`~robustlab.certify.smoothing.Smooth`):
  ``S_hat(x, y) = mean_k S(x + sigma eps_k, y)`` over ``n_s`` draws, with its sample variance.
* RSCP (Gendler et al.): ``tau`` from the plain quantile of ``S_hat``, ``C(x) = {y : Phi^-1(S_hat) - delta /
  sigma <= Phi^-1(tau)}``: it treats the Monte-Carlo estimate as the exact smoothed score (the flaw).
* RSCP+: ``tau`` at level ``(1 - alpha + 2 beta)(1 + 1/n)``; ``C+(x) = {y : Phi^-1(max(S_hat - b_B, 0)) -
  delta / sigma <= Phi^-1(min(tau + b_H, 1))}`` with Hoeffding ``b_H = sqrt(ln(1/beta) / (2 n_s))`` and
  empirical Bernstein ``b_B = sqrt(2 V ln(2/beta) / n_s) + 7 ln(2/beta) / (3 (n_s - 1))``; then
  ``P(y in C+(x + e)) >= 1 - alpha`` for every ``||e||_2 <= delta``.

Departures: the certifier probes calibrate inside each shard by a seeded two-fold split (each half is
calibrated on the other half), so every example gets a set from data it is exchangeable with but not
part of.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from robustlab.certify.conformal_training import (  # re-exported: PTT, RCT
    PTT,
    _check_alpha,
    _check_delta,
    _check_sigma,
    rct_loss,
    rct_train,
    soft_quantile,
)
from robustlab.certify.smoothing import Smooth
from robustlab.core.errors import ConfigError, UnsupportedModelError
from robustlab.core.model import Model, as_model, checked_scores
from robustlab.core.probe import Certifier, ProbeOutput
from robustlab.core.registry import register
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.core.threat import LpBall, lp_norm

__all__ = ["PTT", "RSCPPlusCertifier", "SCORES", "SmoothedScores", "SplitConformalCertifier", "aps_score",
           "bernstein_bound", "conformal_quantile", "coverage_and_size", "evaluate_conformal", "hoeffding_bound",
           "hps_score", "pgd_l2_score_attack", "rct_loss", "rct_train", "rscp_plus_sets", "rscp_plus_threshold",
           "rscp_sets", "smoothed_scores", "soft_quantile", "split_conformal_sets"]


# ----------------------------------------------------------------------------- scores

def hps_score(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """HPS non-conformity ``1 - pi_y(x)`` for every label: (B, C) probabilities -> (B, C) scores."""
    return 1.0 - probs


def aps_score(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """APS non-conformity for every label (Romano et al., 2020): mass ranked above ``y`` plus ``u * pi_y``.

    ``u ~ U[0, 1]`` (one per example and label) when ``generator`` is given, else ``u = 1`` (the
    non-randomized score). Ties are ranked by the sort's order. (B, C) -> (B, C).
    """
    sorted_p, order = probs.sort(dim=1, descending=True)
    above = sorted_p.cumsum(dim=1) - sorted_p  # mass strictly before each sorted position
    mass_above = torch.empty_like(probs).scatter_(1, order, above)
    if generator is None:
        return mass_above + probs
    u = torch.rand(probs.shape, generator=generator, device=generator.device, dtype=probs.dtype).to(probs.device)
    return mass_above + u * probs


#: score name -> ``fn(probs (B, C), generator | None) -> scores (B, C)``
SCORES: dict[str, Callable[..., torch.Tensor]] = {"hps": hps_score, "aps": aps_score}


def _score_fn(name: str) -> Callable[..., torch.Tensor]:
    if name not in SCORES:
        raise ConfigError(f"conformal: unknown score {name!r}", fix=f"use one of {sorted(SCORES)}")
    return SCORES[name]


# ----------------------------------------------------------------------------- split conformal

def conformal_quantile(cal_scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """The split-CP threshold: the ``ceil((n + 1)(1 - alpha))``-th smallest of ``n`` calibration scores.

    That is the ``(1 - alpha)(1 + 1/n)`` empirical quantile; ``+inf`` when that rank exceeds ``n``
    (too few points: the set is every label). Works over leading dims: (..., n) -> (...).
    """
    _check_alpha(alpha)
    n = cal_scores.shape[-1]
    k = math.ceil((n + 1) * (1.0 - float(alpha)) - 1e-9)
    if n == 0 or k > n:
        return torch.full(cal_scores.shape[:-1], float("inf"), dtype=cal_scores.dtype, device=cal_scores.device)
    return cal_scores.kthvalue(max(k, 1), dim=-1).values


def split_conformal_sets(scores: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """Prediction sets ``{y : S(x, y) <= tau}``: (B, C) scores -> (B, C) bool."""
    tau = torch.as_tensor(tau, dtype=scores.dtype, device=scores.device)
    return scores <= (tau.unsqueeze(-1) if tau.dim() else tau)


def coverage_and_size(sets: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(coverage = mean ``1[y in C(x)]``, mean set size) of (B, C) bool sets."""
    covered = sets.gather(1, labels.view(-1, 1).to(sets.device)).squeeze(1)
    return float(covered.float().mean()), float(sets.sum(dim=1).float().mean())


# ----------------------------------------------------------------------------- smoothed scores

@dataclass
class SmoothedScores:
    """Monte-Carlo smoothed scores for every label: ``mean`` and unbiased ``var`` (B, C) float64, ``n`` draws."""

    mean: torch.Tensor
    var: torch.Tensor
    n: int


def smoothed_scores(model: Model | Any, x: torch.Tensor, sigma: float, n_samples: int = 256, *,
                    score: str = "hps", transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    batch_size: int = 1000, randomized: bool = False, generator: torch.Generator) -> SmoothedScores:
    """``S_hat(x, y) = (1/n_s) sum_k T(S(x + sigma eps_k, y))`` for all labels, with the sample variance.

    Noise comes from :meth:`Smooth.noise_chunks` (raw input domain, not clipped, as RSCP); ``transform``
    (e.g. a :class:`PTT`) is applied to every noisy score before averaging; ``randomized`` draws APS's ``u``
    per noise sample from ``generator`` (default: the non-randomized score). Examples go in groups of
    ``batch_size``; within a group, at most ``batch_size`` noisy inputs per forward pass.
    """
    _check_sigma(sigma)
    if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 2):
        raise ConfigError(f"smoothed_scores: n_samples must be an integer >= 2, got {n_samples!r}",
                          fix="use the paper's n_samples=256")
    model = as_model(model)
    fn = _score_fn(score)
    c = model.num_classes or int(checked_scores(model, x[:1]).shape[1])
    smooth = Smooth(model, c, sigma)
    means, vars_ = [], []
    for i in range(0, x.shape[0], batch_size):
        xg = x[i:i + batch_size].to(model.device)
        b = xg.shape[0]
        s1 = torch.zeros(b, c, dtype=torch.float64)
        s2 = torch.zeros(b, c, dtype=torch.float64)
        for noisy in smooth.noisy_inputs(xg, n_samples, batch_size, generator):
            m = noisy.shape[0] // b
            probs = F.softmax(checked_scores(model, noisy, batch_size=m * b).double(), dim=1)
            s = fn(probs, generator if randomized else None)
            if transform is not None:
                s = transform(s)
            s = s.double().view(m, b, c).cpu()
            s1 += s.sum(0)
            s2 += (s * s).sum(0)
        mean = s1 / n_samples
        means.append(mean)
        vars_.append(((s2 - n_samples * mean * mean) / (n_samples - 1)).clamp_min(0.0))
    empty = torch.empty(0, c, dtype=torch.float64)
    return SmoothedScores(torch.cat(means) if means else empty, torch.cat(vars_) if vars_ else empty,
                          int(n_samples))


# ----------------------------------------------------------------------------- RSCP / RSCP+

def hoeffding_bound(n_samples: int, beta: float) -> float:
    """``b_H = sqrt(ln(1/beta) / (2 n_s))``: one-sided Hoeffding bound on a [0, 1] Monte-Carlo mean."""
    _check_alpha(beta, "beta")
    return math.sqrt(math.log(1.0 / beta) / (2.0 * n_samples))


def bernstein_bound(var: torch.Tensor, n_samples: int, beta: float) -> torch.Tensor:
    """Empirical Bernstein ``b_B = sqrt(2 V ln(2/beta) / n_s) + 7 ln(2/beta) / (3 (n_s - 1))`` (Maurer & Pontil)."""
    _check_alpha(beta, "beta")
    lg = math.log(2.0 / beta)
    return (2.0 * var * lg / n_samples).sqrt() + 7.0 * lg / (3.0 * (n_samples - 1))


def rscp_plus_threshold(cal_smoothed: torch.Tensor, alpha: float, beta: float = 0.001) -> torch.Tensor:
    """RSCP+ ``tau``: the ``(1 - alpha + 2 beta)(1 + 1/n)`` empirical quantile of calibration ``S_hat`` (..., n)."""
    _check_alpha(alpha)
    _check_alpha(beta, "beta")
    if not alpha - 2 * beta > 0:
        raise ConfigError(f"RSCP+ needs alpha > 2 beta, got alpha={alpha}, beta={beta}",
                          fix="use the paper's beta=0.001 with alpha=0.1")
    return conformal_quantile(cal_smoothed, alpha - 2.0 * beta)


def _ndtri(p: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtri(p.double())


def rscp_plus_sets(test: SmoothedScores, tau: torch.Tensor | float, sigma: float, delta: float,
                   beta: float = 0.001) -> torch.Tensor:
    """RSCP+ sets ``{y : Phi^-1(max(S_hat - b_B, 0)) - delta/sigma <= Phi^-1(min(tau + b_H, 1))}``: (B, C) bool."""
    _check_sigma(sigma)
    _check_delta(delta)
    tau = torch.as_tensor(tau, dtype=torch.float64)
    lower = (test.mean - bernstein_bound(test.var, test.n, beta)).clamp_min(0.0)
    rhs = _ndtri((tau + hoeffding_bound(test.n, beta)).clamp(max=1.0))
    return _ndtri(lower) - delta / sigma <= (rhs.unsqueeze(-1) if rhs.dim() else rhs)


def rscp_sets(test: SmoothedScores | torch.Tensor, tau: torch.Tensor | float, sigma: float,
              delta: float) -> torch.Tensor:
    """RSCP sets (Gendler et al., 2022) ``{y : Phi^-1(S_hat) - delta/sigma <= Phi^-1(tau)}``, MC error ignored."""
    _check_sigma(sigma)
    _check_delta(delta)
    mean = test.mean if isinstance(test, SmoothedScores) else test.double()
    tau = torch.as_tensor(tau, dtype=torch.float64).clamp(max=1.0)
    rhs = _ndtri(tau)
    return _ndtri(mean.clamp(0.0, 1.0)) - delta / sigma <= (rhs.unsqueeze(-1) if rhs.dim() else rhs)


# ----------------------------------------------------------------------------- attack

def pgd_l2_score_attack(model: Model | Any, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 20,
                        sigma: float = 0.0, m: int = 16, generator: torch.Generator,
                        low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """PGD-L2 that lowers the (smoothed) probability of the true label, i.e. raises its HPS score.

    ``sigma > 0``: SmoothAdv (Salman et al., 2019): loss ``-log mean_k softmax_y(f(x' + sigma eps_k))`` with
    ``m`` fresh draws per step; ``sigma = 0``: cross-entropy of the base model. Step ``2.5 eps / steps``,
    projection onto the L2 ball and the box ``[low, high]``. Returns ``x'`` with ``||x' - x||_2 <= eps``.
    """
    _check_delta(eps)
    model = as_model(model)
    model.require(gradients=True, probe="pgd_l2_score_attack")
    threat = LpBall("2", eps, low, high)
    x0, yd = x.detach().to(model.device), y.to(model.device)
    if eps == 0 or x0.shape[0] == 0:
        return x0.clone()
    step = 2.5 * eps / steps
    xa = x0.clone()
    b = x0.shape[0]
    for _ in range(steps):
        xa.requires_grad_(True)
        if sigma > 0:
            noise = torch.randn((m, *x0.shape), generator=generator, device=generator.device, dtype=x0.dtype)
            noisy = (xa.unsqueeze(0) + sigma * noise.to(x0.device)).reshape(m * b, *x0.shape[1:])
            p = F.softmax(model(noisy), dim=1).view(m, b, -1).mean(0)
            loss = -p.gather(1, yd.view(-1, 1)).clamp_min(1e-12).log().sum()
        else:
            loss = F.cross_entropy(model(xa), yd, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xa)
        g = grad.reshape(b, -1)
        g = (g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(xa)
        xa = threat.project(x0, xa.detach() + step * g).detach()
    return xa


def evaluate_conformal(model: Model | Any, cal_x: torch.Tensor, cal_y: torch.Tensor, test_x: torch.Tensor,
                       test_y: torch.Tensor, *, method: str = "rscp_plus", alpha: float = 0.1, delta: float = 0.125,
                       sigma: float = 0.25, beta: float = 0.001, n_samples: int = 256, score: str = "hps",
                       transform: Callable[[torch.Tensor], torch.Tensor] | None = None, steps: int = 20,
                       m: int = 16, generator: torch.Generator) -> dict[str, dict[str, float]]:
    """Coverage and mean set size on clean and on PGD-L2-attacked test inputs (calibration stays clean).

    ``method``: ``"rscp_plus"`` (RSCP+ sets for radius ``delta``; test points attacked by SmoothAdv on the
    smoothed model), ``"rscp"`` (Gendler et al.'s rule, same attack) or ``"split"`` (plain split CP on the
    base model's ``score``; test points attacked by PGD-L2 cross-entropy on the base model).
    Returns ``{"clean": {"coverage", "size"}, "pgd": {"coverage", "size"}}``.
    """
    if method not in ("rscp_plus", "rscp", "split"):
        raise ConfigError(f"evaluate_conformal: unknown method {method!r}", fix="use 'rscp_plus', 'rscp' or 'split'")
    _check_alpha(alpha)
    model = as_model(model)
    yc, ty = cal_y.cpu(), test_y.cpu()
    smoothed = method != "split"
    x_adv = pgd_l2_score_attack(model, test_x, test_y, delta, steps=steps, sigma=sigma if smoothed else 0.0, m=m,
                                generator=generator, low=model.low, high=model.high)
    out: dict[str, dict[str, float]] = {}
    if not smoothed:
        fn = _score_fn(score)

        def plain(x: torch.Tensor) -> torch.Tensor:
            s = fn(F.softmax(checked_scores(model, x).double(), dim=1)).cpu()
            return transform(s) if transform is not None else s

        tau = conformal_quantile(plain(cal_x).gather(1, yc.view(-1, 1)).squeeze(1), alpha)
        for name, xs in (("clean", test_x), ("pgd", x_adv)):
            c, z = coverage_and_size(split_conformal_sets(plain(xs), tau), ty)
            out[name] = {"coverage": c, "size": z}
        return out
    kw = {"score": score, "transform": transform, "generator": generator}
    cal = smoothed_scores(model, cal_x, sigma, n_samples, **kw).mean.gather(1, yc.view(-1, 1)).squeeze(1)
    for name, xs in (("clean", test_x), ("pgd", x_adv)):
        sm = smoothed_scores(model, xs, sigma, n_samples, **kw)
        if method == "rscp_plus":
            sets = rscp_plus_sets(sm, rscp_plus_threshold(cal, alpha, beta), sigma, delta, beta)
        else:
            sets = rscp_sets(sm, conformal_quantile(cal, alpha), sigma, delta)
        c, z = coverage_and_size(sets, ty)
        out[name] = {"coverage": c, "size": z}
    return out


# ----------------------------------------------------------------------------- probes

def _two_folds(x: torch.Tensor, seed: int, name: str) -> torch.Tensor:
    """A seeded half/half fold id per example (0/1), from the shard's content."""
    digest = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    gen = torch_generator(derive_seed(seed, name, "folds", digest))
    fold = torch.zeros(x.shape[0], dtype=torch.long)
    fold[torch.randperm(x.shape[0], generator=gen)[: x.shape[0] // 2]] = 1
    return fold


def _check_probe_model(model: Model, name: str) -> None:
    if model.modality == "text":
        raise UnsupportedModelError(f"{name} adds noise / gradients to tensors; the model takes text",
                                    fix="use it with image or tabular models")


@register("certifier", "conformal")
@dataclass
class SplitConformalCertifier(Certifier):
    """Split conformal prediction (Romano et al., 2020) on the base model; empirical coverage under PGD-L2.

    Per shard, a seeded two-fold split: each half is calibrated on the other half's clean true-label
    scores. At ``eps > 0`` the test inputs are attacked (PGD-L2, ``steps``, cross-entropy = raising the
    HPS score of the true label) before their sets are built: plain CP has no guarantee there.
    Status ``"robust"``: the true label is in the set; ``"broken"``: it is not. The outcome ``score`` is
    the set size; ``pred`` the lowest-score label. Extras: ``sets`` (B, C) bool, ``set_size``, ``covered``.
    """

    #: outcomes are prediction sets: ``score`` = set size, coverage = status certified or robust
    set_valued: ClassVar[bool] = True
    alpha: float = 0.1
    score: str = "hps"
    steps: int = 20
    seed: int = 0
    default_settings = (0.0, 0.125, 0.25)

    def __post_init__(self) -> None:
        _check_alpha(self.alpha)
        _score_fn(self.score)

    def check_model(self, model: Model) -> None:
        super().check_model(model)
        _check_probe_model(model, "conformal")

    def evaluate(self, model: Model, x: torch.Tensor, y: torch.Tensor, setting: float, *,
                 clean_pred: torch.Tensor, generator: torch.Generator) -> ProbeOutput:
        _check_delta(setting)
        fn = _score_fn(self.score)
        fold = _two_folds(x, self.seed, "conformal")
        clean = fn(F.softmax(checked_scores(model, x).double(), dim=1)).cpu()
        xp = x
        if setting > 0:
            gen = torch_generator(derive_seed(self.seed, "conformal", "pgd", setting), device=model.device)
            xp = pgd_l2_score_attack(model, x, y, setting, steps=self.steps, generator=gen,
                                     low=model.low, high=model.high).to(x.device)
        probed = fn(F.softmax(checked_scores(model, xp).double(), dim=1)).cpu()
        yc = y.cpu()
        true = clean.gather(1, yc.view(-1, 1)).squeeze(1)
        sets = torch.zeros_like(probed, dtype=torch.bool)
        for f in (0, 1):
            tau = conformal_quantile(true[fold != f], self.alpha)
            sets[fold == f] = split_conformal_sets(probed[fold == f], tau)
        return _set_output(sets, yc, -probed, None, xp, x, queries=1 + (self.steps if setting > 0 else 0))


def _set_output(sets: torch.Tensor, y: torch.Tensor, scores: torch.Tensor, certified: torch.Tensor | None,
                xp: torch.Tensor, x: torch.Tensor, queries: int, extras: dict[str, Any] | None = None) -> ProbeOutput:
    b = len(y)
    covered = sets.gather(1, y.view(-1, 1)).squeeze(1)
    size = sets.sum(1)
    status = np.where(covered.numpy(), "robust", "broken").astype(object)
    if certified is not None:
        status[certified.numpy()] = "certified"
    return ProbeOutput(scores=scores.float(), attempted=torch.ones(b, dtype=torch.bool),
                       queries=torch.full((b,), queries, dtype=torch.long), x_probed=xp,
                       distance=lp_norm((xp.cpu() - x.cpu()).float(), "2"), status=status.tolist(),
                       score=size.double(), extras={"sets": sets, "set_size": size, "covered": covered,
                                                    **(extras or {})})


@register("certifier", "rscp_plus")
@dataclass
class RSCPPlusCertifier(Certifier):
    """RSCP+ sets (Yan, Romano & Weng, ICLR 2024) at L2 radius ``eps``: coverage >= 1 - alpha under attack.

    Per shard, seeded two-fold calibration on the Monte-Carlo smoothed true-label scores (``n_samples``
    draws, ``sigma``), sets built for ``delta = eps``. Status per example: ``"certified"``: the true label
    provably stays in the RSCP+ set of every input within ``eps`` (``S_hat + b_B <= tau + b_H``, each MC
    bound failing w.p. <= beta); ``"robust"``: it is in the set at this input only; ``"broken"``: it is
    not. Coverage = certified + robust; the outcome ``score`` is the set size. Extras: ``sets``,
    ``set_size``, ``covered``, ``smoothed`` (B, C), ``tau`` per fold.

    Args:
        sigma: noise level (paper: 2 * delta). alpha: miscoverage. beta: MC failure probability (0.001).
        n_samples: MC draws per example (paper: 256). score: "hps" or "aps". batch_size: noisy inputs per
        forward pass. seed: seeds the noise and the folds.
    """

    sigma: float = 0.25
    set_valued: ClassVar[bool] = True
    alpha: float = 0.1
    beta: float = 0.001
    n_samples: int = 256
    score: str = "hps"
    batch_size: int = 1000
    seed: int = 0
    default_settings = (0.0, 0.0625, 0.125)

    def __post_init__(self) -> None:
        _check_sigma(self.sigma)
        _check_alpha(self.alpha)
        _check_alpha(self.beta, "beta")
        if not self.alpha > 2 * self.beta:
            raise ConfigError(f"rscp_plus needs alpha > 2 beta, got {self.alpha}, {self.beta}",
                              fix="use alpha=0.1, beta=0.001")
        if not (isinstance(self.n_samples, int) and self.n_samples >= 2):
            raise ConfigError(f"rscp_plus: n_samples must be an integer >= 2, got {self.n_samples!r}",
                              fix="use the paper's n_samples=256")
        _score_fn(self.score)

    def check_model(self, model: Model) -> None:
        super().check_model(model)
        _check_probe_model(model, "rscp_plus")

    def evaluate(self, model: Model, x: torch.Tensor, y: torch.Tensor, setting: float, *,
                 clean_pred: torch.Tensor, generator: torch.Generator) -> ProbeOutput:
        _check_delta(setting)
        fold = _two_folds(x, self.seed, "rscp_plus")
        digest = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
        gen = torch_generator(derive_seed(self.seed, "rscp_plus", digest), device=model.device)
        sm = smoothed_scores(model, x, self.sigma, self.n_samples, score=self.score, batch_size=self.batch_size,
                             generator=gen)
        yc = y.cpu()
        true = sm.mean.gather(1, yc.view(-1, 1)).squeeze(1)
        upper = (sm.mean + bernstein_bound(sm.var, sm.n, self.beta)).gather(1, yc.view(-1, 1)).squeeze(1)
        sets = torch.zeros_like(sm.mean, dtype=torch.bool)
        certified = torch.zeros(len(yc), dtype=torch.bool)
        taus = []
        hb = hoeffding_bound(sm.n, self.beta)
        for f in (0, 1):
            tau = rscp_plus_threshold(true[fold != f], self.alpha, self.beta)
            taus.append(float(tau))
            part = SmoothedScores(sm.mean[fold == f], sm.var[fold == f], sm.n)
            sets[fold == f] = rscp_plus_sets(part, tau, self.sigma, setting, self.beta)
            certified[fold == f] = upper[fold == f] <= tau + hb
        certified &= sets.gather(1, yc.view(-1, 1)).squeeze(1)
        return _set_output(sets, yc, -sm.mean, certified, x, x, queries=self.n_samples,
                           extras={"smoothed": sm.mean, "tau": taus})
