"""Randomized smoothing: a certified L2 radius for the Gaussian-smoothed version of any classifier.

From "Certified Adversarial Robustness via Randomized Smoothing" (Cohen, Rosenfeld & Kolter, ICML
2019). The smoothed classifier ``g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)`` is robust within
``sigma * Phi^-1(pA_lower)`` in L2 around ``x`` (Theorem 1); ``PREDICT`` and ``CERTIFY`` (the paper's
Algorithm / pseudocode) estimate it by Monte Carlo with a guarantee that fails with probability at
most ``alpha`` per example.

Faithful to the paper and its code (``locuslab/smoothing``, ``code/core.py``): noise is added in the
raw input domain (normalization stays inside the model) and the noisy input is *not* clipped;
``pA_lower`` is the one-sided Clopper-Pearson bound; ``CERTIFY`` abstains when ``pA_lower < 0.5``;
``PREDICT`` runs the two-sided binomial test on the two top counts. Here both run batched over
examples and noise samples instead of one example at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.core.errors import ConfigError, ModelError, UnsupportedModelError
from robustlab.core.model import Model, as_model, checked_scores
from robustlab.core.probe import Certifier, ProbeOutput
from robustlab.core.registry import register
from robustlab.core.rng import derive_seed, parallel_randn, torch_generator

__all__ = ["ABSTAIN", "Certificate", "Smooth", "RandomizedSmoothing", "clopper_pearson_lower",
           "binomial_test_top2", "noise_augment", "train_noise_augmented"]

#: the class returned for an abstention (as in the reference code)
ABSTAIN = -1


def clopper_pearson_lower(n_a: Any, n: int, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower bound on a binomial proportion, elementwise.

    ``Beta.ppf(alpha; n_a, n - n_a + 1)``, and 0 where ``n_a == 0`` — the bound the reference code gets
    from ``proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[0]``.

    Args:
        n_a: successes (array-like of ints in [0, n]).
        n: trials.
        alpha: failure probability in (0, 1).
    Returns:
        float64 array shaped like ``n_a``.
    """
    from scipy.stats import beta

    n_a = np.asarray(n_a, dtype=np.float64)
    safe = np.where(n_a > 0, n_a, 1.0)
    return np.where(n_a > 0, beta.ppf(alpha, safe, n - n_a + 1.0), 0.0)


def binomial_test_top2(count1: Any, count2: Any) -> np.ndarray:
    """Two-sided binomial-test p-value of ``count1`` successes in ``count1 + count2`` trials at p = 1/2.

    Elementwise and vectorised; equals ``scipy.stats.binomtest(count1, count1 + count2, 0.5).pvalue``
    for ``count1 >= count2`` (the null distribution is symmetric, so the two tails are
    ``P(X <= count2) + P(X >= count1)``, capped at 1).
    """
    from scipy.stats import binom

    c1 = np.asarray(count1, dtype=np.float64)
    c2 = np.asarray(count2, dtype=np.float64)
    total = c1 + c2
    p = binom.cdf(c2, total, 0.5) + binom.sf(c1 - 1.0, total, 0.5)
    return np.where(c1 == c2, 1.0, np.minimum(1.0, p))


@dataclass
class Certificate:
    """What ``CERTIFY`` returns for a batch of ``B`` examples (CPU tensors).

    Attributes:
        prediction: (B,) long: the certified class ``cA_hat``, or :data:`ABSTAIN` (-1).
        radius: (B,) float64: certified L2 radius in raw input units; 0 where abstained.
        top_class: (B,) long: ``cA_hat``, the selection guess, also where abstained.
        p_lower: (B,) float64: the Clopper-Pearson lower bound on ``P(f(x + noise) = cA_hat)``.
        counts: (B, num_classes) long: the estimation counts (``n`` samples per example).
    """

    prediction: torch.Tensor
    radius: torch.Tensor
    top_class: torch.Tensor
    p_lower: torch.Tensor
    counts: torch.Tensor = field(repr=False)

    @property
    def abstained(self) -> torch.Tensor:
        """(B,) bool: where ``CERTIFY`` abstained."""
        return self.prediction == ABSTAIN


#: noise is drawn in blocks of whole chunks of about this many values (fewer, larger draws: parallel on CPU)
NOISE_BLOCK_VALUES = 1 << 21


