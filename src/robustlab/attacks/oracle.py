"""Oracle-constrained latent search and FMR (Zhang et al., "Foundation Model-oriented Robustness: Robust Image
Model Evaluation with Pretrained Models", ICLR 2024).

A counterfactual ``x'`` of a test example ``(x, y)`` is searched in the latent space of a class-conditional
generator ``G``: start at ``z0 = Enc(x)``, run Adam (50 steps) to

    maximise_z  CE(f(x'(z)), y) - lam * sum_o D_o(x'(z))          s.t. ||z - z0||_2 <= radius

and keep ``x'`` only if every oracle of the zoo still predicts ``y`` ("within the same image-label
structure"). FMR (foundation-model-oriented robustness) is the accuracy of ``f`` on the kept set relative to
the oracle's (which is 1 by construction): :func:`fmr`.

CPU deviations from the paper (said again by the reproduction ``oracle-eval``):

* ``G`` is a small generator (the PCA-Gaussian decoder or the digits CVAE of
  :mod:`robustlab.models.generative`), not a VQGAN; the oracles are small models (SVM, kNN, MLP), not CLIP.
* ``residual=True`` (default) adds back what the small decoder cannot represent,
  ``x' = clip(x + G(z) - G(z0), 0, 1)``, so that ``z = z0`` gives ``x' = x`` (a VQGAN reconstructs ``x``
  almost exactly; PCA-20 / an 8-d CVAE do not).
* Non-differentiable oracles (scikit-learn SVM, kNN) act only as the keep-filter; the penalty sums over the
  differentiable ones.
* ``penalty="kl"`` (default) is ``D_o = KL(o(x) || o(x'))``, the oracle's divergence from its own belief on
  the original. It equals the paper's ``CE(o(x'), y)`` up to a constant in ``z`` when ``o(x)`` is one-hot
  ``y``, and its minimiser is ``x' = x``, so ``lam -> inf`` gives ``x' -> x`` (with the paper's CE
  penalty, Adam's normalised steps keep moving ``z`` towards the oracle's most confident image instead).
  ``penalty="ce"`` is the paper's term as written. ``lam = inf`` skips the search (``z = z0``).
* The Adam step size decays with a cosine over the steps (the final iterate settles).
* The defaults ``lam=1``, ``lr=0.05``, ``radius=2`` are ours (the spec fixes only Adam and 50 steps).

:class:`OracleLatentProbe` is not registered: ``x'`` leaves any Lp ball around ``x`` (so it is no ``Attack``)
and the registry has no kind for generator-based probes yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError, DataError, ModelError
from robustlab.core.model import Model, as_model, checked_scores
from robustlab.core.probe import Probe, ProbeOutput

__all__ = ["FMRResult", "OracleLatentProbe", "OracleSearchResult", "encode_latent", "fmr", "oracle_latent_search"]


def encode_latent(generator: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The start latent ``z0 (B, latent_dim)`` of ``x``: the encoder mean (CVAE, any ``encode``) or, for the
    PCA-Gaussian decoder, the whitened PCA coefficients ``L_y^{-1} (V (x - mean) - mu_y)``."""
    with torch.no_grad():
        if all(hasattr(generator, a) for a in ("components", "class_mu", "class_chol")):
            coef = (x.flatten(1) - generator.mean) @ generator.components.T - generator.class_mu[y]
            z = torch.linalg.solve_triangular(generator.class_chol[y], coef.unsqueeze(2), upper=False)
            return z.squeeze(2)
        enc = getattr(generator, "encode", None)
        if not callable(enc):
            raise ConfigError(f"{type(generator).__name__} has no encode(x, y) and is not a PCA-Gaussian decoder",
                              fix="use load_generator('digits-cvae') or load_generator('digits-pca-gaussian')")
        out = enc(x, y)
        return (out[0] if isinstance(out, (tuple, list)) else out).detach()


@dataclass
class OracleSearchResult:
    """The generated ``x_gen (B, ...)``, latents ``z``/``z0``, the keep mask ``retained`` (every oracle predicts
    ``y`` on ``x_gen``), the oracles' predictions ``oracle_pred (n_oracles, B)`` and ``distance`` (L2 in pixels)."""

    x_gen: torch.Tensor
    z: torch.Tensor
    z0: torch.Tensor
    retained: torch.Tensor
    oracle_pred: torch.Tensor
    distance: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


