"""GREAT Score: global L2 robustness of a classifier estimated on samples of a generative model.

Li, Chen & Ho, "GREAT Score: Global Robustness Evaluation of Adversarial Perturbation using Generative
Models" (NeurIPS 2024; code IBM/GREAT-Score). Draw ``z_i ~ N(0, I)``, ``x_i = G(z_i | y_i)``; with
calibrated class probabilities ``p`` of the classifier, the *local* score of a sample is

    g(x_i) = sqrt(pi / 2) * [p_{y_i}(x_i) - max_{k != y_i} p_k(x_i)]^+        (0 if f misclassifies x_i)

and ``GREAT(f) = mean_i g(x_i)`` estimates ``E_z[g(G(z))]``, a mean certified L2 radius. Why
``sqrt(pi/2)``: a [-1, 1]-valued function smoothed by N(0, I) is ``sqrt(2/pi)``-Lipschitz, so a margin
``m`` of the Gaussian-smoothed soft classifier certifies radius ``m * sqrt(pi/2)`` (``sigma * ...`` for
noise of std ``sigma``): for the smoothed classifier it is a sound bound (:func:`smoothed_great_radius`),
for a plain classifier it is the paper's estimate. Since ``g`` lies in ``[0, sqrt(pi/2)]``, Hoeffding
gives ``P(|GREAT_N - GREAT| >= eps) <= 2 exp(-4 N eps^2 / pi)`` (:func:`hoeffding_epsilon`).

Calibration (the code's ``--callibration_method``; default ``"sigmoid-softmax"``, option 3, with the
CIFAR-10 temperature ``T = 0.00742``): ``"sigmoid"`` = sigmoid(z / T) (1), ``"softmax"`` = softmax(z / T)
(2; with ``T = 1`` the uncalibrated score the paper uses on ImageNet), ``"sigmoid-softmax"`` =
softmax(sigmoid(z) / T) (3), ``"softmax-sigmoid"`` = sigmoid(softmax(z) / T) (4). As in the code, the
prediction and the runner-up are the top-2 *logits* (every calibration is monotone in them).
:func:`calibrate_temperature` is the code's temperature search: the ``T`` maximizing the Spearman
correlation of GREAT with a reference ranking, subject to GREAT <= a per-model upper bound (the mean CW
distortion). ``T`` must be re-calibrated for other models / data: the CIFAR value is only a default.

Example::

    from robustlab.certify.great import great_score
    res = great_score(zoo.load("digits-cnn"), load_generator("digits-cvae"), 500,
                      calibration="softmax", temperature=1.0, generator=torch_generator(0))
    res.score, res.interval            # GREAT and its 95 % Hoeffding interval
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.model import Model, TorchModel, as_model, checked_scores
from robustlab.core.probe import Certifier, ProbeOutput
from robustlab.core.registry import register
from robustlab.core.threat import LpBall

__all__ = ["CALIBRATIONS", "GreatResult", "GreatScore", "SQRT_HALF_PI", "calibrate", "calibrate_temperature",
           "great_from_scores", "great_score", "hoeffding_epsilon", "local_great_scores", "mc_margin_tolerance",
           "rank_correlation", "smoothed_great_radius", "smoothed_margin", "smoothed_probabilities",
           "smoothed_soft_model"]

SQRT_HALF_PI = math.sqrt(math.pi / 2)
"""The largest local score, ``sqrt(pi / 2)`` (margin 1)."""

CALIBRATIONS = ("sigmoid", "softmax", "sigmoid-softmax", "softmax-sigmoid")
DEFAULT_CALIBRATION = "sigmoid-softmax"
DEFAULT_TEMPERATURE = 0.00742
"""The paper's temperature for option 3 on its CIFAR-10 RobustBench models."""


def _check_calibration(method: str, temperature: float) -> None:
    if method not in CALIBRATIONS:
        raise ConfigError(f"unknown GREAT calibration {method!r}", fix=f"use one of {', '.join(CALIBRATIONS)}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"GREAT temperature must be a finite number > 0, got {temperature!r}",
                          fix="use e.g. temperature=1.0 (no scaling) or calibrate it with calibrate_temperature")


