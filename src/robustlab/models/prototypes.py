"""Prototype networks with RBF foundations: robust stable CBC, RBF network and GLVQ, with their losses.

From "A Robust Prototype-Based Network with Interpretable RBF Classifier Foundations" (Saralajew, Rana,
Villmann & Shaker, AAAI 2025; reference code ``nec-research/enlaight``). The shallow *robust stable
CBC* (classification-by-components) compares an input with ``K`` trainable components ``w_k`` through
RBF detection probabilities ``d_k(x) = exp(-||x - w_k||_2 / sigma_k)`` (trainable ``sigma_k > 0``),
and each reasoning concept ``c`` (several per class) reasons over them with positive and negative
reasoning probabilities ``R+_kc, R-_kc >= 0``, ``sum_k (R+_kc + R-_kc) = 1`` (a softmax over the
``2K`` entries; no indefinite reasoning)::

    p_c(x) = sum_k R+_kc d_k(x) + R-_kc (1 - d_k(x))        in [0, 1]
    class score = max over the class's concepts of p_c(x)

An L2 perturbation ``||e|| <= eps`` scales each ``d_k`` by a factor in ``[1/u, u]``, ``u =
exp(eps / sigma_min)``, which gives the closed-form certified radius of
:meth:`RobustCBC.certified_radius` and the robust loss ``ReLU(m_rob - rho(x))`` (the paper's
Theorem 1; :func:`robust_cbc_loss`). The comparison models of the paper are here too: an RBF network
(``scores = W d(x)``, cross-entropy, the same kind of certificate) and GLVQ (Sato & Yamada, 1996;
certificate ``(d- - d+) / 2``). All inputs are raw (pixels in [0, 1]) and flattened inside the module,
so a module is used as ``TorchModel(module)`` *without* normalization (certificates are in raw units).

Deviation from the reference, on purpose: the squared-distance and tangent-distance variants are not
implemented (the spec's shallow robust model uses the Euclidean distance).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import derive_seed, torch_generator

__all__ = ["GLVQ", "PROTOTYPE_MODELS", "RBFNetwork", "RobustCBC", "build_prototype_model", "cbc_margin_loss",
           "glvq_loss", "median_sigma", "robust_cbc_loss", "train_prototype_model"]

#: smallest positive number used to keep divisions and logs finite in the differentiable radius
_TINY = 1e-12


def _flat(x: torch.Tensor, d: int) -> torch.Tensor:
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != d:
        raise DataError(f"prototype network expects {d} input features per example, got {x.shape[1]}",
                        fix="pass inputs of the shape the model was built for (e.g. digits (B, 1, 8, 8))")
    return x


def euclidean(x: torch.Tensor, w: torch.Tensor, *, exact: bool = False) -> torch.Tensor:
    """L2 distances ``(B, K)`` between rows of ``x (B, D)`` and ``w (K, D)`` (difference-based, no cdist).

    ``exact=False`` clamps the squared distance at 1e-12 so the gradient stays finite at ``x = w``;
    ``exact=True`` (certificates) does not.
    """
    sq = (x.unsqueeze(1) - w.unsqueeze(0)).pow(2).sum(-1)
    return sq.clamp_min(0.0).sqrt() if exact else sq.clamp_min(_TINY).sqrt()


def _sigma_param(sigma: float | Sequence[float] | torch.Tensor, k: int) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float32).flatten()
    if s.numel() == 1:
        s = s.expand(k).clone()
    if s.numel() != k or not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
        raise ConfigError(f"sigma must be one positive number or {k} positive numbers, got {sigma!r}",
                          fix="use median_sigma(x, components) or a value such as 1.0 (raw L2 units)")
    return s


class _RBFBase(nn.Module):
    """Components (K, D) and per-component RBF temperatures sigma (``|s| + 1e-7``, trainable as enlaight)."""

    def __init__(self, in_shape: Sequence[int] | int, num_components: int, sigma: Any, trainable_sigma: bool,
                 components: torch.Tensor | None, generator: torch.Generator | None):
        super().__init__()
        self.in_shape = (int(in_shape),) if isinstance(in_shape, int) else tuple(int(s) for s in in_shape)
        self.in_features = int(math.prod(self.in_shape))
        if int(num_components) < 1:
            raise ConfigError(f"num_components must be >= 1, got {num_components}", fix="use e.g. 20 (the paper)")
        k = int(num_components)
        if components is None:
            g = generator if generator is not None else torch_generator(0)
            components = torch.rand(k, self.in_features, generator=g)
        components = torch.as_tensor(components, dtype=torch.float32).reshape(k, -1).clone()
        if components.shape[1] != self.in_features:
            raise ConfigError(f"components have {components.shape[1]} features, inputs {self.in_features}",
                              fix="initialize the components with inputs of the model's shape")
        self.components = nn.Parameter(components)
        s = _sigma_param(sigma, k)
        if trainable_sigma:
            self._sigma = nn.Parameter(s)
        else:
            self.register_buffer("_sigma", s)
        self.trainable_sigma = bool(trainable_sigma)

    @property
    def num_components(self) -> int:
        return int(self.components.shape[0])

    @property
    def sigma(self) -> torch.Tensor:
        """(K,) positive temperatures (``|s| + 1e-7`` as the reference code)."""
        return self._sigma.abs() + 1e-7

    def distances(self, x: torch.Tensor, *, exact: bool = False) -> torch.Tensor:
        """(B, K) L2 distances of the raw inputs to the components."""
        return euclidean(_flat(x, self.in_features).to(self.components.dtype), self.components, exact=exact)

    def detections(self, x: torch.Tensor, *, exact: bool = False) -> torch.Tensor:
        """(B, K) detection probabilities ``exp(-||x - w_k|| / sigma_k)`` in (0, 1]."""
        return torch.exp(-self.distances(x, exact=exact) / self.sigma)


def _u_star(p: torch.Tensor, n: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The positive root ``u*`` of ``P/u - N u + B = 0`` (numerically stable form; inf where N = 0 <= B)."""
    disc = (b * b + 4.0 * p * n).clamp_min(0.0).sqrt()
    pos = (b + disc) / (2.0 * n).clamp_min(_TINY)
    neg = 2.0 * p / (disc - b).clamp_min(_TINY)
    u = torch.where(b >= 0, pos, neg)
    return torch.where((n <= 0) & (b >= 0), torch.full_like(u, math.inf), u)