def _check(model: Any, oracles: Sequence[Any], generator: Any, x: torch.Tensor, y: torch.Tensor,
           steps: int, lr: float, radius: float, lam: float, penalty: str) -> tuple[Model, list[Model]]:
    f = as_model(model)
    if not f.has_gradients:
        raise ModelError(f"the latent search needs input gradients of the evaluated model; {type(f).__name__} "
                         "has none", fix="evaluate a differentiable torch model (sklearn models can be oracles)")
    if not oracles:
        raise ConfigError("oracle_latent_search needs at least one oracle", fix="pass oracles=[oracle_model, ...]")
    orcs = [as_model(o) for o in oracles]
    if not all(hasattr(generator, a) for a in ("decode", "latent_dim", "image_shape")):
        raise ConfigError(f"need a robustlab ConditionalGenerator, got {type(generator).__name__}",
                          fix="pass load_generator('digits-pca-gaussian') or load_generator('digits-cvae')")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or tuple(x.shape[1:]) != generator.image_shape:
        raise DataError(f"x must be float images of shape (B, {', '.join(map(str, generator.image_shape))}), "
                        f"got {getattr(x, 'shape', type(x).__name__)}", fix="pass images from the generator's dataset")
    if y.dim() != 1 or len(y) != len(x):
        raise DataError(f"{len(x)} images but labels of shape {tuple(y.shape)}", fix="pass one label per image")
    if steps < 0 or lr <= 0 or radius < 0 or not lam >= 0:
        raise ConfigError(f"steps={steps}, lr={lr}, radius={radius}, lam={lam}",
                          fix="use steps >= 0, lr > 0, radius >= 0 and lam >= 0 (math.inf: no search)")
    if penalty not in ("kl", "ce"):
        raise ConfigError(f"unknown penalty {penalty!r}", fix="use penalty='kl' (anchored) or 'ce' (paper's term)")
    return f, orcs


def oracle_latent_search(model: Model | Any, oracles: Sequence[Model | Any], generator: Any, x: torch.Tensor,
                         y: torch.Tensor, *, lam: float = 1.0, steps: int = 50, lr: float = 0.05,
                         radius: float = 2.0, penalty: str = "kl", residual: bool = True,
                         random_start: float = 0.0, rng: torch.Generator | None = None) -> OracleSearchResult:
    """Oracle-constrained counterfactuals (Zhang et al., ICLR 2024), batched over the examples.

    Args:
        model: the evaluated classifier ``f`` (differentiable: a torch model / ``TorchModel``).
        oracles: the oracle zoo; differentiable members enter the penalty, every member filters.
        generator: a class-conditional generator with ``decode(z, y)`` (see :func:`encode_latent`).
        x, y: images ``(B, *image_shape)`` in [0, 1] and labels ``(B,)``.
        lam: weight of the oracle penalty (``math.inf``: no search, ``x' = G(z0)`` / ``x``).
        steps, lr: Adam steps (paper: 50) and peak step size in latent units (cosine decay to 0).
        radius: bound on the latent change, ``||z - z0||_2 <= radius`` (projection after every step).
        penalty: ``"kl"`` (``KL(o(x) || o(x'))``, default) or ``"ce"`` (``CE(o(x'), y)``, the paper's term).
        residual: ``x' = clip(x + G(z) - G(z0))`` (default) instead of ``x' = G(z)``.
        random_start: std of a Gaussian start jitter in latent units (needs ``rng``); 0 = start at ``z0``.
        rng: torch.Generator for the jitter.

    Returns:
        :class:`OracleSearchResult`; ``retained[i]`` iff every oracle predicts ``y[i]`` on ``x_gen[i]``.
    """
    f, orcs = _check(model, oracles, generator, x, y, steps, lr, radius, lam, penalty)
    dev = f.device
    x, y = x.to(dev).float(), y.to(dev).long()
    diff = [o for o in orcs if o.has_gradients]
    z0 = encode_latent(generator, x, y)
    with torch.no_grad():
        base = generator.decode(z0, y)
        anchors = [F.log_softmax(o(x), 1) for o in diff] if penalty == "kl" else []

    def render(z: torch.Tensor) -> torch.Tensor:
        g = generator.decode(z, y)
        return (x + g - base).clamp(0.0, 1.0) if residual else g

    z = z0.clone()
    if random_start > 0:
        if rng is None:
            raise ConfigError("random_start > 0 needs rng=torch.Generator", fix="pass rng=torch_generator(seed)")
        z = z0 + random_start * torch.randn(z0.shape, generator=rng, device=rng.device).to(dev)
    if math.isfinite(lam) and steps > 0 and radius > 0:
        z = z.requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        for t in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * t / steps))
            xg = render(z)
            gain = F.cross_entropy(f(xg), y, reduction="sum")
            pen = torch.zeros((), device=dev)
            for i, o in enumerate(diff):
                lp = F.log_softmax(o(xg), 1)
                if penalty == "kl":
                    pen = pen + (anchors[i].exp() * (anchors[i] - lp)).sum()
                else:
                    pen = pen + F.nll_loss(lp, y, reduction="sum")
            (grad,) = torch.autograd.grad(-(gain - lam * pen), z)
            z.grad = grad
            opt.step()
            with torch.no_grad():  # project onto the latent L2 ball around z0
                d = z - z0
                n = d.norm(dim=1, keepdim=True).clamp_min(1e-12)
                z.copy_(z0 + d * (radius / n).clamp(max=1.0))
        z = z.detach()
    elif radius == 0 or not math.isfinite(lam):
        z = z0.clone()
    with torch.no_grad():
        xg = render(z)
    preds = torch.stack([checked_scores(o, xg).argmax(1).to(dev) for o in orcs])
    retained = (preds == y).all(0)
    dist = (xg - x).flatten(1).norm(dim=1)
    return OracleSearchResult(x_gen=xg, z=z, z0=z0, retained=retained.cpu(), oracle_pred=preds.cpu(),
                              distance=dist.cpu(), extras={"differentiable_oracles": len(diff)})


