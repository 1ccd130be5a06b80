"""Reproduction of "Efficient and Transferable Adversarial Examples from Bayesian Neural Networks".

Gubri, Cordy, Papadakis & Le Traon, UAI 2022 (official code: Framartin/transferable-bnn-adv-ex). A small
CPU version on scikit-learn digits: surrogates at matched training cost -- one DNN, a deep ensemble of
3 DNNs, and cSGLD (3 cycles x 3 samples in 1.5 DNN budgets) -- attack 5 independently trained targets
(other seeds and architectures) with I-FGSM "light" (one surrogate member per iteration); the claims
compare transfer rates. ``robustlab reproduce bayesian-transfer`` runs it (~1-3 minutes on 2 cores).
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from robustlab.attacks.transfer import TransferAttack, surrogate_scores
from robustlab.core.model import Model, TorchModel
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.core.threat import lp_norm
from robustlab.data import load_dataset
from robustlab.models.architectures import DigitsCNN, DigitsMLP
from robustlab.models.posterior import CSGLDConfig, sample_csgld
from robustlab.models.training import evaluate_accuracy, train_classifier
from robustlab.papers.base import Claim, Reproduction

__all__ = ["FULL", "QUICK", "Setup", "reproduce"]

KEY = "bayesian-transfer"
TITLE = "Efficient and Transferable Adversarial Examples from Bayesian Neural Networks"

#: the noise temperature the reference code uses on CIFAR-10 (its noise ``sqrt(2 lr)/n_batches`` is
#: ``T = batch_size**2 / N = 64**2 / 50000``); kept fixed here rather than rescaled to digits' small N
REFERENCE_TEMPERATURE = 64 ** 2 / 50_000


@dataclass(frozen=True)
class Setup:
    """The sizes of one run (``FULL`` or ``QUICK``).

    DNNs (surrogates and targets) follow the reference's recipe (Adam, lr 0.01, decayed, ~no weight
    decay: ``train.py ... Adam --lr 0.01 --lr-decay 75 --prior-sigma 100``) with a cosine decay in
    place of the step decay; cSGLD follows ``sse_mcmc_train.py`` (SGD, lr 0.5, wd 5e-4, no momentum).
    """

    train_n: int | None
    test_n: int | None
    dnn_epochs: int
    cycles: int
    samples_per_cycle: int
    eps_grid: tuple[float, ...]
    steps: int
    full_mode_eps: float = 0.2
    ensemble_size: int = 3
    batch_size: int = 64
    dnn_lr: float = 0.01
    dnn_weight_decay: float = 0.0
    csgld_lr: float = 0.5
    csgld_weight_decay: float = 5e-4

    @property
    def cycle_epochs(self) -> int:
        """cSGLD epochs per cycle: the cycles together cost 1.5 DNN trainings."""
        return max(round(1.5 * self.dnn_epochs / self.cycles), self.samples_per_cycle)


FULL = Setup(train_n=None, test_n=None, dnn_epochs=40, cycles=3, samples_per_cycle=3,
             eps_grid=(0.1, 0.15, 0.2, 0.25, 0.3), steps=50)
QUICK = Setup(train_n=300, test_n=100, dnn_epochs=4, cycles=3, samples_per_cycle=2, eps_grid=(0.1, 0.3), steps=10)

#: (name, architecture factory) of the targets: other seeds and other architectures than the surrogates
TARGETS: list[tuple[str, Callable[[], nn.Module]]] = [
    ("cnn-a", DigitsCNN),
    ("cnn-b", DigitsCNN),
    ("cnn-narrow", lambda: DigitsCNN(channels=(16, 32, 32), hidden=64)),
    ("mlp-256x2", DigitsMLP),
    ("mlp-512", lambda: DigitsMLP(hidden=(512,))),
]


def _transfer(x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor, targets: dict[str, Model]) -> dict[str, float]:
    """Per target: the share of adversarial examples it misclassifies, among the points it gets right."""
    out = {}
    with torch.no_grad():
        for name, t in targets.items():
            ok = t(x).argmax(1) == y
            fooled = (t(x_adv).argmax(1) != y) & ok
            out[name] = float(fooled.sum()) / max(int(ok.sum()), 1)
    return out


def _mean(d: dict[str, float]) -> float:
    return sum(d.values()) / max(len(d), 1)


def reproduce(quick: bool = False, *, seed: int = 0, progress: bool | None = None) -> Reproduction:
    """Train targets and surrogates, run the transfer attacks, and check the paper's claims.

    Args:
        quick: tiny data and epochs (seconds; a smoke test of the pipeline, not evidence).
        seed: base seed of the data subsets, every training run and every attack.
        progress: rich progress bars; ``None`` -> only when stdout and stderr are terminals (so that
            ``--json`` output stays clean).
    """
    start = time.perf_counter()
    if progress is None:
        progress = sys.stdout.isatty() and sys.stderr.isatty()
    s = QUICK if quick else FULL
    train = load_dataset("digits", split="train", n=s.train_n, seed=seed)
    test = load_dataset("digits", split="test", n=s.test_n, seed=seed)
    x, y = test.x, test.y
    mean, std = float(train.x.mean()), float(train.x.std())

    def wrap(net: nn.Module) -> TorchModel:
        return TorchModel(net, mean=mean, std=std, num_classes=10)

    def dnn(net: nn.Module, key: str) -> TorchModel:
        model = wrap(net)
        train_classifier(model, train, epochs=s.dnn_epochs, batch_size=s.batch_size, lr=s.dnn_lr,
                         weight_decay=s.dnn_weight_decay, optimizer="adamw", schedule="cosine",
                         seed=derive_seed(seed, KEY, key), progress=progress, description=f"DNN {key}")
        return model

    targets = {name: dnn(make(), f"target-{name}") for name, make in TARGETS}
    ensemble = [dnn(DigitsCNN(), f"surrogate-{i}") for i in range(s.ensemble_size)]
    config = CSGLDConfig(cycles=s.cycles, cycle_epochs=s.cycle_epochs, samples_per_cycle=s.samples_per_cycle,
                         lr=s.csgld_lr, weight_decay=s.csgld_weight_decay, temperature=REFERENCE_TEMPERATURE,
                         batch_size=s.batch_size)
    posterior = sample_csgld(wrap(DigitsCNN()), train, config, seed=derive_seed(seed, KEY, "csgld"),
                             progress=progress)
    surrogates = {"dnn": ensemble[:1], "ensemble": ensemble, "csgld": list(posterior)}
    epochs = {"dnn": s.dnn_epochs, "ensemble": s.ensemble_size * s.dnn_epochs, "csgld": posterior.epochs}

    # I-FGSM light on every surrogate at every eps of the grid; "full" mode once, as an extra
    curve: dict[str, dict[float, float]] = {k: {} for k in surrogates}
    white_box: dict[str, float] = {}
    max_excess, in_box, full_rates = 0.0, True, {}
    for name, members in surrogates.items():
        ok = surrogate_scores(members, x).argmax(1) == y
        for eps in s.eps_grid:
            gen = torch_generator(derive_seed(seed, KEY, "attack", name, eps))
            res = TransferAttack(members, eps=eps, steps=s.steps, mode="light").craft(x, y, generator=gen)
            max_excess = max(max_excess, float(lp_norm(res.x_adv - x, "inf").max()) - eps)
            in_box = in_box and bool(((res.x_adv >= 0) & (res.x_adv <= 1)).all())
            curve[name][eps] = _mean(_transfer(res.x_adv, x, y, targets))
            if eps == max(s.eps_grid):
                fooled = surrogate_scores(members, res.x_adv).argmax(1) != y
                white_box[name] = float((fooled & ok).sum()) / max(int(ok.sum()), 1)
        if len(members) > 1:
            gen = torch_generator(derive_seed(seed, KEY, "attack-full", name))
            full = TransferAttack(members, eps=s.full_mode_eps, steps=s.steps, mode="full").craft(x, y, generator=gen)
            full_rates[name] = _mean(_transfer(full.x_adv, x, y, targets))
    mean_rate = {k: _mean(v) for k, v in curve.items()}

    sample_acc = [evaluate_accuracy(m, test) for m in posterior]
    dnn_acc = evaluate_accuracy(ensemble[0], test)
    with torch.no_grad():
        preds = torch.stack([m(x).argmax(1) for m in posterior])
        ens_preds = torch.stack([m(x).argmax(1) for m in ensemble])

    def disagreement(p: torch.Tensor) -> float:
        pairs = list(itertools.combinations(range(len(p)), 2))
        return sum(float((p[i] != p[j]).float().mean()) for i, j in pairs) / max(len(pairs), 1)

    samples_dis, ens_dis = disagreement(preds), disagreement(ens_preds)

    def rnd(v: float) -> float:
        return round(v, 4)

    def per_eps(name: str) -> dict[str, float]:
        return {f"{name}@{eps:g}": rnd(v) for eps, v in curve[name].items()}

    grid = "/".join(f"{e:g}" for e in s.eps_grid)
    claims = [
        Claim("C1", f"white-box I-FGSM success on every surrogate is ~100% (>= 97%) at eps={max(s.eps_grid):g}, "
                    f"and every perturbation stays within its L∞ eps and [0, 1] (eps {grid})",
              held=all(v >= 0.97 for v in white_box.values()) and max_excess <= 1e-6 and in_box,
              measured={**{f"white_box_{k}": rnd(v) for k, v in white_box.items()},
                        "max_linf_minus_eps": max_excess, "inside_box": int(in_box)}),
        Claim("C2", "cSGLD samples have similar accuracy to a DNN (mean within 3 points) but non-trivial pairwise "
                    "disagreement (>= 1% of test points)",
              held=abs(sum(sample_acc) / len(sample_acc) - dnn_acc) <= 0.03 and samples_dis >= 0.01,
              measured={"n_samples": len(sample_acc), "sample_acc_mean": rnd(sum(sample_acc) / len(sample_acc)),
                        "sample_acc_min": rnd(min(sample_acc)), "dnn_acc": rnd(dnn_acc),
                        "csgld_disagreement": rnd(samples_dis), "dnn_ensemble_disagreement": rnd(ens_dis)}),
        Claim("C3", f"transfer rate from cSGLD > from a single DNN (mean over {len(targets)} targets and eps {grid})",
              held=mean_rate["csgld"] > mean_rate["dnn"],
              measured={"transfer_csgld": rnd(mean_rate["csgld"]), "transfer_dnn": rnd(mean_rate["dnn"]),
                        **per_eps("csgld"), **per_eps("dnn")}),
        Claim("C4", f"transfer rate from cSGLD >= that of a deep ensemble of {s.ensemble_size} DNNs - 2 points "
                    "(same means), at lower training cost (epochs)",
              held=mean_rate["csgld"] >= mean_rate["ensemble"] - 0.02 and epochs["csgld"] < epochs["ensemble"],
              measured={"transfer_csgld": rnd(mean_rate["csgld"]), "transfer_ensemble": rnd(mean_rate["ensemble"]),
                        "epochs_csgld": epochs["csgld"], "epochs_ensemble": epochs["ensemble"],
                        "epochs_dnn": epochs["dnn"], **per_eps("ensemble")}),
    ]
    notes = [
        (f"setup: {asdict(s)}; cSGLD {s.cycles} cycles x {s.cycle_epochs} epochs, {s.samples_per_cycle} samples "
         f"and {config.noise} noise epochs per cycle, lr {s.csgld_lr}, temperature {REFERENCE_TEMPERATURE:.4f}"),
        ("transfer rate = share of I-FGSM-light adversarial examples a target misclassifies among the test points "
         "it classifies correctly, averaged over targets; per eps: "
         + "; ".join(f"{k} " + ", ".join(f"{v:.3f}" for v in c.values()) for k, c in curve.items())),
        (f"extra (not claimed): 'full' mode (all members every step) at eps={s.full_mode_eps:g}: "
         + ", ".join(f"{k} {v:.3f}" for k, v in full_rates.items())),
        ("differs from the paper: data = scikit-learn digits 8x8 grey (train "
         f"{len(train)}, test {len(test)}) instead of CIFAR-10 / ImageNet; no data augmentation"),
        ("differs: surrogates are a 3-conv CNN without BatchNorm (DigitsCNN) instead of PreResNet110 / ResNet-50; "
         "targets are 5 DNNs (3 CNN variants, 2 MLPs, other seeds) instead of independently trained "
         "PreResNet110 / other CIFAR-10 and ImageNet architectures"),
        (f"differs: DNNs (surrogates and targets) train {s.dnn_epochs} epochs (not 250) with Adam lr {s.dnn_lr}, "
         f"cosine decay (not step decay every 75 epochs), batch {s.batch_size} (not 128), no weight decay "
         f"(reference: 1e-4 on a summed loss, i.e. negligible); cSGLD uses {s.cycles} cycles x {s.cycle_epochs} "
         f"epochs x {s.samples_per_cycle} samples (not 5 x 50 x 3 or 15 x 62 x 12) so that it costs 1.5 DNN "
         "trainings, lr 0.5, wd 5e-4, no momentum, batch 64 as the reference"),
        (f"differs: cSGLD noise temperature fixed at the reference code's effective CIFAR-10 value "
         f"{REFERENCE_TEMPERATURE:.3f} (same weight noise per epoch as there); the reference's batch-count scaling "
         f"would give {s.batch_size ** 2 / len(train):.2f} on digits' small training set"),
        (f"differs: L∞ eps grid {grid} and claims on the mean over it, instead of the paper's single eps 4/255 "
         "(the spec proposed 0.1): on digits a white-box I-FGSM fools only ~40% of points at 0.1 and ~100% at "
         "0.3, where transfer from any surrogate saturates, so no single eps has the paper's regime (white-box "
         "~100%, transfer unsaturated); step eps/10 and 50 iterations as the reference (quick mode: fewer)"),
        ("differs: only I-FGSM light (claims) and full (extra), no MI-FGSM / PGD restarts / FGSM; one seed; "
         "all test points instead of 1,000 / 10,000"),
        ("development note: a first full run trained the DNNs with robustlab's SGD-Nesterov one-cycle recipe "
         "(lr 0.05, wd 5e-4) instead of the reference's Adam; there cSGLD transferred worse than one DNN and "
         "the ensemble (eps 0.1: 0.213 vs 0.286 / 0.310; eps 0.3: 0.972 vs 0.999 / 0.999), so the baseline's "
         "training recipe matters to the paper's effect"),
        ("development note on seed sensitivity: with seed=1 (this run's setup otherwise) C3 and C4 held more "
         "clearly (mean transfer cSGLD 0.661, DNN 0.546, ensemble 0.619) but C2 did not (cSGLD pairwise "
         "disagreement 0.0082 < 0.01; samples of one cycle are nearly identical, only ~51 SGD steps of noise); "
         "with seed=0 the C4 margin is within noise: it held with 1 torch thread (0.664 vs ensemble 0.677) and "
         "failed with 2 (0.659 vs 0.687), since the thread count changes the float summation order of training"),
    ]
    if quick:
        notes.insert(0, "QUICK mode: tiny data and epochs; the claims' numbers are a smoke test, not evidence")
    return Reproduction(key=KEY, title=TITLE, claims=claims, seconds=time.perf_counter() - start, notes=notes)