class RobustCBC(_RBFBase):
    """Robust stable CBC (Saralajew et al., AAAI 2025): RBF detections, positive / negative reasoning.

    Args:
        in_shape: the raw input shape, e.g. ``(1, 8, 8)`` (flattened inside).
        num_classes: number of classes ``C``.
        num_components: ``K`` (paper: 20).
        concepts_per_class: reasoning concepts per class (paper: 2); concept ``m`` belongs to class
            ``m // concepts_per_class``.
        sigma: initial temperature(s) in raw L2 units (one, or one per component).
        trainable_sigma: learn sigma (paper: yes, one per component).
        components: initial components (K, D), default uniform in [0, 1].
        generator: draws the default components and the initial reasoning probabilities.

    ``forward(x) -> (B, C)`` class probabilities (max over each class's concepts), all in [0, 1].
    """

    def __init__(self, in_shape: Sequence[int] | int, num_classes: int, num_components: int = 20,
                 concepts_per_class: int = 2, sigma: Any = 1.0, trainable_sigma: bool = True,
                 components: torch.Tensor | None = None, generator: torch.Generator | None = None):
        super().__init__(in_shape, num_components, sigma, trainable_sigma, components, generator)
        if int(num_classes) < 2 or int(concepts_per_class) < 1:
            raise ConfigError(f"RobustCBC needs num_classes >= 2 and concepts_per_class >= 1, got "
                              f"{num_classes}, {concepts_per_class}",
                              fix="use e.g. num_classes=10, concepts_per_class=2")
        self.num_classes, self.concepts_per_class = int(num_classes), int(concepts_per_class)
        m = self.num_classes * self.concepts_per_class
        g = generator if generator is not None else torch_generator(1)
        # enlaight stores log(initial reasoning probabilities) and decodes with a softmax over the 2K rows
        init = torch.rand(2 * self.num_components, m, generator=g) + 1e-3
        self.reasoning_logits = nn.Parameter(torch.log(init / init.sum(0, keepdim=True)))
        self.register_buffer("concept_class", torch.arange(m) // self.concepts_per_class)

    def reasoning(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(R+, R-)``, each (K, M): positive / negative reasoning probabilities, summing to 1 per concept."""
        r = torch.softmax(self.reasoning_logits, dim=0)
        return r[: self.num_components], r[self.num_components:]

    def concept_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M) concept probabilities ``p_c(x) = d R+_c + (1 - d) R-_c``."""
        return self._concepts(self.detections(x))

    def _concepts(self, d: torch.Tensor) -> torch.Tensor:
        rp, rn = self.reasoning()
        return d @ rp + (1.0 - d) @ rn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.concept_probabilities(x)
        return p.view(p.shape[0], self.num_classes, self.concepts_per_class).amax(dim=2)

    def certified_radius(self, x: torch.Tensor, y: torch.Tensor, *, exact: bool = False) -> torch.Tensor:
        """(B,) certified L2 radius ``rho(x)`` for label ``y`` (Theorem 1; differentiable unless ``exact``).

        For a correct concept ``i`` and a wrong concept ``j``, with ``P_ij = d R+_i + d R-_j``,
        ``N_ij = d R-_i + d R+_j`` and ``B_ij = sum R-_i - sum R-_j``, the margin ``p_i - p_j`` at any
        ``||e||_2 <= eps`` is ``>= P_ij / u - N_ij u + B_ij`` with ``u = exp(eps / sigma_min)``; its root is
        ``u*_ij = (B + sqrt(B^2 + 4 P N)) / (2 N)``. The radius is ``sigma_min * ln(min_j max_i u*_ij)``
        (the reference code's order: each wrong concept is beaten by some correct one, so the class
        maximum beats every wrong concept; it is >= the spec's ``max_i min_j`` and equally sound).
        ``rho <= 0`` where ``x`` is misclassified. ``exact=True``: float64, exact distances, ``inf``
        where no perturbation can flip the decision.
        """
        if exact:
            with torch.no_grad():
                d = torch.exp(-self.distances(x.double(), exact=True).double() / self.sigma.double())
                rp, rn = (r.double() for r in self.reasoning())
                sig = self.sigma.double().min()
        else:
            d, (rp, rn), sig = self.detections(x), self.reasoning(), self.sigma.min()
        return self._radius(d, rp, rn, sig, y.to(d.device), exact=exact)

    def _radius(self, d: torch.Tensor, rp: torch.Tensor, rn: torch.Tensor, sig: torch.Tensor, y: torch.Tensor,
                *, exact: bool) -> torch.Tensor:
        dp, dn = d @ rp, d @ rn  # (B, M)
        sn = rn.sum(0)  # (M,)
        p = dp.unsqueeze(2) + dn.unsqueeze(1)  # [b, i, j] = d R+_i + d R-_j
        n = dn.unsqueeze(2) + dp.unsqueeze(1)  # [b, i, j] = d R-_i + d R+_j
        b = (sn.unsqueeze(1) - sn.unsqueeze(0)).unsqueeze(0).expand_as(p)
        u = _u_star(p, n, b)
        correct = self.concept_class.unsqueeze(0) == y.view(-1, 1)  # (B, M)
        u = u.masked_fill(~correct.unsqueeze(2), -math.inf).amax(dim=1)  # max over correct i -> (B, M_j)
        u = u.masked_fill(correct, math.inf).amin(dim=1)  # min over wrong j -> (B,)
        if exact:
            return torch.where(u > 0, sig * torch.log(u), torch.full_like(u, -math.inf))
        return sig * torch.log(u.clamp_min(_TINY))


class RBFNetwork(_RBFBase):
    """RBF network ``scores = d(x) W^T`` (no bias; the paper's comparison model, enlaight ``RBF``).

    Same detections as :class:`RobustCBC`; trained with cross-entropy. Its certificate (the paper's
    extension of Theorem 1 to RBF networks): for the true class ``y`` and another class ``j`` with
    ``a = W_y - W_j``, the margin at ``||e||_2 <= eps`` is ``>= P / u - N u`` with ``P = d a+``,
    ``N = d a-``, so ``rho = sigma_min * min_j ln sqrt(P_j / N_j)``.
    """

    def __init__(self, in_shape: Sequence[int] | int, num_classes: int, num_components: int = 20,
                 sigma: Any = 1.0, trainable_sigma: bool = True, components: torch.Tensor | None = None,
                 generator: torch.Generator | None = None):
        super().__init__(in_shape, num_components, sigma, trainable_sigma, components, generator)
        if int(num_classes) < 2:
            raise ConfigError(f"RBFNetwork needs num_classes >= 2, got {num_classes}", fix="use num_classes=10")
        self.num_classes = int(num_classes)
        g = generator if generator is not None else torch_generator(1)
        bound = math.sqrt(6.0 / (self.num_classes + self.num_components))  # xavier_uniform, as enlaight
        self.weights = nn.Parameter((torch.rand(self.num_classes, self.num_components, generator=g) * 2 - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detections(x) @ self.weights.T

    def certified_radius(self, x: torch.Tensor, y: torch.Tensor, *, exact: bool = False) -> torch.Tensor:
        """(B,) certified L2 radius for label ``y`` (see the class docstring); ``<= 0`` where misclassified."""
        with torch.no_grad() if exact else contextlib.nullcontext():
            if exact:
                d = torch.exp(-self.distances(x.double(), exact=True).double() / self.sigma.double())
                w, sig = self.weights.double(), self.sigma.double().min()
            else:
                d, w, sig = self.detections(x), self.weights, self.sigma.min()
            y = y.to(d.device)
            a = w[y].unsqueeze(1) - w.unsqueeze(0)  # (B, C, K)
            p = (d.unsqueeze(1) * a.clamp_min(0)).sum(-1)
            n = (d.unsqueeze(1) * (-a).clamp_min(0)).sum(-1)
            u = _u_star(p, n, torch.zeros_like(p))
            u = u.masked_fill(F.one_hot(y, self.num_classes).bool(), math.inf).amin(dim=1)
            if exact:
                return torch.where(u > 0, sig * torch.log(u), torch.full_like(u, -math.inf))
            return sig * torch.log(u.clamp_min(_TINY))


class GLVQ(nn.Module):
    """Generalized LVQ (Sato & Yamada, 1996): labelled prototypes, scores = -(distance to the class's nearest).

    Certificate (Saralajew et al., 2019 / 2025): the hypothesis margin ``(d- - d+) / 2`` in L2.
    """

    def __init__(self, in_shape: Sequence[int] | int, num_classes: int, prototypes_per_class: int = 2,
                 prototypes: torch.Tensor | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.in_shape = (int(in_shape),) if isinstance(in_shape, int) else tuple(int(s) for s in in_shape)
        self.in_features = int(math.prod(self.in_shape))
        self.num_classes, self.prototypes_per_class = int(num_classes), int(prototypes_per_class)
        k = self.num_classes * self.prototypes_per_class
        if prototypes is None:
            prototypes = torch.rand(k, self.in_features, generator=generator or torch_generator(0))
        self.prototypes = nn.Parameter(torch.as_tensor(prototypes, dtype=torch.float32).reshape(k, -1).clone())
        self.register_buffer("prototype_class", torch.arange(k) // self.prototypes_per_class)

    def distances(self, x: torch.Tensor, *, exact: bool = False) -> torch.Tensor:
        """(B, P) L2 distances to the prototypes."""
        return euclidean(_flat(x, self.in_features).to(self.prototypes.dtype), self.prototypes, exact=exact)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = self.distances(x)
        return -dist.view(dist.shape[0], self.num_classes, self.prototypes_per_class).amin(dim=2)

    def _dplus_dminus(self, dist: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        correct = self.prototype_class.unsqueeze(0) == y.view(-1, 1)
        return dist.masked_fill(~correct, math.inf).amin(1), dist.masked_fill(correct, math.inf).amin(1)

    def certified_radius(self, x: torch.Tensor, y: torch.Tensor, *, exact: bool = False) -> torch.Tensor:
        """(B,) certified L2 radius ``(d- - d+) / 2``; ``<= 0`` where misclassified."""
        if exact:
            with torch.no_grad():
                dist = euclidean(_flat(x, self.in_features).double(), self.prototypes.double(), exact=True)
        else:
            dist = self.distances(x)
        dp, dm = self._dplus_dminus(dist, y.to(dist.device))
        return (dm - dp) / 2


PROTOTYPE_MODELS = (RobustCBC, RBFNetwork, GLVQ)
"""The module classes :class:`robustlab.certify.prototypes.PrototypeMargin` certifies."""


# ----------------------------------------------------------------------------------------------- losses


def robust_cbc_loss(model: RobustCBC, x: torch.Tensor, y: torch.Tensor, margin: float = 1.58) -> torch.Tensor:
    """(B,) robust loss ``ReLU(m_rob - rho(x))`` (Saralajew et al., AAAI 2025; paper's MNIST m_rob = 1.58)."""
    return torch.relu(margin - model.certified_radius(x, y))


def cbc_margin_loss(scores: torch.Tensor, y: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """(B,) margin loss ``ReLU(p_best_wrong - p_best_correct + m)`` on class scores (CBC, m = 0.3)."""
    true = scores.gather(1, y.view(-1, 1)).squeeze(1)
    wrong = scores.masked_fill(F.one_hot(y, scores.shape[1]).bool(), -math.inf).amax(1)
    return torch.relu(wrong - true + margin)


def glvq_loss(model: GLVQ, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) GLVQ loss ``(d+ - d-) / (d+ + d-)`` (Sato & Yamada, 1996; identity activation as enlaight)."""
    dp, dm = model._dplus_dminus(model.distances(x), y)
    return (dp - dm) / (dp + dm + 1e-8)


# --------------------------------------------------------------------------------------------- training


def median_sigma(x: torch.Tensor, components: torch.Tensor) -> float:
    """Spec's digits init: median input-component L2 distance / ln 2 (a median input has ``d = 1/2``)."""
    return float(euclidean(x.reshape(x.shape[0], -1).float(), components.float()).median()) / math.log(2.0)


def _class_samples(x: torch.Tensor, y: torch.Tensor, num_classes: int, per_class: int, k: int,
                   g: torch.Generator) -> torch.Tensor:
    """``k`` training inputs: ``per_class`` random ones of each class (class-major), then random ones."""
    rows: list[torch.Tensor] = []
    for c in range(num_classes):  # tiny loop over classes at init, not a hot path
        idx = (y == c).nonzero().squeeze(1)
        if len(idx) == 0:
            raise DataError(f"class {c} has no training example", fix="train on data containing every class")
        rows.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    chosen = torch.stack(rows, 0).flatten() if per_class else torch.empty(0, dtype=torch.long)
    if len(chosen) < k:
        chosen = torch.cat([chosen, torch.randperm(len(x), generator=g)[: k - len(chosen)]])
    return x.reshape(len(x), -1)[chosen[:k]].float().clone()


def build_prototype_model(kind: str, in_shape: Sequence[int], num_classes: int, *, num_components: int = 20,
                          concepts_per_class: int = 2, prototypes_per_class: int = 2, sigma: Any = 1.0,
                          trainable_sigma: bool = True) -> nn.Module:
    """An untrained module of ``kind`` (``"cbc"``, ``"rbf"`` or ``"glvq"``), e.g. to load a state_dict into."""
    if kind == "cbc":
        return RobustCBC(in_shape, num_classes, num_components, concepts_per_class, sigma, trainable_sigma)
    if kind == "rbf":
        return RBFNetwork(in_shape, num_classes, num_components, sigma, trainable_sigma)
    if kind == "glvq":
        return GLVQ(in_shape, num_classes, prototypes_per_class)
    raise ConfigError(f"unknown prototype model {kind!r}", fix="use 'cbc', 'rbf' or 'glvq'")


_LOSSES = {"cbc": ("robust", "margin"), "rbf": ("ce",), "glvq": ("glvq",)}


def train_prototype_model(x: torch.Tensor, y: torch.Tensor, *, model: str = "cbc", loss: str | None = None,
                          num_classes: int | None = None, num_components: int = 20, concepts_per_class: int = 2,
                          prototypes_per_class: int = 2, epochs: int = 40, batch_size: int = 128,
                          lr: float | None = 1e-2, robust_margin: float = 1.58, margin: float = 0.3,
                          sigma: float | None = None, trainable_sigma: bool = True, seed: int = 0,
                          **unused: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Train a prototype network on raw inputs ``x`` (B, ...) in [0, 1] and labels ``y``; seeded, batched Adam.

    Saralajew et al., AAAI 2025 (enlaight defaults: Adam, batch 128, 40 epochs, 20 components,
    2 concepts per class, per-component trainable sigma). Components / prototypes start at random
    training inputs (``per class`` first); sigma defaults to :func:`median_sigma` (the spec's digits init).

    Args:
        x, y: training inputs and labels.
        model: ``"cbc"`` (robust stable CBC), ``"rbf"`` (RBF network) or ``"glvq"``.
        loss: cbc: ``"robust"`` (default, ``ReLU(robust_margin - rho)``) or ``"margin"``
            (``ReLU(p_wrong - p_right + margin)``); rbf: ``"ce"``; glvq: ``"glvq"``.
        lr: Adam learning rate (1e-2, enlaight's CBC default; enlaight's RBF uses 1e-3 on MNIST, which
            on digits' 9 steps per epoch leaves the RBF network far from converged in 40 epochs).
        robust_margin, margin: the two losses' margins (paper: 1.58 and 0.3).
        sigma: initial sigma; ``None`` -> the median rule.
        seed: seeds init, shuffling and everything else (no global RNG).
        **unused: other zoo configuration keys, ignored.
    Returns:
        ``(module, history)``: the trained module (eval mode) and per-epoch ``loss`` / ``acc``.
    """
    if model not in _LOSSES:
        raise ConfigError(f"unknown prototype model {model!r}", fix="use 'cbc', 'rbf' or 'glvq'")
    loss = loss or _LOSSES[model][0]
    if loss not in _LOSSES[model]:
        raise ConfigError(f"loss {loss!r} does not fit model {model!r}", fix=f"use one of {_LOSSES[model]}")
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or len(x) != len(y) or len(x) == 0:
        raise DataError("train_prototype_model needs a float tensor x (N, ...) and labels y (N,) of equal length",
                        fix="pass dataset.x and dataset.y")
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ConfigError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    y = y.long()
    c = int(num_classes or int(y.max()) + 1)
    g = torch_generator(derive_seed(seed, "prototypes", model, "init"))
    in_shape = tuple(x.shape[1:])
    if model == "glvq":
        k = c * prototypes_per_class
        net: nn.Module = GLVQ(in_shape, c, prototypes_per_class, _class_samples(x, y, c, prototypes_per_class, k, g))
    else:
        comps = _class_samples(x, y, c, num_components // c, num_components, g)
        s = sigma if sigma is not None else median_sigma(x, comps)
        if model == "cbc":
            net = RobustCBC(in_shape, c, num_components, concepts_per_class, s, trainable_sigma, comps, g)
        else:
            net = RBFNetwork(in_shape, c, num_components, s, trainable_sigma, comps, g)
    lr = 1e-2 if lr is None else float(lr)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    shuffle = torch_generator(derive_seed(seed, "prototypes", model, "shuffle"))
    history: dict[str, Any] = {"loss": [], "acc": [], "epochs": int(epochs), "model": model, "loss_name": loss}
    net.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(x), generator=shuffle)
        tot, right = 0.0, 0
        for i in range(0, len(x), int(batch_size)):
            xb, yb = x[order[i:i + batch_size]], y[order[i:i + batch_size]]
            scores = net(xb)
            if loss == "robust":
                per = robust_cbc_loss(net, xb, yb, robust_margin)
            elif loss == "margin":
                per = cbc_margin_loss(scores, yb, margin)
            elif loss == "glvq":
                per = glvq_loss(net, xb, yb)
            else:
                per = F.cross_entropy(scores, yb, reduction="none")
            opt.zero_grad(set_to_none=True)
            per.mean().backward()
            opt.step()
            tot += float(per.detach().sum())
            right += int((scores.detach().argmax(1) == yb).sum())
        history["loss"].append(tot / len(x))
        history["acc"].append(right / len(x))
    net.eval()
    return net, history
