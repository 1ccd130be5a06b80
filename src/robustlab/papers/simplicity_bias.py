"""Paper 30 (simplicity-bias): extreme simplicity bias of MLPs on LMS slab data and digit dominoes.

Shah, Tamuly, Raghunathan, Jain & Netrapalli, "The Pitfalls of Simplicity Bias in Neural Networks"
(NeurIPS 2020). Data: :mod:`robustlab.data.simplicity` (LMS-k, slab-only MS-5, digit dominoes);
evaluation: :mod:`robustlab.transforms.simplicity` (S- / S^c-randomized and swapped test sets).

What is measured (spec's CPU setup):

- LMS-5 / LMS-7 (d = 20: 1 linear + 19 slab coordinates, γ = 0.1, B = 1), an FCN 2 x 200 trained
  with SGD: clean, S-randomized (linear coordinate permuted across the test set) and S^c-randomized
  (all slabs permuted jointly) accuracy. Extreme SB: S-rand ∈ [0.45, 0.55], S^c-rand ≥ 0.95.
- Not an incapacity: the same FCN on slab-only data (MS-5, 20 five-slab coordinates) reaches > 95 %,
  while logistic regression on it stays near chance (the slabs are not linearly separable).
- Ensembles (average of the logits of independently initialized FCNs) and PGD adversarial training
  (robustlab's :class:`~robustlab.defend.train.pgd_at.PGDAT`, L∞) keep the bias.
- Adversarial vulnerability along S: robustlab's L2 PGD perturbations of the SB model put almost all of
  their energy on the linear coordinate, and a per-class universal adversarial perturbation (one
  vector for all inputs of a class, projected gradient ascent on the mean CE of training points) lies
  along it and breaks many test points, while a random direction of the same norm breaks none.
- Digit dominoes (0/1 on top, 7/9 with pixel noise 0.3 on the bottom): S-rand (top permuted) ≈ 50 %,
  S^c-rand ≈ clean; an FCN trained on the bottom half alone (top permuted) reaches > 90 %.

Departures from the paper (also in ``notes``): 20k training points instead of 100k; inputs stored in
[0, 1] (``(x + B) / 2B``) and mapped back inside the model (``TorchModel(mean=0.5, std=1/2B)``);
SGD + Nesterov momentum 0.9, lr 0.1 with a one-cycle schedule, 12 epochs, no weight decay (the paper
trains to ~100 % train accuracy with SGD); the MNIST-CIFAR dominoes are replaced by digit dominoes
whose complex half gets pixel noise (without it the two 8x8 halves are about equally simple and the
FCN uses both; the full run measures that ablation); adversarial training uses 5 PGD steps at L∞
ε = 0.04 (0.08 in the paper's units, below the margin 0.1); the UAP is computed per class (with two
classes a single vector cannot push both classes across the boundary).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.pgd import PGD
from robustlab.core.model import TorchModel
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.core.threat import LpBall
from robustlab.data.base import Dataset
from robustlab.data.simplicity import blocks, load_digit_dominoes, load_lms
from robustlab.defend.train.pgd_at import PGDAT
from robustlab.models.training import train_classifier
from robustlab.papers.base import Claim, Reproduction
from robustlab.transforms.simplicity import randomize_block, swap_block

__all__ = ["FULL", "QUICK", "Setup", "block_accuracies", "fcn", "reproduce", "s_energy", "train_fcn",
           "universal_perturbation"]

KEY = "simplicity-bias"
TITLE = "The Pitfalls of Simplicity Bias in Neural Networks"
CHANCE_BAND = (0.45, 0.55)  # spec faithfulness test
HIGH = 0.95


@dataclass(frozen=True)
class Setup:
    """Sizes of one run (the full run and the seconds-long smoke run differ only here)."""

    n_train: int = 20_000
    n_test: int = 2_000
    dim: int = 20
    hidden: int = 200
    epochs: int = 12
    batch_size: int = 256
    lr: float = 0.1
    ensemble: int = 5
    at_eps: float = 0.04  # L∞ in [0, 1] units (0.08 in the paper's [-1, 1] units)
    at_steps: int = 5
    at_epochs: int = 12
    pgd_eps: float = 0.25  # L2 in [0, 1] units
    uap_eps: float = 0.25
    uap_steps: int = 50
    domino_train: int = 4_000
    domino_epochs: int = 20
    domino_noise: float = 0.3
    lms7: bool = True
    ablation: bool = True  # dominoes without pixel noise


FULL = Setup()
QUICK = Setup(n_train=1_500, n_test=400, epochs=6, ensemble=2, at_steps=2, at_epochs=2, uap_steps=10,
              domino_train=600, domino_epochs=8, lms7=False, ablation=False)


def fcn(d_in: int, hidden: int = 200, depth: int = 2, num_classes: int = 2) -> nn.Sequential:
    """The paper's fully-connected net: ``depth`` hidden ReLU layers of width ``hidden``."""
    layers: list[nn.Module] = [nn.Flatten()]
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    return nn.Sequential(*layers, nn.Linear(d, num_classes))


