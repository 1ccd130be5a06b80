"""Square Attack's random search: score-only, batched, with a random square per example per step.

From "Square Attack: a query-efficient black-box adversarial attack via random search"
(Andriushchenko, Croce, Flammarion & Hein, ECCV 2020). Each step proposes a change of one random
square window (of side ``s``, shrinking on a fixed schedule) per example, queries the model once and
keeps the proposal when the goal's loss improves or the goal is met. Only examples not yet broken
are queried. The proposals follow the paper (and its code, max-andr/square-attack ``attack.py``):

* L∞: start from vertical stripes of ``±eps``; a step sets the window to ``x ± eps`` with one
  random sign per channel (drawing again while the window would not change, as in the paper code).
* L2: start from a grid of "center-surround" bumps (two nested-rectangle halves of opposite signs)
  with random signs per channel; a step moves the mass of a second window into the first, adds a
  new bump, gives the window the unused budget and rescales the whole perturbation to norm ``eps``.

Inputs of shape (C, H, W) are images; (H, W) is one channel; a flat (D,) input is seen as a
1 x D image whose "squares" are segments of ``round(p * D)`` coordinates (so ``p`` keeps its
meaning: the fraction of the input changed per step).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from robustlab.attacks.goals import Goal
from robustlab.attacks.search.gradient import SearchResult
from robustlab.core.errors import ConfigError, ProbeError
from robustlab.core.model import Model
from robustlab.core.threat import LpBall

__all__ = ["SquareSearch", "center_surround", "square_fraction", "window_size"]

#: iterations (out of 10000) after which the square fraction ``p`` halves (Andriushchenko et al.)
SCHEDULE_STEPS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_MAX_REDRAWS = 10  # L∞: new sign draws for a window that would not change (paper code: unbounded)


def square_fraction(iteration: int, n_queries: int, p_init: float = 0.8) -> float:
    """The fraction ``p`` of the input a Square step changes at ``iteration`` (0-based).

    The paper's piecewise-constant schedule: ``p_init`` halves after iterations 10, 50, 200, 500,
    1000, 2000, 4000, 6000 and 8000 of a 10000-query run, rescaled to ``n_queries`` (the iteration
    is mapped to ``int(iteration / n_queries * 10000)``), so ``p`` ends at ``p_init / 512``.
    """
    it = int(iteration / n_queries * 10000)
    return p_init / 2 ** sum(it > t for t in SCHEDULE_STEPS)


def window_size(p: float, h: int, w: int, norm: str) -> tuple[int, int]:
    """Window (height, width) covering about ``p`` of an ``h x w`` plane.

    Images: a square of side ``round(sqrt(p h w))``; for L∞ at least 1 and at most ``min(h, w) - 1``
    (as in the paper code), for L2 at least 3 and odd (the bump has a center), at most
    ``min(h, w)``. A 1 x D input gets a segment of ``round(p D)`` coordinates under the same limits.
    """
    if h == 1:
        s, side = round(p * w), w
    else:
        s, side = round(math.sqrt(p * h * w)), min(h, w)
    if norm == "inf":
        s = min(max(s, 1), max(side - 1, 1))
    else:
        s = max(s, 3)
        s = min(s + 1 if s % 2 == 0 else s, side)
    return (1, s) if h == 1 else (s, s)


def _rectangles(a: int, b: int) -> torch.Tensor:
    """Nested rectangles around the center: cell value ``sum_{k >= ring} 1 / (k + 1)^2``, unit L2."""
    if a == 0 or b == 0:
        return torch.zeros(a, b, dtype=torch.float64)
    rings = max(a // 2 + 1, b // 2 + 1)
    ring = torch.maximum((torch.arange(a) - a // 2).abs().view(-1, 1), (torch.arange(b) - b // 2).abs().view(1, -1))
    tail = (1.0 / torch.arange(1, rings + 1, dtype=torch.float64) ** 2).flip(0).cumsum(0).flip(0)
    out = tail[ring]
    return out / out.norm()


@functools.lru_cache(maxsize=128)
def center_surround(a: int, b: int) -> torch.Tensor:
    """The L2 Square bump of shape (a, b), unit L2 norm (float64, CPU).

    The top ``a // 2`` rows hold positive nested rectangles, the other rows negative ones (the
    paper's "meta pseudo-gaussian" perturbation with two sub-squares). A 1 x b window is split into
    left and right halves instead.
    """
    if a == 1 and b > 1:
        return center_surround(b, 1).t().contiguous()
    out = torch.cat([_rectangles(a // 2, b), -_rectangles(a - a // 2, b)], dim=0)
    return out / out.norm()


def as_planes(x: torch.Tensor) -> torch.Tensor:
    """View a batch (B, ...) as (B, C, H, W): (D,) -> (1, 1, D), (H, W) -> (1, H, W)."""
    if x.dim() == 2:
        return x.view(x.shape[0], 1, 1, x.shape[1])
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 4:
        return x
    raise ProbeError(f"Square works on inputs of shape (D,), (H, W) or (C, H, W); got {tuple(x.shape[1:])}",
                     fix="reshape the inputs (and wrap the model to accept that shape)")


class _Draw:
    """Random numbers from ``generator`` (on its device), moved to ``device``."""

    def __init__(self, generator: torch.Generator, device: torch.device, dtype: torch.dtype):
        self.g, self.dev, self.dtype = generator, device, dtype
        gdev = generator.device
        self.here = gdev.type == device.type and (gdev.index or 0) == (device.index or 0)

    def _moved(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.here else t.to(self.dev)

    def signs(self, *shape: int) -> torch.Tensor:
        """``±1`` in the search's dtype (the integers 0 / 1 drawn, then ``2 s - 1``)."""
        s = torch.randint(0, 2, shape, generator=self.g, device=self.g.device, dtype=self.dtype)
        return self._moved(s.mul_(2).sub_(1))

    def ints(self, high: int, n: int) -> torch.Tensor:
        """``n`` integers in ``[0, high]``."""
        return self._moved(torch.randint(0, high + 1, (n,), generator=self.g, device=self.g.device))

    def corners(self, high_rows: int, high_cols: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` (top, left) corners: the same draws as ``ints(high_rows, n)`` then ``ints(high_cols, n)``."""
        if high_rows != high_cols:
            return self.ints(high_rows, n), self.ints(high_cols, n)
        both = self._moved(torch.randint(0, high_rows + 1, (2, n), generator=self.g, device=self.g.device))
        return both[0], both[1]

    def coins(self, *shape: int) -> torch.Tensor:
        return (torch.rand(shape, generator=self.g, device=self.g.device) < 0.5).to(self.dev)


def _window_mask(top: torch.Tensor, left: torch.Tensor, size: tuple[int, int], h: int, w: int) -> torch.Tensor:
    """(B, 1, h, w) bool mask of the window at (top, left) of each example."""
    rows = torch.arange(h, device=top.device).view(1, -1)
    cols = torch.arange(w, device=top.device).view(1, -1)
    mh = (rows >= top.view(-1, 1)) & (rows < top.view(-1, 1) + size[0])
    mw = (cols >= left.view(-1, 1)) & (cols < left.view(-1, 1) + size[1])
    return (mh.unsqueeze(2) & mw.unsqueeze(1)).unsqueeze(1)


def _window_index(top: torch.Tensor, left: torch.Tensor, size: tuple[int, int],
                  cache: dict | None = None) -> tuple[torch.Tensor, ...]:
    """Advanced indices selecting each example's window: ``t[idx]`` has shape (B, sh, sw, C).

    ``cache`` (a dict kept across the steps of a run) holds the index ranges per batch size and window.
    """
    key = (top.shape[0], size)
    ranges = None if cache is None else cache.get(key)
    if ranges is None:
        dev = top.device
        ranges = (torch.arange(top.shape[0], device=dev).view(-1, 1, 1), torch.arange(size[0], device=dev),
                  torch.arange(size[1], device=dev))
        if cache is not None:
            cache[key] = ranges
    b, r, c = ranges
    rows = (top.view(-1, 1) + r).unsqueeze(2)
    cols = (left.view(-1, 1) + c).unsqueeze(1)
    return b, slice(None), rows, cols


def _bumps(n: int, size: tuple[int, int], draw: _Draw) -> torch.Tensor:
    """(n, 1, sh, sw) bumps, each transposed with probability 1/2 when the window is square."""
    base = center_surround(*size).to(draw.dev, draw.dtype)
    out = base.expand(n, 1, *size)
    if size[0] == size[1] and size[0] > 1:
        out = torch.where(draw.coins(n, 1, 1, 1), base.t(), base)
    return out


def _init_linf(x: torch.Tensor, eps: float, low: float, high: float, draw: _Draw) -> torch.Tensor:
    b, c, _, w = x.shape
    return (x + eps * draw.signs(b, c, 1, w)).clamp(low, high)


def _init_l2(x: torch.Tensor, eps: float, low: float, high: float, draw: _Draw) -> torch.Tensor:
    """Grid of bumps (side ``min(H, W) // 5``, about a 5 x 5 grid), random signs, scaled to ``eps``."""
    b, c, h, w = x.shape
    size = (1, max(w // 5, 1)) if h == 1 else (max(min(h, w) // 5, 1),) * 2
    nh, nw = h // size[0], w // size[1]
    top, left = (h - nh * size[0]) // 2, (w - nw * size[1]) // 2
    bumps = _bumps(b * nh * nw, size, draw).reshape(b, 1, nh, nw, *size)
    blocks = bumps * draw.signs(b, c, nh, nw, 1, 1)
    delta = torch.zeros_like(x)
    delta[:, :, top:top + nh * size[0], left:left + nw * size[1]] = (
        blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, c, nh * size[0], nw * size[1]))
    norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (x + delta / norm * eps).clamp(low, high)


def _step_linf(x: torch.Tensor, xb: torch.Tensor, eps: float, p: float, low: float, high: float,
               draw: _Draw, cache: dict | None = None) -> torch.Tensor:
    """Set one random window per example to ``x ± eps`` (one sign per channel).

    Each example takes the first of ``_MAX_REDRAWS`` sign draws that changes its window (the last
    draw if none does). The draws are made and tested at once, as a (B, R, C) batch: a loop that
    redraws until every example changes ran ~8 passes over the batch per step (small images, late
    1-pixel windows: a sign often repeats the current one) and cost ~40% of a forward pass.
    ``cache``: index ranges reused across steps (see :func:`_window_index`).
    """
    b, c, h, w = x.shape
    size = window_size(p, h, w, "inf")
    top, left = draw.corners(h - size[0], w - size[1], b)
    signs = draw.signs(b, _MAX_REDRAWS, c)                                     # (B, R, C)
    idx = _window_index(top, left, size, cache)
    xw, bw = x[idx], xb[idx]                                                   # (B, sh, sw, C)
    cand = (xw.unsqueeze(1) + eps * signs.view(b, _MAX_REDRAWS, 1, 1, c)).clamp(low, high)
    changes = ((cand - bw.unsqueeze(1)).abs() >= 1e-7).flatten(2).any(dim=2)  # (B, R)
    changes[:, -1] = True  # the first draw that changes the window, else the last one
    first = changes.to(torch.uint8).argmax(dim=1)
    out = xb.clone()
    out[idx] = cand[idx[0].view(-1), first]
    return out


def _step_l2(x: torch.Tensor, xb: torch.Tensor, eps: float, p: float, low: float, high: float,
             draw: _Draw, cache: dict | None = None) -> torch.Tensor:
    """Move window 2's mass into window 1 with a new bump and the unused budget; rescale to ``eps``."""
    b, c, h, w = x.shape
    size = window_size(p, h, w, "2")
    top1, left1 = draw.ints(h - size[0], b), draw.ints(w - size[1], b)
    top2, left2 = draw.ints(h - size[0], b), draw.ints(w - size[1], b)
    m1, m2 = _window_mask(top1, left1, size, h, w), _window_mask(top2, left2, size, h, w)
    delta = xb - x
    norm_img = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    union = (delta.square() * (m1 | m2)).sum(dim=(2, 3), keepdim=True).sqrt()  # per channel
    idx1 = _window_index(top1, left1, size, cache)
    old = delta[idx1].permute(0, 3, 1, 2)                                     # (B, C, sh, sw)
    old = old / (1e-12 + old.square().sum(dim=(2, 3), keepdim=True).sqrt())
    new = _bumps(b, size, draw) * draw.signs(b, c, 1, 1) + old
    budget = ((eps ** 2 - norm_img.square()).clamp_min(0) / c + union.square()).sqrt()
    new = new / new.square().sum(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
    delta = delta.masked_fill(m2, 0.0)
    delta[idx1] = new.permute(0, 2, 3, 1)
    total = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (x + delta / total * eps).clamp(low, high)


@dataclass(frozen=True)
class SquareSearch:
    """Square Attack's random search, on survivors only, batched over examples.

    Args:
        n_queries: model calls per example and restart (>= 1): the start point, then
            ``n_queries - 1`` proposals (the paper code's count for L∞).
        p_init: fraction of the input changed by the first steps, in (0, 1]; see
            :func:`square_fraction`.
        restarts: independent runs (>= 1), each on the examples not yet broken.

    Cost: at most ``restarts * n_queries`` queries per example; an example broken at the ``k``-th
    query of its first run costs ``k``.
    """

    n_queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1

    def __post_init__(self) -> None:
        for name in ("n_queries", "restarts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}", fix=f"pass e.g. {name}=1")
        p = self.p_init
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise ConfigError(f"p_init must be in (0, 1], got {p!r}",
                              fix="pass e.g. p_init=0.8 (AutoAttack) or p_init=0.05 (paper, L∞ ImageNet)")

    def run(self, model: Model, goal: Goal, threat: LpBall, x0: torch.Tensor, labels: torch.Tensor, *,
            generator: torch.Generator) -> SearchResult:
        """Maximize ``goal.loss`` over ``threat`` around ``x0`` (B, ...) by random search; no gradients."""
        if threat.norm not in ("inf", "2"):
            raise ConfigError(f"Square supports the L∞ and L2 balls, not L{threat.norm}",
                              fix="use norm='inf' or norm=2")
        b, dev, shape = x0.shape[0], x0.device, x0.shape[1:]
        x0 = x0.detach()
        queries = torch.zeros(b, dtype=torch.long, device=dev)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        best_loss = torch.full((b,), float("-inf"), dtype=torch.float64, device=dev)
        x_best = x0.clone()
        if b == 0 or threat.eps == 0:
            return SearchResult(x_best, queries, done, best_loss)
        planes = as_planes(x0)
        draw = _Draw(generator, dev, x0.dtype)
        eps, low, high = threat.eps, threat.low, threat.high
        init, step = (_init_linf, _step_linf) if threat.norm == "inf" else (_init_l2, _step_l2)
        fractions = [square_fraction(i, self.n_queries, self.p_init) for i in range(self.n_queries - 1)]
        cache: dict = {}
        for _ in range(self.restarts):
            act = (~done).nonzero().squeeze(1)
            if act.numel() == 0:
                break
            xa, la = planes[act], labels[act]
            xb = init(xa, eps, low, high, draw)
            lb = torch.full((act.numel(),), float("-inf"), dtype=torch.float64, device=dev)
            for i in range(self.n_queries):
                cand = xb if i == 0 else step(xa, xb, eps, fractions[i - 1], low, high, draw, cache)
                ev = goal.query(model, cand.reshape(-1, *shape), la, queries=queries, index=act)
                loss, succ = ev.loss.double(), ev.success
                better = succ | (loss > lb)
                xb = torch.where(better.view(-1, 1, 1, 1), cand, xb)
                lb = torch.where(better, loss, lb)
                if bool(succ.any()):  # freeze the broken ones, query only the survivors
                    won = act[succ]
                    done[won], best_loss[won], x_best[won] = True, lb[succ], xb[succ].reshape(-1, *shape)
                    keep = ~succ
                    act, xa, xb, la, lb = act[keep], xa[keep], xb[keep], la[keep], lb[keep]
                    if act.numel() == 0:
                        break
            if act.numel():  # keep this run's point where it beats the earlier runs
                up = lb > best_loss[act]
                best_loss[act[up]] = lb[up]
                x_best[act[up]] = xb[up].reshape(-1, *shape)
        return SearchResult(x_best, queries, done, best_loss)
