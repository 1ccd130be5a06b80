"""Paper 13 (detection-shift): object detectors under natural style shifts, and their effective robustness.

Mao, Chen, Gu, Duan, Xue, Wang, Zhu, Dai, Qiao & Liu, "COCO-O: A Benchmark for Object Detectors under
Natural Distribution Shifts" (ICCV 2023). COCO-O re-collects COCO's classes in six natural domains
(sketch, cartoon, painting, weather, handmake, tattoo) and scores a detector by the mean over domains of
COCO mAP@[.5:.95], ``R``; the relative drop is ``1 − R / mAP_clean`` (Faster R-CNN R50: 55.7 %);
effective robustness fits ``y = a·x + b`` (mAP points) over classic detectors (x = clean mAP, y = R) and
``ER = y − (a·x + b)``. Findings: large drops, classic detectors lie on one line, detectors trained on
more diverse data lie above it, and the backbone matters most for robustness.

CPU version (differences from the paper, also in the reproduction's notes):

* data: :mod:`robustlab.data.scenes`, 64 px ShapeWorld scenes with 1 .. 4 shapes of 8 classes, exact
  boxes (COCO: 80 classes of real photos); the six domains are the procedural stand-ins of
  :mod:`robustlab.transforms.styles` (sketch, cartoon, painting, weather = fog / snow, handmade =
  elastic warp, tattoo) applied to the clean test scenes at severity 3, boxes unchanged;
* detectors: :class:`robustlab.models.detection.CenterNet` (a tiny CenterNet, trained from scratch in
  seconds) instead of 100+ COCO detectors; the baseline family varies backbone width, head width,
  training-set size and epochs; mAP by :mod:`robustlab.evaluate.detection` (the COCO algorithm);
* "more diverse data" (COCO-O's foundation detectors) are two detectors (1,000 and 2,000 training
  scenes) trained with a diverse photometric augmentation pool (texture overlay, Gaussian noise, blur,
  contrast, greyscale) that contains none of the six test styles;
* the line is fitted with :func:`robustlab.evaluate.effective.fit_baseline` on the ``linear`` scale
  (COCO-O's fit in mAP points);
* "backbone vs head" (C4) compares the spread of R over backbone widths 8 / 16 / 32 (head fixed) with
  the spread over head widths 8 / 32 / 96 (backbone fixed), at equal data and epochs; the spread over
  epochs (5 vs 10) is reported beside it.

Full run: about 2.5 min of CPU on one thread (10 detectors, ~110k image passes); quick: ~8 s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from robustlab.core.rng import derive_seed
from robustlab.data.scenes import SceneDataset, SceneWorld
from robustlab.evaluate.detection import evaluate_detections
from robustlab.evaluate.effective import effective_robustness, fit_baseline
from robustlab.models.detection import CenterNet, DetectorConfig, train_detector
from robustlab.papers.base import Claim, Reproduction
from robustlab.transforms.image import Contrast, GaussianBlur, GaussianNoise
from robustlab.transforms.styles import StyleTexture, style_images

__all__ = ["DOMAINS", "FULL", "QUICK", "DetectorSpec", "Setup", "diverse_augment", "evaluate_domains", "reproduce"]

KEY = "detection-shift"
TITLE = "COCO-O: A Benchmark for Object Detectors under Natural Distribution Shifts"
DOMAINS: tuple[str, ...] = ("sketch", "cartoon", "painting", "weather", "handmade", "tattoo")
PAPER_DROP = 0.557  # Faster R-CNN R50, COCO -> COCO-O (≈37.4 -> ≈16.6 mAP)
MIN_DROP = 0.30  # C1: "large" = the family loses at least 30 % of its clean mAP on average
MIN_R2 = 0.80  # C2: the family lies close to its line


@dataclass(frozen=True)
class DetectorSpec:
    """One detector of the study: backbone width, head width, training-set size, epochs, augmentation."""

    name: str
    width: int = 16
    head_width: int = 32
    n_train: int = 1000
    epochs: int = 10
    augment: bool = False


@dataclass(frozen=True)
class Setup:
    """Sizes of one run (the full run and the seconds-long smoke run differ only here)."""

    family: tuple[DetectorSpec, ...]
    robust: tuple[DetectorSpec, ...]
    backbone_series: tuple[str, ...]  # family members that differ only in backbone width
    head_series: tuple[str, ...]  # family members that differ only in head width
    epoch_series: tuple[str, ...] = ()  # family members that differ only in epochs (reported, not judged)
    n_test: int = 300
    severity: float = 3.0
    lr: float = 5e-3
    batch_size: int = 32
    seed: int = 0


FULL = Setup(
    family=(DetectorSpec("w8", width=8), DetectorSpec("w16", width=16), DetectorSpec("w32", width=32),
            DetectorSpec("w16-h8", head_width=8), DetectorSpec("w16-h96", head_width=96),
            DetectorSpec("w16-n2000", n_train=2000), DetectorSpec("w16-n2000-e5", n_train=2000, epochs=5)),
    robust=(DetectorSpec("w16-diverse", augment=True), DetectorSpec("w16-n2000-diverse", n_train=2000, augment=True)),
    backbone_series=("w8", "w16", "w32"), head_series=("w16-h8", "w16", "w16-h96"),
    epoch_series=("w16-n2000-e5", "w16-n2000"))
QUICK = Setup(
    family=(DetectorSpec("w4", width=4, head_width=8, n_train=160, epochs=3),
            DetectorSpec("w8", width=8, head_width=8, n_train=160, epochs=3),
            DetectorSpec("w8-h16", width=8, head_width=16, n_train=160, epochs=3),
            DetectorSpec("w8-n240", width=8, head_width=8, n_train=240, epochs=3),
            DetectorSpec("w8-e2", width=8, head_width=8, n_train=160, epochs=2)),
    robust=(DetectorSpec("w8-diverse", width=8, head_width=8, n_train=240, epochs=3, augment=True),),
    backbone_series=("w4", "w8"), head_series=("w8", "w8-h16"), epoch_series=("w8-e2", "w8"), n_test=40,
    batch_size=16, lr=1e-2)


def diverse_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per image, one of: texture overlay, Gaussian noise, Gaussian blur, low contrast, greyscale, or nothing.

    Severity uniform in [1, 5] per batch and kind; none of these is one of the six test styles.
    """
    kinds = torch.randint(0, 6, (len(x),), generator=generator)
    sev = 1 + 4 * torch.rand(5, generator=generator)
    out = x.clone()
    ops = (StyleTexture(), GaussianNoise(), GaussianBlur(), Contrast())
    for k, op in enumerate(ops):
        idx = (kinds == k).nonzero().flatten()
        if idx.numel():
            out[idx] = op(x[idx], severity=float(sev[k]), generator=generator)
    grey = (kinds == 4).nonzero().flatten()
    if grey.numel():
        luma = 0.299 * x[grey, :1] + 0.587 * x[grey, 1:2] + 0.114 * x[grey, 2:]
        out[grey] = luma.expand(-1, 3, -1, -1)
    return out