@dataclass
class FMRResult:
    """FMR = ``acc_f(D') / acc_O(D')`` on the oracle-validated generated set ``D'`` (``acc_O(D') = 1``)."""

    fmr: float
    retained_fraction: float
    n_retained: int
    clean_accuracy: float
    mean_distance: float
    search: OracleSearchResult

    def as_dict(self) -> dict[str, float]:
        """The scalar numbers (no tensors)."""
        return {"fmr": self.fmr, "retained_fraction": self.retained_fraction, "n_retained": self.n_retained,
                "clean_accuracy": self.clean_accuracy, "mean_distance": self.mean_distance}


def fmr(model: Model | Any, oracles: Sequence[Model | Any], generator: Any, x: torch.Tensor, y: torch.Tensor,
        **search: Any) -> FMRResult:
    """Foundation-model-oriented robustness of ``model`` (Zhang et al., ICLR 2024): its accuracy on the
    oracle-validated counterfactuals of ``(x, y)`` (:func:`oracle_latent_search`, ``search`` = its keywords)
    relative to the oracles' (1 by construction). ``fmr`` is NaN when no counterfactual is retained."""
    f = as_model(model)
    res = oracle_latent_search(f, oracles, generator, x, y, **search)
    y = y.cpu().long()
    clean = float((checked_scores(f, x.float()).argmax(1).cpu() == y).float().mean()) if len(y) else math.nan
    keep = res.retained
    n = int(keep.sum())
    if n:
        acc_f = float((checked_scores(f, res.x_gen[keep.to(res.x_gen.device)]).argmax(1).cpu() == y[keep]).float()
                      .mean())
        acc_o = float((res.oracle_pred[:, keep] == y[keep]).all(0).float().mean())  # 1 by construction
        value = acc_f / acc_o
        dist = float(res.distance[keep].mean())
    else:
        value, dist = math.nan, math.nan
    return FMRResult(fmr=value, retained_fraction=n / max(len(y), 1), n_retained=n, clean_accuracy=clean,
                     mean_distance=dist, search=res)


@dataclass
class OracleLatentProbe(Probe):
    """The oracle-constrained latent search as a probe, swept over the latent ``radius`` (Zhang et al., 2024).

    Not an :class:`~robustlab.core.probe.Attack`: ``x'`` comes from a generator and need not lie in an Lp ball
    around ``x``. ``attempted`` marks the retained examples (every oracle predicts ``y``), so the accuracy over
    attempted examples is FMR; the others keep their clean scores.
    """

    oracles: Sequence[Any]
    generator: Any
    lam: float = 1.0
    steps: int = 50
    lr: float = 0.05
    penalty: str = "kl"
    residual: bool = True

    kind: ClassVar[str] = "generative"
    setting_name: ClassVar[str] = "radius"
    default_settings: ClassVar[tuple[float, ...]] = (0.5, 1.0, 2.0, 4.0)
    needs_gradients: ClassVar[bool] = True

    def evaluate(self, model: Model, x: torch.Tensor, y: torch.Tensor, setting: float, *,
                 clean_pred: torch.Tensor, generator: torch.Generator) -> ProbeOutput:
        res = oracle_latent_search(model, self.oracles, self.generator, x, y, lam=self.lam, steps=self.steps,
                                   lr=self.lr, radius=float(setting), penalty=self.penalty, residual=self.residual)
        keep = res.retained
        xp = torch.where(keep.view(-1, *([1] * (x.dim() - 1))).to(x.device), res.x_gen.to(x.device), x)
        n = len(y)
        return ProbeOutput(scores=checked_scores(model, xp), attempted=keep,
                           queries=torch.full((n,), self.steps + 1, dtype=torch.long), x_probed=xp,
                           distance=torch.where(keep, res.distance, torch.zeros(n)),
                           extras={"retained_fraction": float(keep.float().mean()) if n else 0.0})

    def __repr__(self) -> str:
        return (f"OracleLatentProbe(oracles={len(self.oracles)}, generator={type(self.generator).__name__}, "
                f"lam={self.lam}, steps={self.steps}, lr={self.lr}, penalty={self.penalty!r}, "
                f"residual={self.residual})")
