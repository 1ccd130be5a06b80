"""Training on real + generated data: a class-conditional generator's synthetic copy of the training set.

From "Leaving Reality to Imagination: Robust Classification via Generated Datasets" (Bansal & Grover,
2023): generate a synthetic copy of the training set per class and train the classifier on
Real ∪ Generated (1:1 by default). Three conditioning modes, here on any robustlab
:class:`~robustlab.models.generative.ConditionalGenerator` (our CPU stand-ins for Stable Diffusion):

``"labels"``         SD-Labels analog (class-name prompts): ``x = G(z, y)``, ``z ~ N(0, T² I)``, labels
                     allocated like the real data's (``ratio`` × each class's count).
``"images"``         SD-Images analog (image variations): encode a real image, ``z = E(x, y)``, and decode
                     a variation ``G(z + s·T·ε, y)`` around its own code (no pull toward the class prior).
``"labels+images"``  SD-Labels+Images analog (img2img with the class prompt, strength ``s``): the code is
                     noised toward the class prior, ``z' = √(1−s)·z + √s·T·ε`` (a variance-preserving
                     forward step, as a diffusion model noises before denoising), then decoded with class y.

``T`` is the sampling temperature (diversity). Image modes need an ``encode(x, y)`` (the CVAE's posterior
mean, or :class:`PCAMixtureGenerator`'s whitened PCA code). The generated set is drawn once, before
training (a fixed synthetic dataset, as the paper's), then :func:`robustlab.models.training.train_classifier`
trains on the union.

:class:`PCAMixtureGenerator` is the spec's CPU generator for digits: per-class PCA(12) followed by a
per-class GaussianMixture(4) (scikit-learn, full covariances) on the PCA codes. (The GREAT spec's
:class:`~robustlab.models.generative.PCAGaussianGenerator` is a different model: one global PCA and one
Gaussian per class.)

Example::

    from robustlab.data import load_dataset
    from robustlab.defend.train.generated import PCAMixtureGenerator, train_with_generated
    train = load_dataset("digits", split="train")
    gen = PCAMixtureGenerator.fit_dataset(train, seed=0)
    model = train_with_generated("DigitsMLP", train, gen, ratio=1.0, mode="labels", epochs=30, seed=0)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.model import Model, TorchModel
from robustlab.core.probe import Defense
from robustlab.core.registry import register
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.core.threat import ThreatModel
from robustlab.data.base import Dataset
from robustlab.models.generative import ConditionalGenerator

__all__ = ["GENERATION_MODES", "GeneratedDataAugmentation", "PCAMixtureGenerator", "generate_dataset",
           "generated_counts", "train_with_generated"]

GENERATION_MODES = ("labels", "images", "labels+images")


class PCAMixtureGenerator(ConditionalGenerator):
    """Per-class PCA(``n_pca``) + GaussianMixture(``n_mix``) on the codes (Bansal & Grover 2023 CPU spec).

    Class ``y``: ``x = clip(mean_y + c V_y, 0, 1)`` with ``V_y`` the class's top principal directions and the
    code ``c`` from the class's mixture, ``c = mu_{y,m} + L_{y,m} z`` (``L L^T`` the component covariance).
    Latent ``z`` has ``n_pca + 1`` coordinates: the first ``n_pca`` are the whitened within-component code
    (temperature and jitter act on these, ``continuous_dims``), the last picks the component,
    ``m = F_y^{-1}(Φ(z_last))`` through the class's cumulative mixture weights, so ``z ~ N(0, I)`` samples
    the fitted mixture exactly.
    """

    def __init__(self, image_shape: tuple[int, ...], num_classes: int, n_pca: int = 12, n_mix: int = 4):
        super().__init__(int(n_pca) + 1, num_classes, image_shape)
        if n_pca < 1 or n_mix < 1:
            raise ConfigError(f"PCAMixtureGenerator: n_pca={n_pca} and n_mix={n_mix} must be >= 1")
        self.n_pca, self.n_mix = int(n_pca), int(n_mix)
        self.continuous_dims = self.n_pca
        dim = math.prod(self.image_shape)
        k, p, m = num_classes, self.n_pca, self.n_mix
        self.register_buffer("mean", torch.zeros(k, dim))
        self.register_buffer("components", torch.zeros(k, p, dim))
        self.register_buffer("weights", torch.full((k, m), 1.0 / m))
        self.register_buffer("mix_mu", torch.zeros(k, m, p))
        self.register_buffer("mix_chol", torch.eye(p).repeat(k, m, 1, 1))

    @classmethod
    def fit_dataset(cls, data: Dataset, *, n_pca: int = 12, n_mix: int = 4, seed: int = 0) -> PCAMixtureGenerator:
        """A generator fitted to an image :class:`Dataset` (``x (N, C, H, W)`` in [0, 1])."""
        if not isinstance(data.x, torch.Tensor) or data.x.dim() != 4:
            raise DataError("PCAMixtureGenerator needs images (N, C, H, W)", fix="pass an image Dataset")
        k = len(data.class_names) or int(data.y.max()) + 1
        return cls(tuple(data.x.shape[1:]), k, n_pca, n_mix).fit(data.x, data.y, seed=seed)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> PCAMixtureGenerator:
        """Fit PCA and a GaussianMixture (EM, k-means init, ``random_state`` from ``seed``) per class."""
        from sklearn.mixture import GaussianMixture

        flat = torch.as_tensor(x).flatten(1).double()
        y = torch.as_tensor(y).reshape(-1).long()
        if len(flat) != len(y) or flat.shape[1] != self.mean.shape[1]:
            raise DataError(f"PCAMixtureGenerator.fit: {len(flat)} images of {flat.shape[1]} values and "
                            f"{len(y)} labels, expected images of shape {self.image_shape}",
                            fix="pass images and one label per image")
        p, m = self.n_pca, self.n_mix
        for c in range(self.num_classes):  # a loop over classes, not examples
            xc = flat[y == c]
            if len(xc) < max(p + 1, m):
                raise DataError(f"PCAMixtureGenerator: class {c} has {len(xc)} examples, needs >= {max(p + 1, m)}",
                                fix="lower n_pca / n_mix or give more examples per class")
            mean = xc.mean(0)
            _, _, vh = torch.linalg.svd(xc - mean, full_matrices=False)
            comps = vh[:p]
            codes = ((xc - mean) @ comps.T).numpy()
            gmm = GaussianMixture(m, covariance_type="full", random_state=derive_seed(seed, "gmm", c) % 2**31)
            gmm.fit(codes)
            self.mean[c] = mean.float()
            self.components[c] = comps.float()
            self.weights[c] = torch.from_numpy(gmm.weights_).float()
            self.mix_mu[c] = torch.from_numpy(gmm.means_).float()
            self.mix_chol[c] = torch.linalg.cholesky(torch.from_numpy(gmm.covariances_)).float()
        return self.eval()

    def _component(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cum = self.weights[y].cumsum(1)
        q = torch.special.ndtr(u)[:, None]
        return (cum < q).sum(1).clamp(max=self.n_mix - 1)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = self._check(z, y)
        comp = self._component(z[:, -1], y)
        mu, chol = self.mix_mu[y, comp], self.mix_chol[y, comp]
        code = mu + torch.einsum("bij,bj->bi", chol, z[:, :-1])
        x = self.mean[y] + torch.einsum("bp,bpd->bd", code, self.components[y])
        return x.clamp(0.0, 1.0).view(len(z), *self.image_shape)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent of ``x`` under class ``y`` (its most responsible component), and zero log-variances.

        ``decode(encode(x, y)[0], y)`` is ``x`` projected on the class's PCA subspace (clipped)."""
        y = torch.as_tensor(y).reshape(-1).long()
        flat = x.flatten(1).to(self.mean.dtype)
        if flat.shape[1] != self.mean.shape[1] or len(flat) != len(y):
            raise DataError(f"encode: {len(flat)} images of {flat.shape[1]} values and {len(y)} labels",
                            fix=f"pass images of shape {self.image_shape} and one label each")
        self._check(torch.zeros(len(y), self.latent_dim), y)
        code = torch.einsum("bd,bpd->bp", flat - self.mean[y], self.components[y])
        diff = (code[:, None, :] - self.mix_mu[y]).unsqueeze(-1)  # (B, m, p, 1)
        w = torch.linalg.solve_triangular(self.mix_chol[y], diff, upper=False).squeeze(-1)  # (B, m, p)
        logdet = self.mix_chol[y].diagonal(dim1=-2, dim2=-1).log().sum(-1)
        logp = self.weights[y].clamp_min(1e-12).log() - 0.5 * w.pow(2).sum(-1) - logdet
        comp = logp.argmax(1)
        cum = self.weights[y].cumsum(1)
        lo = torch.where(comp > 0, cum.gather(1, (comp - 1).clamp(min=0)[:, None])[:, 0], torch.zeros_like(comp,
                         dtype=cum.dtype))
        mid = (lo + cum.gather(1, comp[:, None])[:, 0]) / 2
        u = torch.special.ndtri(mid.clamp(1e-6, 1 - 1e-6))
        z = torch.cat([w[torch.arange(len(y)), comp], u[:, None]], 1)
        return z, torch.zeros_like(z)

    def extra_repr(self) -> str:
        return f"n_pca={self.n_pca}, n_mix={self.n_mix}, num_classes={self.num_classes}, image_shape={self.image_shape}"