def _wrap(ds: Dataset, hidden: int) -> TorchModel:
    d_in = int(ds.x[0].numel())
    if ds.modality == "tabular":  # back to the paper's [-B, B] coordinates (B = 1) inside the model
        return TorchModel(fcn(d_in, hidden), mean=0.5, std=0.5, modality="tabular", num_classes=2)
    return TorchModel(fcn(d_in, hidden), modality="image", num_classes=2)


def train_fcn(train: Dataset, setup: Setup, seed: int, *, epochs: int | None = None) -> TorchModel:
    """An FCN trained with SGD (Nesterov 0.9, one-cycle lr, no weight decay) on ``train``; eval mode."""
    model = _wrap(train, setup.hidden)
    train_classifier(model, train, epochs=epochs or setup.epochs, batch_size=setup.batch_size, lr=setup.lr,
                     weight_decay=0.0, seed=seed, progress=False)
    return model


@torch.no_grad()
def _logits(models: list[TorchModel], x: torch.Tensor) -> torch.Tensor:
    return torch.stack([m(x) for m in models]).mean(0)


@torch.no_grad()
def block_accuracies(models: TorchModel | list[TorchModel], ds: Dataset, *, seed: int = 0) -> dict[str, float]:
    """Clean, S-randomized, S^c-randomized and S-swapped accuracy of ``models`` (logits averaged) on ``ds``."""
    models = models if isinstance(models, list) else [models]
    s, sc = blocks(ds)
    g = torch_generator(derive_seed(seed, "block-accuracies", ds.name))

    def acc(x: torch.Tensor) -> float:
        return float((_logits(models, x).argmax(1) == ds.y).float().mean())

    out = {"clean": acc(ds.x), "s_rand": float("nan"), "sc_rand": acc(randomize_block(ds.x, sc, generator=g)),
           "s_swap": float("nan")}
    if len(s):
        out["s_rand"] = acc(randomize_block(ds.x, s, generator=g))
        out["s_swap"] = acc(swap_block(ds.x, ds.y, s, generator=g))
    return out


def s_energy(delta: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Per-row share of the squared L2 norm of ``delta`` (N, ...) on the features ``coords``."""
    flat = delta.reshape(len(delta), -1)
    return flat[:, coords].pow(2).sum(1) / flat.pow(2).sum(1).clamp_min(1e-30)


def universal_perturbation(model: TorchModel, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
                           generator: torch.Generator) -> torch.Tensor:
    """One L2 perturbation (1, ...) of norm <= ``eps`` for all of ``x``: projected normalized-gradient ascent
    on the mean CE of ``model(clip(x + δ))`` from a random point of the ball (step 2.5 eps / steps)."""
    ball = LpBall("2", eps)
    delta = ball.project_delta(torch.randn((1, *x.shape[1:]), generator=generator) * eps)
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = ball.project_delta(delta.detach() + alpha * grad / grad.norm().clamp_min(1e-12))
    return delta.detach()


def _uap(model: TorchModel, train: Dataset, test: Dataset, setup: Setup, seed: int) -> dict[str, float]:
    """Per-class UAPs: accuracy under them, under random directions of the same norm, share on S."""
    s, _ = blocks(test)
    g = torch_generator(derive_seed(seed, "uap"))
    hit, rand_hit, share, n = 0, 0, [], 0
    for c in (0, 1):
        tr, te = train.x[train.y == c][:2000], test.x[test.y == c]
        delta = universal_perturbation(model, tr, train.y[train.y == c][:2000], eps=setup.uap_eps,
                                       steps=setup.uap_steps, generator=g)
        share.append(float(s_energy(delta, s)[0]))
        rnd = torch.randn(delta.shape, generator=g)
        rnd = rnd * setup.uap_eps / rnd.norm()
        with torch.no_grad():
            hit += int((model((te + delta).clamp(0, 1)).argmax(1) == c).sum())
            rand_hit += int((model((te + rnd).clamp(0, 1)).argmax(1) == c).sum())
        n += len(te)
    return {"uap_acc": hit / n, "random_dir_acc": rand_hit / n, "uap_s_share_min": min(share)}


def _pgd_share(model: TorchModel, test: Dataset, setup: Setup, seed: int) -> dict[str, float]:
    """robustlab L2 PGD (no random start): robust accuracy and the perturbations' energy share on S."""
    s, _ = blocks(test)
    res = PGD(norm=2, eps=setup.pgd_eps, steps=20, random_start=False)(
        model, test.x, test.y, generator=torch_generator(derive_seed(seed, "pgd")))
    with torch.no_grad():
        clean = model(test.x).argmax(1) == test.y
        broken = clean & (model(res.x_adv).argmax(1) != test.y)
    share = s_energy(res.x_adv - test.x, s)[broken]
    return {"pgd_robust_acc": float((clean & ~broken).float().mean()),
            "pgd_s_share_median": float(share.median()) if len(share) else float("nan"),
            "uniform_share": len(s) / test.x[0].numel()}


def _logistic_accuracy(train: Dataset, test: Dataset) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=1000).fit(train.x.numpy(), train.y.numpy())
    return float(clf.score(test.x.numpy(), test.y.numpy()))