def calibrate(logits: torch.Tensor, method: str = DEFAULT_CALIBRATION,
              temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """Calibrated class probabilities ``(B, C)`` in [0, 1] from logits ``(B, C)`` (the paper's 4 options)."""
    _check_calibration(method, temperature)
    z = logits.double()
    if method == "sigmoid":
        return torch.sigmoid(z / temperature)
    if method == "softmax":
        return torch.softmax(z / temperature, dim=1)
    if method == "sigmoid-softmax":
        return torch.softmax(torch.sigmoid(z) / temperature, dim=1)
    return torch.sigmoid(torch.softmax(z, dim=1) / temperature)


def local_great_scores(logits: torch.Tensor, y: torch.Tensor, *, calibration: str = DEFAULT_CALIBRATION,
                       temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """Local GREAT scores ``(B,)`` float64: ``sqrt(pi/2) * (p_y - p_runner-up)^+``, 0 where misclassified.

    ``logits`` ``(B, C)`` are the classifier's raw scores; prediction and runner-up are the top-2 logits."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise DataError(f"GREAT needs scores of shape (B, C >= 2), got {tuple(logits.shape)}",
                        fix="pass the classifier's logits")
    y = torch.as_tensor(y, device=logits.device).reshape(-1).long()
    if len(y) != len(logits):
        raise DataError(f"GREAT got {len(logits)} score rows but {len(y)} labels", fix="give one label per sample")
    p = calibrate(logits, calibration, temperature)
    top2 = logits.topk(2, dim=1).indices
    pred, runner = top2[:, 0], top2[:, 1]
    margin = p.gather(1, pred[:, None]).squeeze(1) - p.gather(1, runner[:, None]).squeeze(1)
    return torch.where(pred == y, SQRT_HALF_PI * margin.clamp_min(0.0), torch.zeros_like(margin)).cpu()


def hoeffding_epsilon(n: int, delta: float) -> float:
    """Half-width ``eps`` with ``P(|GREAT_n - GREAT| >= eps) <= delta``: ``sqrt(pi ln(2/delta) / (4 n))``.

    From Hoeffding's inequality for ``n`` i.i.d. scores in ``[0, sqrt(pi/2)]``: ``2 exp(-4 n eps^2 / pi)``."""
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ConfigError(f"GREAT: the number of samples must be an integer >= 1, got {n!r}", fix="use e.g. n=500")
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"GREAT: delta must lie in (0, 1), got {delta!r}", fix="use e.g. delta=0.05")
    return math.sqrt(math.pi * math.log(2.0 / delta) / (4.0 * int(n)))


@dataclass
class GreatResult:
    """A GREAT score with its Hoeffding interval.

    Attributes:
        score: the sample mean of the local scores (the global robustness estimate, raw L2 units).
        local: ``(N,)`` local scores. labels: ``(N,)`` the samples' classes. correct: ``(N,)`` bool.
        epsilon: Hoeffding half-width at ``delta``; ``interval`` = ``(score - eps, score + eps)`` clipped to
            ``[0, sqrt(pi/2)]``; holds with probability >= ``1 - delta``.
        accuracy: fraction of samples the classifier labels as their class.
        seconds: wall time of sampling + scoring.
    """

    score: float
    local: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    correct: torch.Tensor = field(repr=False)
    n: int = 0
    delta: float = 0.05
    epsilon: float = 0.0
    accuracy: float = 0.0
    calibration: str = DEFAULT_CALIBRATION
    temperature: float = DEFAULT_TEMPERATURE
    seconds: float = 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return max(self.score - self.epsilon, 0.0), min(self.score + self.epsilon, SQRT_HALF_PI)


def great_from_scores(logits: torch.Tensor, y: torch.Tensor, *, delta: float = 0.05,
                      calibration: str = DEFAULT_CALIBRATION, temperature: float = DEFAULT_TEMPERATURE,
                      seconds: float = 0.0) -> GreatResult:
    """:class:`GreatResult` from precomputed logits ``(N, C)`` and labels ``(N,)`` of generated samples."""
    local = local_great_scores(logits, y, calibration=calibration, temperature=temperature)
    n = len(local)
    eps = hoeffding_epsilon(n, delta)
    yc = torch.as_tensor(y).reshape(-1).long().cpu()
    correct = logits.argmax(1).cpu() == yc
    return GreatResult(score=float(local.mean()), local=local, labels=yc, correct=correct, n=n, delta=float(delta),
                       epsilon=eps, accuracy=float(correct.float().mean()), calibration=calibration,
                       temperature=float(temperature), seconds=float(seconds))


def _samples(source: Any, n: int | None, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` from a conditional generator (``n`` seeded samples) or a labelled sample set."""
    from robustlab.models.generative import ConditionalGenerator

    if isinstance(source, ConditionalGenerator):
        if n is None:
            raise ConfigError("great_score: give n, the number of samples to draw", fix="use e.g. n=500 (the paper)")
        return source.sample(int(n), generator=generator)
    if isinstance(source, (tuple, list)) and len(source) == 2:
        x, y = source
    elif hasattr(source, "x") and hasattr(source, "y"):
        x, y = source.x, source.y
    else:
        raise ConfigError(f"great_score needs a ConditionalGenerator or labelled samples, got {type(source).__name__}",
                          fix="pass load_generator('digits-cvae') or (x, y)")
    y = torch.as_tensor(y).reshape(-1).long()
    if n is not None:
        x, y = x[: int(n)], y[: int(n)]
    return x, y


def great_score(model: Model | nn.Module, source: Any, n: int | None = 500, *, delta: float = 0.05,
                calibration: str = DEFAULT_CALIBRATION, temperature: float = DEFAULT_TEMPERATURE,
                generator: torch.Generator | None = None, batch_size: int = 512) -> GreatResult:
    """GREAT score of ``model`` on ``n`` samples of ``source`` (Li et al., 2024).

    Args:
        model: the classifier (logits; any robustlab :class:`Model` or ``nn.Module``).
        source: a :class:`~robustlab.models.generative.ConditionalGenerator` (drawn with ``generator``) or
            labelled samples ``(x, y)`` / a Dataset (the first ``n`` are used).
        n: number of samples (500, the paper's default).
        delta: failure probability of the Hoeffding interval.
        calibration, temperature: see the module docstring (default: option 3, ``T = 0.00742``).
        generator: seeds the latents (required for a generative model).
    """
    _check_calibration(calibration, temperature)
    hoeffding_epsilon(n if n is not None else 1, delta)
    start = time.perf_counter()
    x, y = _samples(source, n, generator)
    if len(y) == 0:
        raise DataError("great_score: no samples", fix="give n >= 1 or a non-empty sample set")
    logits = checked_scores(as_model(model), x, batch_size=batch_size)
    return great_from_scores(logits, y, delta=delta, calibration=calibration, temperature=temperature,
                             seconds=time.perf_counter() - start)


def _round_sig(v: np.ndarray, digits: int = 10) -> np.ndarray:
    """``v`` rounded to ``digits`` significant digits (zeros and non-finite values kept)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(np.isfinite(v) & (v != 0), np.floor(np.log10(np.abs(v))), 0.0)
    scale = 10.0 ** (digits - 1 - mag)
    return np.where(np.isfinite(v), np.round(v * scale) / scale, v)


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Spearman's rho and Kendall's tau between two score lists (one value per model), via scipy.

    Values are rounded to 10 significant digits first, so scores equal up to float round-off (e.g. saturated
    GREAT scores at tiny temperatures) count as ties rather than being ordered by rounding noise. Where either
    list is constant the correlations are undefined and reported as 0 (no agreement shown)."""
    from scipy import stats

    a, b = _round_sig(np.asarray(a, dtype=float)), _round_sig(np.asarray(b, dtype=float))
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise DataError(f"rank_correlation needs two equal-length lists of >= 2 values, got {a.shape} and {b.shape}",
                        fix="give one value per model in both lists")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"spearman": 0.0, "kendall": 0.0}
    rho = stats.spearmanr(a, b)[0]
    tau = stats.kendalltau(a, b)[0]
    return {"spearman": float(rho), "kendall": float(tau)}


def calibrate_temperature(logits: Sequence[torch.Tensor], y: torch.Tensor, reference: Sequence[float], *,
                          method: str = DEFAULT_CALIBRATION, grid: Sequence[float] | None = None,
                          upper_bounds: Sequence[float] | None = None) -> tuple[float, float]:
    """The paper's temperature search: ``(T, spearman)`` maximizing Spearman(reference, GREAT_T) over ``grid``.

    ``logits[m]`` ``(N, C)`` are model ``m``'s logits on the same samples (labels ``y``); ``reference[m]``
    its attack-based robustness (higher = more robust). If ``upper_bounds`` is given (the code: mean CW
    distortion per model), only temperatures with GREAT_m <= upper_bounds[m] for every model count. The
    first best ``T`` of the grid wins ties. Default grid: 400 log-spaced values in [1e-4, 10] (the code
    scans ``arange(0, 2, 1e-4)`` around its CIFAR value). Raises :class:`ConfigError` if no ``T`` qualifies.
    """
    if len(logits) != len(reference) or len(logits) < 2:
        raise ConfigError(f"calibrate_temperature: {len(logits)} models but {len(reference)} reference values",
                          fix="give >= 2 models and one reference value per model")
    temps = np.geomspace(1e-4, 10.0, 400) if grid is None else np.asarray(grid, dtype=float)
    best_t, best_rho = None, -math.inf
    for t in temps:  # a loop over candidate temperatures; each step is batched over models x samples
        scores = [float(local_great_scores(lg, y, calibration=method, temperature=float(t)).mean()) for lg in logits]
        if upper_bounds is not None and any(s > b for s, b in zip(scores, upper_bounds)):
            continue
        if np.ptp(scores) == 0:
            continue
        rho = rank_correlation(reference, scores)["spearman"]
        if rho > best_rho:
            best_t, best_rho = float(t), rho
    if best_t is None:
        raise ConfigError("calibrate_temperature: no temperature of the grid keeps GREAT below the upper bounds",
                          fix="widen the grid or check the upper bounds")
    return best_t, float(best_rho)


# ------------------------------------------------------------------- the sound case: smoothed soft models


class _SmoothedSoft(nn.Module):
    """``log mean_i softmax(f(x + sigma * noise_i))`` over fixed noise (a deterministic, differentiable model)."""

    def __init__(self, base: Model, noise: torch.Tensor, sigma: float):
        super().__init__()
        self.base, self.sigma = base, float(sigma)
        self.register_buffer("noise", noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, b = self.noise.shape[0], x.shape[0]
        noisy = (x.unsqueeze(0) + self.sigma * self.noise.unsqueeze(1)).reshape(m * b, *x.shape[1:])
        p = torch.softmax(self.base(noisy), dim=1).view(m, b, -1).mean(0)
        return p.clamp_min(1e-12).log()


def smoothed_soft_model(model: Model | nn.Module, sigma: float, n: int, *, generator: torch.Generator,
                        input_shape: tuple[int, ...]) -> TorchModel:
    """The Gaussian-smoothed *soft* classifier ``F(x) = E[softmax f(x + sigma e)]`` estimated with ``n`` fixed
    noise draws, as a differentiable :class:`TorchModel` returning ``log F(x)`` (so attacks can run on it)."""
    if not sigma > 0 or int(n) < 1:
        raise ConfigError(f"smoothed_soft_model: sigma={sigma!r} must be > 0 and n={n!r} >= 1",
                          fix="use e.g. sigma=0.25, n=1000")
    noise = torch.randn((int(n), *input_shape), generator=generator, device=generator.device).cpu()
    base = as_model(model)
    return TorchModel(_SmoothedSoft(base, noise, sigma), num_classes=base.num_classes)


def smoothed_probabilities(model: Model | nn.Module, x: torch.Tensor, *, sigma: float, n: int = 1000,
                           generator: torch.Generator, batch_size: int = 64) -> torch.Tensor:
    """``F(x)`` ``(B, C)`` float64: the Monte-Carlo mean of ``softmax f(x + sigma e)`` over ``n`` fresh draws."""
    if not sigma > 0 or int(n) < 1:
        raise ConfigError(f"smoothed GREAT: sigma={sigma!r} must be > 0 and n={n!r} >= 1",
                          fix="use e.g. sigma=0.25, n=1000 (the spec)")
    base = as_model(model)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            noise = torch.randn((int(n), *xb.shape), generator=generator, device=generator.device).to(xb.device)
            noisy = (xb.unsqueeze(0) + sigma * noise).reshape(-1, *xb.shape[1:])
            p = torch.softmax(checked_scores(base, noisy, batch_size=len(noisy)), dim=1).view(int(n), len(xb), -1)
            out.append(p.mean(0).double().cpu())
    return torch.cat(out) if out else torch.zeros(0, base.num_classes or 0, dtype=torch.float64)


def smoothed_margin(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``F_y - max_{k != y} F_k`` ``(B,)`` from probabilities ``(B, C)`` (negative where another class wins)."""
    yc = torch.as_tensor(y).reshape(-1).long().to(probs.device)
    py = probs.gather(1, yc[:, None]).squeeze(1)
    return py - probs.scatter(1, yc[:, None], -math.inf).max(1).values


def smoothed_great_radius(model: Model | nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float,
                          n: int = 1000, generator: torch.Generator, batch_size: int = 64) -> torch.Tensor:
    """GREAT's certified radius of the Gaussian-smoothed soft classifier: ``sigma * sqrt(pi/2) * (F_y - max_k F_k)^+``.

    ``F`` = Monte-Carlo mean of ``softmax f(x + sigma e)`` over ``n`` draws (fresh noise per example). Sound
    up to the Monte-Carlo error of ``F`` (see :func:`mc_margin_tolerance`); the paper's formula is ``sigma = 1``.
    """
    probs = smoothed_probabilities(model, x, sigma=sigma, n=n, generator=generator, batch_size=batch_size)
    return sigma * SQRT_HALF_PI * smoothed_margin(probs, y).clamp_min(0.0)


def mc_margin_tolerance(n: int, num_classes: int, delta: float = 0.01) -> float:
    """Monte-Carlo tolerance of a smoothed margin ``F_y - max_k F_k`` estimated with ``n`` draws: with
    probability >= ``1 - delta`` every class probability is within ``sqrt(ln(2C/delta) / (2n))`` (Hoeffding and a
    union bound over ``C`` classes), so the margin within twice that."""
    return 2.0 * math.sqrt(math.log(2.0 * num_classes / delta) / (2.0 * int(n)))


# --------------------------------------------------------------------------------------- the probe


@register("certifier", "great")
class GreatScore(Certifier):
    """Local GREAT scores as a probe (Li et al., 2024): per example the estimated L2 radius ``g(x)``.

    Meant for generated (or any labelled) samples: the suite's examples play the role of ``G(z)``. Per
    example: ``"robust"`` (clean-correct and ``g > eps``), ``"abstained"`` (clean-correct, ``g <= eps``) or
    ``"skipped"`` (misclassified, ``g = 0``); the outcome score is ``g``. GREAT is an *estimate* for a plain
    classifier (a certificate only for its Gaussian-smoothed version), so it never reports ``"certified"``;
    the mean of the scores is the GREAT score. ``extras``: ``local`` scores, ``great`` (mean) and
    ``epsilon`` (Hoeffding half-width at ``delta``).

    Args:
        calibration, temperature: see the module docstring (defaults: option 3, ``T = 0.00742``).
        delta: failure probability of the Hoeffding interval.
        batch_size: examples per forward pass.
    """

    default_settings = (0.0, 0.25, 0.5)

    def __init__(self, calibration: str = DEFAULT_CALIBRATION, temperature: float = DEFAULT_TEMPERATURE,
                 delta: float = 0.05, batch_size: int = 512):
        _check_calibration(calibration, temperature)
        hoeffding_epsilon(1, delta)
        if int(batch_size) < 1:
            raise ConfigError(f"great: batch_size must be >= 1, got {batch_size!r}", fix="use e.g. batch_size=512")
        self.calibration, self.temperature, self.delta = calibration, float(temperature), float(delta)
        self.batch_size = int(batch_size)
        self.threat = LpBall(norm="2", eps=0.0)

    def check_model(self, model: Model) -> None:
        super().check_model(model)
        if model.modality == "text":
            from robustlab.core.errors import UnsupportedModelError

            raise UnsupportedModelError("GREAT measures L2 robustness of tensor inputs; the model takes text",
                                        fix="use it with image or tabular models")

    def evaluate(self, model: Model, x: Any, y: torch.Tensor, setting: float, *,
                 clean_pred: torch.Tensor, generator: torch.Generator) -> ProbeOutput:
        if not setting >= 0:
            raise ConfigError(f"great: eps must be >= 0, got {setting}", fix="ask for L2 radii >= 0")
        scores = checked_scores(model, x, batch_size=self.batch_size)
        res = great_from_scores(scores, y, delta=self.delta, calibration=self.calibration,
                                temperature=self.temperature)
        attempted = res.correct
        status = ["robust" if (a and g > setting) else ("abstained" if a else "skipped")
                  for a, g in zip(attempted.tolist(), res.local.tolist())]
        return ProbeOutput(scores=scores, attempted=attempted, queries=torch.ones(len(res.local), dtype=torch.long),
                           x_probed=x, status=status, score=res.local.float(),
                           extras={"local": res.local, "great": res.score, "epsilon": res.epsilon})

    def __repr__(self) -> str:
        return (f"GreatScore(calibration={self.calibration!r}, temperature={self.temperature}, delta={self.delta}, "
                f"batch_size={self.batch_size})")
