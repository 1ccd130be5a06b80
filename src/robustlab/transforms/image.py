"""Common image corruptions (noise, blur, contrast, brightness) with the reference severity tables.

From "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (Hendrycks &
Dietterich, ICLR 2019). Each corruption has five severities whose parameters come from the reference
code (hendrycks/robustness): ``make_cifar_c.py`` for the CIFAR-10-C table (``table="cifar"``, the
default, meant for small images such as 32×32 — we also use it for 8×8 digits and 16×16 images) and
``imagenet_c/corruptions.py`` for the ImageNet-C table (``table="imagenet"``, for ~224×224 images).

Conventions shared by every corruption here:

- inputs are float images in [0, 1], shape ``(N, C, H, W)`` (or one ``(C, H, W)`` image), any N, any
  number of channels, any size, CPU or CUDA; the output has the same shape, dtype and device and is
  clipped to [0, 1]. Work is done in float32 (float64 stays float64) and vectorised over the batch.
- ``severity`` is a number in [0, 5]: 1..5 are the paper's levels, 0 is the identity, and a fraction
  interpolates linearly between the neighbouring levels' parameters (level 0 = the identity
  parameter). Anything else raises :class:`~robustlab.core.errors.ConfigError`.
- randomness is drawn from the given ``torch.Generator`` (on the generator's device, then moved to
  ``x``'s device), so the same seed gives the same output whatever the dtype and the thread count.
  Shot and impulse noise draw exact samples from uniform random bits (table inversion, geometric gaps:
  see :class:`ShotNoise`, :class:`ImpulseNoise`); large ``torch.poisson`` draws on CPU (shot noise with
  very many photons) are split into ``DRAW_CHUNKS`` fixed chunks with generators seeded from the given
  one, drawn in parallel threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.probe import Transform
from robustlab.core.registry import register
from robustlab.transforms._common import check_generator, check_severity, interpolate
from robustlab.transforms._filters import (  # noqa: F401 - re-exported: blur, weather, style modules use them
    DCT_BLOCK_VALUES,
    DCT_MAX_SIDES,
    FFT_MIN_TAPS,
    _band_matrix,
    _conv_even_reflect,
    _conv_same,
    _fit_kernel,
    gaussian_kernel1d,
)
from robustlab.transforms._sampling import (  # noqa: F401 - re-exported (tests read the constants here)
    BLOCK_VALUES,
    DRAW_CHUNKS,
    PARALLEL_DRAW_MIN,
    POISSON_TABLE_MAX_C,
    _bernoulli_positions,
    _chunked_draw,
    _draw,
    _poisson_counts,
    _poisson_table,
    _thinned_events,
)

__all__ = [
    "TABLES",
    "Brightness",
    "Contrast",
    "DefocusBlur",
    "GaussianBlur",
    "GaussianNoise",
    "ImageCorruption",
    "ImpulseNoise",
    "ShotNoise",
    "SpeckleNoise",
    "disk_kernel",
    "gaussian_kernel1d",
]

#: severity 1..5 parameters from the reference code: CIFAR-10-C (make_cifar_c.py) and ImageNet-C
#: (imagenet_c/corruptions.py). defocus_blur is (disk radius, anti-alias sigma) in pixels.
TABLES: dict[str, dict[str, tuple]] = {
    "cifar": {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
        "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
        "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    },
    "imagenet": {
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
        "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),
        "defocus_blur": ((3.0, 0.1), (4.0, 0.5), (6.0, 0.5), (8.0, 0.5), (10.0, 0.5)),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    },
}


def _as_images(x: object, name: str) -> torch.Tensor:
    """``x`` as a float ``(N, C, H, W)`` tensor (a view), or a :class:`DataError` with the fix."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = f"{x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{name} expects float images in [0, 1], got a {kind}",
                        fix="pass a float tensor of shape (N, C, H, W) in [0, 1], e.g. x.float() / 255")
    if x.dim() == 3:
        return x.unsqueeze(0)
    if x.dim() != 4 or min(x.shape[-2:]) < 1:
        raise DataError(f"{name} expects images of shape (N, C, H, W) or (C, H, W), got {tuple(x.shape)}",
                        fix="reshape the images to (N, C, H, W); grey images have C = 1")
    return x