def evaluate_domains(model: CenterNet, domains: dict[str, SceneDataset]) -> dict[str, dict[str, float]]:
    """mAP@[.5:.95] and mAP@0.5 of ``model`` on each named scene set."""
    out = {}
    for name, ds in domains.items():
        m = evaluate_detections(model.predict(ds.x), ds.boxes, ds.labels, num_classes=ds.num_classes)
        out[name] = {"map": m.map, "map50": m.map50}
    return out


def _train(spec: DetectorSpec, train: SceneDataset, setup: Setup, progress: bool) -> CenterNet:
    model = CenterNet(DetectorConfig(num_classes=train.num_classes, width=spec.width, head_width=spec.head_width))
    sub = train.subset(slice(0, spec.n_train))  # nested: larger sets contain the smaller ones
    train_detector(model, sub.x, sub.boxes, sub.labels, epochs=spec.epochs, batch_size=setup.batch_size,
                   lr=setup.lr, seed=derive_seed(setup.seed, KEY, spec.name),
                   augment=diverse_augment if spec.augment else None, progress=progress, description=spec.name)
    return model


def _spread(rows: dict[str, dict], names: tuple[str, ...], key: str) -> float:
    vals = [rows[n][key] for n in names]
    return float(max(vals) - min(vals))


def reproduce(quick: bool = False, progress: bool = True) -> Reproduction:
    """Run the CPU version (see the module docstring); ``quick`` is a seconds-long smoke run."""
    start = time.perf_counter()
    setup = QUICK if quick else FULL
    world = SceneWorld()
    n_train = max(s.n_train for s in setup.family + setup.robust)
    train = world.generate(n_train, seed=derive_seed(setup.seed, KEY, "train"))
    clean = world.generate(setup.n_test, seed=derive_seed(setup.seed, KEY, "test"))
    domains = {"clean": clean}
    for d in DOMAINS:
        x = style_images(clean.x, d, setup.severity, seed=derive_seed(setup.seed, KEY, "style", d))
        domains[d] = clean.with_images(x, name=f"scenes+{d}", style=[d] * len(clean))

    rows: dict[str, dict] = {}
    for spec in setup.family + setup.robust:
        model = _train(spec, train, setup, progress)
        res = evaluate_domains(model, domains)
        r = float(np.mean([res[d]["map"] for d in DOMAINS]))
        rows[spec.name] = {"clean_map": res["clean"]["map"], "clean_map50": res["clean"]["map50"], "R": r,
                           "R50": float(np.mean([res[d]["map50"] for d in DOMAINS])),
                           "drop": 1.0 - r / res["clean"]["map"] if res["clean"]["map"] > 0 else 0.0,
                           "domains": {d: round(res[d]["map"], 4) for d in DOMAINS},
                           "params": sum(p.numel() for p in model.parameters()), "augment": spec.augment}

    fam = [s.name for s in setup.family]
    x = np.array([rows[n]["clean_map"] for n in fam])
    y = np.array([rows[n]["R"] for n in fam])
    fit = fit_baseline(x, y, scale="linear")
    resid = y - (fit.slope * x + fit.intercept)
    for n in rows:
        rows[n]["ER"] = float(effective_robustness(fit, rows[n]["clean_map"], rows[n]["R"]))
    table = {n: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for n, r in rows.items()}
    domain_mean = {d: round(float(np.mean([rows[n]["domains"][d] for n in fam])), 4) for d in DOMAINS}

    drops = np.array([rows[n]["drop"] for n in fam])
    c1 = Claim("C1", "Detectors lose a large fraction of their mAP under the natural shifts (relative drop "
               f"1 - R/mAP_clean >= {MIN_DROP:.0%} on average over the baseline family; paper: 55.7 % for "
               "Faster R-CNN)",
               bool(np.isfinite(drops).all() and drops.mean() >= MIN_DROP and (drops > 0).all()),
               {"mean_relative_drop": round(float(drops.mean()), 4), "min_relative_drop": round(float(drops.min()), 4),
                "paper_faster_rcnn_drop": PAPER_DROP, "family_mean_map_per_domain": domain_mean,
                "family_mean_clean_map": round(float(x.mean()), 4), "family_mean_R": round(float(y.mean()), 4)})
    c2 = Claim("C2", f"The baseline detectors lie close to one line R = a·mAP_clean + b (R^2 >= {MIN_R2}; OLS "
               "residuals sum to 0)",
               bool(np.isfinite(fit.r2) and fit.r2 >= MIN_R2 and abs(resid.sum()) < 1e-9),
               {"slope": round(fit.slope, 4), "intercept": round(fit.intercept, 4), "r2": round(fit.r2, 4),
                "n_detectors": len(fam), "residual_sum": float(resid.sum()),
                "max_abs_residual": round(float(np.abs(resid).max()), 4),
                "paper_slope_approx": 0.45, "paper_intercept_approx": 0.0})
    band = float(np.abs(resid).max())
    rob = [s.name for s in setup.robust]
    ers = {n: round(rows[n]["ER"], 4) for n in rob}
    c3 = Claim("C3", "Detectors trained on more diverse data (augmentations disjoint from the test styles) lie "
               "above the family's line: ER > 0 and beyond the family's largest residual, for each of them",
               all(rows[n]["ER"] > 0 and rows[n]["ER"] > band for n in rob),
               {"effective_robustness": ers, "family_max_abs_residual": round(band, 4),
                "clean_map": {n: round(rows[n]["clean_map"], 4) for n in rob},
                "R": {n: round(rows[n]["R"], 4) for n in rob}})
    back, head = _spread(rows, setup.backbone_series, "R"), _spread(rows, setup.head_series, "R")
    c4 = Claim("C4", "The backbone matters more than the head: R varies more over backbone widths (head fixed) "
               "than over head widths (backbone fixed), same data and epochs",
               back > head,
               {"R_spread_backbone": round(back, 4), "R_spread_head": round(head, 4),
                "backbone_series": {n: round(rows[n]["R"], 4) for n in setup.backbone_series},
                "head_series": {n: round(rows[n]["R"], 4) for n in setup.head_series},
                "params": {n: rows[n]["params"] for n in dict.fromkeys(setup.backbone_series + setup.head_series)},
                "ER_spread_backbone": round(_spread(rows, setup.backbone_series, "ER"), 4),
                "ER_spread_head": round(_spread(rows, setup.head_series, "ER"), 4),
                "R_spread_epochs": round(_spread(rows, setup.epoch_series, "R"), 4) if setup.epoch_series else None})
    c1.measured["detectors"] = table
    notes = [
        "CPU version: 64 px ShapeWorld scenes (1-4 shapes of 8 classes, exact boxes) instead of COCO; the six "
        f"COCO-O domains are robustlab's procedural styles at severity {setup.severity:g} (boxes unchanged).",
        "Detectors: a tiny CenterNet (stride 4, shared head) trained from scratch; the family varies backbone "
        "width, head width, training-set size and epochs instead of 100+ COCO detectors.",
        "'More diverse data' (the paper's foundation detectors) is a diverse augmentation pool (texture overlay, "
        "noise, blur, contrast, greyscale) that excludes the six test styles.",
        "Effective robustness: robustlab.evaluate.effective.fit_baseline(scale='linear'), i.e. COCO-O's linear "
        "fit in mAP points; mAP by robustlab.evaluate.detection (the COCO algorithm without crowd/area ranges).",
        f"Thresholds fixed before measuring: C1 mean drop >= {MIN_DROP:.0%}, C2 R^2 >= {MIN_R2}.",
    ]
    if quick:
        notes.append("quick run: tiny detectors and 40 test scenes; claims are not meaningful at this size")
    return Reproduction(KEY, TITLE, [c1, c2, c3, c4], time.perf_counter() - start, notes)
