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
- randomness is drawn from the given ``torch.Generator`` (on the generator's device, float32, then
  moved to ``x``'s device), so the same seed gives the same output whatever the dtype. Large uniform
  and Poisson draws on CPU are split into ``DRAW_CHUNKS`` fixed chunks with generators seeded from
  the given one, drawn in parallel threads: the output does not depend on the thread count.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.probe import Transform
from robustlab.core.registry import register
from robustlab.transforms._common import check_generator, check_severity, interpolate

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
                    stochastic: bool, apply, clamp_input: bool = False) -> torch.Tensor:
    """The shared body of image transforms: check inputs, return a copy at severity 0, else
    ``apply(images, severity, generator)`` on float (N, C, H, W) images, clipped to [0, 1], in ``x``'s
    shape and dtype. ``clamp_input`` clips the input to [0, 1] first."""
    s = check_severity(severity, name)
    x4 = _as_images(x, name)
    if stochastic:
        check_generator(generator, name)
    if s == 0:
        return x.clone()
    work = x4 if x4.dtype in (torch.float32, torch.float64) else x4.float()
    out = apply(work.clamp(0.0, 1.0) if clamp_input else work, s, generator).clamp(0.0, 1.0)
    return out.to(x.dtype).reshape(x.shape)


#: CPU draws of at least this many values are split into ``DRAW_CHUNKS`` fixed chunks, each with its own
#: generator seeded from the caller's, drawn on a thread pool (the samples do not depend on the thread count)
PARALLEL_DRAW_MIN = 1 << 17
DRAW_CHUNKS = 4


def _chunked_draw(numel: int, generator: torch.Generator, draw) -> torch.Tensor:
    """``draw(start, stop, gen)`` for fixed chunks of ``range(numel)`` (threads on CPU), concatenated (flat)."""
    if generator.device.type != "cpu" or numel < PARALLEL_DRAW_MIN:
        return draw(0, numel, generator)
    seeds = torch.randint(0, 2**62, (DRAW_CHUNKS,), generator=generator).tolist()
    bounds = [numel * i // DRAW_CHUNKS for i in range(DRAW_CHUNKS + 1)]

    def one(i: int) -> torch.Tensor:
        return draw(bounds[i], bounds[i + 1], torch.Generator().manual_seed(int(seeds[i])))

    workers = min(torch.get_num_threads(), DRAW_CHUNKS)
    if workers <= 1:
        parts = [one(i) for i in range(DRAW_CHUNKS)]
    else:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(one, range(DRAW_CHUNKS)))
    return torch.cat(parts)


def _draw(kind: str, like: torch.Tensor, generator: torch.Generator, rate: torch.Tensor | None = None):
    """Seeded noise shaped like ``like``: drawn in float32 on the generator's device, then moved.

    Uniform and Poisson draws of many values are split into fixed chunks drawn in parallel (see
    :func:`_chunked_draw`); the torch CPU samplers are single-threaded.
    """
    dev = generator.device
    if kind == "normal":
        t = torch.randn(like.shape, generator=generator, device=dev, dtype=torch.float32)
    elif kind == "uniform":
        t = _chunked_draw(like.numel(), generator, lambda a, b, g: torch.rand(
            b - a, generator=g, device=dev, dtype=torch.float32)).reshape(like.shape)
    else:  # poisson with the given rate
        flat = rate.to(device=dev, dtype=torch.float32).reshape(-1)
        t = _chunked_draw(flat.numel(), generator,
                          lambda a, b, g: torch.poisson(flat[a:b], generator=g)).reshape(like.shape)
    return t.to(device=like.device, dtype=like.dtype)


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
                               apply=self._apply)

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
    1/c = 0 (no noise). Exact Poisson draws (``torch.poisson``), in parallel chunks on large batches.
    """

    name = "shot_noise"
    stochastic = True

    def parameter(self, severity: float) -> float:
        """The photon count c at ``severity`` (``inf`` at 0), interpolated in 1/c."""
        inv = interpolate((0.0, *(1.0 / c for c in self.levels)), check_severity(severity, self.name))
        return float("inf") if inv == 0 else 1.0 / inv

    def _apply(self, x, severity, generator):
        c = self.parameter(severity)
        return _draw("poisson", x, generator, rate=x.clamp(0, 1) * c) / c


@register("transform", "impulse_noise")
@dataclass
class ImpulseNoise(ImageCorruption):
    """Salt-and-pepper noise: each value becomes 0 or 1 (even odds) with probability c.

    From Hendrycks & Dietterich (ICLR 2019), who use ``skimage.util.random_noise(mode='s&p')``.
    c per severity 1..5 — CIFAR-10-C: 0.01, 0.02, 0.03, 0.05, 0.07; ImageNet-C: 0.03, 0.06, 0.09,
    0.17, 0.27. Each pixel of each channel is hit independently. One uniform draw u per value decides
    both (hit if u < c, salt if u < c/2), the same distribution as two independent draws.
    """

    name = "impulse_noise"
    stochastic = True

    def _apply(self, x, severity, generator):
        # one uniform u per value: hit when u < c, salt when u < c/2 (given a hit, u/c is uniform)
        c = self.parameter(severity)
        u = _draw("uniform", x, generator)
        return torch.where(u < c, (u < 0.5 * c).to(x.dtype), x)


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


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian of std ``sigma`` pixels, radius ``int(truncate·sigma + 0.5)`` (float64).

    The same sampling as ``scipy.ndimage.gaussian_filter`` / ``skimage.filters.gaussian``.
    """
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2) if sigma > 0 else (t == 0).double()
    return k / k.sum()


