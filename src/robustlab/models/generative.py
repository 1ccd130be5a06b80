"""Class-conditional generative models robustlab trains itself: a conditional VAE on digits and ShapeWorld.

Used where a paper evaluates a classifier on *generated* data (GREAT Score, Li, Chen & Ho, "GREAT Score:
Global Robustness Evaluation of Adversarial Perturbation using Generative Models", 2024, samples
``x = G(z | y)`` with ``z ~ N(0, I)``). The paper uses a pretrained StyleGAN2 / BigGAN; on CPU we train a
small conditional VAE ("Learning Structured Output Representation using Deep Conditional Generative
Models", Sohn, Lee & Yan, 2015) in seconds (digits) to a few minutes (ShapeWorld). Its decoder is
a deterministic, differentiable map ``decode(z, y) -> [0, 1]`` images, which is all GREAT (and a latent-space
search) needs.

A second, closed-form kind, ``"pca-gaussian"``, is the GREAT spec's CPU generator for digits: a
class-conditional Gaussian in the PCA-``k`` space of the data, ``x = clip(mean + V (mu_y + L_y z))``.

``load_generator("digits-cvae")`` trains once and caches ``<cache>/generators/<name>[-quick]/`` with
``model.pt`` + ``meta.json`` (SHA-256 of the weights, config, versions), written atomically with the
zoo's lock and helpers, ``meta.json`` last; a stale or unreadable cache is retrained with a warning.

Example::

    from robustlab.models.generative import load_generator
    from robustlab.core.rng import torch_generator
    gen = load_generator("digits-cvae")
    x, y = gen.sample(16, generator=torch_generator(0))    # x (16, 1, 8, 8) in [0, 1], y (16,)
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.data.base import Dataset

__all__ = ["ConditionalGenerator", "ConditionalVAE", "GENERATORS", "GeneratorEntry", "PCAGaussianGenerator",
           "generator_dir", "load_generator", "train_generator"]

FORMAT = 1
"""Version of the generator cache layout; bump it to invalidate every cached generator."""


class ConditionalGenerator(nn.Module):
    """A class-conditional image generator ``x = decode(z, y)``, ``z ~ N(0, I_latent_dim)``, x in [0, 1].

    Subclasses implement :meth:`decode` (differentiable in ``z``); :meth:`sample` draws seeded samples.
    """

    def __init__(self, latent_dim: int, num_classes: int, image_shape: tuple[int, ...]):
        super().__init__()
        if latent_dim < 1 or num_classes < 1:
            raise ConfigError(f"latent_dim={latent_dim} and num_classes={num_classes} must be >= 1")
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.image_shape = tuple(int(s) for s in image_shape)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images ``(B, *image_shape)`` in [0, 1] for latents ``z (B, latent_dim)`` and labels ``y (B,)``."""
        raise NotImplementedError

    def _check(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(f"decode: z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}",
                              fix=f"draw z = torch.randn(B, {self.latent_dim})")
        y = torch.as_tensor(y, device=z.device).reshape(-1).long()
        if len(y) != len(z):
            raise ConfigError(f"decode: {len(z)} latents but {len(y)} labels", fix="give one label per latent")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ConfigError(f"decode: labels must lie in [0, {self.num_classes}), got "
                              f"[{int(y.min())}, {int(y.max())}]", fix="pass class indices of this generator")
        return y

    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        if p is None:
            b = next(self.buffers(), None)
            return b.device if b is not None else torch.device("cpu")
        return p.device

    @torch.no_grad()
    def sample(self, n: int | None = None, y: torch.Tensor | int | None = None, *,
               generator: torch.Generator | None = None, batch_size: int = 1024
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` seeded samples ``(x, y)``: labels uniform over classes (``y=None``), one class (``y=int``)
        or the given labels (``y`` a tensor; then ``n`` may be omitted). ``z ~ N(0, I)`` from ``generator``.

        The same generator state gives the same samples (labels are drawn before latents)."""
        if generator is None:
            raise ConfigError("sample needs a torch.Generator (robustlab has no global RNG)",
                              fix="pass generator=robustlab.core.rng.torch_generator(seed)")
        gdev = generator.device
        if y is None or isinstance(y, int):
            if n is None or n < 0:
                raise ConfigError(f"sample: n={n} must be a non-negative int when no label tensor is given")
            if y is None:
                labels = torch.randint(0, self.num_classes, (int(n),), generator=generator, device=gdev)
            else:
                labels = torch.full((int(n),), int(y), dtype=torch.long)
        else:
            labels = torch.as_tensor(y).reshape(-1).long()
            if n is not None and int(n) != len(labels):
                raise ConfigError(f"sample: n={n} but {len(labels)} labels given", fix="omit n or match it")
        labels = labels.cpu()
        z = torch.randn(len(labels), self.latent_dim, generator=generator, device=gdev).cpu()
        was_training = self.training
        self.eval()
        dev = self._device()
        try:
            parts = [self.decode(z[i:i + batch_size].to(dev), labels[i:i + batch_size].to(dev)).cpu()
                     for i in range(0, len(labels), batch_size)]
        finally:
            self.train(was_training)
        x = torch.cat(parts) if parts else torch.zeros(0, *self.image_shape)
        return x, labels

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, num_classes={self.num_classes}, image_shape={self.image_shape}"


def _mlp(dims: list[int]) -> nn.Sequential:
    """Linear + ReLU layers through the widths ``dims``."""
    return nn.Sequential(*[m for a, b in zip(dims[:-1], dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())])


class ConditionalVAE(ConditionalGenerator):
    """A conditional VAE (Sohn et al., 2015): encoder q(z | x, y), decoder p(x | z, y) with Bernoulli pixels.

    ``arch="mlp"`` (flattened images, hidden widths ``hidden``) suits 8x8 digits; ``arch="conv"``
    (three stride-2 convolutions of widths ``channels`` and their transposes) needs H and W divisible by 8.
    The label enters both networks as a one-hot vector; the decoder ends in a sigmoid, so every output
    pixel lies in [0, 1].
    """

    def __init__(self, image_shape: tuple[int, ...], num_classes: int, latent_dim: int = 16, *, arch: str = "mlp",
                 hidden: tuple[int, ...] | list[int] = (256, 256),
                 channels: tuple[int, ...] | list[int] = (32, 64, 128)):
        super().__init__(latent_dim, num_classes, image_shape)
        if len(self.image_shape) != 3:
            raise ConfigError(f"ConditionalVAE needs image_shape (C, H, W), got {self.image_shape}")
        c, h, w = self.image_shape
        self.arch = arch
        k, d = self.num_classes, self.latent_dim
        if arch == "mlp":
            dims = [c * h * w + k, *hidden]
            self.encoder = _mlp(dims)
            self.enc_head = nn.Linear(dims[-1], 2 * d)
            ddims = [d + k, *reversed(list(hidden))]
            self.decoder = nn.Sequential(*_mlp(ddims), nn.Linear(ddims[-1], c * h * w))
        elif arch == "conv":
            if h % 8 or w % 8 or len(channels) != 3:
                raise ConfigError(f"ConditionalVAE(arch='conv') needs H, W divisible by 8 and 3 channel widths, "
                                  f"got image_shape={self.image_shape}, channels={list(channels)}",
                                  fix="use arch='mlp' for small images")
            c1, c2, c3 = (int(v) for v in channels)
            self._low = (c3, h // 8, w // 8)
            flat = c3 * (h // 8) * (w // 8)
            self.encoder = nn.Sequential(
                nn.Conv2d(c, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(),
                nn.Conv2d(c2, c3, 4, 2, 1), nn.ReLU(), nn.Flatten())
            self.enc_head = nn.Sequential(nn.Linear(flat + k, 256), nn.ReLU(), nn.Linear(256, 2 * d))
            self.dec_fc = nn.Sequential(nn.Linear(d + k, 256), nn.ReLU(), nn.Linear(256, flat), nn.ReLU())
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(c3, c2, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(),
                nn.ConvTranspose2d(c1, c, 4, 2, 1))
        else:
            raise ConfigError(f"unknown ConditionalVAE arch {arch!r}", fix="use arch='mlp' or 'conv'")

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance ``(B, latent_dim)`` each, of q(z | x, y)."""
        onehot = F.one_hot(y, self.num_classes).to(x.dtype)
        if self.arch == "mlp":
            h = self.encoder(torch.cat([x.flatten(1), onehot], 1))
        else:
            h = torch.cat([self.encoder(x), onehot], 1)
        mu, logvar = self.enc_head(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid decoder outputs ``(B, C, H, W)``."""
        y = self._check(z, y)
        h = torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], 1)
        if self.arch == "mlp":
            return self.decoder(h).view(len(z), *self.image_shape)
        return self.decoder(self.dec_fc(h).view(len(z), *self._low))

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z, y))

    def loss(self, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, beta: float = 1.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Negative ELBO per example (mean over the batch): Bernoulli reconstruction (summed BCE over pixels)
        + ``beta`` * KL(q(z | x, y) || N(0, I)); ``noise`` is the reparameterization's N(0, I) draw.
        Returns (loss, reconstruction, kl)."""
        mu, logvar = self.encode(x, y)
        z = mu + (0.5 * logvar).exp() * noise
        rec = F.binary_cross_entropy_with_logits(self.decode_logits(z, y), x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return (rec + beta * kl).mean(), rec.mean(), kl.mean()


class PCAGaussianGenerator(ConditionalGenerator):
    """A class-conditional Gaussian in PCA space (the GREAT spec's CPU generator for digits).

    ``x = clip(mean + V (mu_y + L_y z), 0, 1)`` with ``V`` the top-``latent_dim`` principal directions
    of the training data, ``mu_y`` / ``L_y L_y^T`` the class mean / covariance of the PCA coefficients
    (Cholesky factor, ridge 1e-4). Fitted in closed form; differentiable in ``z`` (almost everywhere).
    """

    def __init__(self, image_shape: tuple[int, ...], num_classes: int, latent_dim: int = 20):
        super().__init__(latent_dim, num_classes, image_shape)
        dim = 1
        for s in self.image_shape:
            dim *= s
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.zeros(latent_dim, dim))
        self.register_buffer("class_mu", torch.zeros(num_classes, latent_dim))
        self.register_buffer("class_chol", torch.eye(latent_dim).repeat(num_classes, 1, 1))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> PCAGaussianGenerator:
        """Fit PCA and the per-class Gaussians to ``x (N, *image_shape)``, ``y (N,)``; returns ``self``."""
        flat = x.flatten(1).double()
        mean = flat.mean(0)
        _, _, vh = torch.linalg.svd(flat - mean, full_matrices=False)
        comps = vh[: self.latent_dim]
        coef = (flat - mean) @ comps.T
        mus, chols = [], []
        for c in range(self.num_classes):  # a loop over classes, not examples
            cc = coef[y == c]
            if len(cc) < 2:
                raise DataError(f"pca-gaussian: class {c} has {len(cc)} training examples", fix="give >= 2 per class")
            cov = torch.cov(cc.T) + 1e-4 * torch.eye(self.latent_dim, dtype=cc.dtype)
            mus.append(cc.mean(0))
            chols.append(torch.linalg.cholesky(cov))
        self.mean.copy_(mean.float())
        self.components.copy_(comps.float())
        self.class_mu.copy_(torch.stack(mus).float())
        self.class_chol.copy_(torch.stack(chols).float())
        return self

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = self._check(z, y)
        coef = self.class_mu[y] + torch.einsum("bij,bj->bi", self.class_chol[y], z)
        return (self.mean + coef @ self.components).clamp(0.0, 1.0).view(len(z), *self.image_shape)


def _as_xy(data: Dataset | tuple[torch.Tensor, torch.Tensor], y: torch.Tensor | None
           ) -> tuple[torch.Tensor, torch.Tensor, int]:
    if isinstance(data, Dataset):
        x, labels, k = data.x, data.y, data.num_classes
    else:
        if y is None and isinstance(data, (tuple, list)) and len(data) == 2:
            data, y = data
        if y is None:
            raise ConfigError("train_generator needs labels", fix="pass a Dataset, (x, y), or x and y")
        x, labels = torch.as_tensor(data), torch.as_tensor(y).reshape(-1).long()
        k = int(labels.max()) + 1 if len(labels) else 0
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4:
        raise DataError("train_generator needs float images (N, C, H, W) in [0, 1]",
                        fix="pass an image Dataset such as load_dataset('digits')")
    if len(x) != len(labels) or len(x) < 2:
        raise DataError(f"train_generator: {len(x)} images and {len(labels)} labels", fix="give >= 2 labelled images")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise DataError("train_generator: images must lie in [0, 1]", fix="scale raw pixels to [0, 1]")
    return x.float(), labels, k


def train_generator(data: Dataset | tuple[torch.Tensor, torch.Tensor] | torch.Tensor,
                    y: torch.Tensor | None = None, *, kind: str = "cvae", epochs: int = 100, batch_size: int = 128,
                    lr: float = 2e-3, beta: float = 1.0, latent_dim: int = 16, arch: str | None = None,
                    hidden: tuple[int, ...] | list[int] = (256, 256),
                    channels: tuple[int, ...] | list[int] = (32, 64, 128), num_classes: int | None = None,
                    seed: int = 0, device: str | torch.device = "cpu", progress: bool = False,
                    history: dict[str, Any] | None = None) -> ConditionalGenerator:
    """Train a class-conditional generator on labelled images (GREAT Score's G, Li et al. 2024, on CPU).

    Args:
        data: a :class:`Dataset`, an ``(x, y)`` pair, or images ``x (N, C, H, W)`` in [0, 1] with ``y``.
        kind: ``"cvae"`` (Adam, negative ELBO, cosine learning-rate decay) or ``"pca-gaussian"``
            (closed form; ``latent_dim`` = number of principal components, 20 in the GREAT spec).
        epochs, batch_size, lr, beta: CVAE training settings (``beta`` weighs the KL term).
        latent_dim: dimension of ``z``.
        arch: ``"mlp"`` or ``"conv"``; default conv when H, W >= 16 and divisible by 8, else mlp.
        hidden, channels: widths of the mlp / conv networks.
        num_classes: number of classes (default: from the dataset / the largest label + 1).
        seed: determines initialization, shuffling and the reparameterization noise.
        history: if given, filled with per-epoch ``loss``, ``rec``, ``kl`` and ``seconds``.

    Returns:
        A :class:`ConditionalGenerator` in eval mode.
    """
    x, labels, k = _as_xy(data, y)
    k = int(num_classes) if num_classes is not None else k
    if len(labels) and int(labels.max()) >= k:
        raise DataError(f"train_generator: label {int(labels.max())} >= num_classes={k}", fix="fix num_classes")
    shape = tuple(x.shape[1:])
    dev = torch.device(device)
    start = time.perf_counter()
    if kind == "pca-gaussian":
        if latent_dim > min(x[0].numel(), len(x)):
            raise ConfigError(f"pca-gaussian: latent_dim={latent_dim} exceeds the data's dimension")
        gen: ConditionalGenerator = PCAGaussianGenerator(shape, k, latent_dim).fit(x, labels)
        if history is not None:
            history.update(loss=[], rec=[], kl=[], seconds=time.perf_counter() - start)
        return gen.eval()
    if kind != "cvae":
        raise ConfigError(f"unknown generator kind {kind!r}", fix="use kind='cvae' or 'pca-gaussian'")
    if epochs < 1 or batch_size < 1 or lr <= 0 or beta < 0:
        raise ConfigError(f"train_generator: epochs={epochs}, batch_size={batch_size}, lr={lr}, beta={beta}",
                          fix="pass epochs, batch_size, lr > 0 and beta >= 0")
    if arch is None:
        arch = "conv" if shape[1] >= 16 and shape[1] % 8 == 0 and shape[2] % 8 == 0 else "mlp"
    from robustlab.models.training import _progress_bar, init_parameters

    vae = ConditionalVAE(shape, k, latent_dim, arch=arch, hidden=hidden, channels=channels).to(dev)
    init_parameters(vae, seed)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    shuffle = torch_generator(derive_seed(seed, "generator-shuffle"))
    noise_gen = torch_generator(derive_seed(seed, "generator-noise"), dev)
    xs, ys = x.to(dev), labels.to(dev)
    n = len(xs)
    per_epoch = max(n // batch_size, 1)
    total = per_epoch * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s / total, 1.0))))
    hist: dict[str, Any] = {"loss": [], "rec": [], "kl": []}
    vae.train()
    try:
        with _progress_bar(progress, "training generator") as bar:
            task = bar.add_task("training generator", total=total, status="")
            for epoch in range(epochs):
                order = torch.randperm(n, generator=shuffle).to(dev)
                sums = torch.zeros(3, device=dev)
                for i in range(per_epoch):
                    idx = order[i * batch_size:(i + 1) * batch_size] if per_epoch > 1 else order
                    noise = torch.randn(len(idx), vae.latent_dim, generator=noise_gen, device=dev)
                    loss, rec, kl = vae.loss(xs[idx], ys[idx], noise, beta)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    sums += torch.stack([loss.detach(), rec.detach(), kl.detach()])
                    bar.update(task, advance=1)
                for key, v in zip(("loss", "rec", "kl"), (sums / per_epoch).tolist()):
                    hist[key].append(v)
                bar.update(task, status=f"epoch {epoch + 1}/{epochs} -ELBO {hist['loss'][-1]:.2f}")
    finally:
        vae.eval()
    hist["seconds"] = time.perf_counter() - start
    if history is not None:
        history.update(hist)
    return vae


# ----------------------------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class GeneratorEntry:
    """One cached generator: the dataset it is trained on and its full / quick training settings."""

    name: str
    dataset: str
    description: str
    full: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)

    def config(self, quick: bool = False) -> dict[str, Any]:
        """The training configuration (a fresh copy), with the quick overrides when ``quick``."""
        cfg = json.loads(json.dumps(self.full))
        if quick:
            cfg.update(json.loads(json.dumps(self.quick)))
        return cfg


GENERATORS: dict[str, GeneratorEntry] = {
    "digits-cvae": GeneratorEntry(
        name="digits-cvae", dataset="digits",
        description="conditional VAE (MLP 74-256-256-2x8 / 18-256-256-64, KL weight 0.5) on the digits train split",
        full={"kind": "cvae", "seed": 0, "data_seed": 0, "train_n": None, "latent_dim": 8, "arch": "mlp",
              "hidden": [256, 256], "epochs": 200, "batch_size": 128, "lr": 2e-3, "beta": 0.5},
        quick={"epochs": 5, "train_n": 300, "hidden": [64]},
    ),
    "shapeworld-cvae": GeneratorEntry(
        name="shapeworld-cvae", dataset="shapeworld",
        description="conditional VAE (3 stride-2 convs 16/32/64 and transposes, latent 16) on ShapeWorld 32x32",
        full={"kind": "cvae", "seed": 0, "data_seed": 0, "train_n": 10000, "latent_dim": 16, "arch": "conv",
              "channels": [16, 32, 64], "epochs": 10, "batch_size": 128, "lr": 2e-3, "beta": 1.0},
        quick={"epochs": 1, "train_n": 256, "channels": [8, 8, 8], "batch_size": 64},
    ),
    "digits-pca-gaussian": GeneratorEntry(
        name="digits-pca-gaussian", dataset="digits",
        description="class-conditional Gaussian in the PCA-20 space of the digits train split (GREAT's CPU spec)",
        full={"kind": "pca-gaussian", "seed": 0, "data_seed": 0, "train_n": None, "latent_dim": 20},
        quick={"train_n": 300},
    ),
}


def _gen_entry(name: str) -> GeneratorEntry:
    if name in GENERATORS:
        return GENERATORS[name]
    import difflib

    close = difflib.get_close_matches(str(name), list(GENERATORS), n=1, cutoff=0.4)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown generator {name!r}", fix=f"{hint}pick one of: {', '.join(GENERATORS)}")


def generator_dir(name: str, *, quick: bool = False) -> Path:
    """The cache folder of one generator: ``<cache>/generators/<name>[-quick]``."""
    from robustlab.models.zoo import _key, cache_dir

    _gen_entry(name)
    return cache_dir() / "generators" / _key(name, quick)


def _build(meta: dict[str, Any]) -> ConditionalGenerator:
    cfg = meta["config"]
    shape, k = tuple(meta["image_shape"]), int(meta["num_classes"])
    if cfg["kind"] == "pca-gaussian":
        return PCAGaussianGenerator(shape, k, cfg["latent_dim"])
    return ConditionalVAE(shape, k, cfg["latent_dim"], arch=cfg["arch"], hidden=cfg.get("hidden", (256, 256)),
                          channels=cfg.get("channels", (32, 64, 128)))


def _load_cached(folder: Path, entry: GeneratorEntry, quick: bool) -> ConditionalGenerator | None:
    path = folder / "meta.json"
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("name") != entry.name or bool(meta.get("quick")) != quick:
        raise ValueError("meta.json belongs to another generator or cache format")
    if meta.get("config") != entry.config(quick):
        raise ValueError("the generator's training config changed since it was cached")
    blob = (folder / "model.pt").read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
        raise ValueError("model.pt does not match the SHA-256 in meta.json")
    gen = _build(meta)
    gen.load_state_dict(torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True), strict=True)
    gen.info = meta  # type: ignore[attr-defined]
    return gen.eval()


def load_generator(name: str, *, quick: bool = False, device: str = "cpu", progress: bool = True,
                   retrain: bool = False) -> ConditionalGenerator:
    """A cached class-conditional generator (``"digits-cvae"``, ``"shapeworld-cvae"``,
    ``"digits-pca-gaussian"``), trained on first use and cached like the zoo's models.

    ``quick=True`` gives a tiny variant (trains in about a second; for tests: mechanics only, its samples
    are not recognisable). ``gen.info`` is the cache's meta dict (config, seed, training seconds,
    final losses, weights' SHA-256, versions).
    """
    from robustlab.models.zoo import _console_note, _dataset, _jsonable, _key, _versions, cached_or_trained

    entry = _gen_entry(name)
    folder = generator_dir(name, quick=quick)

    def train() -> tuple[ConditionalGenerator, dict[str, Any], bytes]:
        cfg = entry.config(quick)
        data = _dataset(entry.dataset, split="train", n=cfg.get("train_n"), seed=cfg["data_seed"])
        hist: dict[str, Any] = {}
        kwargs = {k: cfg[k] for k in ("epochs", "batch_size", "lr", "beta", "arch", "hidden", "channels") if k in cfg}
        gen = train_generator(data, kind=cfg["kind"], latent_dim=cfg["latent_dim"], seed=cfg["seed"],
                              num_classes=data.num_classes, device=device, progress=progress, history=hist,
                              **kwargs)
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in gen.state_dict().items()}, buf)
        blob = buf.getvalue()
        meta = {"format": FORMAT, "name": name, "key": _key(name, quick), "quick": quick,
                "description": entry.description, "dataset": entry.dataset, "config": _jsonable(cfg),
                "seed": cfg["seed"], "num_classes": data.num_classes, "class_names": list(data.class_names),
                "image_shape": list(data.x.shape[1:]), "train_n": len(data),
                "train_seconds": round(hist["seconds"], 3),
                "final_loss": hist["loss"][-1] if hist["loss"] else None,
                "final_rec": hist["rec"][-1] if hist["rec"] else None,
                "final_kl": hist["kl"][-1] if hist["kl"] else None,
                "weights_sha256": hashlib.sha256(blob).hexdigest(), "versions": _versions(),
                "threads": torch.get_num_threads(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        return gen, meta, blob

    gen, meta = cached_or_trained(folder, f"generator {_key(name, quick)!r}", retrain=retrain, progress=progress,
                                  load=lambda: _load_cached(folder, entry, quick), train=train,
                                  note=f"robustlab: training generator [bold]{_key(name, quick)}[/]")
    if meta is not None:
        gen.info = meta  # type: ignore[attr-defined]
        _console_note(progress, f"robustlab: generator {meta['key']} trained in {meta['train_seconds']:.0f} s")
    gen.info["cache_path"] = str(folder / "model.pt")  # type: ignore[attr-defined]
    return gen.to(device)
