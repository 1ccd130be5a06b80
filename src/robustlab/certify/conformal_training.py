"""Robust conformal training (RCT) and the post-training transformation (PTT) for smaller RSCP+ sets.

From "Provably Robust Conformal Prediction with Improved Efficiency" (Yan, Romano & Weng, ICLR 2024). Both
shrink the RSCP+ prediction sets of :mod:`robustlab.certify.conformal` without touching its guarantee; they
live apart from the conformal machinery (scores, calibration, sets, certifiers) because they change the
model or the score, not the set construction.

* PTT: ranking ``Q(s) = #{i : s_i <= s} / n_h`` on hold-out true-label scores of the noisy base model,
  then the sigmoid ``phi(q) = 1 / (1 + exp(-T (q - b)))`` (T = 400, b = 0.9), applied per noise draw.
* RCT: the ConfTr-style loss on smoothed conformity ``Phi^-1(mean_k softmax_y)``, threshold shifted by
  ``-delta / sigma`` (:func:`rct_loss`, :func:`rct_train`).

Departures: the soft quantile of RCT is the root of a sigmoid-relaxed empirical CDF (dispersion 0.1) with
its implicit-function gradient, not Blondel et al.'s soft sort; the hold-out scores of PTT take one
noise draw per hold-out point.

The argument checks shared with :mod:`robustlab.certify.conformal` live here, so the import goes one way
(``conformal`` imports and re-exports this module's names; this module never imports ``conformal``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError
from robustlab.core.rng import derive_seed, torch_generator

__all__ = ["PTT", "rct_loss", "rct_train", "soft_quantile"]


# ----------------------------------------------------------------------------- checks

def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 1.0):
        raise ConfigError(f"conformal: {name} must be in (0, 1), got {alpha!r}",
                          fix=f"use e.g. {name}=0.1 (90% coverage)" if name == "alpha" else f"use e.g. {name}=0.001")


def _check_sigma(sigma: float) -> None:
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"conformal: sigma must be a finite number > 0, got {sigma!r}",
                          fix="use e.g. sigma=0.25 (= 2 * delta, the paper's choice)")


def _check_delta(delta: float) -> None:
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta >= 0):
        raise ConfigError(f"conformal: delta (the L2 radius) must be a finite number >= 0, got {delta!r}",
                          fix="use e.g. delta=0.125")


# ----------------------------------------------------------------------------- PTT

@dataclass
class PTT:
    """Post-training transformation (Yan et al., ICLR 2024): ranking ``Q`` then sigmoid ``phi``.

    ``Q(s) = #{i : h_i <= s} / n_h`` over the hold-out true-label scores ``h`` (the step ECDF) or, with
    ``interpolate=True``, its strictly increasing linear interpolation between hold-out scores; then
    ``phi(q) = 1 / (1 + exp(-T (q - b)))``. Build it with :meth:`fit`.

    Attributes:
        holdout: sorted hold-out scores (n_h,), float64.
        temperature: ``T`` (paper: 400).
        bias: ``b`` (paper: 0.9).
        interpolate: linear interpolation instead of the step ECDF.
    """

    holdout: torch.Tensor
    temperature: float = 400.0
    bias: float = 0.9
    interpolate: bool = False

    @classmethod
    def fit(cls, holdout_scores: torch.Tensor, temperature: float = 400.0, bias: float = 0.9,
            interpolate: bool = False) -> PTT:
        """A PTT from the true-label scores of a labeled hold-out set (scored with the noisy base model)."""
        h = torch.as_tensor(holdout_scores).detach().flatten().double().cpu()
        if h.numel() < 1 or not bool(torch.isfinite(h).all()):
            raise ConfigError(f"PTT needs >= 1 finite hold-out score, got {h.numel()}",
                              fix="pass the true-label scores of a labeled hold-out set (paper: 500 points)")
        if not temperature > 0:
            raise ConfigError(f"PTT temperature must be > 0, got {temperature!r}", fix="use the paper's T=400")
        return cls(h.sort().values, float(temperature), float(bias), bool(interpolate))

    def rank(self, s: torch.Tensor) -> torch.Tensor:
        """``Q(s)`` elementwise, float64 on ``s``'s device."""
        h = self.holdout.to(s.device)
        n = h.numel()
        if not self.interpolate:
            return torch.searchsorted(h, s.double().contiguous(), right=True).double() / n
        knots, counts = torch.unique(h, return_counts=True)
        ys = counts.cumsum(0).double() / n
        lo, hi = min(float(knots[0]), 0.0) - 1.0, max(float(knots[-1]), 1.0) + 1.0
        xs = torch.cat([knots.new_tensor([lo]), knots, knots.new_tensor([hi])])
        ys = torch.cat([ys.new_tensor([0.0]), ys, ys.new_tensor([1.0 + 1.0 / n])])
        sd = s.double().clamp(lo, hi).contiguous()
        i = torch.searchsorted(xs, sd, right=True).clamp(1, len(xs) - 1)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (sd - x0) / (x1 - x0)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        """``phi(Q(s))`` (float64), same shape as ``s``."""
        return torch.sigmoid(self.temperature * (self.rank(s) - self.bias))


