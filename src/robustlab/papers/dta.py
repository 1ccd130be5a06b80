"""Paper 41 (dta): Downstream Transfer Attack on models fine-tuned from a pre-trained ViT.

Zheng, Ma, Huang, Yin, Zhang, Wu & Jiang, "Downstream Transfer Attack: Adversarial Attacks on
Downstream Models with Pre-trained Vision Transformers" (arXiv 2408.01705, 2024). No official code:
the attack is robustlab's reconstruction (:mod:`robustlab.attacks.dta`).

Small CPU version: tiny ViTs (8x8 digits, 2x2 patches -> 16 tokens + a class token, width 32,
4 blocks) pretrained as masked autoencoders on digits 0-4 (3 pretraining seeds: the per-layer results
vary a lot from one encoder to the next); per encoder, downstream classifiers for digits 5-9 by linear
probing and by full fine-tuning (2 seeds each). DTA crafts with the pre-trained encoder only (layer
exploration on 64 held-out digits 0-4) and the examples are handed to that encoder's downstream models.
ASR = share of the examples a model classifies correctly that it misclassifies after the attack,
averaged over the downstream models and the encoders.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from robustlab.attacks.dta import DTA, final_cosine
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.core.threat import LpBall, lp_norm
from robustlab.data import load_dataset
from robustlab.data.base import Dataset
from robustlab.models.training import evaluate_accuracy
from robustlab.models.vit import TinyViT, ViTClassifier, finetune, pretrain_mae
from robustlab.papers.base import Claim, Reproduction

__all__ = ["FULL", "QUICK", "Setup", "reproduce"]

KEY = "dta"
TITLE = ("Downstream Transfer Attack: Adversarial Attacks on Downstream Models with Pre-trained "
         "Vision Transformers")
PRE_CLASSES, DOWN_CLASSES = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
NONUNIFORM_RATIO = 1.5  # C2: the most vulnerable layer disrupts the output >= 1.5x the least
NOISE_FACTOR, NOISE_MARGIN = 3.0, 0.20  # C4: ASR >= 3x noise ASR, or >= noise ASR + 20 points


@dataclass(frozen=True)
class Setup:
    """Sizes of one run (the full run and the seconds-long smoke run differ only here)."""

    pre_epochs: int = 100
    n_pre: int | None = None  # pretraining images (None = all digits 0-4 of train + val)
    lin_epochs: int = 30
    full_epochs: int = 30
    n_down: int | None = None  # downstream training images (None = all digits 5-9 of train)
    encoder_seeds: tuple[int, ...] = (0, 1, 2)  # MAE pretraining runs
    seeds: tuple[int, ...] = (0, 1)  # downstream seeds per fine-tuning mode and encoder
    n_test: int | None = None  # attacked images (None = all digits 5-9 of test)
    n_probe: int = 64
    eps: float = 0.1
    steps: int = 20
    progress: bool = True


FULL = Setup()
QUICK = Setup(pre_epochs=3, n_pre=120, lin_epochs=2, full_epochs=2, n_down=100, seeds=(0,), n_test=40,
              n_probe=12, steps=4, encoder_seeds=(0,), progress=False)


def _classes(split: str, classes: tuple[int, ...], relabel: bool, n: int | None = None) -> Dataset:
    """Digits of ``classes`` from ``split``; labels remapped to 0..k-1 when ``relabel``."""
    ds = load_dataset("digits", split=split)
    keep = torch.isin(ds.y, torch.tensor(classes)).nonzero().squeeze(1)
    ds = ds.subset(keep)
    if n is not None and n < len(ds):
        ds = ds.subset(torch.randperm(len(ds), generator=torch_generator(derive_seed(0, KEY, split, n)))[:n]
                       .sort().values)
    y = ds.y - classes[0] if relabel else ds.y
    names = [str(c) for c in classes] if relabel else ds.class_names
    return Dataset(ds.x, y, class_names=names, name=f"digits-{split}-{classes[0]}to{classes[-1]}",
                   source=ds.source, ids=ds.ids)


@torch.no_grad()
def _asr(models: list[ViTClassifier], x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per model: share of clean-correct examples misclassified at ``x_adv``."""
    out = []
    for m in models:
        correct = m(x).argmax(1) == y
        broken = (m(x_adv).argmax(1) != y) & correct
        out.append(float(broken.sum()) / max(int(correct.sum()), 1))
    return out


def _mean(v: list[float]) -> float:
    return sum(v) / max(len(v), 1)