#: 2-D kernels with at least this many taps (both sides > 1) are applied by FFT, not direct convolution
FFT_MIN_TAPS = 64


def _fast_size(n: int) -> int:
    """The smallest ``m ≥ n`` whose prime factors are 2, 3 and 5 (a fast FFT length)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


_BANDS: dict[tuple, torch.Tensor] = {}


def _band_matrix(kernel: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """``(n, n)`` float64 matrix of the 1-D correlation with odd-sized ``kernel`` after ``mode`` padding (cached)."""
    key = (tuple(kernel.reshape(-1).tolist()), n, mode)
    if key not in _BANDS:
        if len(_BANDS) > 256:
            _BANDS.clear()
        _BANDS[key] = _band_matrix_uncached(kernel, n, mode)
    return _BANDS[key]


def _band_matrix_uncached(kernel: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    r = kernel.numel() // 2
    eye = torch.eye(n, dtype=torch.float64)[:, None, None, :]  # n signals, each a unit impulse
    y = F.pad(eye, (r, r, 0, 0), mode=mode) if r else eye
    return F.conv2d(y, kernel.to(torch.float64).reshape(1, 1, 1, -1))[:, 0, 0, :].T


def _conv_same(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of ``x (N, C, H, W)`` with the odd-sized 2-D ``kernel``, same size out.

    Large 2-D kernels (≥ ``FFT_MIN_TAPS`` taps) use an exact FFT correlation of the padded image (the
    circular wrap never reaches the kept outputs); the rest a direct ``conv2d``. Same result up to
    float rounding.
    """
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    if (kh == 1 or kw == 1) and x.dtype in (torch.float32, torch.float64):  # 1-D: one banded matrix product
        if kh == 1:
            return x @ _band_matrix(kernel.reshape(-1), w, mode).to(dtype=x.dtype, device=x.device).T
        return _band_matrix(kernel.reshape(-1), h, mode).to(dtype=x.dtype, device=x.device) @ x
    y = F.pad(x.reshape(n * c, 1, h, w), (kw // 2, kw // 2, kh // 2, kh // 2), mode=mode)
    k = kernel.to(dtype=x.dtype, device=x.device)
    if kh * kw <= 9 and x.dtype == torch.float64:  # small kernels: shifted sums (conv2d has no fast float64 path)
        out = None
        kv = k.tolist()
        for a, b in torch.nonzero(k).tolist():
            term = y[:, 0, a:a + h, b:b + w] * kv[a][b]
            out = term if out is None else out.add_(term)
        return (torch.zeros_like(x) if out is None else out).reshape(n, c, h, w)
    if kh > 1 and kw > 1 and kh * kw >= FFT_MIN_TAPS and x.dtype in (torch.float32, torch.float64):
        hp, wp = y.shape[-2:]
        size = (_fast_size(hp), _fast_size(wp))
        spec = torch.fft.rfft2(y[:, 0], s=size) * torch.fft.rfft2(k, s=size).conj()
        return torch.fft.irfft2(spec, s=size)[:, :h, :w].reshape(n, c, h, w)
    return F.conv2d(y, k[None, None]).reshape(n, c, h, w)


def _fit_kernel(kernel: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``kernel`` without its all-zero outer rings, cropped to radius < image size (renormalised).

    Reflect padding needs a pad smaller than the image; dropping zero rings changes nothing, and
    cropping only happens for images smaller than the kernel's support (imagecorruptions #13).
    """
    r = kernel.shape[0] // 2
    while r > 0 and bool((kernel[0] == 0).all() and (kernel[-1] == 0).all()
                         and (kernel[:, 0] == 0).all() and (kernel[:, -1] == 0).all()):
        kernel, r = kernel[1:-1, 1:-1], r - 1
    rh, rw = min(r, h - 1), min(r, w - 1)
    if (rh, rw) != (r, r):
        kernel = kernel[r - rh:r + rh + 1, r - rw:r + rw + 1]
        kernel = kernel / kernel.sum()
    return kernel


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
    Gaussian of std ``alias_blur`` with reflect-101 borders, the way ``cv2.GaussianBlur`` does it.
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
    out = _conv_same(disk[None, None], g[None, :], "reflect")
    return _conv_same(out, g[:, None], "reflect")[0, 0]


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
        return _conv_same(x, _fit_kernel(self.kernel(severity), *x.shape[-2:]), "reflect")


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
