"""The probe protocols: ``Transform``, ``Attack``, ``Certifier``, ``Detector`` and ``Defense``.

A probe answers one robustness question for a batch and returns per-example numbers
(:class:`ProbeOutput`); the runner turns them into :class:`~robustlab.core.outcomes.Outcomes`. Every
probe is swept over one *setting* (a severity for transforms, an eps for attacks) named by
``setting_name``, and takes a seeded ``torch.Generator`` (no global randomness).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from robustlab.core.model import Model, checked_scores
from robustlab.core.threat import LpBall, ThreatModel

__all__ = ["Probe", "ProbeOutput", "Transform", "Attack", "AttackResult", "Certifier", "Detector", "Defense"]


@dataclass
class ProbeOutput:
    """What a probe measured on a batch: scores on the probed inputs and per-example extras.

    ``scores`` has one row per example of the batch. ``attempted`` marks the examples the probe
    really worked on (an attack skips examples already misclassified). ``x_probed`` keeps the probed
    inputs so the report can show examples.
    """

    scores: torch.Tensor
    attempted: torch.Tensor
    queries: torch.Tensor
    x_probed: Any = None
    distance: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    #: per-example status override (certifiers: "certified" / "abstained" / "broken" ...)
    status: list[str] | None = None
    #: per-example score override (certifiers: the certified margin lower bound); default: the margin
    score: torch.Tensor | None = None


class Probe(ABC):
    """Base of every probe. Subclasses set ``kind``, ``setting_name`` and ``default_settings``."""

    kind: ClassVar[str] = "probe"
    setting_name: ClassVar[str] = "setting"
    default_settings: ClassVar[tuple[float, ...]] = ()
    modality: ClassVar[str | None] = None  # None: any modality
    needs_gradients: ClassVar[bool] = False

    def check_model(self, model: Model) -> None:
        """Raise one clear error if ``model`` lacks what this probe needs."""
        model.require(gradients=self.needs_gradients, modality=self.modality, probe=type(self).__name__)

    @abstractmethod
    def evaluate(self, model: Model, x: Any, y: torch.Tensor, setting: float, *,
                 clean_pred: torch.Tensor, generator: torch.Generator) -> ProbeOutput:
        """Probe ``model`` on the batch ``(x, y)`` at ``setting``."""

    def __repr__(self) -> str:
        import dataclasses

        if dataclasses.is_dataclass(self):
            args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
            return f"{type(self).__name__}({args})"
        return f"{type(self).__name__}()"


class Transform(Probe):
    """A model-free, seeded input change with a severity: ``transform(x, severity=, generator=)``."""

    kind = "transform"
    setting_name = "severity"
    default_settings = (1, 2, 3, 4, 5)
    #: which family the report and the summary metrics put it in: "corruption", "attribute" or "style"
    group = "corruption"
    #: True: ``__call__`` also takes ``attrs=`` (the batch's dataset attributes); the runner then passes
    #: ``shard.attrs`` to ``evaluate``, which hands them on
    needs_attrs: ClassVar[bool] = False

    @abstractmethod
    def __call__(self, x: Any, *, severity: float, generator: torch.Generator) -> Any:
        """The changed inputs (same type and shape as ``x``)."""

    def evaluate(self, model: Model, x: Any, y: torch.Tensor, setting: float, *,
                 clean_pred: torch.Tensor, generator: torch.Generator,
                 attrs: dict[str, Any] | None = None) -> ProbeOutput:
        extra = {"attrs": attrs} if self.needs_attrs else {}
        xp = self(x, severity=setting, generator=generator, **extra)
        scores = checked_scores(model, xp)
        n = len(y)
        return ProbeOutput(scores=scores, attempted=torch.ones(n, dtype=torch.bool),
                           queries=torch.ones(n, dtype=torch.long), x_probed=xp)


@dataclass
class AttackResult:
    """Adversarial inputs and the model calls spent per example."""

    x_adv: torch.Tensor
    queries: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


class Attack(Probe):
    """Attack = Goal + ThreatModel + Search. ``attack(model, x, y, generator=) -> AttackResult``.

    Subclasses hold a ``threat`` (:class:`ThreatModel`) and implement ``__call__``; ``at(eps)``
    returns the same attack at another radius, which is how suites sweep eps. ``evaluate`` attacks
    only the examples the model gets right (the others are already "broken") and verifies that every
    returned input lies inside the threat model — an attack that leaves it is a bug, never a result.
    """

    kind = "attack"
    setting_name = "eps"
    needs_gradients = True
    threat: ThreatModel

    @abstractmethod
    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """Adversarial examples for ``(x, y)`` inside ``self.threat``."""

    @property
    def norm(self) -> str:
        """The threat model's norm (``"inf"``, ``"2"`` or ``"1"``)."""
        return self.threat.norm

    @property
    def eps(self) -> float:
        """The threat model's radius in raw input units."""
        return self.threat.eps

    def at(self, eps: float) -> Attack:
        """This attack with threat radius ``eps``."""
        import copy

        if not isinstance(self.threat, LpBall):
            raise NotImplementedError(f"{type(self).__name__} has no eps to sweep")
        new = copy.copy(self)
        new.threat = self.threat.with_eps(eps)
        return new

    def evaluate(self, model: Model, x: torch.Tensor, y: torch.Tensor, setting: float, *,
                 clean_pred: torch.Tensor, generator: torch.Generator) -> ProbeOutput:
        from robustlab.core.errors import ProbeError
        from robustlab.core.threat import lp_norm

        attack = self.at(setting)
        todo = clean_pred.cpu() == y.cpu()
        x_adv, extras = x.clone(), {}
        queries = torch.zeros(len(y), dtype=torch.long)
        if bool(todo.any()):
            dev = model.device
            res = attack(model, x[todo].to(dev), y[todo].to(dev), generator=generator)
            xa = res.x_adv.detach().to(x.device)
            inside = attack.threat.contains(x[todo], xa)
            if not bool(inside.all()):
                raise ProbeError(f"{type(self).__name__} returned {int((~inside).sum())} inputs outside "
                                 f"{attack.threat}", fix="this is a robustlab bug: please report it")
            x_adv[todo] = xa
            queries[todo] = res.queries.cpu().long()
            extras = {"attack": res.extras, "attempted_index": todo.nonzero().squeeze(1)}
        scores = checked_scores(model, x_adv)
        norm = attack.threat.norm if isinstance(attack.threat, LpBall) else "inf"
        return ProbeOutput(scores=scores, attempted=todo, queries=queries, x_probed=x_adv,
                           distance=lp_norm((x_adv - x).float(), norm), extras=extras)


class Certifier(Probe):
    """``certify(model, x, y, threat)``: what can be *proved* (certified, radius, abstain)."""

    kind = "certifier"
    setting_name = "eps"


class Detector(Probe):
    """Tells whether an input (or a model) is bad: scores per example, higher = more suspicious."""

    kind = "detector"


class Defense(ABC):
    """Takes a model (and maybe data) and returns a model, measured by the same probes.

    ``wrap(model) -> Model`` for inference-time defenses, ``train(model, data, threat) -> Model``
    for training-time ones.
    """

    def wrap(self, model: Model) -> Model:  # pragma: no cover - protocol
        raise NotImplementedError

    def train(self, model: Model, data: Any, threat: ThreatModel) -> Model:  # pragma: no cover - protocol
        raise NotImplementedError


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and its wall time in seconds."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