def generated_counts(labels: torch.Tensor, ratio: float, num_classes: int) -> torch.Tensor:
    """Generated examples per class: ``ratio`` × each class's real count, rounded by largest remainder so
    the total is ``round(ratio · N)`` (a synthetic copy of the training set per class at ``ratio = 1``)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 0:
        raise ConfigError(f"ratio must be a finite number >= 0 (generated : real), got {ratio!r}",
                          fix="pass e.g. ratio=1.0 for the paper's 1:1 mixture")
    real = torch.bincount(torch.as_tensor(labels).reshape(-1).long(), minlength=num_classes).double()
    want = real * float(ratio)
    base = want.floor()
    left = int(round(float(ratio) * float(real.sum()))) - int(base.sum())
    if left > 0:
        frac = want - base
        order = torch.argsort(frac, descending=True, stable=True)
        base[order[:left]] += 1
    return base.long()


def _check_generator(gen: Any, data: Dataset) -> ConditionalGenerator:
    if not isinstance(gen, ConditionalGenerator):
        raise ConfigError(f"need a robustlab ConditionalGenerator, got {type(gen).__name__}",
                          fix="pass PCAMixtureGenerator.fit_dataset(train) or load_generator('digits-cvae')")
    if not isinstance(data.x, torch.Tensor) or data.x.dim() < 2:
        raise DataError(f"generated-data training needs tensor images; dataset {data.name!r} is {data.modality}",
                        fix="use an image dataset (float tensors in [0, 1])")
    if tuple(data.x.shape[1:]) != tuple(gen.image_shape):
        raise DataError(f"the generator makes images of shape {gen.image_shape}, the data has "
                        f"{tuple(data.x.shape[1:])}", fix="fit the generator on this dataset")
    k = len(data.class_names) or int(data.y.max()) + 1
    if k != gen.num_classes:
        raise DataError(f"the generator has {gen.num_classes} classes, the data {k}",
                        fix="fit the generator on this dataset")
    return gen


def _encode(gen: ConditionalGenerator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    enc = getattr(gen, "encode", None)
    if not callable(enc):
        raise ConfigError(f"{type(gen).__name__} has no encode(x, y); the image-conditioned modes need one",
                          fix="use mode='labels', or a ConditionalVAE / PCAMixtureGenerator")
    out = enc(x, y)
    return (out[0] if isinstance(out, (tuple, list)) else out).detach()


@torch.no_grad()
def generate_dataset(generator: ConditionalGenerator, real: Dataset, *, ratio: float = 1.0, mode: str = "labels",
                     temperature: float = 1.0, strength: float = 0.5, seed: int = 0,
                     batch_size: int = 1024) -> Dataset:
    """A generated counterpart of ``real``: ``generated_counts(real.y, ratio)`` images per class (see module doc).

    Args:
        generator: a class-conditional generator for ``real``'s image shape and classes.
        real: the real training data (its labels set the class allocation; its images are the sources
            of the image-conditioned modes, each class's images cycled in a seeded order).
        ratio: generated : real (1.0 = the paper's 1:1 default).
        mode: ``"labels"``, ``"images"`` or ``"labels+images"``.
        temperature: scale ``T`` of the latent noise (1 = the generator's own distribution).
        strength: ``s`` of the image modes (jitter size / img2img noising strength, in [0, 1] for the latter).
        seed: the labels' sources, latents and noise.

    Returns: a :class:`Dataset` (name ``"<real>:generated-<mode>"``, labels sorted by class) with ``ids`` =
    ``-1 - index`` (never colliding with real ids) and, for the image modes, ``attrs["source_row"]``: the row of
    ``real`` each image was conditioned on.
    """
    gen = _check_generator(generator, real)
    if mode not in GENERATION_MODES:
        raise ConfigError(f"unknown generation mode {mode!r}", fix=f"use one of {list(GENERATION_MODES)}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(f"temperature must be a finite number >= 0, got {temperature!r}", fix="pass e.g. 1.0")
    if not (math.isfinite(strength) and 0 <= strength and (mode != "labels+images" or strength <= 1)):
        raise ConfigError(f"strength must be >= 0 (and <= 1 for 'labels+images'), got {strength!r}",
                          fix="pass e.g. strength=0.5")
    k = gen.num_classes
    counts = generated_counts(real.y, ratio, k)
    g = torch_generator(derive_seed(seed, "generated", mode))
    cont = int(getattr(gen, "continuous_dims", gen.latent_dim))
    ys = torch.repeat_interleave(torch.arange(k), counts)
    n = len(ys)
    dev = gen._device()
    if mode == "labels":
        src = torch.arange(n)
        z = torch.randn(n, gen.latent_dim, generator=g)
        z[:, :cont] *= temperature
    else:
        parts = []
        for c in range(k):  # per class, not per example: the class's images in a seeded order, cycled
            rows = torch.nonzero(real.y == c).flatten()
            if int(counts[c]) and not len(rows):
                raise DataError(f"class {c} has no real image to condition on", fix="use mode='labels'")
            if int(counts[c]):
                order = rows[torch.randperm(len(rows), generator=g)]
                parts.append(order.repeat(math.ceil(int(counts[c]) / len(rows)))[:int(counts[c])])
        src = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        z0 = torch.cat([_encode(gen, real.x[src[i:i + batch_size]].float().to(dev), ys[i:i + batch_size].to(dev)).cpu()
                        for i in range(0, n, batch_size)]) if n else torch.zeros(0, gen.latent_dim)
        eps = torch.randn(n, cont, generator=g) * temperature
        z = z0.clone()
        if mode == "images":
            z[:, :cont] = z0[:, :cont] + strength * eps
        else:
            z[:, :cont] = math.sqrt(1.0 - strength) * z0[:, :cont] + math.sqrt(strength) * eps
    was = gen.training
    gen.eval()
    try:
        xs = [gen.decode(z[i:i + batch_size].to(dev), ys[i:i + batch_size].to(dev)).cpu()
              for i in range(0, n, batch_size)]
    finally:
        gen.train(was)
    x = torch.cat(xs).to(real.x.dtype) if xs else real.x[:0].clone()
    attrs = {} if mode == "labels" else {"source_row": src.long()}
    return Dataset(x=x, y=ys, modality="image", class_names=list(real.class_names),
                   name=f"{real.name}:generated-{mode}", source=f"generated by {type(gen).__name__} ({mode})",
                   ids=-1 - torch.arange(n, dtype=torch.long), attrs=attrs)


def _build_model(model_or_arch: Any, data: Dataset) -> nn.Module | TorchModel:
    if isinstance(model_or_arch, (nn.Module, TorchModel)):
        return model_or_arch
    if isinstance(model_or_arch, Model):
        raise ConfigError(f"generated-data training needs a torch model, got {type(model_or_arch).__name__}",
                          fix="pass the nn.Module (or robustlab TorchModel) to train")
    from robustlab.models.zoo import ARCHITECTURES

    if isinstance(model_or_arch, str):
        if model_or_arch not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {model_or_arch!r}", fix=f"use one of {sorted(ARCHITECTURES)}")
        cls = ARCHITECTURES[model_or_arch]
        k = len(data.class_names) or int(data.y.max()) + 1
        shape = tuple(data.x.shape[1:])
        if model_or_arch == "ShapeWorldResNet":
            return cls(in_channels=shape[0], num_classes=k)
        return cls(in_shape=shape, num_classes=k)
    raise ConfigError(f"model_or_arch must be an nn.Module, TorchModel or architecture name, got "
                      f"{type(model_or_arch).__name__}", fix="pass e.g. 'DigitsMLP'")


def train_with_generated(model_or_arch: nn.Module | TorchModel | str, real_data: Dataset,
                         generator: ConditionalGenerator, *, ratio: float = 1.0, mode: str = "labels",
                         temperature: float = 1.0, strength: float = 0.5, epochs: int = 30, batch_size: int = 64,
                         lr: float = 3e-3, weight_decay: float = 1e-4, optimizer: str = "adamw",
                         schedule: str = "onecycle", seed: int = 0, device: str | torch.device = "cpu",
                         progress: bool = False, init: bool = True) -> TorchModel:
    """Train a classifier on Real ∪ Generated (Bansal & Grover, "Leaving Reality to Imagination", 2023).

    Draws :func:`generate_dataset` once (``ratio``, ``mode``, ``temperature``, ``strength``, seeded from
    ``seed``), concatenates it with ``real_data`` and trains with
    :func:`robustlab.models.training.train_classifier` (cross-entropy, ``optimizer``/``schedule``, ``epochs``
    passes over the union, so more generated data also means more steps, as in the paper). ``ratio=0`` is
    plain real-data training with the same recipe.

    Defaults differ from the paper (ResNet-18/50, SGD, 88 epochs on ImageNet-100/1K): AdamW 3e-3,
    one-cycle, 30 epochs, batch 64 suit the small CPU models.

    Returns: the trained :class:`TorchModel` (in place for a module / TorchModel argument; a new network for
    an architecture name) with ``train_history`` (the trainer's history plus ``n_real``, ``n_generated``,
    ``generated_counts``, ``mode``, ``ratio``, ``temperature``, ``strength``).
    """
    gen = _check_generator(generator, real_data)
    fake = generate_dataset(gen, real_data, ratio=ratio, mode=mode, temperature=temperature, strength=strength,
                            seed=seed)
    union = Dataset(x=torch.cat([real_data.x, fake.x.to(real_data.x.dtype)]), y=torch.cat([real_data.y, fake.y]),
                    modality="image", class_names=list(real_data.class_names),
                    name=f"{real_data.name}+generated", source=real_data.source)
    from robustlab.models.training import train_classifier

    model = _build_model(model_or_arch, real_data)
    hist = train_classifier(model, union, epochs=epochs, batch_size=min(batch_size, len(union)), lr=lr,
                            weight_decay=weight_decay, seed=seed, device=device, progress=progress,
                            optimizer=optimizer, schedule=schedule, init=init,
                            description=f"training on real + generated ({mode})")
    tm = model if isinstance(model, TorchModel) else TorchModel(model, device=device,
                                                                num_classes=gen.num_classes)
    hist.update(n_real=len(real_data), n_generated=len(fake), generated_counts=generated_counts(
        real_data.y, ratio, gen.num_classes).tolist(), mode=mode, ratio=float(ratio), temperature=float(temperature),
        strength=float(strength))
    tm.train_history = hist  # type: ignore[attr-defined]
    return tm


@register("defense", "generated_data")
@dataclass(frozen=True)
class GeneratedDataAugmentation(Defense):
    """Train on real + generated data (Bansal & Grover, "Leaving Reality to Imagination: Robust
    Classification via Generated Datasets", 2023), as a training-time :class:`Defense`.

    Args:
        generator: a :class:`ConditionalGenerator`; ``"pca-mixture"`` (default: :class:`PCAMixtureGenerator`
            fitted on the training data, the CPU spec's) or a cached generator's name
            (:func:`robustlab.models.generative.load_generator`, e.g. ``"digits-cvae"``).
        ratio, mode, temperature, strength: as :func:`generate_dataset` (1:1 SD-Labels analog by default).
        epochs, batch_size, lr, weight_decay, optimizer, schedule, seed, progress: the classifier's training.
        n_pca, n_mix: the ``"pca-mixture"`` generator's PCA dimension and mixture size (12 and 4).

    ``train(model, data, threat)`` returns a trained copy; the threat model is not used (the method
    targets natural distribution shifts, not an Lp ball).

    Example::

        robust = GeneratedDataAugmentation(epochs=30).train(DigitsMLP(), train, threat=None)
    """

    generator: Any = "pca-mixture"
    ratio: float = 1.0
    mode: str = "labels"
    temperature: float = 1.0
    strength: float = 0.5
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    seed: int = 0
    progress: bool = False
    n_pca: int = 12
    n_mix: int = 4

    name = "generated_data"

    def __post_init__(self) -> None:
        if self.mode not in GENERATION_MODES:
            raise ConfigError(f"unknown generation mode {self.mode!r}", fix=f"use one of {list(GENERATION_MODES)}")
        generated_counts(torch.zeros(1, dtype=torch.long), self.ratio, 1)  # validates ratio
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(f"GeneratedDataAugmentation: epochs={self.epochs}, batch_size={self.batch_size}, "
                              f"lr={self.lr} must be > 0", fix="pass positive epochs, batch_size and lr")

    def make_generator(self, data: Dataset) -> ConditionalGenerator:
        """The generator this defense uses for ``data`` (fitted or loaded as configured)."""
        if isinstance(self.generator, ConditionalGenerator):
            return self.generator
        if self.generator == "pca-mixture":
            return PCAMixtureGenerator.fit_dataset(data, n_pca=self.n_pca, n_mix=self.n_mix, seed=self.seed)
        if isinstance(self.generator, str):
            from robustlab.models.generative import load_generator

            return load_generator(self.generator, progress=self.progress)
        raise ConfigError(f"generator must be a ConditionalGenerator or a name, got {type(self.generator).__name__}",
                          fix="pass 'pca-mixture', 'digits-cvae' or a fitted generator")

    def train(self, model: Model | nn.Module | str, data: Dataset, threat: ThreatModel | None = None) -> TorchModel:
        """A copy of ``model`` (or a new network for an architecture name) trained on real + generated data."""
        net = copy.deepcopy(model) if isinstance(model, (nn.Module, TorchModel)) else model
        return train_with_generated(net, data, self.make_generator(data), ratio=self.ratio, mode=self.mode,
                                    temperature=self.temperature, strength=self.strength, epochs=self.epochs,
                                    batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                                    optimizer=self.optimizer, schedule=self.schedule, seed=self.seed,
                                    progress=self.progress)