def _in_band(v: float) -> bool:
    return CHANCE_BAND[0] <= v <= CHANCE_BAND[1]


def _r(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def reproduce(quick: bool = False) -> Reproduction:
    """Run the reproduction (quick: a seconds-long smoke run whose claims need not hold)."""
    start = time.perf_counter()
    setup = QUICK if quick else FULL
    rep = Reproduction(key=KEY, title=TITLE, notes=[
        f"CPU setup: LMS d={setup.dim} (1 linear + {setup.dim - 1} slabs), γ_l = γ_s = 0.1, B = 1, "
        f"{setup.n_train} train / {setup.n_test} test (paper: 100k / 2k); FCN 2x{setup.hidden}, SGD Nesterov, "
        f"lr {setup.lr} one-cycle, {setup.epochs} epochs, batch {setup.batch_size}, no weight decay",
        "inputs stored in [0, 1] as (x + B) / 2B; the models map them back to the paper's coordinates inside",
        f"dominoes: digits 0/1 on top (simple), 7/9 + pixel noise {setup.domino_noise} at the bottom (complex), "
        "a CPU stand-in for MNIST-CIFAR",
        f"adversarial training: robustlab PGD-AT, L∞ eps {setup.at_eps} in [0, 1] units (= {2 * setup.at_eps:g} in "
        f"the paper's units, below the margin 0.1), {setup.at_steps} steps, {setup.at_epochs} epochs",
        f"UAP: per class, L2 norm {setup.uap_eps} in [0, 1] units, {setup.uap_steps} projected ascent steps on "
        "training points",
    ] + (["QUICK run: smaller data and fewer epochs; claims are not expected to hold"] if quick else []))
    tr5, te5 = load_lms("train", n=setup.n_train, dim=setup.dim), load_lms("test", n=setup.n_test, dim=setup.dim)

    members = [train_fcn(tr5, setup, seed) for seed in range(setup.ensemble)]
    single = block_accuracies(members[0], te5)
    rep.claims.append(Claim(
        "lms5-extreme-sb",
        "An FCN trained on LMS-5 relies exclusively on the linear coordinate: S-randomized accuracy ~ 50% "
        "(in [0.45, 0.55]) while S^c-randomized (all 5-slab coordinates permuted) accuracy stays >= 0.95",
        held=single["clean"] >= HIGH and _in_band(single["s_rand"]) and single["sc_rand"] >= HIGH,
        measured=_r(single)))

    if setup.lms7:
        tr7, te7 = load_lms("train", n=setup.n_train, k=7), load_lms("test", n=setup.n_test, k=7)
        acc7 = block_accuracies(train_fcn(tr7, setup, 0), te7)
        rep.claims.append(Claim(
            "lms7-extreme-sb", "The same holds on LMS-7 (1 linear + 19 seven-slab coordinates)",
            held=acc7["clean"] >= HIGH and _in_band(acc7["s_rand"]) and acc7["sc_rand"] >= HIGH, measured=_r(acc7)))

    trs = load_lms("train", n=setup.n_train, dim=setup.dim, num_linear=0)
    tes = load_lms("test", n=setup.n_test, dim=setup.dim, num_linear=0)
    slab_acc = block_accuracies(train_fcn(trs, setup, 0), tes)["clean"]
    lr_acc = _logistic_accuracy(trs, tes)
    rep.claims.append(Claim(
        "slabs-learnable",
        "The bias is not an incapacity: the same FCN trained on slab-only data (MS-5) reaches > 95% test accuracy, "
        "while logistic regression on it stays near chance (<= 0.6: the slabs are not linearly separable)",
        held=slab_acc > HIGH and lr_acc <= 0.6,
        measured={"fcn_slab_only_acc": round(slab_acc, 4), "logistic_slab_only_acc": round(lr_acc, 4)}))

    ens = block_accuracies(members, te5)
    rep.claims.append(Claim(
        "ensemble-keeps-sb",
        f"An ensemble of {setup.ensemble} independently initialized FCNs (averaged logits) keeps extreme SB",
        held=_in_band(ens["s_rand"]) and ens["sc_rand"] >= HIGH, measured=_r(ens) | {"members": setup.ensemble}))

    at_model = PGDAT(steps=setup.at_steps, epochs=setup.at_epochs, batch_size=setup.batch_size, lr=setup.lr,
                     weight_decay=0.0, seed=0, progress=False).train(_wrap(tr5, setup.hidden), tr5,
                                                                      LpBall("inf", setup.at_eps))
    at = block_accuracies(at_model, te5)
    rep.claims.append(Claim(
        "adversarial-training-keeps-sb",
        f"PGD adversarial training (L∞ {setup.at_eps}) does not remove the bias: S-randomized ~ 50%, "
        "S^c-randomized >= 0.95",
        held=at["clean"] >= HIGH and _in_band(at["s_rand"]) and at["sc_rand"] >= HIGH, measured=_r(at)))

    pgd = _pgd_share(members[0], te5, setup, 0)
    uap = _uap(members[0], tr5, te5, setup, 0)
    rep.claims.append(Claim(
        "perturbations-along-s",
        f"Adversarial perturbations attack only the simple feature: the median L2-PGD perturbation (eps "
        f"{setup.pgd_eps}) puts >= 90% of its energy on the linear coordinate (uniform: {pgd['uniform_share']:.2f}), "
        "as do the per-class UAPs",
        held=pgd["pgd_s_share_median"] >= 0.9 and uap["uap_s_share_min"] >= 0.9,
        measured=_r(pgd) | {"uap_s_share_min": round(uap["uap_s_share_min"], 4)}))
    rep.claims.append(Claim(
        "universal-perturbation",
        f"A data-agnostic (per-class) UAP of L2 norm {setup.uap_eps} lowers test accuracy to <= 0.75, while a "
        "random direction of the same norm leaves it >= 0.95",
        held=uap["uap_acc"] <= 0.75 and uap["random_dir_acc"] >= HIGH,
        measured=_r({k: v for k, v in uap.items() if k != "uap_s_share_min"})))

    dtr = load_digit_dominoes("train", n=setup.domino_train, noise=setup.domino_noise)
    dte = load_digit_dominoes("test", n=setup.n_test, noise=setup.domino_noise)
    dom = block_accuracies(train_fcn(dtr, setup, 0, epochs=setup.domino_epochs), dte)
    s_dom, _ = blocks(dtr)
    bottom_only = Dataset(x=randomize_block(dtr.x, s_dom, generator=torch_generator(derive_seed(0, "bottom-only"))),
                          y=dtr.y, modality="image", class_names=dtr.class_names, name="dominoes-bottom-only")
    bottom_acc = block_accuracies(train_fcn(bottom_only, setup, 0, epochs=setup.domino_epochs), dte)["s_rand"]
    measured = _r(dom) | {"bottom_only_model_acc": round(bottom_acc, 4)}
    if setup.ablation:
        ntr = load_digit_dominoes("train", n=setup.domino_train, noise=0.0)
        nte = load_digit_dominoes("test", n=setup.n_test, noise=0.0)
        abl = block_accuracies(train_fcn(ntr, setup, 0, epochs=setup.domino_epochs), nte)
        measured |= {f"no_noise_{k}": round(v, 4) for k, v in abl.items()}
        rep.notes.append(f"ablation (not a claim): dominoes without pixel noise give S-rand {abl['s_rand']:.3f}, "
                         f"S^c-rand {abl['sc_rand']:.3f}: two equally simple 8x8 digits are both used")
    rep.claims.append(Claim(
        "dominoes-simple-block-dominates",
        "On digit dominoes the FCN relies on the simple half (0/1): randomizing it gives ~50% (in [0.45, 0.55]), "
        "randomizing the complex half (7/9) leaves accuracy >= 0.95, although the complex half alone is learnable "
        "(> 0.9)",
        held=dom["clean"] >= HIGH and _in_band(dom["s_rand"]) and dom["sc_rand"] >= HIGH and bottom_acc > 0.9,
        measured=measured))
    rep.seconds = time.perf_counter() - start
    return rep
