"""Spatter's water path (ImageNet-C's ``spatter``, Hendrycks & Dietterich, ICLR 2019): Gaussian blur,
Canny edges, a capped distance transform, histogram equalisation, emboss and 3×3 means, on images
stored H-major, in exact integer arithmetic where the 8-bit thresholds need it. Used by
:class:`robustlab.transforms.image_weather.Spatter`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustlab.transforms._filters import _band_matrix, gaussian_kernel1d

# The water path below works on images stored row-major across the batch, ``(H, N, W)`` ("H-major"):
# a filter along W is a product with a W×W matrix or shifted slices of the last axis, one along H is a
# single product with an H×H matrix or shifted slices of whole (N, W) rows.

def _gauss_hnw(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """:func:`_gauss` of contiguous H-major images ``(H, N, W)``: one matrix product per axis (columns first)."""
    h, n, w = x.shape
    k = gaussian_kernel1d(sigma)
    bw, bh = (_band_matrix(k, m, "replicate").to(dtype=x.dtype, device=x.device) for m in (w, h))  # cached
    y = x.view(h * n, w) @ bw.T
    return (bh @ y.view(h, n * w)).view(h, n, w)


def _reflect1(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` with one sample of reflect-101 border (``cv2.BORDER_DEFAULT``) on both ends of ``dim`` (size ≥ 2)."""
    n = t.shape[dim]
    return torch.cat([t.narrow(dim, 1, 1), t, t.narrow(dim, n - 2, 1)], dim)


def _filter3(t: torch.Tensor, dim: int, weights: tuple[float, float, float]) -> torch.Tensor:
    """3-tap correlation ``Σ w_k·t[i + k − 1]`` along ``dim`` with reflect-101 borders, as shifted sums (new tensor)."""
    n = t.shape[dim]
    a, b, c = weights
    out = t * b if b else torch.zeros_like(t)
    if a:  # t[i − 1]; t[−1] reflects to t[1]
        out.narrow(dim, 1, n - 1).add_(t.narrow(dim, 0, n - 1), alpha=a)
        out.narrow(dim, 0, 1).add_(t.narrow(dim, 1, 1), alpha=a)
    if c:  # t[i + 1]; t[n] reflects to t[n − 2]
        out.narrow(dim, 0, n - 1).add_(t.narrow(dim, 1, n - 1), alpha=c)
        out.narrow(dim, n - 1, 1).add_(t.narrow(dim, n - 2, 1), alpha=c)
    return out


def _box3_hnw(x: torch.Tensor) -> torch.Tensor:
    """3×3 mean with reflect-101 borders (``cv2.blur(x, (3, 3))``) of H-major images; H, W ≥ 2."""
    return _filter3(_filter3(x, 2, (1.0, 1.0, 1.0)), 0, (1.0, 1.0, 1.0)).mul_(1 / 9)


def _box3(x: torch.Tensor) -> torch.Tensor:
    """3×3 mean with reflect-101 borders (``cv2.blur(x, (3, 3))``) of ``(N, 1, H, W)`` images; H, W ≥ 2."""
    return _box3_hnw(x[:, 0].transpose(0, 1)).transpose(0, 1)[:, None]