def apply_to_images(x: torch.Tensor, severity: float, generator: torch.Generator | None, *, name: str,
                    stochastic: bool, apply, clamp_input: bool = False, output_in_range: bool = False) -> torch.Tensor:
    """The shared body of image transforms: check inputs, return a copy at severity 0, else
    ``apply(images, severity, generator)`` on float (N, C, H, W) images, clipped to [0, 1], in ``x``'s
    shape and dtype. ``clamp_input`` clips the input to [0, 1] first; ``output_in_range`` says that
    ``apply`` already returns a new tensor in [0, 1] (the final clip is skipped)."""
    s = check_severity(severity, name)
    x4 = _as_images(x, name)
    if stochastic:
        check_generator(generator, name)
    if s == 0:
        return x.clone()
    work = x4 if x4.dtype in (torch.float32, torch.float64) else x4.float()
    src = work.clamp(0.0, 1.0) if clamp_input else work
    out = apply(src, s, generator)
    if not output_in_range:  # clip in place when ``apply`` made a new tensor (saves a full-size allocation)
        fresh = out.untyped_storage().data_ptr() not in (x.untyped_storage().data_ptr(),
                                                         src.untyped_storage().data_ptr())
        out = out.clamp_(0.0, 1.0) if fresh and not out.requires_grad else out.clamp(0.0, 1.0)
    return out.to(x.dtype).reshape(x.shape)


