"""DTA: attack downstream models through the public pre-trained encoder they were fine-tuned from.

From "Downstream Transfer Attack: Adversarial Attacks on Downstream Models with Pre-trained Vision
Transformers" (Zheng, Ma, Huang, Yin, Zhang, Wu & Jiang, arXiv 2408.01705, 2024). The attacker holds
only the pre-trained ViT encoder, never the downstream model (linear probe, full fine-tune, ...): it
pushes the token features of one encoder layer away from the clean ones, and picks that layer by a
small exploration on probe images.

No official code exists; robustlab's version is reconstructed from the paper's description:

* the layer loss ``L_l(x') = mean_tokens cos(h_l(x'), h_l(x))`` over every token of the block output
  (class token included), minimized with L∞ PGD sign steps, projected to the eps-ball and [0, 1];
* a uniform random start in the ball is always used: at ``x' = x`` the cosine is at its maximum and
  its gradient is exactly zero, so sign steps from ``x`` would never move;
* the last iterate is returned (no best-iterate bookkeeping);
* layer exploration crafts with ``L_l`` on the probe set for every layer ``l`` and scores the layer by
  the mean token cosine between the clean and adversarial outputs of the *last* layer (``L_last`` of
  the examples crafted at ``l``); the lowest score is the most vulnerable layer ``l*``. The pooled
  feature was not used: on a small MAE encoder its cosine is ~0.999 even between different images
  (the shared position component dominates), which leaves no signal to rank layers;
* an ensemble of encoders sums their losses, each encoder at its own explored (or given) layer;
* defaults (not given by the paper): eps 8/255, 20 steps, step size eps/4 (= 2/255 at 8/255).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from robustlab.attacks._common import fmt_eps, resolve_eps
from robustlab.attacks.search.gradient import sample_start
from robustlab.core.errors import ConfigError, ProbeError, UnsupportedModelError
from robustlab.core.model import Model
from robustlab.core.probe import Attack, AttackResult
from robustlab.core.registry import register
from robustlab.core.threat import LpBall

__all__ = ["DTA", "LayerExploration", "TokenEncoder", "dta_perturb", "explore_layers", "feature_cosine", "final_cosine",
           "token_cosine"]


class TokenEncoder(Protocol):
    """What DTA needs of a pre-trained encoder (e.g. :class:`robustlab.models.vit.TinyViT`).

    ``hidden_states(x, upto)`` -> the outputs of layers ``0 .. upto-1``, each ``(B, T, d)`` token
    features; ``features(x)`` -> the final output ``(B, d)``; ``num_layers``.
    """

    num_layers: int

    def hidden_states(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]: ...

    def features(self, x: torch.Tensor) -> torch.Tensor: ...


def _check_encoder(enc: Any) -> TokenEncoder:
    missing = [a for a in ("hidden_states", "features", "num_layers") if not hasattr(enc, a)]
    if missing:
        raise UnsupportedModelError(f"DTA needs an encoder with per-layer token outputs; "
                                    f"{type(enc).__name__} lacks {', '.join(missing)}",
                                    fix="pass a robustlab.models.vit.TinyViT or an object with "
                                        "hidden_states(x, upto), features(x) and num_layers")
    return enc


def token_cosine(h_adv: torch.Tensor, h_clean: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of the cosine between adversarial and clean token features: ``(B, T, d)`` -> ``(B,)``."""
    return F.cosine_similarity(h_adv, h_clean, dim=-1, eps=1e-8).mean(dim=-1)


