"""Same-size 2-D correlation of image batches (banded matrices, DCT-I, FFT or direct ``conv2d``) and the
Gaussian kernel; shared by the blur, weather and style transforms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


#: symmetric 2-D kernels with reflect borders use DCT-I products on images with ``H + W`` up to this
DCT_MAX_SIDES = 192
#: values per block of the DCT-I blur: small temporaries, and matrix products small enough for MKL to run them on
#: one thread (its OpenMP barriers stall when the cores are busy with other work)
DCT_BLOCK_VALUES = 1 << 16

_DCTS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _dct1(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(n, n)`` DCT-I matrix ``D[p, t] = w_t cos(π p t / (n - 1))``, w = 1 at both ends and 2 inside (cached).

    ``D @ x`` is the DFT of the reflect-101 (whole-sample symmetric) periodic extension of ``x``, period
    ``2n - 2``; ``D / (2n - 2)`` inverts it (D² = (2n - 2)·I).
    """
    key = (n, dtype, str(device))
    if key not in _DCTS:
        if len(_DCTS) > 64:
            _DCTS.clear()
        i = torch.arange(n, dtype=torch.int64)
        phase = (i[:, None] * i[None, :]) % (2 * n - 2)  # exact argument reduction
        w = torch.full((n,), 2.0, dtype=torch.float64)
        w[0] = w[-1] = 1.0
        _DCTS[key] = (torch.cos(math.pi * phase.double() / (n - 1)) * w).to(dtype=dtype, device=device)
    return _DCTS[key]


def _is_even(kernel: torch.Tensor) -> bool:
    """Whether the 2-D ``kernel`` is mirror-symmetric about its centre row and its centre column (exactly)."""
    return bool(torch.equal(kernel, kernel.flip(0)) and torch.equal(kernel, kernel.flip(1)))


def _conv_even_reflect(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate ``x (N, C, H, W)`` (H, W ≥ 2) with a kernel even in both axes, reflect-101 borders, by DCT-I.

    Reflect-101 padding is the whole-sample symmetric periodic extension (period 2H - 2, 2W - 2), and a
    kernel even in both axes keeps that symmetry, so the correlation is diagonal in the DCT-I basis: a
    forward DCT-I along W and H (two matrix products), a product with the kernel's real spectrum
    ``K[p, q] = Σ k[a, b] cos(π p a / (H - 1)) cos(π q b / (W - 1))`` (taps wrapping around the period
    add up, as reflect padding with radius H - 1 does), and the inverse (two products). Exact up to float
    rounding, no padding, O(H + W) multiply-adds per pixel.
    """
    n, c, h, w = x.shape
    rh, rw = kernel.shape[0] // 2, kernel.shape[1] // 2
    k64 = kernel.to(torch.float64).cpu()
    ch = torch.cos(math.pi * ((torch.arange(h)[:, None] * torch.arange(-rh, rh + 1)[None, :]) % (2 * h - 2))
                   .double() / (h - 1))
    cw = torch.cos(math.pi * ((torch.arange(w)[:, None] * torch.arange(-rw, rw + 1)[None, :]) % (2 * w - 2))
                   .double() / (w - 1))
    spectrum = (ch @ k64 @ cw.T / ((2 * h - 2) * (2 * w - 2))).to(dtype=x.dtype, device=x.device)
    dh, dw = _dct1(h, x.dtype, x.device), _dct1(w, x.dtype, x.device)
    planes = x.reshape(n * c, h, w)
    out = torch.empty(planes.shape, dtype=x.dtype, device=x.device)
    per = max(1, min(n * c, DCT_BLOCK_VALUES // (h * w)))  # planes per block: small temporaries, reused
    z1 = torch.empty((per, h, w), dtype=x.dtype, device=x.device)
    z2 = torch.empty_like(z1)
    for a in range(0, n * c, per):
        m = min(per, n * c - a)
        torch.matmul(planes[a:a + m], dw.T, out=z1[:m])  # along W
        torch.matmul(dh, z1[:m], out=z2[:m]).mul_(spectrum)  # along H, times the spectrum
        torch.matmul(dh, z2[:m], out=z1[:m])  # inverse along H (D⁻¹ = D / (2H - 2): the scale is in the spectrum)
        torch.matmul(z1[:m], dw.T, out=out[a:a + m])  # inverse along W
    return out.reshape(n, c, h, w)


def _conv_same(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of ``x (N, C, H, W)`` with the odd-sized 2-D ``kernel``, same size out.

    Kernels even in both axes with reflect borders on images with H + W ≤ ``DCT_MAX_SIDES`` use DCT-I
    products (:func:`_conv_even_reflect`); other large 2-D kernels (≥ ``FFT_MIN_TAPS`` taps) an exact FFT
    correlation of the padded image (the circular wrap never reaches the kept outputs); the rest a
    direct ``conv2d``. Same result up to float rounding.
    """
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    if (kh == 1 or kw == 1) and x.dtype in (torch.float32, torch.float64):  # 1-D: one banded matrix product
        if kh == 1:
            return x @ _band_matrix(kernel.reshape(-1), w, mode).to(dtype=x.dtype, device=x.device).T
        return _band_matrix(kernel.reshape(-1), h, mode).to(dtype=x.dtype, device=x.device) @ x
    if (mode == "reflect" and x.dtype in (torch.float32, torch.float64) and h >= 2 and w >= 2
            and h + w <= DCT_MAX_SIDES and (kh * kw > 9 or x.dtype == torch.float32)  # float64 3×3: shifted sums
            and kh // 2 < h and kw // 2 < w and _is_even(kernel)):
        return _conv_even_reflect(x, kernel)
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