def reproduce(quick: bool = False) -> Reproduction:
    """Run the small DTA reproduction (``quick``: tiny data and epochs, seconds) and check C1-C4.

    Runs single-threaded: the tiny ViT's operations (64 x 17 tokens x width 32) are too small for
    intra-op threads, and 2 threads measured 15-30x slower on a busy 2-core machine.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _reproduce(QUICK if quick else FULL, quick)
    finally:
        torch.set_num_threads(previous)


@dataclass
class _Data:
    pre: Dataset
    probe: torch.Tensor
    down_train: Dataset
    down_test: Dataset


def _data(cfg: Setup) -> _Data:
    """Pretrain on digits 0-4 (train + val), downstream digits 5-9, probe = held-out digits 0-4 (test)."""
    pre_tr, pre_va = _classes("train", PRE_CLASSES, False), _classes("val", PRE_CLASSES, False)
    pre = Dataset(torch.cat([pre_tr.x, pre_va.x]), torch.cat([pre_tr.y, pre_va.y]), name="digits-0to4")
    if cfg.n_pre is not None:
        pre = pre.subset(torch.arange(min(cfg.n_pre, len(pre))))
    return _Data(pre, _classes("test", PRE_CLASSES, False, cfg.n_probe).x,
                 _classes("train", DOWN_CLASSES, True, cfg.n_down), _classes("test", DOWN_CLASSES, True, cfg.n_test))


def _one_encoder(cfg: Setup, data: _Data, enc_seed: int) -> dict[str, Any]:
    """Pretrain one MAE encoder, fine-tune its downstream models, explore its layers, attack every layer."""
    x, y = data.down_test.x, data.down_test.y
    mean, std = float(data.pre.x.mean()), float(data.pre.x.std())
    encoder = TinyViT(in_shape=(1, 8, 8), patch=2, dim=32, depth=4, heads=4, mean=mean, std=std)
    mae = pretrain_mae(encoder, data.pre, epochs=cfg.pre_epochs, seed=derive_seed(enc_seed, KEY, "mae"),
                       progress=cfg.progress)
    models, modes, accs = [], [], []
    for mode, epochs in (("linear", cfg.lin_epochs), ("full", cfg.full_epochs)):
        for s in cfg.seeds:
            m = finetune(encoder, data.down_train, mode=mode, epochs=epochs,
                         seed=derive_seed(s, KEY, enc_seed, mode), progress=cfg.progress)
            models.append(m)
            modes.append(mode)
            accs.append(evaluate_accuracy(m, data.down_test))
    # the attacker: the public encoder only (exploration on the probe, then one craft per layer)
    attack = DTA(encoder, eps=cfg.eps, steps=cfg.steps, layer="auto")
    ex = attack.explore(data.probe, generator=torch_generator(derive_seed(enc_seed, KEY, "explore")))[0]
    out: dict[str, Any] = {"scores": ex.scores.tolist(), "l_star": ex.best, "accs": list(zip(modes, accs)),
                           "mae": (mae["loss"][0], mae["loss"][-1]), "asr": [], "asr_lin": [], "asr_full": [],
                           "final_cos": [], "crafted": []}
    for lay in range(encoder.num_layers):
        xa, _ = attack.craft(x, generator=torch_generator(derive_seed(enc_seed, KEY, "craft", lay)), layers=[lay])
        per_model = _asr(models, xa, x, y)
        out["asr"].append(_mean(per_model))
        out["asr_lin"].append(_mean([a for a, md in zip(per_model, modes) if md == "linear"]))
        out["asr_full"].append(_mean([a for a, md in zip(per_model, modes) if md == "full"]))
        out["final_cos"].append(float(final_cosine(encoder, xa, x).mean()))
        out["crafted"].append(xa)
    signs = torch.randint(0, 2, x.shape, generator=torch_generator(derive_seed(enc_seed, KEY, "noise"))) * 2 - 1
    x_noise = (x + cfg.eps * signs.to(x.dtype)).clamp(0.0, 1.0)
    out["asr_noise"] = _mean(_asr(models, x_noise, x, y))
    out["crafted"].append(x_noise)
    return out


def _reproduce(cfg: Setup, quick: bool) -> Reproduction:
    t0 = time.perf_counter()
    data = _data(cfg)
    x = data.down_test.x
    runs = [_one_encoder(cfg, data, e) for e in cfg.encoder_seeds]
    depth = len(runs[0]["scores"])

    # C1: the threat model, on every crafted example of every encoder and layer, and the noise
    threat = LpBall(norm="inf", eps=cfg.eps)
    crafted = [xa for r in runs for xa in r["crafted"]]
    inside = all(bool(threat.contains(x, xa).all()) for xa in crafted)
    linf = max(float(lp_norm(xa - x, "inf").max()) for xa in crafted)
    lo, hi = min(float(xa.min()) for xa in crafted), max(float(xa.max()) for xa in crafted)
    c1 = Claim("C1", f"every DTA example (all {depth} layers, all encoders) and noise example satisfies "
               "||x'-x||_inf <= eps and x' in [0, 1]", inside and linf <= cfg.eps + 1e-6 and lo >= 0.0 and hi <= 1.0,
               {"eps": cfg.eps, "max_linf": linf, "min_pixel": lo, "max_pixel": hi,
                "n_checked": sum(len(xa) for xa in crafted)})
    # C2: per encoder, max / min disruption (1 - score) over layers
    ratios = []
    for r in runs:
        disrupt = [1.0 - s for s in r["scores"]]
        ratios.append(max(disrupt) / max(min(disrupt), 1e-12))
    mean_scores = [_mean([r["scores"][i] for r in runs]) for i in range(depth)]
    c2 = Claim("C2", f"the layer-vulnerability profile is non-uniform: for every pre-trained encoder, attacking "
               f"its most vulnerable layer disrupts the last-layer output (1 - mean token cosine, probe set) "
               f">= {NONUNIFORM_RATIO}x as much as attacking its least vulnerable one", min(ratios) >= NONUNIFORM_RATIO,
               {**{f"mean_score_l{i}": s for i, s in enumerate(mean_scores)}, "min_disruption_ratio": min(ratios),
                "max_disruption_ratio": max(ratios), "encoders": len(runs)})
    # C3 / C4: ASR averaged over encoders (each at its own l*) and their downstream models
    asr_star = _mean([r["asr"][r["l_star"]] for r in runs])
    asr_last = _mean([r["asr"][-1] for r in runs])
    asr_rand = _mean([_mean(r["asr"]) for r in runs])
    asr_noise = _mean([r["asr_noise"] for r in runs])
    asr_layer = [_mean([r["asr"][i] for r in runs]) for i in range(depth)]
    c3 = Claim("C3", "attacking l* gives a higher downstream ASR (mean over encoders and their linear-probe and "
               "fine-tuned models) than attacking the last layer and than a uniformly random layer (expected ASR)",
               asr_star > asr_last and asr_star > asr_rand,
               {"asr_l_star": asr_star, "asr_last": asr_last, "asr_random_layer": asr_rand,
                **{f"asr_l{i}": a for i, a in enumerate(asr_layer)},
                "l_star_is_last": sum(r["l_star"] == depth - 1 for r in runs),
                "l_star_is_best_layer": sum(r["asr"][r["l_star"]] == max(r["asr"]) for r in runs),
                "encoders": len(runs)})
    c4 = Claim("C4", f"DTA (at l*) has a far higher downstream ASR than random ±eps sign noise "
               f"(>= {NOISE_FACTOR:g}x, or >= +{NOISE_MARGIN:.0%} points)",
               asr_star >= NOISE_FACTOR * asr_noise or asr_star >= asr_noise + NOISE_MARGIN,
               {"asr_dta": asr_star, "asr_noise": asr_noise, "ratio": asr_star / max(asr_noise, 1e-12),
                "margin": asr_star - asr_noise})
    return Reproduction(key=KEY, title=TITLE, claims=[c1, c2, c3, c4], seconds=time.perf_counter() - t0,
                        notes=_notes(cfg, data, runs, quick))


def _notes(cfg: Setup, data: _Data, runs: list[dict[str, Any]], quick: bool) -> list[str]:
    fmt = ", ".join
    notes = [
        "small version: tiny ViT (8x8 digits, 2x2 patches -> 16 tokens + class token, width 32, 4 blocks, "
        f"4 heads) instead of ViT-B/16 on 224x224 ImageNet; {len(runs)} MAE encoders (pretraining seeds) on "
        f"{len(data.pre)} digits 0-4 ({cfg.pre_epochs} epochs, 75% masking, 1-block decoder, raw-pixel target) "
        "instead of public ImageNet MAE/SimCLR checkpoints; no SimCLR encoder",
        f"downstream task: digits 5-9 ({len(data.down_train)} training images) instead of CIFAR/STL/... "
        f"datasets; per encoder, linear probing and full fine-tuning only ({len(cfg.seeds)} seeds each, AdamW, "
        "no augmentation), no parameter-efficient tuning (prompt / adapter / LoRA), no layer-wise lr decay",
        f"eps={cfg.eps} on [0, 1] pixels (digits have 17 grey levels; the paper uses 8/255), {cfg.steps} "
        f"sign steps of eps/4 from a random start; {len(data.down_test)} attacked images of digits 5-9",
        f"layer exploration on {len(data.probe)} held-out digits 0-4 (pretraining domain, no downstream data); "
        "score = mean token cosine of the last-layer output (reconstructed criterion, see "
        "robustlab.attacks.dta); 'random layer' = the expected ASR of a uniformly drawn layer; ASR = share "
        "of clean-correct test images misclassified, averaged over downstream models and encoders",
        "not run here: encoder ensembles (implemented: DTA(encoder=[...])), adversarial training with DTA "
        "examples as a defence; run single-threaded (tiny tensors)",
    ]
    for i, r in enumerate(runs):
        notes.append(
            f"encoder {i}: MAE loss {r['mae'][0]:.3f} -> {r['mae'][1]:.3f}; layer scores "
            f"{fmt(f'{s:.4f}' for s in r['scores'])} -> l*={r['l_star']}; ASR per layer linear probe "
            f"{fmt(f'{a:.3f}' for a in r['asr_lin'])}, full fine-tune {fmt(f'{a:.3f}' for a in r['asr_full'])}; "
            f"noise ASR {r['asr_noise']:.3f}; clean accuracy " + fmt(f"{m}:{a:.3f}" for m, a in r["accs"]))
    if quick:
        notes.insert(0, "QUICK smoke mode: tiny data and epochs, claims are not meaningful here")
    return notes