@torch.no_grad()
def final_cosine(encoder: TokenEncoder, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean token cosine between the last-layer outputs of ``x_adv`` and ``x``, per example ``(B,)``."""
    return token_cosine(encoder.hidden_states(x_adv)[-1], encoder.hidden_states(x)[-1])


@torch.no_grad()
def feature_cosine(encoder: TokenEncoder, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Cosine between the pooled final features (``encoder.features``) of ``x_adv`` and ``x``, ``(B,)``."""
    return F.cosine_similarity(encoder.features(x_adv), encoder.features(x), dim=-1, eps=1e-8)


def _layer_index(layer: int, depth: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int) or not -depth <= layer < depth:
        raise ConfigError(f"DTA: layer {layer!r} is not one of the encoder's {depth} layers",
                          fix=f"use 0..{depth - 1} (or -1 for the last), or layer='auto'")
    return layer % depth


def dta_perturb(encoders: Sequence[TokenEncoder], layers: Sequence[int], x: torch.Tensor, *, threat: LpBall,
                steps: int, alpha: float, generator: torch.Generator,
                history: bool = False) -> tuple[torch.Tensor, list[float]]:
    """Minimize ``sum_k L_{layers[k]}`` of ``encoders[k]`` over ``threat`` around ``x`` with L∞ sign steps.

    Args:
        encoders: pre-trained encoders (in eval mode; only input gradients are taken).
        layers: one layer index per encoder.
        x: clean inputs ``(B, C, H, W)`` in the threat's box, on the encoders' device.
        threat: the L∞ ball; ``alpha``: step size in raw units; ``steps``: sign steps.
        generator: draws the random start.
        history: also return the mean loss (averaged over encoders) at the start and after every step.

    Returns ``(x_adv (B, C, H, W), history)``; ``x_adv`` is the last iterate.
    """
    x = x.detach()
    with torch.no_grad():
        clean = [e.hidden_states(x, upto=lay + 1)[lay] for e, lay in zip(encoders, layers)]

    def loss_of(xa: torch.Tensor) -> torch.Tensor:
        return sum(token_cosine(e.hidden_states(xa, upto=lay + 1)[lay], c)
                   for e, lay, c in zip(encoders, layers, clean))

    xa = sample_start(threat, x, generator)
    trace: list[float] = []
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = loss_of(xa)
        if history:
            trace.append(float(loss.detach().mean()) / len(encoders))
        (grad,) = torch.autograd.grad(loss.sum(), xa)
        xa = threat.project(x, xa.detach() - alpha * grad.sign())
    if history:
        with torch.no_grad():
            trace.append(float(loss_of(xa).mean()) / len(encoders))
    return xa.detach(), trace


@dataclass
class LayerExploration:
    """DTA's layer exploration for one encoder: ``scores`` (L,) mean last-layer token cosine after
    attacking layer ``l`` (lower = more vulnerable) and ``best = argmin(scores)``."""

    scores: torch.Tensor
    best: int


def explore_layers(encoder: TokenEncoder, probe: torch.Tensor, *, threat: LpBall, steps: int, alpha: float,
                   generator: torch.Generator) -> LayerExploration:
    """Craft with ``L_l`` on ``probe`` ``(P, C, H, W)`` for every layer ``l``; score by last-layer token cosine."""
    scores = []
    for lay in range(int(encoder.num_layers)):
        xa, _ = dta_perturb([encoder], [lay], probe, threat=threat, steps=steps, alpha=alpha, generator=generator)
        scores.append(float(final_cosine(encoder, xa, probe).mean()))
    s = torch.tensor(scores)
    return LayerExploration(scores=s, best=int(s.argmin()))


@register("attack", "dta")
class DTA(Attack):
    """Downstream Transfer Attack: L∞ PGD on a pre-trained encoder's layer-``l*`` token cosine.

    Zheng et al., "Downstream Transfer Attack: Adversarial Attacks on Downstream Models with
    Pre-trained Vision Transformers" (arXiv 2408.01705, 2024); reconstructed, see the module docstring.
    The downstream model is never queried (``queries`` are 0): the examples are crafted on the encoder
    only and then handed to whatever model is evaluated.

    Args:
        encoder: a pre-trained encoder (see :class:`TokenEncoder`), or a list of them (an ensemble:
            their losses are summed).
        eps: L∞ radius in raw input units (default 8/255).
        steps: PGD sign steps (default 20).
        alpha: step size in raw units; ``None`` -> ``eps / 4``.
        layer: ``"auto"`` (layer exploration), a layer index (0-based, negative counts from the end)
            or one index per encoder.
        probe: images ``(P, C, H, W)`` for the exploration; ``None`` -> the first ``probe_size``
            images of the first batch attacked.
        probe_size: probe images taken from the batch when ``probe`` is None.

    After the first call (or :meth:`explore`), ``layers_`` holds the attacked layer of each encoder
    and ``exploration`` the per-layer scores.

    Example::

        attack = DTA(vit, eps=0.1, probe=x_probe)
        x_adv = attack(downstream_model, x, y, generator=torch_generator(0)).x_adv
    """

    query_free = True  # never queries the evaluated model (the runner's query check knows)

    needs_gradients = False  # gradients of the encoder only, never of the downstream model

    def __init__(self, encoder: TokenEncoder | Sequence[TokenEncoder], eps: float | None = None, steps: int = 20,
                 alpha: float | None = None, layer: str | int | Sequence[int] = "auto",
                 probe: torch.Tensor | None = None, probe_size: int = 64):
        encs = list(encoder) if isinstance(encoder, (list, tuple)) else [encoder]
        if not encs:
            raise ConfigError("DTA needs at least one encoder", fix="pass encoder=<a pre-trained TinyViT>")
        self.encoders = [_check_encoder(e) for e in encs]
        _, eps = resolve_eps("inf", eps, "DTA")
        self.threat = LpBall(norm="inf", eps=eps)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"DTA: steps must be an integer >= 1, got {steps!r}", fix="pass e.g. steps=20")
        if alpha is not None and not (isinstance(alpha, (int, float)) and alpha > 0):
            raise ConfigError(f"DTA: alpha must be > 0 or None, got {alpha!r}", fix="leave alpha=None (eps/4)")
        self.steps, self._alpha = steps, alpha
        self.layer = layer
        self.layers_: list[int] | None = None
        self.exploration: list[LayerExploration] | None = None
        if layer != "auto":
            given = [layer] * len(self.encoders) if isinstance(layer, int) else list(layer)
            if len(given) != len(self.encoders):
                raise ConfigError(f"DTA: {len(given)} layers for {len(self.encoders)} encoders",
                                  fix="give one layer per encoder, one int for all, or 'auto'")
            self.layers_ = [_layer_index(lay, int(e.num_layers)) for lay, e in zip(given, self.encoders)]
        self.probe, self.probe_size = probe, int(probe_size)

    @property
    def eps(self) -> float:
        return self.threat.eps

    @property
    def alpha(self) -> float:
        return float(self._alpha) if self._alpha is not None else self.threat.eps / 4

    def at(self, eps: float) -> DTA:
        new = copy.copy(self)
        new.threat = self.threat.with_eps(eps)
        if self.layer == "auto":  # the exploration depends on eps: redo it at the new radius
            new.layers_, new.exploration = None, None
        return new

    def _device(self) -> torch.device:
        params = getattr(self.encoders[0], "parameters", None)
        p = next(iter(params()), None) if callable(params) else None
        return p.device if p is not None else torch.device("cpu")

    def _eval(self) -> list[bool]:
        flags = [bool(getattr(e, "training", False)) for e in self.encoders]
        for e in self.encoders:
            if hasattr(e, "eval"):
                e.eval()
        return flags

    def _restore(self, flags: list[bool]) -> None:
        for e, f in zip(self.encoders, flags):
            if f:
                e.train()

    def explore(self, probe: torch.Tensor, *, generator: torch.Generator) -> list[LayerExploration]:
        """Run the layer exploration on ``probe`` for every encoder and set ``layers_`` to the argmins."""
        flags = self._eval()
        try:
            p = probe.detach().to(self._device())
            self.exploration = [explore_layers(e, p, threat=self.threat, steps=self.steps, alpha=self.alpha,
                                               generator=generator) for e in self.encoders]
        finally:
            self._restore(flags)
        self.layers_ = [ex.best for ex in self.exploration]
        return self.exploration

    def craft(self, x: torch.Tensor, *, generator: torch.Generator, layers: Sequence[int] | None = None,
              history: bool = False, batch_size: int = 512) -> tuple[torch.Tensor, list[float]]:
        """Adversarial ``x_adv`` like ``x`` at ``layers`` (default ``layers_``); optional loss history
        (of the first chunk of ``batch_size``)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ProbeError("DTA needs a floating-point image tensor", fix="pass images (B, C, H, W) in [0, 1]")
        if layers is None:
            if self.layers_ is None:
                raise ConfigError("DTA: no layer chosen yet", fix="call explore(probe, ...) or pass layer=<int>")
            layers = self.layers_
        layers = [_layer_index(int(lay), int(e.num_layers)) for lay, e in zip(layers, self.encoders)]
        dev, out_dev = self._device(), x.device
        flags = self._eval()
        parts, trace = [], []
        try:
            for i in range(0, max(len(x), 1), batch_size):
                xa, h = dta_perturb(self.encoders, layers, x[i:i + batch_size].to(dev), threat=self.threat,
                                    steps=self.steps, alpha=self.alpha, generator=generator,
                                    history=history and i == 0)
                parts.append(xa.to(out_dev))
                trace = trace or h
        finally:
            self._restore(flags)
        return torch.cat(parts) if parts else x.clone(), trace

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """``x_adv`` crafted on the encoder(s) only; ``queries`` are zero; ``extras["layers"]``."""
        if self.layers_ is None:
            probe = self.probe if self.probe is not None else x[: self.probe_size]
            self.explore(probe, generator=generator)
        x_adv, _ = self.craft(x, generator=generator)
        return AttackResult(x_adv, torch.zeros(len(x), dtype=torch.long, device=x.device),
                            extras={"layers": list(self.layers_ or [])})

    def __repr__(self) -> str:
        return (f"DTA(encoders={len(self.encoders)}, eps={fmt_eps(self.eps)}, steps={self.steps}, "
                f"alpha={self.alpha:.4g}, layer={self.layer!r}, layers_={self.layers_})")