class Smooth:
    """The Gaussian-smoothed classifier ``g`` of a base classifier ``f`` (Cohen et al., ICML 2019).

    Args:
        model: the base classifier: a :class:`Model`, an ``nn.Module`` or a callable taking raw
            inputs ``(B, ...)`` and returning scores ``(B, num_classes)``.
        num_classes: number of classes of ``f``.
        sigma: noise standard deviation in raw input units (pixels in [0, 1]); the paper uses 0.12,
            0.25, 0.5 and 1.0.

    ``batch_size`` (in ``predict`` / ``certify``) bounds the noisy inputs per forward pass: examples
    go in groups of at most ``batch_size``; for a group of ``b`` examples the noise is drawn as one
    tensor ``(k, b, *x.shape[1:])`` of ``k = batch_size // b`` samples per chunk (the last chunk is
    smaller), first the ``n0`` selection samples then the ``n`` estimation samples of the group.
    Results are a deterministic function of the generator's seed, ``x`` and ``batch_size``.
    """

    def __init__(self, model: Model | nn.Module | Any, num_classes: int, sigma: float):
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"Smooth needs num_classes >= 2, got {num_classes!r}",
                              fix="pass the number of outputs of the base classifier")
        if not sigma > 0:
            raise ConfigError(f"Smooth needs sigma > 0, got {sigma!r}",
                              fix="use a noise level such as 0.25 (raw pixel units)")
        self.model = as_model(model)
        if self.model.modality == "text":
            raise UnsupportedModelError("randomized smoothing adds Gaussian noise to tensors; the model takes text",
                                        fix="use smoothing with image or tabular models")
        self.num_classes, self.sigma = num_classes, float(sigma)

    def noise_chunks(self, x: torch.Tensor, num: int, batch_size: int,
                     generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Standard-normal noise for ``num`` samples of each example of ``x``, chunk by chunk.

        Yields tensors ``(k, B, *x.shape[1:])`` (sample-major), ``k = max(1, batch_size // B)`` samples
        per chunk (the last one smaller), drawn with ``generator`` on its device in blocks of whole
        chunks of about :data:`NOISE_BLOCK_VALUES` values (large CPU blocks in parallel slices:
        :func:`~robustlab.core.rng.parallel_randn`); each chunk is a view of its block, used once.
        """
        b = x.shape[0]
        k, left = max(1, batch_size // max(1, b)), int(num)
        span = max(k, NOISE_BLOCK_VALUES // max(1, x.numel()) // k * k)  # samples per draw: whole chunks
        while left > 0:
            block = parallel_randn((min(span, left), *x.shape), generator, dtype=x.dtype)
            left -= block.shape[0]
            for i in range(0, block.shape[0], k):
                yield block[i:i + k]

    def noisy_inputs(self, x: torch.Tensor, num: int, batch_size: int,
                     generator: torch.Generator) -> Iterator[torch.Tensor]:
        """``x + sigma * noise`` (never clipped) for ``num`` samples of each example, chunk by chunk, on the
        model's device: tensors ``(k * B, *x.shape[1:])``, sample-major (the chunks of :meth:`noise_chunks`)."""
        b = x.shape[0]
        dev = self.model.device
        xd = x.to(dev).unsqueeze(0)
        own = type(self).noise_chunks is Smooth.noise_chunks
        for noise in self.noise_chunks(x, num, batch_size, generator):
            noisy = noise.to(dev)
            if own and noisy is noise:  # a chunk of Smooth.noise_chunks, used once: scale it in place
                noisy.mul_(self.sigma)
            else:  # a subclass's chunks may be views of its noise: leave them as they are
                noisy = noisy * self.sigma
            noisy += xd
            yield noisy.reshape(noise.shape[0] * b, *x.shape[1:])

    def sample_counts(self, x: torch.Tensor, num: int, batch_size: int,
                      generator: torch.Generator) -> torch.Tensor:
        """Counts ``(B, num_classes)`` (long, CPU) of ``f(x + sigma * noise)`` over ``num`` samples per example."""
        b, c = x.shape[0], self.num_classes
        offset = torch.arange(b).mul_(c).unsqueeze(0)
        counts = torch.zeros(b * c, dtype=torch.long)
        for noisy in self.noisy_inputs(x, num, batch_size, generator):
            scores = checked_scores(self.model, noisy, batch_size=noisy.shape[0])
            if scores.shape[1] != c:
                raise ModelError(f"the base classifier returned {scores.shape[1]} scores, Smooth expects {c}",
                                 fix="pass num_classes equal to the model's number of outputs")
            idx = scores.argmax(dim=1).view(-1, b) + offset
            counts += torch.bincount(idx.flatten(), minlength=b * c)
        return counts.view(b, c)

    def _groups(self, x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        for i in range(0, x.shape[0], batch_size):
            yield x[i:i + batch_size]

    def predict(self, x: torch.Tensor, n: int = 100000, alpha: float = 0.001, batch_size: int = 1000, *,
                generator: torch.Generator) -> torch.Tensor:
        """``PREDICT``: the smoothed class of each example, or :data:`ABSTAIN`; wrong w.p. at most ``alpha``.

        Draws ``n`` noisy samples per example and abstains unless the two-sided binomial test of the
        top count against the runner-up (Hung & Fithian, "Rank verification for
        exponential families", 2019) has p-value <= ``alpha``.

        Args:
            x: raw inputs ``(B, ...)``.
            n: Monte Carlo samples per example.
            alpha: failure probability.
            batch_size: most noisy inputs per forward pass.
            generator: draws the noise.
        Returns:
            (B,) long predictions (CPU), -1 where abstained.
        """
        _check(n=n, alpha=alpha, batch_size=batch_size)
        out = []
        for xg in self._groups(x, batch_size):
            counts = self.sample_counts(xg, n, batch_size, generator)
            top = counts.topk(2, dim=1)
            pval = binomial_test_top2(top.values[:, 0].numpy(), top.values[:, 1].numpy())
            out.append(torch.where(torch.from_numpy(pval > alpha), ABSTAIN, top.indices[:, 0]))
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    def certify(self, x: torch.Tensor, n0: int = 100, n: int = 100000, alpha: float = 0.001,
                batch_size: int = 1000, *, generator: torch.Generator) -> Certificate:
        """``CERTIFY``: a class and an L2 radius per example, both right w.p. at least ``1 - alpha``.

        ``n0`` selection samples pick ``cA_hat`` (top count); ``n`` fresh estimation samples count
        ``nA``; ``pA_lower`` = one-sided Clopper-Pearson bound at level ``alpha``; abstain if
        ``pA_lower < 0.5``, else the radius is ``sigma * Phi^-1(pA_lower)``.

        Args:
            x: raw inputs ``(B, ...)`` (not clipped after adding noise).
            n0: selection samples per example (paper: 100).
            n: estimation samples per example (paper: 100,000).
            alpha: failure probability (paper: 0.001).
            batch_size: most noisy inputs per forward pass.
            generator: draws the noise.
        """
        from scipy.stats import norm

        _check(n=n, alpha=alpha, batch_size=batch_size, n0=n0)
        tops, counts = [], []
        for xg in self._groups(x, batch_size):
            tops.append(self.sample_counts(xg, n0, batch_size, generator).argmax(dim=1))
            counts.append(self.sample_counts(xg, n, batch_size, generator))
        c = self.num_classes
        top = torch.cat(tops) if tops else torch.empty(0, dtype=torch.long)
        est = torch.cat(counts) if counts else torch.empty(0, c, dtype=torch.long)
        n_a = est.gather(1, top.view(-1, 1)).squeeze(1).numpy()
        p_lower = clopper_pearson_lower(n_a, n, alpha)
        abstain = p_lower < 0.5
        radius = np.where(abstain, 0.0, self.sigma * norm.ppf(np.where(abstain, 0.5, p_lower)))
        pred = torch.where(torch.from_numpy(abstain), ABSTAIN, top)
        return Certificate(prediction=pred, radius=torch.from_numpy(radius), top_class=top,
                           p_lower=torch.from_numpy(p_lower), counts=est)


def _check(*, n: int, alpha: float, batch_size: int, n0: int | None = None) -> None:
    for name, v in (("n", n), ("batch_size", batch_size)) + ((("n0", n0),) if n0 is not None else ()):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"randomized smoothing: {name} must be a positive integer, got {v!r}",
                              fix=f"set {name} to e.g. 100 (n0), 100000 (n, the paper) or 1000 (batch_size)")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"randomized smoothing: alpha must be in (0, 1), got {alpha!r}",
                          fix="use the paper's alpha=0.001")


@register("certifier", "smoothing")
@dataclass
class RandomizedSmoothing(Certifier):
    """Certified L2 accuracy of the Gaussian-smoothed model (Cohen, Rosenfeld & Kolter, ICML 2019).

    Swept over ``eps`` = the L2 radius asked for (raw input units). Per example, the outcome is:
    ``"certified"``: the smoothed prediction ``cA_hat`` is right and the certified radius >= eps;
    ``"robust"``: right but certified only below eps (correct, not certified at this radius);
    ``"broken"``: ``CERTIFY`` returned a wrong class; ``"abstained"``: ``CERTIFY`` abstained.
    ``pred`` is ``cA_hat`` (the selection guess, also where abstained), the outcome ``score`` is the
    certified radius (0 where abstained) and ``queries`` is ``n0 + n``.

    Every eps job of a shard uses the same noise (seeded from ``seed`` and the shard's content), so
    decisions and radii agree across the eps sweep.

    Args:
        sigma: noise standard deviation in raw input units.
        n0: selection samples per example (paper: 100).
        n: estimation samples per example; 1000 keeps suites fast (the paper uses 100,000, which
            certifies larger radii: the largest possible radius is ``sigma * Phi^-1(alpha^(1/n))``).
        alpha: failure probability per example (paper: 0.001).
        batch_size: most noisy inputs per forward pass.
        seed: seeds the noise.
    """

    sigma: float = 0.25
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    batch_size: int = 1000
    seed: int = 0
    default_settings = (0.0, 0.25, 0.5, 0.75, 1.0)

    def __post_init__(self) -> None:
        _check(n=self.n, alpha=self.alpha, batch_size=self.batch_size, n0=self.n0)
        if not self.sigma > 0:
            raise ConfigError(f"smoothing: sigma must be > 0, got {self.sigma!r}", fix="use e.g. sigma=0.25")

    def check_model(self, model: Model) -> None:
        super().check_model(model)
        if model.modality == "text":
            raise UnsupportedModelError("smoothing adds Gaussian noise to tensors; the model takes text",
                                        fix="use smoothing with image or tabular models")

    def evaluate(self, model: Model, x: torch.Tensor, y: torch.Tensor, setting: float, *,
                 clean_pred: torch.Tensor, generator: torch.Generator) -> ProbeOutput:
        if setting < 0:
            raise ConfigError(f"smoothing: eps must be >= 0, got {setting}", fix="ask for L2 radii >= 0")
        num_classes = model.num_classes or int(checked_scores(model, x[:1]).shape[1])
        digest = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
        gen = torch_generator(derive_seed(self.seed, "smoothing", digest), device=model.device)
        smooth = Smooth(model, num_classes, self.sigma)
        cert = smooth.certify(x, self.n0, self.n, self.alpha, self.batch_size, generator=gen)
        yc = y.cpu()
        right = cert.top_class == yc
        status = np.where(cert.abstained.numpy(), "abstained",
                          np.where(~right.numpy(), "broken",
                                   np.where(cert.radius.numpy() >= setting, "certified", "robust")))
        b = len(yc)
        scores = torch.zeros(b, num_classes)
        scores[torch.arange(b), cert.top_class] = 1.0
        shown = x + self.sigma * torch.randn(x.shape, generator=gen, device=gen.device, dtype=x.dtype).to(x.device)
        return ProbeOutput(scores=scores, attempted=torch.ones(b, dtype=torch.bool),
                           queries=torch.full((b,), self.n0 + self.n, dtype=torch.long), x_probed=shown,
                           status=status.astype(object).tolist(), score=cert.radius.clone(),
                           extras={"radius": cert.radius, "p_lower": cert.p_lower, "counts": cert.counts})


def noise_augment(sigma: float):
    """A batched augmentation ``(x, generator) -> x + N(0, sigma^2)`` without clipping (Cohen et al.'s training)."""
    if not sigma >= 0:
        raise ConfigError(f"noise_augment: sigma must be >= 0, got {sigma!r}", fix="use e.g. sigma=0.25")

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        return x + sigma * noise.to(x.device)

    return augment


def train_noise_augmented(module: nn.Module | Any, train: Any, sigma: float, **kwargs: Any) -> dict[str, Any]:
    """Train a base classifier on Gaussian-noise-augmented inputs (Cohen et al., 2019, Section 4).

    Each training batch gets fresh ``N(0, sigma^2)`` noise (not clipped), so the base classifier
    learns to classify noisy inputs and the smoothed classifier certifies larger radii. Use the same
    ``sigma`` for training and certification.

    Args:
        module: an ``nn.Module`` on raw inputs or a :class:`~robustlab.core.model.TorchModel`.
        train: a :class:`~robustlab.data.base.Dataset` of image / tabular tensors.
        sigma: noise standard deviation in raw input units.
        **kwargs: passed to :func:`robustlab.models.training.train_classifier` (epochs, lr, seed, ...).
    Returns:
        the per-epoch training history.
    """
    from robustlab.models.training import train_classifier

    if "augment" in kwargs:
        raise ConfigError("train_noise_augmented adds its own noise augmentation",
                          fix="call robustlab.models.training.train_classifier to combine augmentations")
    return train_classifier(module, train, augment=noise_augment(sigma), **kwargs)