# ----------------------------------------------------------------------------- RCT

def soft_quantile(values: torch.Tensor, q: float, dispersion: float = 0.1, iters: int = 60) -> torch.Tensor:
    """Differentiable ``q``-quantile: the root ``t`` of ``mean_i sigmoid((t - v_i) / d) = q``.

    Found by bisection; its gradient is the implicit-function one, ``dt/dv_i = w_i / sum_j w_j`` with
    ``w_i = sigmoid'((t - v_i) / d)``. ``d -> 0`` gives the empirical quantile. (n,) -> scalar.
    """
    v = values.detach()
    lo = v.min() - 20 * dispersion
    hi = v.max() + 20 * dispersion
    for _ in range(iters):
        mid = (lo + hi) / 2
        below = torch.sigmoid((mid - v) / dispersion).mean() < q
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    t = (lo + hi) / 2
    s = torch.sigmoid((t - v) / dispersion)
    w = s * (1 - s)
    w = w / w.sum().clamp_min(1e-12)
    return t + (w * (values - v)).sum()


def rct_loss(module: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
             sigma: float, delta: float, alpha: float = 0.1, m: int = 8, kappa: float = 1.0, lam: float = 1.0,
             t_soft: float = 0.1, dispersion: float = 0.1, generator: torch.Generator) -> torch.Tensor:
    """Robust conformal training loss (Yan et al., ICLR 2024; ConfTr of Stutz et al., ICLR 2022).

    ``c(x, y) = Phi^-1(mean_k softmax_y(f(x + eps_k)))`` over ``m`` draws; first half of the batch:
    ``tau = soft_alpha-quantile(c(x_i, y_i)) - delta / sigma``; second half: ``m_y = sigmoid((c - tau) / T)``,
    ``L_class = sum_y (1 - m_y) 1[y = label] + m_y 1[y != label]``, ``L_size = max(sum_y m_y - kappa, 0)``;
    loss ``log(mean(L_class + lam L_size) + 1e-8)``.
    """
    _check_sigma(sigma)
    _check_delta(delta)
    _check_alpha(alpha)
    b = x.shape[0]
    if b < 4:
        raise ConfigError(f"rct_loss needs a batch of >= 4 examples, got {b}", fix="use the paper's batch of 500")
    noise = torch.randn((m, *x.shape), generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    noisy = (x.unsqueeze(0) + sigma * noise).reshape(m * b, *x.shape[1:])
    p = F.softmax(module(noisy), dim=1).view(m, b, -1).mean(0)
    c = torch.special.ndtri(p.clamp(1e-6, 1 - 1e-6))
    h = b // 2
    true_c = c[:h].gather(1, y[:h].view(-1, 1)).squeeze(1)
    tau = soft_quantile(true_c, alpha, dispersion) - delta / sigma
    member = torch.sigmoid((c[h:] - tau) / t_soft)
    onehot = F.one_hot(y[h:], c.shape[1]).to(member.dtype)
    l_class = ((1 - member) * onehot + member * (1 - onehot)).sum(1)
    l_size = (member.sum(1) - kappa).clamp_min(0.0)
    return torch.log((l_class + lam * l_size).mean() + 1e-8)


def rct_train(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float, delta: float,
              alpha: float = 0.1, epochs: int = 150, batch_size: int = 500, lr: float = 0.05, m: int = 8,
              kappa: float = 1.0, lam: float = 1.0, t_soft: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """Fine-tune ``module`` (raw inputs) in place with :func:`rct_loss`: SGD momentum 0.9, cosine schedule.

    Defaults are the paper's CIFAR-10 ones (batch 500, lr 0.05, 150 epochs, kappa 1, lambda 1, T 0.1).
    Returns ``{"loss": [...]}`` (mean loss per epoch).
    """
    if epochs < 1 or batch_size < 4 or lr <= 0:
        raise ConfigError(f"rct_train: epochs={epochs}, batch_size={batch_size}, lr={lr} invalid",
                          fix="use epochs >= 1, batch_size >= 4, lr > 0")
    gen = torch_generator(derive_seed(seed, "rct", "noise"))
    order_gen = torch_generator(derive_seed(seed, "rct", "shuffle"))
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9)
    n = x.shape[0]
    steps = max(1, n // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    hist: dict[str, Any] = {"loss": []}
    module.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=order_gen)
        tot = 0.0
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size] if steps > 1 else perm
            loss = rct_loss(module, x[idx], y[idx], sigma=sigma, delta=delta, alpha=alpha, m=m, kappa=kappa,
                            lam=lam, t_soft=t_soft, generator=gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach())
        hist["loss"].append(tot / steps)
    module.eval()
    return hist
