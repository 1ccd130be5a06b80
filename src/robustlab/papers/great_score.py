"""Paper 15 (great-score): GREAT Score ranks digits classifiers like attacks do, at a fraction of the cost.

Li, Chen & Ho, "GREAT Score: Global Robustness Evaluation of Adversarial Perturbation using Generative
Models" (NeurIPS 2024). GREAT (:mod:`robustlab.certify.great`) averages the calibrated top-2 margin
``sqrt(pi/2) (p_y - p_k)^+`` of a classifier over samples ``G(z | y)`` of a class-conditional generator.

CPU setup (differs from the paper: CIFAR-10 / ImageNet, StyleGAN2 / BigGAN, 17 + 5 RobustBench models):

* generator: the spec's CPU generator, a class-conditional Gaussian in the PCA-20 space of the digits train
  split (``load_generator("digits-pca-gaussian")``, :mod:`robustlab.models.generative`); N = 500 samples (the
  paper's default). The conditional VAE (``digits-cvae``) is scored too (C1), with the same temperature: its
  samples are near class prototypes that every model classifies with saturated confidence;
* classifiers, group "pgd-mlps" (the spec's CPU setup): six ReLU MLPs 64-256-256-10 trained with PGD
  adversarial training (Madry et al., 2018), L-inf eps in {0, 0.02, 0.05, 0.1, 0.15, 0.2} (7 steps, eps ramped
  over the first third of training); group "zoo": digits-mlp, digits-cnn, digits-cnn-at, digits-cnn-trades;
* attack references on the first 100 generated samples (the paper attacks its generated images too):
  CW-L2 minimal distortion (the paper's check: 7 binary-search steps, 200 steps, step 0.005, c0 = 1; a
  misclassified sample counts 0, as in GREAT; one where CW found nothing counts ``CW_CAP`` = 3) and robust
  accuracy under APGD-CE then APGD-T (3 targets) at L2 eps = 0.5 (the paper's AutoAttack L2 eps; AutoAttack's
  FAB-T and Square are left out for time);
* calibration: the code's temperature search (option 3, softmax(sigmoid(z) / T); the CIFAR value T = 0.00742
  does not transfer) run on the pgd-mlps against their CW distortion, then applied unchanged to the zoo
  group (a held-out check the paper, which calibrates in-sample, does not make);
* soundness: GREAT's radius ``sigma sqrt(pi/2) (F_y - max_k F_k)^+`` of the Gaussian-smoothed soft digits-mlp
  (sigma = 0.25, 1000 Monte-Carlo draws) against CW-L2 and PGD-L2 run on the smoothed model (64 fixed
  draws), each reached point checked with 2000 fresh draws.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robustlab.attacks.apgd import APGDCE, APGDT
from robustlab.attacks.cw import CWL2
from robustlab.attacks.pgd import PGD
from robustlab.certify.great import (
    SQRT_HALF_PI,
    calibrate_temperature,
    great_from_scores,
    hoeffding_epsilon,
    local_great_scores,
    mc_margin_tolerance,
    rank_correlation,
    smoothed_margin,
    smoothed_probabilities,
    smoothed_soft_model,
)
from robustlab.core.errors import ConfigError
from robustlab.core.model import Model, TorchModel, checked_scores
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.data import load_dataset
from robustlab.models import zoo
from robustlab.models.architectures import DigitsMLP
from robustlab.models.generative import load_generator
from robustlab.papers.base import Claim, Reproduction

__all__ = ["FULL", "QUICK", "Setup", "reproduce", "train_pgd_mlp"]

KEY = "great-score"
TITLE = "GREAT Score: Global Robustness Evaluation of Adversarial Perturbation using Generative Models"
ZOO_MODELS = ("digits-mlp", "digits-cnn", "digits-cnn-at", "digits-cnn-trades")
CW_CAP = 3.0  # L2 distortion counted where CW found no adversarial (digits images have L2 norm ~4-5)


@dataclass(frozen=True)
class Setup:
    """Sizes of one run (the full run and the seconds-long smoke run differ only here)."""

    train_eps: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2)
    epochs: int = 30
    train_n: int | None = None
    n_samples: int = 500  # GREAT's N (the paper's default)
    n_attack: int = 100  # generated samples the attacks run on
    cw_steps: int = 200
    cw_search: int = 7
    apgd_iter: int = 100
    ra_eps: float = 0.5
    hoeffding_resamples: int = 50
    hoeffding_n: int = 200
    n_sound: int = 40
    sound_noise_attack: int = 64
    sound_noise_cert: int = 1000
    sound_noise_check: int = 2000
    quick: bool = False


FULL = Setup()
QUICK = Setup(train_eps=(0.0, 0.1, 0.2), epochs=2, train_n=300, n_samples=100, n_attack=16, cw_steps=20,
              cw_search=2, apgd_iter=10, hoeffding_resamples=10, hoeffding_n=50, n_sound=6, sound_noise_attack=8,
              sound_noise_cert=200, sound_noise_check=200, quick=True)


def train_pgd_mlp(train: Any, eps: float, *, epochs: int = 30, seed: int = 0, progress: bool = False) -> TorchModel:
    """A digits MLP 64-256-256-10 trained with PGD-AT at L-inf ``eps`` (7 steps; ``eps = 0``: standard training
    with the same recipe: AdamW lr 2e-3, batch 64, eps ramped over the first third of the epochs)."""
    from robustlab.defend.train import adversarial_train

    x = train.x
    model = TorchModel(DigitsMLP((1, 8, 8), (256, 256), 10), mean=[float(x.mean())],
                       std=[max(float(x.std()), 1e-3)], num_classes=10)
    adversarial_train(model, train, method="pgd", norm="inf", eps=float(eps), steps=7, epochs=epochs, batch_size=64,
                      lr=2e-3, weight_decay=0.05, warmup_epochs=epochs / 3, seed=seed, progress=progress,
                      optimizer="adamw", schedule="onecycle")
    model.module.eval()
    return model


def _cw_distortion(model: Model, x: torch.Tensor, y: torch.Tensor, setup: Setup) -> tuple[torch.Tensor, float]:
    """Per-sample CW-L2 minimal distortion (0 where misclassified, the CW distance where found, else inf) + seconds."""
    start = time.perf_counter()
    attack = CWL2(eps=1e9, initial_const=1.0, binary_search_steps=setup.cw_search, steps=setup.cw_steps, lr=0.005,
                  abort_early=False)
    d = torch.zeros(len(y), dtype=torch.float64)
    right = model.predict(x) == y
    if bool(right.any()):
        res = attack(model, x[right], y[right], generator=torch_generator(0))
        d[right] = res.extras["distance"].double().cpu()
    return d, time.perf_counter() - start


def _robust_accuracy(model: Model, x: torch.Tensor, y: torch.Tensor, setup: Setup) -> float:
    """APGD-CE then APGD-T (3 targets) on the survivors at L2 ``setup.ra_eps``: fraction still right."""
    g = torch_generator(derive_seed(0, "great-ra"))
    alive = model.predict(x) == y
    for attack in (APGDCE(norm=2, eps=setup.ra_eps, n_iter=setup.apgd_iter),
                   APGDT(norm=2, eps=setup.ra_eps, n_iter=setup.apgd_iter, n_target_classes=3)):
        if not bool(alive.any()):
            break
        idx = alive.nonzero().squeeze(1)
        res = attack(model, x[idx], y[idx], generator=g)
        alive[idx] = model.predict(res.x_adv) == y[idx]
    return float(alive.float().mean())


def _models(setup: Setup, train: Any) -> tuple[dict[str, Model], dict[str, float]]:
    models: dict[str, Model] = {}
    seconds: dict[str, float] = {}
    for eps in setup.train_eps:
        t = time.perf_counter()
        models[f"mlp-pgd{eps:g}"] = train_pgd_mlp(train, eps, epochs=setup.epochs)
        seconds[f"mlp-pgd{eps:g}"] = time.perf_counter() - t
    for name in ZOO_MODELS:
        models[name] = zoo.load(name, quick=setup.quick, progress=False)
    return models, seconds


def _soundness(model: Model, x: torch.Tensor, y: torch.Tensor, setup: Setup) -> dict[str, Any]:
    """Spec test 4: no attack point inside GREAT's radius of the smoothed soft model flips it (beyond MC error)."""
    sigma = 0.25
    keep = model.predict(x) == y
    x, y = x[keep], y[keep]
    m0 = smoothed_margin(smoothed_probabilities(model, x, sigma=sigma, n=setup.sound_noise_cert,
                                                generator=torch_generator(11)), y)
    radius = sigma * SQRT_HALF_PI * m0.clamp_min(0.0)
    smooth = smoothed_soft_model(model, sigma, setup.sound_noise_attack, generator=torch_generator(12),
                                 input_shape=tuple(x.shape[1:]))
    g = torch_generator(13)
    cw = CWL2(eps=1e9, initial_const=1.0, binary_search_steps=max(setup.cw_search - 2, 1),
              steps=max(setup.cw_steps // 4, 10))(smooth, x, y, generator=g)
    pts, xs, ys, ms, rs = [cw.x_adv], [x], [y], [m0], [radius]
    # PGD at the radius of each example: examples grouped by radius level (one PGD run per level)
    levels = torch.quantile(radius, torch.tensor([0.25, 0.5, 0.75], dtype=radius.dtype)).tolist()
    for level in sorted({round(v, 6) for v in levels if v > 0}):
        sel = radius >= level
        pts.append(PGD(norm=2, eps=level, steps=20)(smooth, x[sel], y[sel], generator=g).x_adv)
        xs.append(x[sel])
        ys.append(y[sel])
        ms.append(m0[sel])
        rs.append(radius[sel])
    xa, x0, ya, ma = torch.cat(pts), torch.cat(xs), torch.cat(ys), torch.cat(ms)
    d = (xa - x0).flatten(1).norm(dim=1).double()
    fresh = smoothed_margin(smoothed_probabilities(model, xa, sigma=sigma, n=setup.sound_noise_check,
                                                   generator=torch_generator(14)), ya)
    tol = mc_margin_tolerance(setup.sound_noise_cert, 10, 0.01) + mc_margin_tolerance(setup.sound_noise_check, 10, 0.01)
    inside = d < torch.cat(rs)
    violations = int((fresh[inside] < -tol).sum())
    lipschitz_violations = int((fresh < ma - d / (sigma * SQRT_HALF_PI) - tol).sum())
    cw_d = cw.extras["distance"].double()
    cw_flips = fresh[: len(x)] < 0
    return {"sigma": sigma, "n_samples": len(x), "mean_radius": float(radius.mean()),
            "points_checked": len(xa), "points_inside_radius": int(inside.sum()), "flips_inside_radius": violations,
            "lipschitz_violations": lipschitz_violations, "mc_margin_tolerance": tol,
            "cw_found_fraction": float(torch.isfinite(cw_d).float().mean()),
            "cw_flip_fraction_fresh_noise": float(cw_flips.float().mean()),
            "cw_mean_distance_over_radius": float((cw_d[torch.isfinite(cw_d)] /
                                                   radius[torch.isfinite(cw_d)].clamp_min(1e-9)).mean())
            if bool(torch.isfinite(cw_d).any()) else 0.0}


def reproduce(quick: bool = False) -> Reproduction:
    """Run the reproduction (QUICK: seconds, 3 tiny models, few samples; FULL: a few minutes)."""
    t0 = time.perf_counter()
    setup = QUICK if quick else FULL
    train = load_dataset("digits", split="train", n=setup.train_n, seed=0)
    gen = load_generator("digits-pca-gaussian", quick=quick, progress=False)
    x, y = gen.sample(setup.n_samples, generator=torch_generator(derive_seed(0, "great-samples")))
    models, train_seconds = _models(setup, train)
    names = list(models)
    pgd_names = [n for n in names if n.startswith("mlp-pgd")]
    xa, ya = x[: setup.n_attack], y[: setup.n_attack]

    logits, great_t1, cw_mean, cw_local, ra, t_great, t_cw, cw_found = {}, {}, {}, {}, {}, {}, {}, {}
    for name, model in models.items():
        start = time.perf_counter()
        logits[name] = checked_scores(model, x)
        great_t1[name] = great_from_scores(logits[name], y, calibration="softmax", temperature=1.0)
        t_great[name] = time.perf_counter() - start
        d, t_cw[name] = _cw_distortion(model, xa, ya, setup)
        cw_local[name] = d
        cw_found[name] = float(torch.isfinite(d[d > 0]).float().mean()) if bool((d > 0).any()) else 1.0
        cw_mean[name] = float(d.clamp(max=CW_CAP).mean())
        ra[name] = _robust_accuracy(model, xa, ya, setup)

    # calibration (the code's temperature search) on the pgd-mlps against their mean CW distortion
    cal_args = ([logits[n] for n in pgd_names], y, [cw_mean[n] for n in pgd_names])
    temp, rho_cal = calibrate_temperature(*cal_args, method="sigmoid-softmax")
    try:  # the code also requires GREAT <= the CW bound of every model: reported, not used (see the notes)
        temp_con, rho_con = calibrate_temperature(*cal_args, method="sigmoid-softmax",
                                                  upper_bounds=[cw_mean[n] for n in pgd_names])
    except ConfigError:
        temp_con, rho_con = math.nan, math.nan
    great_cal = {n: great_from_scores(logits[n], y, calibration="sigmoid-softmax", temperature=temp) for n in names}

    def corr(group: list[str], scores: dict[str, Any], ref: dict[str, float]) -> dict[str, float]:
        vals = [scores[n].score if hasattr(scores[n], "score") else scores[n] for n in group]
        return rank_correlation(vals, [ref[n] for n in group])

    zoo_names = [n for n in names if n in ZOO_MODELS]
    c_pgd_cw_cal, c_pgd_cw_raw = corr(pgd_names, great_cal, cw_mean), corr(pgd_names, great_t1, cw_mean)
    c_pgd_ra_cal, c_pgd_ra_raw = corr(pgd_names, great_cal, ra), corr(pgd_names, great_t1, ra)
    c_all_ra_cal, c_all_ra_raw = corr(names, great_cal, ra), corr(names, great_t1, ra)
    c_zoo_ra_cal, c_zoo_ra_raw = corr(zoo_names, great_cal, ra), corr(zoo_names, great_t1, ra)
    c_zoo_cw_cal, c_zoo_cw_raw = corr(zoo_names, great_cal, cw_mean), corr(zoo_names, great_t1, cw_mean)
    vae = load_generator("digits-cvae", quick=quick, progress=False)
    xv, yv = vae.sample(setup.n_samples, generator=torch_generator(derive_seed(0, "great-samples")))
    great_vae = {n: great_from_scores(checked_scores(models[n], xv), yv, calibration="sigmoid-softmax",
                                      temperature=temp) for n in pgd_names}
    c_pgd_cw_vae = corr(pgd_names, great_vae, cw_mean)
    eps_trend = rank_correlation(list(setup.train_eps), [great_cal[n].score for n in pgd_names])["spearman"]
    eps_trend_raw = rank_correlation(list(setup.train_eps), [great_t1[n].score for n in pgd_names])["spearman"]

    c1 = Claim("C1", "GREAT ranks the six PGD-trained MLPs like their mean minimal (CW-L2) distortion: "
               "Spearman >= 0.7 (spec test 2; calibrated GREAT, option 3)", held=c_pgd_cw_cal["spearman"] >= 0.7,
               measured={"spearman_calibrated": c_pgd_cw_cal["spearman"], "kendall_calibrated": c_pgd_cw_cal["kendall"],
                         "spearman_uncalibrated": c_pgd_cw_raw["spearman"], "temperature": temp,
                         "spearman_calibrated_cvae_generator": c_pgd_cw_vae["spearman"],
                         "great_calibrated_cvae_generator": {n: great_vae[n].score for n in pgd_names},
                         "great_calibrated": {n: great_cal[n].score for n in pgd_names},
                         "great_uncalibrated": {n: great_t1[n].score for n in pgd_names},
                         "cw_mean_distortion": {n: cw_mean[n] for n in pgd_names}})
    c2 = Claim("C2", "More PGD training gives a higher GREAT score (monotone trend: Spearman(train eps, GREAT) "
               ">= 0.8, calibrated)", held=eps_trend >= 0.8,
               measured={"spearman_eps_vs_great_calibrated": eps_trend, "spearman_eps_vs_great_uncalibrated":
                         eps_trend_raw, "strictly_increasing_calibrated": bool(np.all(np.diff(
                             [great_cal[n].score for n in pgd_names]) > 0))})
    c3 = Claim("C3", "GREAT's ranking agrees with the attack-based robust-accuracy ranking (APGD L2 eps 0.5) "
               "across all models: Spearman >= 0.6 with calibration (paper: ~0.66 uncalibrated -> ~0.90 calibrated)",
               held=c_all_ra_cal["spearman"] >= 0.6,
               measured={"spearman_all_calibrated": c_all_ra_cal["spearman"],
                         "spearman_all_uncalibrated": c_all_ra_raw["spearman"],
                         "kendall_all_calibrated": c_all_ra_cal["kendall"],
                         "spearman_pgd_calibrated": c_pgd_ra_cal["spearman"],
                         "spearman_pgd_uncalibrated": c_pgd_ra_raw["spearman"],
                         "robust_accuracy": ra, "great_calibrated": {n: great_cal[n].score for n in names},
                         "great_uncalibrated": {n: great_t1[n].score for n in names}})
    c4 = Claim("C4", "The temperature calibrated on the PGD MLPs transfers to the held-out zoo models: their "
               "calibrated Spearman with CW distortion is >= the uncalibrated one",
               held=c_zoo_cw_cal["spearman"] >= c_zoo_cw_raw["spearman"],
               measured={"zoo_spearman_cw_calibrated": c_zoo_cw_cal["spearman"],
                         "zoo_spearman_cw_uncalibrated": c_zoo_cw_raw["spearman"],
                         "zoo_spearman_ra_calibrated": c_zoo_ra_cal["spearman"],
                         "zoo_spearman_ra_uncalibrated": c_zoo_ra_raw["spearman"],
                         "zoo_cw_mean_distortion": {n: cw_mean[n] for n in zoo_names},
                         "calibration_in_sample_spearman": rho_cal,
                         "constrained_search_temperature": 0.0 if math.isnan(temp_con) else temp_con,
                         "constrained_search_spearman": 0.0 if math.isnan(rho_con) else rho_con,
                         "constrained_search_found": not math.isnan(temp_con)})

    # C5: Hoeffding (spec test 3), on the standard MLP, fresh samples per resample
    ref_model = models[pgd_names[0]]
    big_n = 10 * setup.n_samples
    xb, yb = gen.sample(big_n, generator=torch_generator(derive_seed(0, "great-big")))
    g_big = float(local_great_scores(checked_scores(ref_model, xb), yb, calibration="sigmoid-softmax",
                                     temperature=temp).mean())
    gr = torch_generator(derive_seed(0, "great-resamples"))
    xr, yr = gen.sample(setup.hoeffding_resamples * setup.hoeffding_n, generator=gr)
    lr = local_great_scores(checked_scores(ref_model, xr), yr, calibration="sigmoid-softmax", temperature=temp)
    means = lr.view(setup.hoeffding_resamples, setup.hoeffding_n).mean(1)
    eps_h = hoeffding_epsilon(setup.hoeffding_n, 0.05)
    eps_big = hoeffding_epsilon(big_n, 0.05)
    outside = float(((means - g_big).abs() > eps_h + eps_big).float().mean())
    c5 = Claim("C5", f"Hoeffding: GREAT over {setup.hoeffding_resamples} resamples of N={setup.hoeffding_n} stays "
               "within the 95% bound sqrt(pi ln(2/delta) / 4N) of the large-sample value (at most 5% outside)",
               held=outside <= 0.05,
               measured={"epsilon_bound": eps_h, "max_abs_deviation": float((means - g_big).abs().max()),
                         "std_of_resamples": float(means.std()), "fraction_outside": outside,
                         "great_large_sample": g_big, "large_n": big_n})

    # C6: soundness on the smoothed soft classifier (spec test 4)
    sound = _soundness(models["digits-mlp"], x[: setup.n_sound], y[: setup.n_sound], setup)
    c6 = Claim("C6", "Soundness: on the Gaussian-smoothed soft digits-mlp (sigma 0.25) no CW-L2 / PGD-L2 point "
               "inside sigma*sqrt(pi/2)*(F_y - max F_k) flips it beyond Monte-Carlo tolerance",
               held=sound["flips_inside_radius"] == 0 and sound["lipschitz_violations"] == 0, measured=sound)

    # C7: GREAT stays below the attack distortion (the paper's lower-bound check on raw models)
    below_raw = {n: great_t1[n].score <= cw_mean[n] for n in names}
    frac_local = {}
    for n in names:
        d = cw_local[n]
        g_local = great_t1[n].local[: setup.n_attack]
        frac_local[n] = float((g_local <= torch.where(torch.isfinite(d), d, torch.full_like(d, math.inf))).float()
                              .mean())
    c7 = Claim("C7", "Uncalibrated GREAT (softmax) lies below the mean CW-L2 distortion of every model (the "
               "paper's empirical lower-bound check; not a guarantee for non-smoothed models)",
               held=all(below_raw.values()),
               measured={"great_uncalibrated": {n: great_t1[n].score for n in names},
                         "cw_mean_distortion": cw_mean, "fraction_samples_local_below_cw": frac_local,
                         "cw_found_fraction": cw_found})

    # C8: speed
    per_great = sum(t_great.values()) / (len(names) * setup.n_samples)
    per_cw = sum(t_cw.values()) / (len(names) * setup.n_attack)
    speedup = per_cw / max(per_great, 1e-12)
    c8 = Claim("C8", "GREAT is much cheaper than the attack it replaces: >= 100x less time per sample than CW-L2",
               held=speedup >= 100,
               measured={"great_seconds_per_sample": per_great, "cw_seconds_per_sample": per_cw, "speedup": speedup,
                         "great_seconds_total": sum(t_great.values()), "cw_seconds_total": sum(t_cw.values())})

    notes = [
        "CPU setup: digits 8x8 and a class-conditional Gaussian in PCA-20 space (the spec's CPU generator) instead "
        "of CIFAR-10 / ImageNet with StyleGAN2 / BigGAN; 6 PGD-trained MLPs + 4 zoo models instead of 17 "
        f"RobustBench models; N = {setup.n_samples} samples.",
        f"calibration: option 3 softmax(sigmoid(z)/T); T searched on the pgd-mlps vs their CW distortion "
        f"(T = {temp:.4g}, in-sample like the paper), then applied unchanged to the zoo models; the paper's CIFAR "
        "T = 0.00742 is not used. The code's extra constraint GREAT <= mean CW distortion is run too and reported "
        "in C4 (its T and Spearman) but not imposed: digits' CW distortions (~0.4-0.9) lie below sqrt(pi/2) ~ "
        "1.25, the scale of GREAT (the sigma = 1 smoothing radius), so it rules out the small temperatures.",
        "C1 also reports the calibrated ranking on samples of a second generator, robustlab's conditional VAE "
        "(digits-cvae), with the same T (attack references from the PCA-Gaussian samples: model-level numbers).",
        f"attack references on the first {setup.n_attack} generated samples: CW-L2 ({setup.cw_search} x "
        f"{setup.cw_steps} steps, lr 0.005, c0 = 1) and APGD-CE + APGD-T (3 targets) at L2 eps {setup.ra_eps} "
        "instead of full AutoAttack.",
        "accuracy of each model on the generated samples: "
        + ", ".join(f"{n} {great_t1[n].accuracy:.2f}" for n in names) + ".",
        "training seconds of the pgd-mlps: " + ", ".join(f"{n} {s:.1f}" for n, s in train_seconds.items()) + ".",
    ]
    if quick:
        notes.append("QUICK run: 3 tiny models, quick generator and zoo variants, few samples; mechanics only.")
    return Reproduction(key=KEY, title=TITLE, claims=[c1, c2, c3, c4, c5, c6, c7, c8],
                        seconds=time.perf_counter() - t0, notes=notes)
