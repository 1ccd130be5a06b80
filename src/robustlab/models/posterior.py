"""Approximate weight posteriors from one training run: cSGLD (default), SWAG and LGV.

A :class:`Posterior` is a list of weight samples, each a ready :class:`~robustlab.core.model.TorchModel`,
plus what it cost to get them (epochs). The samples make a Bayesian surrogate for transfer attacks
("Efficient and Transferable Adversarial Examples from Bayesian Neural Networks", Gubri et al., UAI
2022; see :mod:`robustlab.attacks.transfer`).

* :func:`sample_csgld` -- cyclical SG-MCMC ("Cyclical Stochastic Gradient MCMC for Bayesian Deep
  Learning", Zhang et al., ICLR 2020), the sampler of Gubri et al.
* :func:`fit_swag` -> :class:`SWAG` -- a Gaussian fitted to SGD iterates ("A Simple Baseline for
  Bayesian Uncertainty in Deep Learning", Maddox et al., NeurIPS 2019).
* :func:`sample_lgv` -- the SGD iterates themselves at a high constant rate ("LGV: Boosting
  Adversarial Example Transferability from Large Geometric Vicinity", Gubri et al., ECCV 2022).

Every sampler is seeded (initialization under ``torch.random.fork_rng``, shuffling, augmentation and
noise from their own generators): same seed, data, device and thread count -> the same samples.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.model import TorchModel
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.data.base import Dataset
from robustlab.models.training import Augment, init_parameters

__all__ = [
    "SWAG", "CSGLDConfig", "LGVConfig", "Posterior", "SWAGConfig", "cyclical_lr", "fit_swag", "sample_csgld",
    "sample_lgv",
]


def cyclical_lr(step: int, total_steps: int, cycles: int, lr0: float) -> float:
    """cSGLD's cyclical cosine step size ``α_k = (α_0/2)[cos(π·mod(k, K/M)/(K/M)) + 1]``.

    Zhang et al. (ICLR 2020), eq. (1): ``K = total_steps`` split into ``M = cycles`` cycles of
    ``K // M`` steps; the rate restarts at ``lr0`` at the start of each cycle and decays to ~0.
    """
    per = max(total_steps // cycles, 1)
    return 0.5 * lr0 * (math.cos(math.pi * (step % per) / per) + 1.0)


def _check_counts(config: Any, names: tuple[str, ...], lr: float = 1.0) -> None:
    """Raise a ConfigError naming the first of ``names`` that is not an integer >= 1 (or a bad ``lr``)."""
    for name in names:
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{type(config).__name__}.{name} must be an integer >= 1, got {v!r}",
                              fix=f"pass e.g. {name}=3")
    if not lr > 0:
        raise ConfigError(f"{type(config).__name__}.lr must be > 0, got {lr!r}", fix="pass e.g. lr=0.05")


@dataclass
class Posterior:
    """Weight samples of one network, each a :class:`TorchModel` in eval mode.

    Attributes:
        models: the samples (``len(posterior)`` of them), in the order they were taken.
        method: ``"csgld"``, ``"swag"`` or ``"lgv"``.
        epochs: training epochs spent to get them (the cost to compare with independent DNNs).
        info: per sample, where it came from (cycle, epoch, step).
        history: per-epoch training loss / accuracy / learning rate.
    """

    models: list[TorchModel]
    method: str
    epochs: float
    info: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.models)

    def __iter__(self) -> Iterator[TorchModel]:
        return iter(self.models)

    def __getitem__(self, i: int) -> TorchModel:
        return self.models[i]


@dataclass(frozen=True)
class CSGLDConfig:
    """Settings of cSGLD; defaults are the reference code's (Gubri et al.'s ``sse_mcmc_train.py``).

    Args:
        cycles: ``M`` cycles of the cosine step size (reference: 5 on CIFAR-10, 15 later).
        cycle_epochs: epochs per cycle (reference: 50, later 62).
        samples_per_cycle: ``S`` samples per cycle, saved at the end of each of the last ``S`` epochs
            of the cycle (reference: 3, later 12).
        noise_epochs: Langevin noise in the last ``noise_epochs`` epochs of each cycle (before
            that, the cycle is plain SGD exploration); ``None`` -> ``samples_per_cycle`` (reference).
        lr: ``α_0``, the peak step size on the mean mini-batch loss (reference 0.5).
        weight_decay: L2 coefficient on the mean loss = a Gaussian prior of variance
            ``1 / (N * weight_decay)`` (reference 5e-4; 3e-4 for PreResNets).
        temperature: ``T`` of the tempered posterior; the noise added per step is
            ``sqrt(2 * lr_k * (1 - momentum) * T / N) * ξ``. ``None`` -> ``batch_size**2 / N``,
            which is the noise scale the reference code uses (``sqrt(2 lr) / n_batches``).
        momentum: SGD momentum; 0 (the reference's ``alpha=1``) is SGLD, > 0 is SGHMC-like.
        batch_size: examples per step (reference 64).
    """

    cycles: int = 5
    cycle_epochs: int = 50
    samples_per_cycle: int = 3
    noise_epochs: int | None = None
    lr: float = 0.5
    weight_decay: float = 5e-4
    temperature: float | None = None
    momentum: float = 0.0
    batch_size: int = 64

    def __post_init__(self) -> None:
        _check_counts(self, ("cycles", "cycle_epochs", "samples_per_cycle", "batch_size"))
        if self.samples_per_cycle > self.cycle_epochs:
            raise ConfigError(f"samples_per_cycle={self.samples_per_cycle} > cycle_epochs={self.cycle_epochs}",
                              fix="save at most one sample per epoch of a cycle")
        if self.noise_epochs is not None and not 0 <= self.noise_epochs <= self.cycle_epochs:
            raise ConfigError(f"noise_epochs must be in [0, cycle_epochs], got {self.noise_epochs!r}",
                              fix="pass e.g. noise_epochs=3 or None (= samples_per_cycle)")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.momentum < 1):
            raise ConfigError(f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got lr={self.lr}, "
                              f"weight_decay={self.weight_decay}, momentum={self.momentum}",
                              fix="use the defaults lr=0.5, weight_decay=5e-4, momentum=0")
        if self.temperature is not None and self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}",
                              fix="pass temperature=1 (the Bayes posterior), or None for the reference's")

    @property
    def epochs(self) -> int:
        """Total training epochs ``cycles * cycle_epochs``."""
        return self.cycles * self.cycle_epochs

    @property
    def noise(self) -> int:
        """Noise epochs per cycle (``noise_epochs`` resolved)."""
        return self.samples_per_cycle if self.noise_epochs is None else self.noise_epochs

    def is_noise_epoch(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based, over the whole run) adds Langevin noise."""
        return epoch % self.cycle_epochs >= self.cycle_epochs - self.noise

    def is_sample_epoch(self, epoch: int) -> bool:
        """Whether a sample is saved at the end of epoch ``epoch`` (0-based)."""
        return epoch % self.cycle_epochs >= self.cycle_epochs - self.samples_per_cycle


def sample_csgld(model: nn.Module | TorchModel, train: Dataset, config: CSGLDConfig = CSGLDConfig(), *,
                 seed: int = 0, device: str | torch.device = "cpu", augment: Augment | None = None,
                 init: bool = True, progress: bool = True, description: str = "cSGLD") -> Posterior:
    """Sample ``M·S`` weights of ``model`` with cyclical SGLD (Zhang et al., ICLR 2020).

    Each step ``k`` sets the rate ``α_k`` of :func:`cyclical_lr`, takes an SGD step on the mean
    cross-entropy plus ``weight_decay``, and in the noise epochs adds Langevin noise (the gradient of
    ``U = N·mean loss + prior`` scaled to the mean loss; see :class:`CSGLDConfig`). A copy of the
    weights is saved at the end of each of the last ``samples_per_cycle`` epochs of every cycle.
    ``model`` is trained in place (its final weights are the last sample).

    Args:
        model: an ``nn.Module`` on raw inputs, or a :class:`TorchModel` (its normalization is kept
            in every sample).
        train: training data ``x (N, ...)`` in [0, 1], labels ``y (N,)``.
        config: the sampler's settings.
        seed: initialization (when ``init``), shuffling, augmentation and noise.
        augment: optional batched augmentation ``(x, generator) -> x``.
        init: re-initialize the parameters from ``seed`` first (reference: from scratch).
    """
    return _run(model, train, "csgld", config, seed=seed, device=device, augment=augment, init=init,
                progress=progress, description=description)[0]


@dataclass(frozen=True)
class SWAGConfig:
    """Settings of SWAG (Maddox et al., 2019) collection: constant-rate SGD from a trained model.

    Args:
        epochs: collection epochs (paper: 25% of the pre-training budget, at least 1).
        lr: the constant SWA rate (paper: a "high" rate, e.g. half the initial one).
        per_epoch: iterates collected per epoch (paper: 1).
        rank: ``K``, deviations kept for the low-rank covariance (paper: 20).
        momentum, weight_decay, batch_size: of the SGD run.
    """

    epochs: int = 10
    lr: float = 0.05
    per_epoch: int = 1
    rank: int = 20
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64

    def __post_init__(self) -> None:
        _check_counts(self, ("epochs", "per_epoch", "rank", "batch_size"), lr=self.lr)


@dataclass(frozen=True)
class LGVConfig:
    """Settings of LGV (Gubri et al., ECCV 2022): iterates of constant high-rate SGD from a trained model.

    Args:
        epochs: collection epochs (paper: 10).
        lr: the constant rate (paper: 4x the pre-training's final rate, 0.05 on ImageNet).
        per_epoch: iterates kept per epoch (paper: 4, so 40 samples).
        momentum, weight_decay, batch_size: of the SGD run (paper: 0.9, 1e-4, 256).
    """

    epochs: int = 10
    lr: float = 0.05
    per_epoch: int = 4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 64

    def __post_init__(self) -> None:
        _check_counts(self, ("epochs", "per_epoch", "batch_size"), lr=self.lr)


class SWAG:
    """A Gaussian over weights: mean, diagonal and low-rank covariance of collected SGD iterates.

    ``θ = θ_SWA + sqrt(scale)·(Σ_diag^{1/2} z₁ + D z₂ / sqrt(K-1))`` with ``z₁, z₂ ~ N(0, I)``,
    ``D`` the last ``K`` deviations from the running mean; ``scale=0.5`` is the paper's ``1/2``.
    """

    def __init__(self, template: nn.Module | TorchModel, mean: torch.Tensor, sq_mean: torch.Tensor,
                 deviations: torch.Tensor, n_collected: int, epochs: float):
        self.template, self.mean, self.sq_mean = template, mean, sq_mean
        self.deviations, self.n_collected, self.epochs = deviations, n_collected, epochs

    @property
    def variance(self) -> torch.Tensor:
        """The diagonal variance (clamped at 1e-30), flat over all parameters."""
        return (self.sq_mean - self.mean ** 2).clamp_min(1e-30)

    def sample(self, n: int, *, generator: torch.Generator, scale: float = 0.5,
               low_rank: bool = True) -> Posterior:
        """``n`` weight samples (``low_rank=False``: diagonal covariance only, "SWAG-Diagonal")."""
        if n < 1 or scale < 0:
            raise ConfigError(f"need n >= 1 and scale >= 0, got n={n}, scale={scale}",
                              fix="e.g. n=10, scale=0.5")
        models, k = [], self.deviations.shape[0]
        for _ in range(n):
            z1 = torch.randn(self.mean.shape, generator=generator, device=generator.device).to(self.mean)
            theta_dev = self.variance.sqrt() * z1
            if low_rank and k > 1:
                z2 = torch.randn(k, generator=generator, device=generator.device).to(self.mean)
                theta_dev = theta_dev + self.deviations.t() @ z2 / math.sqrt(k - 1)
            models.append(_as_model(self.template, self.mean + math.sqrt(scale) * theta_dev))
        return Posterior(models, "swag", self.epochs, info=[{"draw": i} for i in range(n)])


def fit_swag(model: nn.Module | TorchModel, train: Dataset, config: SWAGConfig = SWAGConfig(), *,
             seed: int = 0, device: str | torch.device = "cpu", augment: Augment | None = None,
             progress: bool = True, description: str = "SWAG") -> SWAG:
    """Fit SWAG (Maddox et al., 2019) by constant-rate SGD from ``model``'s (trained) weights.

    The first and second moments are running averages over every collected iterate; the
    deviations ``θ_i - mean_i`` of the last ``rank`` iterates form the low-rank part. Models with
    BatchNorm would need their statistics recomputed per sample (not done here).
    """
    _, iterates, ep = _run(model, train, "swag", config, seed=seed, device=device, augment=augment, init=False,
                           progress=progress, description=description)
    mean = torch.zeros_like(iterates[0])
    sq = torch.zeros_like(mean)
    devs: list[torch.Tensor] = []
    for i, theta in enumerate(iterates):
        mean = mean * i / (i + 1) + theta / (i + 1)
        sq = sq * i / (i + 1) + theta ** 2 / (i + 1)
        devs = (devs + [theta - mean])[-config.rank:]
    return SWAG(copy.deepcopy(model), mean, sq, torch.stack(devs), len(iterates), ep)


def sample_lgv(model: nn.Module | TorchModel, train: Dataset, config: LGVConfig = LGVConfig(), *,
               seed: int = 0, device: str | torch.device = "cpu", augment: Augment | None = None,
               progress: bool = True, description: str = "LGV") -> Posterior:
    """LGV (Gubri et al., ECCV 2022): ``epochs * per_epoch`` SGD iterates from ``model``'s trained weights."""
    return _run(model, train, "lgv", config, seed=seed, device=device, augment=augment, init=False,
                progress=progress, description=description)[0]


# ---------------------------------------------------------------------------------------------------- internals

def _module(model: nn.Module | TorchModel) -> nn.Module:
    if isinstance(model, TorchModel):
        return model.module
    if isinstance(model, nn.Module):
        return model
    raise ConfigError(f"a posterior sampler needs a torch nn.Module or TorchModel, got {type(model).__name__}",
                      fix="pass the network (or robustlab.TorchModel) to sample")


def _as_model(template: nn.Module | TorchModel, flat: torch.Tensor | None = None) -> TorchModel:
    """A frozen eval-mode copy of ``template`` as a TorchModel (with ``flat`` weights if given)."""
    m = copy.deepcopy(template)
    if not isinstance(m, TorchModel):
        m = TorchModel(m, num_classes=getattr(m, "num_classes", None))
    if flat is not None:
        torch.nn.utils.vector_to_parameters(flat.to(next(m.module.parameters()).device), m.module.parameters())
    m.module.eval()
    for p in m.module.parameters():
        p.requires_grad_(False)
    return m


def _run(model: nn.Module | TorchModel, train: Dataset, method: str, config: Any, *, seed: int,
         device: str | torch.device, augment: Augment | None, init: bool, progress: bool,
         description: str) -> tuple[Posterior, list[torch.Tensor], float]:
    """The shared SGD(-LD) loop: cSGLD's cyclical rate + noise, or constant-rate collection (SWAG / LGV)."""
    if not isinstance(train.x, torch.Tensor) or len(train) < 1:
        raise DataError(f"posterior sampling needs a non-empty tensor dataset, got {train.name!r}",
                        fix="pass image or tabular data as float tensors in [0, 1]")
    module, dev = _module(model), torch.device(device)
    (model if isinstance(model, TorchModel) else module).to(dev)
    if init:
        init_parameters(module, seed)
    fwd: Callable[[torch.Tensor], torch.Tensor] = model if isinstance(model, TorchModel) else module
    csgld = method == "csgld"
    epochs = config.epochs
    n, bs = len(train), config.batch_size
    steps_per_epoch = max(n // bs, 1)
    total = steps_per_epoch * epochs
    collect_every = None if csgld else max(steps_per_epoch // config.per_epoch, 1)
    temperature = (bs ** 2 / n if config.temperature is None else config.temperature) if csgld else 0.0
    opt = torch.optim.SGD(module.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    shuffle = torch_generator(derive_seed(seed, method, "shuffle"))
    aug_gen = torch_generator(derive_seed(seed, method, "augment"), dev)
    noise_gen = torch_generator(derive_seed(seed, method, "noise"), dev)
    xs, ys = train.x.to(dev), train.y.to(dev)
    params = [p for p in module.parameters() if p.requires_grad]
    samples: list[TorchModel] = []
    iterates: list[torch.Tensor] = []
    info: list[dict[str, Any]] = []
    history: dict[str, Any] = {"loss": [], "acc": [], "lr": [], "noise": [], "temperature": temperature}
    step, start = 0, time.perf_counter()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    module.train()
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(), transient=True,
                      disable=not progress, console=Console(stderr=True)) as bar:
            task = bar.add_task(description, total=epochs, status="")
            for epoch in range(epochs):
                noisy = csgld and config.is_noise_epoch(epoch) and temperature > 0
                order = torch.randperm(n, generator=shuffle).to(dev)
                loss_sum, correct = torch.zeros((), device=dev), torch.zeros((), device=dev, dtype=torch.long)
                seen = 0
                for i in range(steps_per_epoch):
                    idx = order[i * bs:(i + 1) * bs] if steps_per_epoch > 1 else order
                    xb, yb = xs[idx], ys[idx]
                    if augment is not None:
                        xb = augment(xb, aug_gen)
                    lr = cyclical_lr(step, total, config.cycles, config.lr) if csgld else config.lr
                    for group in opt.param_groups:
                        group["lr"] = lr
                    logits = fwd(xb)
                    loss = F.cross_entropy(logits, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if noisy:  # θ -= lr·(g + ξ·sqrt(2(1-m)T/(lr N)))  ->  noise sqrt(2 lr (1-m) T / N)·ξ
                        scale = math.sqrt(2.0 * (1.0 - config.momentum) * temperature / (lr * n))
                        for p in params:
                            if p.grad is not None:
                                xi = torch.randn(p.shape, generator=noise_gen, device=dev, dtype=p.dtype)
                                p.grad.add_(xi, alpha=scale)
                    opt.step()
                    step += 1
                    loss_sum += loss.detach() * len(yb)
                    correct += (logits.detach().argmax(1) == yb).sum()
                    seen += len(yb)
                    if collect_every is not None and step % collect_every == 0 and \
                            len(iterates) < config.per_epoch * (epoch + 1):
                        iterates.append(torch.nn.utils.parameters_to_vector(module.parameters()).detach().clone())
                        info.append({"epoch": epoch, "step": step})
                history["loss"].append(float(loss_sum) / seen)
                history["acc"].append(int(correct) / seen)
                history["lr"].append(opt.param_groups[0]["lr"])
                history["noise"].append(bool(noisy))
                if csgld and config.is_sample_epoch(epoch):
                    samples.append(_as_model(model))
                    info.append({"cycle": epoch // config.cycle_epochs, "epoch": epoch, "step": step})
                kept = len(samples) or len(iterates)
                bar.update(task, advance=1, status=f"loss {history['loss'][-1]:.3f} samples {kept}")
    finally:
        module.eval()
        history["seconds"] = time.perf_counter() - start
    if method == "lgv":
        samples = [_as_model(model, theta) for theta in iterates]
    return Posterior(samples, method, float(epochs), info=info, history=history), iterates, float(epochs)