def _dilate3_flat(m: torch.Tensor, row: int, rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """3×3 binary dilation of a flat boolean mask whose rows are ``row`` long and padded with one False
    column on each side, into ``out`` (``rows``: scratch): neighbours are flat shifts by ±1 (across a
    padding column, never to another row's pixels) and ±``row``. The padding columns may come out
    True; the caller masks them."""
    rows.copy_(m)
    rows[1:] |= m[:-1]
    rows[:-1] |= m[1:]
    out.copy_(rows)
    out[row:] |= rows[:-row]
    out[:-row] |= rows[row:]
    return out


#: cv2.Canny's direction sectors: |gy| ≤ tan 22.5°·|gx| is horizontal, |gy| > tan 67.5°·|gx| vertical
_TAN22, _TAN67 = 0.41421356, 2.41421356


def _canny_hnw(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """:func:`canny` of H-major 8-bit-valued float32 images ``(H, N, W)``, as ``(H, N, W + 2)``: each row
    with one False column on each side.

    Every value is an exact integer in float32 (|Sobel| ≤ 1020). The sector tests ``|gy| ≤ |gx|·t``
    compare an integer with a product: for |gx|, |gy| ≤ 1020 no such product lies within 3e-4 of an
    integer (best rational approximations of √2 ∓ 1), far beyond float32's rounding of it, so the
    sectors are those of exact arithmetic (checked exhaustively in the tests).
    """
    h, n, w = img.shape
    # work on rows padded with one column on each side, flattened: a shift along W is a flat shift by
    # ±1 and one along H a flat shift by ±row, so every filter tap and neighbour is a contiguous slice
    row = n * (w + 2)
    size = h * row
    p = img.new_empty((h, n, w + 2))
    p[..., 1:-1] = img
    p[..., 0], p[..., -1] = img[..., 1], img[..., -2]  # reflect-101 columns for the Sobel taps
    pf = p.view(-1)
    d = img.new_zeros(size)  # [-1, 0, 1] along W (valid on the image columns)
    torch.sub(pf[2:], pf[:-2], out=d[1:-1])
    sm = img.new_zeros(size)  # [1, 2, 1] along W
    torch.add(pf[2:], pf[:-2], out=sm[1:-1]).add_(pf[1:-1], alpha=2.0)
    d, sm = d.view(h, row), sm.view(h, row)
    gx = torch.mul(d, 2.0, out=p.view(h, row))  # [1, 2, 1] along H, reflect-101 rows (p's memory is free)
    gx[1:] += d[:-1]
    gx[0] += d[1]
    gx[:-1] += d[1:]
    gx[-1] += d[-2]
    gy = d  # [-1, 0, 1] along H: 0 on the first and last rows (reflect-101); d's memory is free
    torch.sub(sm[2:], sm[:-2], out=gy[1:-1])
    gy[0], gy[-1] = 0.0, 0.0
    gx, gy, tmp = gx.view(-1), gy.view(-1), sm.view(-1)
    same_sign = torch.mul(gx, gy, out=tmp) > 0
    ax, ay = gx.abs_(), gy.abs_()
    horiz = ay <= torch.mul(ax, _TAN22, out=tmp)
    vert = ay > torch.mul(ax, _TAN67, out=tmp)
    vert &= ~horiz
    # magnitudes with a zero border all round (one zero more at each end of the flat array)
    flat = img.new_zeros((h + 2) * row + 2)
    centre = torch.add(ax, ay, out=flat[row + 1:row + 1 + size])
    cv = centre.view(h, n, w + 2)
    cv[..., 0], cv[..., -1] = 0.0, 0.0
    # the sector's two neighbours: magnitudes are integers, so m > a and m ≥ b ⟺ m > max(a, b − ½), one
    # comparison per sector (masks combined in place: torch.where on masks is slow on CPU)
    lower = flat - 0.5

    def local_max(dy: int, dx: int) -> torch.Tensor:
        o = row + 1 + dy * row + dx
        o2 = 2 * (row + 1) - o  # the opposite neighbour
        return torch.gt(centre, torch.maximum(flat[o:o + size], lower[o2:o2 + size], out=tmp))

    diag = horiz | vert
    diag.logical_not_()
    keep = local_max(0, -1)
    keep &= horiz
    for (dy, dx), sector in (((-1, 0), vert), ((-1, -1), diag & same_sign), ((-1, 1), diag & ~same_sign)):
        k = local_max(dy, dx)
        k &= sector
        keep |= k
    keep &= centre > low  # weak edges (False on the padding columns: magnitude 0)
    weak = keep
    edges = centre > high
    edges &= weak
    count = _count(edges)
    rows_buf, out_buf = torch.empty_like(edges), torch.empty_like(edges)
    while True:  # grow strong edges through weak pixels (8-connectivity); edges only ever grow
        _dilate3_flat(edges, row, rows_buf, out_buf)
        torch.logical_and(weak, out_buf, out=edges)
        grown = _count(edges)
        if grown == count:
            return edges.view(h, n, w + 2)
        count = grown


def _count(m: torch.Tensor) -> int:
    """A number that strictly increases when pixels are added to the boolean mask ``m``: its bytes summed
    two at a time as int16 words (each ≤ 257) into an int32 total (no overflow for up to 2²³ bytes)."""
    b = m.reshape(-1).view(torch.uint8)
    if b.numel() % 2 or b.storage_offset() % 2 or b.numel() > 1 << 23:
        return int(b.sum())
    return int(b.view(torch.int16).sum(dtype=torch.int32))


def canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Canny edges of 8-bit-valued images ``(N, 1, H, W)`` like ``cv2.Canny(img, low, high)`` (bool).

    3×3 Sobel gradients (reflect-101 borders), L1 magnitude, non-maximum suppression along the
    gradient direction quantised to 0°/45°/90°/135°, then hysteresis: pixels above ``high`` and the
    8-connected pixels above ``low`` reachable from them. Exact integer arithmetic in float32.
    """
    hnw = img[:, 0].transpose(0, 1).to(torch.float32)
    return _canny_hnw(hnw, low, high)[..., 1:-1].transpose(0, 1)[:, None]


def _scan_max(t: torch.Tensor, span: int, reverse: bool = False) -> torch.Tensor:
    """Running maximum of flat ``t`` over the last ``span`` positions up to each (from each onwards if
    ``reverse``), by doubling steps of shifted maxima of contiguous slices."""
    cur, nxt = t, torch.empty_like(t)
    s = 1
    while s < span:
        if reverse:
            nxt[-s:] = cur[-s:]
            torch.maximum(cur[:-s], cur[s:], out=nxt[:-s])
        else:
            nxt[:s] = cur[:s]
            torch.maximum(cur[s:], cur[:-s], out=nxt[s:])
        cur, nxt, s = nxt, cur, 2 * s
    return cur


_POSITIONS: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _row_positions(rows: int, w: int, cap: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Flat int32 positions ``row·(w + cap + 1) + column`` (rows farther apart than ``cap``), plus and minus
    2³⁰ (the last few shapes cached: they are as large as the batch)."""
    key = (rows, w, cap, torch.device(device))
    if key not in _POSITIONS:
        if len(_POSITIONS) >= 4:
            _POSITIONS.clear()
        pos = (torch.arange(rows, device=device, dtype=torch.int32)[:, None] * (w + cap + 1)
               + torch.arange(w, device=device, dtype=torch.int32)[None, :]).view(-1)
        _POSITIONS[key] = (pos, pos + (1 << 30), (1 << 30) - pos)
    return _POSITIONS[key]



def _edge_distance_sq_hnw(edges: torch.Tensor, cap: int) -> torch.Tensor:
    """Squared distance to the nearest edge of H-major ``edges (H, N, W)``, capped at ``cap²`` (int16, exact).

    Row pass: each pixel gets a position along its row, rows spaced more than ``cap`` apart, so the
    nearest edge at or before / after it in memory order (running maxima over ``cap + 1`` positions)
    is either in its own row or farther than ``cap``. Column pass: a min-plus pass over row offsets k
    (|k| ≤ cap), stopping once k² reaches every distance found (no later offset can lower any). All
    values are integers (int32, then int16 from the column pass), so everything is exact.
    """
    h, n, w = edges.shape
    big = 1 << 30
    pos, pos_up, pos_down = _row_positions(h * n, w, cap, edges.device)
    e = edges.reshape(-1)
    left = _scan_max(torch.mul(e, pos_up).sub_(big), cap + 1)  # nearest edge at or before (or −2³⁰)
    gap = torch.sub(pos, left, out=left)
    right = _scan_max(torch.mul(e, pos_down).sub_(big), cap + 1, reverse=True)  # −(nearest at or after)
    gap = torch.minimum(gap, right.add_(pos).neg_(), out=gap).clamp_(max=cap + 1)
    best = gap.mul_(gap).to(torch.int16).view(h, n, w)  # > cap² means "farther than cap"
    # column pass: min over row offsets k of best[row + k] + k², |k| ≤ cap (and < H)
    out = best.clone()
    r = min(cap, h - 1)
    pc = F.pad(best, (0, 0, 0, 0, r, r), value=(cap + 1) ** 2)
    tmp = torch.empty_like(out)
    for a in range(1, r + 1):
        if a % 4 == 1 and a * a >= int(out.max()):
            break
        for k in (-a, a):
            torch.minimum(out, torch.add(pc[r + k:r + k + h], a * a, out=tmp), out=out)
    return out.clamp_(max=cap * cap)


def edge_distance(edges: torch.Tensor, cap: int = 20) -> torch.Tensor:
    """Euclidean distance (pixels) of every pixel of ``edges (N, 1, H, W)`` to the nearest edge, capped at ``cap``.

    Exact within the cap: nearest edge per row by running maxima, then a min-plus pass over row
    offsets −cap..cap (squared distances are exact integers; the result is float64).
    """
    d2 = _edge_distance_sq_hnw(edges[:, 0].transpose(0, 1), cap)
    return d2.double().sqrt_().transpose(0, 1)[:, None]


def _equalise_hnw(img: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each image of H-major 8-bit-valued ``img (H, N, W)`` (``cv2.equalizeHist``)."""
    h, n, w = img.shape
    v = img.int().add_(256 * torch.arange(n, device=img.device, dtype=torch.int32)[None, :, None]).view(-1)
    hist = torch.bincount(v, minlength=256 * n).view(n, 256).double()
    cdf = hist.cumsum(1)
    first = hist.gather(1, (hist > 0).double().argmax(1, keepdim=True))
    total = float(h * w)
    denom = (total - first).clamp_min(1.0)
    lut = torch.round((cdf - first) * 255.0 / denom).clamp(0, 255)
    lut = torch.where(first == total, torch.arange(256, dtype=torch.float64, device=img.device).expand(n, -1), lut)
    return lut.to(img.dtype).view(-1).index_select(0, v).view(h, n, w)


def _equalise(img: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of 8-bit-valued images ``(N, 1, H, W)`` per image (``cv2.equalizeHist``)."""
    return _equalise_hnw(img[:, 0].transpose(0, 1)).transpose(0, 1)[:, None]


#: the reference's emboss kernel (cv2.filter2D correlation)
_EMBOSS = ((-2.0, -1.0, 0.0), (-1.0, 1.0, 1.0), (0.0, 1.0, 2.0))


def _emboss_hnw(x: torch.Tensor) -> torch.Tensor:
    """``cv2.filter2D(x, -1, emboss)`` of H-major images (reflect-101 borders), as shifted sums."""
    h, _, w = x.shape
    p = _reflect1(_reflect1(x, 0), 2)
    out = None
    for a, row in enumerate(_EMBOSS):
        for b, wk in enumerate(row):
            if wk:
                s = p[a:a + h, :, b:b + w]
                out = s * wk if out is None else out.add_(s, alpha=wk)
    return out


def _mean3_floor(t: torch.Tensor) -> torch.Tensor:
    """``floor(box3(x) + 1e-9)`` (float32) of H-major images ``t (H, N, W + 2)`` whose rows carry one spare
    column on each side: reflect-101 values are written there, so the sums along W are flat shifted
    slices; same additions in the same order as :func:`_box3_hnw`. The slack keeps exact integer means
    (e.g. nine capped 20s) whole whatever the float rounding."""
    h, n, w2 = t.shape
    t[..., 0], t[..., -1] = t[..., 2], t[..., -3]
    f = t.view(-1)
    rows = torch.empty_like(f)
    torch.add(f[1:-1], f[:-2], out=rows[1:-1]).add_(f[2:])
    rows = rows.view(h, n * w2)
    out = rows.clone()
    out[1:] += rows[:-1]
    out[0] += rows[1]
    out[:-1] += rows[1:]
    out[-1] += rows[-2]
    return out.mul_(1 / 9).add_(1e-9).floor_().view(h, n, w2)[..., 1:-1].float()


def _water_mask(z: torch.Tensor, mean: float, std: float, sigma: float, thresh: float) -> torch.Tensor:
    """The reference's water mask ``layer·dist`` (0..255², float32, H-major ``(H, N, W)``) from noise ``z``.

    The liquid layer (noise blurred with σ, zeroed under the threshold) is computed in float64 and
    taken to 8 bits exactly as before; from there every step is exact integer arithmetic in float32
    (Canny, squared distances, histogram equalisation, emboss, the 3×3 sums) except the square roots
    and their 3×3 means, which stay in float64 before being floored (with a 1e-9 slack so that exact
    integer means stay whole).
    """
    layer = _gauss_hnw(torch.add(torch.tensor(mean, dtype=z.dtype), z, alpha=std), sigma)
    keep = layer >= thresh  # zero under the threshold
    img = layer.mul_(255).clamp_(0, 255).floor_().float().mul_(keep)
    d2 = _edge_distance_sq_hnw(_canny_hnw(img, 50.0, 150.0), 20)  # rows padded by a column each side
    dist = _mean3_floor(d2.double().sqrt_())
    dist = _equalise_hnw(dist)
    dist = _emboss_hnw(dist).round_().clamp_(0, 255)
    dist = _box3_hnw(dist).round_()  # cv2.blur of 8-bit input stays 8-bit
    return img.mul_(dist)  # the reference multiplies the 8-bit layer