@dataclass
class ImageCorruption(Transform):
    """Base of the corruptions: checks inputs and severity, maps severity to the table parameter.

    Args:
        table: ``"cifar"`` (CIFAR-10-C parameters, default, for small images) or ``"imagenet"``
            (ImageNet-C parameters, for ~224×224 images).
    """

    table: str = "cifar"

    modality = "image"
    name: ClassVar[str] = ""
    identity: ClassVar[float] = 0.0  # the parameter value that leaves the image unchanged (severity 0)
    stochastic: ClassVar[bool] = False
    output_in_range: ClassVar[bool] = False  # _apply returns a new tensor already in [0, 1] (no final clip)

    def __post_init__(self) -> None:
        if self.table not in TABLES:
            raise ConfigError(f"{self.name}: unknown table {self.table!r}",
                              fix=f"use one of {sorted(TABLES)} ('cifar' for small images)")

    @property
    def levels(self) -> tuple:
        """The parameters of severities 1..5 in the chosen table."""
        return TABLES[self.table][self.name]

    def parameter(self, severity: float) -> float:
        """The (interpolated) table parameter at ``severity``; ``identity`` at 0."""
        return interpolate((self.identity, *self.levels), check_severity(severity, self.name))

    def __call__(self, x: torch.Tensor, *, severity: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Corrupted copy of ``x`` (same shape, dtype, device), clipped to [0, 1]."""
        return apply_to_images(x, severity, generator, name=self.name, stochastic=self.stochastic,
                               apply=self._apply, output_in_range=self.output_in_range)

    def _apply(self, x: torch.Tensor, severity: float, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


@register("transform", "gaussian_noise")
@dataclass
class GaussianNoise(ImageCorruption):
    """Additive Gaussian noise ``x + N(0, c²)``, clipped (Hendrycks & Dietterich, ICLR 2019).

    c per severity 1..5 — CIFAR-10-C: 0.04, 0.06, 0.08, 0.09, 0.10; ImageNet-C: 0.08, 0.12, 0.18,
    0.26, 0.38 (pixel units on a [0, 1] scale). Independent noise for every pixel and channel.
    """

    name = "gaussian_noise"
    stochastic = True

    def _apply(self, x, severity, generator):
        return x + self.parameter(severity) * _draw("normal", x, generator)


@register("transform", "shot_noise")
@dataclass
class ShotNoise(ImageCorruption):
    """Poisson (photon) noise ``Poisson(x·c) / c``, clipped (Hendrycks & Dietterich, ICLR 2019).

    c (photons at full intensity) per severity 1..5 — CIFAR-10-C: 500, 250, 100, 75, 50; ImageNet-C:
    60, 25, 12, 5, 3. Fractional severities interpolate 1/c (the noise variance scale), level 0 being
    1/c = 0 (no noise). Exact Poisson draws (:func:`_poisson_counts`): inversion of uniform random bits
    with per-8-bit-level tables, plus an exact thinned Poisson draw for the offset of each value from the
    8-bit grid; exact up to float64 rounding, rates from float32 ``x``. For c > ``POISSON_TABLE_MAX_C``
    (CIFAR-10-C severities below 3) ``torch.poisson`` is used. Same law as ``torch.poisson`` /
    ``np.random.poisson``, but the random stream for a given seed differs from earlier robustlab versions
    (which drew every value with ``torch.poisson``); it depends on the seed only, not on the thread count.
    """

    name = "shot_noise"
    stochastic = True
    output_in_range = True

    def parameter(self, severity: float) -> float:
        """The photon count c at ``severity`` (``inf`` at 0), interpolated in 1/c."""
        inv = interpolate((0.0, *(1.0 / c for c in self.levels)), check_severity(severity, self.name))
        return float("inf") if inv == 0 else 1.0 / inv

    def _apply(self, x, severity, generator):
        c = self.parameter(severity)
        if c > POISSON_TABLE_MAX_C:
            return (_draw("poisson", x, generator, rate=x.clamp(0, 1) * c) / c).clamp_(0.0, 1.0)
        flat = x.reshape(-1).to(device=generator.device, dtype=torch.float32)
        if flat.numel():
            lo, hi = torch.aminmax(flat)
            if lo < 0 or hi > 1:
                flat = flat.clamp(0.0, 1.0)
        y = _poisson_counts(flat, c, generator)  # min(X, c) / c in float32
        if x.dtype == torch.float64:  # the same counts, divided in float64
            y = y.double()
            y = torch.where(y >= 1.0, 1.0, (y * c).round_() / c)
        return y.to(x.device).reshape(x.shape)


@register("transform", "impulse_noise")
@dataclass
class ImpulseNoise(ImageCorruption):
    """Salt-and-pepper noise: each value becomes 0 or 1 (even odds) with probability c.

    From Hendrycks & Dietterich (ICLR 2019), who use ``skimage.util.random_noise(mode='s&p')``.
    c per severity 1..5 — CIFAR-10-C: 0.01, 0.02, 0.03, 0.05, 0.07; ImageNet-C: 0.03, 0.06, 0.09,
    0.17, 0.27. Each pixel of each channel is hit independently (skimage: ``rng.random() <= amount``,
    then salt with odds ``salt_vs_pepper = 0.5``). The hits are drawn as geometric gaps between
    successive hits (:func:`_bernoulli_positions`, exact up to float64 rounding, O(c·n) draws), each
    with one fair bit for salt or pepper: the same law as skimage's two uniforms per value, but the random
    stream for a given seed differs from earlier robustlab versions (one float32 uniform per value); it
    depends on the seed only, not on the thread count.
    """

    name = "impulse_noise"
    stochastic = True
    output_in_range = True

    def _apply(self, x, severity, generator):
        pos, salt = _bernoulli_positions(x.numel(), self.parameter(severity), generator)
        out = torch.clamp(x, 0.0, 1.0, out=torch.empty(x.shape, dtype=x.dtype, device=x.device))  # contiguous
        out.view(-1).index_copy_(0, pos.to(x.device), salt.to(device=x.device, dtype=x.dtype))
        return out


@register("transform", "speckle_noise")
@dataclass
class SpeckleNoise(ImageCorruption):
    """Multiplicative noise ``x + x·N(0, c²)``, clipped (Hendrycks & Dietterich, ICLR 2019).

    c per severity 1..5 — CIFAR-10-C: 0.06, 0.10, 0.12, 0.16, 0.20; ImageNet-C: 0.15, 0.2, 0.35,
    0.45, 0.6.
    """

    name = "speckle_noise"
    stochastic = True

    def _apply(self, x, severity, generator):
        return x + x * self.parameter(severity) * _draw("normal", x, generator)


@register("transform", "gaussian_blur")
@dataclass
class GaussianBlur(ImageCorruption):
    """Gaussian blur of std σ pixels per channel (Hendrycks & Dietterich, ICLR 2019).

    σ per severity 1..5 — CIFAR-10-C: 0.4, 0.6, 0.7, 0.8, 1.0; ImageNet-C: 1, 2, 3, 4, 6. Like the
    reference (``skimage.filters.gaussian``): kernel truncated at 4σ, edges extended by replication,
    so any image size works. Separable torch convolution; deterministic (no generator needed).
    """

    name = "gaussian_blur"

    def _apply(self, x, severity, generator):
        k = gaussian_kernel1d(self.parameter(severity))
        x = _conv_same(x, k[None, :], "replicate")
        return _conv_same(x, k[:, None], "replicate")


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """Normalised anti-aliased disk of ``radius`` pixels, as in the reference ``disk`` helper (float64).

    A binary disk on a 17×17 grid (or ``2·radius + 1`` when ``radius > 8``) smoothed by a 3×3 (5×5)
    Gaussian of std ``alias_blur`` with reflect-101 borders, the way ``cv2.GaussianBlur`` does it,
    symmetrised (mean with its mirror images) so that it is exactly even, as the disk is.
    """
    half = 8 if radius <= 8 else int(radius)
    ksize = 3 if radius <= 8 else 5
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).double()
    disk = disk / disk.sum()
    t = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g = torch.exp(-(t**2) / (2 * alias_blur**2))
    g = g / g.sum()
    out = _conv_same(_conv_same(disk[None, None], g[None, :], "reflect"), g[:, None], "reflect")[0, 0]
    out = (out + out.flip(0)) / 2  # exactly mirror-symmetric (the products leave ~1e-18 asymmetries)
    return (out + out.flip(1)) / 2


def _pad_to(kernel: torch.Tensor, size: int) -> torch.Tensor:
    p = (size - kernel.shape[0]) // 2
    return F.pad(kernel, (p, p, p, p))


@register("transform", "defocus_blur")
@dataclass
class DefocusBlur(ImageCorruption):
    """Defocus (out-of-focus lens) blur: convolution with an anti-aliased disk (Hendrycks & Dietterich, 2019).

    (disk radius, anti-alias σ) per severity 1..5 — CIFAR-10-C: (0.3, 0.4), (0.4, 0.5), (0.5, 0.6),
    (1, 0.2), (1.5, 0.1); ImageNet-C: (3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5). Reflect-101
    borders like ``cv2.filter2D``; on images smaller than the kernel the kernel is cropped to the image
    and renormalised. A fractional severity blends the two neighbouring kernels linearly (level 0 is
    the identity kernel). Deterministic (no generator needed).
    """

    name = "defocus_blur"
    output_in_range = True  # _conv_same returns a new tensor, clipped in place

    def kernel(self, severity: float) -> torch.Tensor:
        """The 2-D blur kernel at ``severity`` (float64, odd size, sums to 1)."""
        s = check_severity(severity, self.name)
        lo = min(int(s), 4)
        t = s - lo
        ks = [torch.ones(1, 1, dtype=torch.float64) if i == 0 else disk_kernel(*self.levels[i - 1])
              for i in (lo, lo + 1)]
        size = max(k.shape[0] for k in ks)
        return (1 - t) * _pad_to(ks[0], size) + t * _pad_to(ks[1], size)

    def _apply(self, x, severity, generator):
        return _conv_same(x, _fit_kernel(self.kernel(severity), *x.shape[-2:]), "reflect").clamp_(0.0, 1.0)


@register("transform", "contrast")
@dataclass
class Contrast(ImageCorruption):
    """Lower contrast: ``(x - m)·c + m``, m the per-image, per-channel spatial mean (Hendrycks & Dietterich, 2019).

    c per severity 1..5 — CIFAR-10-C: 0.75, 0.5, 0.4, 0.3, 0.15; ImageNet-C: 0.4, 0.3, 0.2, 0.1,
    0.05 (level 0: c = 1). The reference takes the mean over height and width for each channel.
    Deterministic (no generator needed).
    """

    name = "contrast"
    identity = 1.0

    def _apply(self, x, severity, generator):
        m = x.mean(dim=(-2, -1), keepdim=True)
        return (x - m) * self.parameter(severity) + m


@register("transform", "brightness")
@dataclass
class Brightness(ImageCorruption):
    """Brighter image: add c to the HSV value channel, keeping hue and saturation (Hendrycks & Dietterich, 2019).

    c per severity 1..5 — CIFAR-10-C: 0.05, 0.1, 0.15, 0.2, 0.3; ImageNet-C: 0.1, 0.2, 0.3, 0.4, 0.5.
    With V = max over channels and V' = clip(V + c), the HSV round trip of the reference equals
    scaling every channel by V'/V (black pixels become grey V'); a grey image just gets ``x + c``.
    Deterministic (no generator needed).
    """

    name = "brightness"

    def _apply(self, x, severity, generator):
        v = x.amax(dim=1, keepdim=True)
        v_new = (v + self.parameter(severity)).clamp(0.0, 1.0)
        scale = v_new / v.clamp_min(torch.finfo(x.dtype).tiny)
        return torch.where(v > 0, x * scale, v_new.expand_as(x))
