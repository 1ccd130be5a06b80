"""Ensemble: attacks run one after another, each only on the examples still standing.

The loop of AutoAttack ("Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", Croce & Hein, ICML 2020; fra31/auto-attack ``autoattack.py`` and
``state.py``): a per-example robust flag starts at "clean-correct"; each attack sees only the
examples still flagged robust; an example its output misclassifies is flagged broken and keeps that
first adversarial point for good. The state (flags, points, who broke what, per-attack cost, the
attacks already run) can be saved after every attack and a run resumed from it.

Example::

    ens = Ensemble([APGDCE(eps=8/255), Square(eps=8/255, n_queries=1000)])
    res = ens(model, x, y, generator=torch_generator(0))
    res.extras["broken_by"], ens.cost_report()
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustlab.core.errors import ConfigError, ProbeError, RunError
from robustlab.core.model import Model, checked_scores
from robustlab.core.outcomes import atomic_write_bytes
from robustlab.core.probe import Attack, AttackResult
from robustlab.core.registry import register
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.core.threat import LpBall

__all__ = ["AttackStats", "Ensemble", "EnsembleState", "Member", "nominal_iterations"]

#: ``broken_by`` codes besides a member's index
ROBUST, CLEAN, RESUMED = -1, -2, -3
_CODE_NAMES = {ROBUST: "", CLEAN: "clean", RESUMED: "resumed"}
_FORMAT = 1


@dataclass(frozen=True)
class Member:
    """One attack of an :class:`Ensemble`.

    Args:
        name: unique name in the ensemble (e.g. ``"apgd-ce"``), used in reports and saved states.
        attack: the attack (its threat must be the ensemble's).
        min_classes: the fewest classes it can run on; on a model with fewer it is skipped, and the
            skip is recorded (e.g. APGD-T's targeted DLR loss needs 4).
        iterations: nominal per-example work at full budget (model queries); ``None`` ->
            :func:`nominal_iterations`.
    """

    name: str
    attack: Attack
    min_classes: int = 2
    iterations: int | None = None


@dataclass
class AttackStats:
    """What one member cost: examples it was run on, how many it broke, model queries (its own and
    the one check per example), wall seconds, nominal iterations per example, and why it was skipped."""

    attacked: int = 0
    broken: int = 0
    queries: int = 0
    seconds: float = 0.0
    iterations: int | None = None
    skipped: str = ""


def nominal_iterations(attack: Attack, n_classes: int | None) -> int | None:
    """Per-example model queries ``attack`` would spend at full budget (its "floor" unit), or None.

    APGD: ``n_iter * n_restarts`` (times the targets, ``min(n_target_classes, C - 1)``, for
    APGD-T); FAB: ``n_iter * n_restarts`` (times the targets for FAB-T); Square:
    ``n_queries * restarts``; PGD: ``steps * restarts``; times ``eot_samples`` under EOT. An attack
    may define ``nominal_iterations(n_classes)`` itself.
    """
    own = getattr(attack, "nominal_iterations", None)
    if callable(own):
        return int(own(n_classes))
    from robustlab.attacks.search.apgd import APGDSearch
    from robustlab.attacks.search.fab import FABSearch
    from robustlab.attacks.search.gradient import GradientSearch
    from robustlab.attacks.search.square import SquareSearch

    def targets(k: int) -> int:
        return k if n_classes is None else max(0, min(k, n_classes - 1))

    s = getattr(attack, "search", None)
    if isinstance(s, APGDSearch):
        n = s.n_iter * s.n_restarts
        if getattr(attack, "loss", None) == "dlr-targeted":
            n *= targets(attack.n_target_classes)
    elif isinstance(s, FABSearch):
        n = s.n_iter * s.n_restarts * (targets(s.n_target_classes) if s.targeted else 1)
    elif isinstance(s, SquareSearch):
        n = s.n_queries * s.restarts
    elif isinstance(s, GradientSearch):
        n = s.steps * s.restarts
    else:
        return None
    return n * int(getattr(attack, "eot_samples", 1))


@dataclass
class EnsembleState:
    """Where an ensemble run stands; tensors have one row per example (N,).

    ``robust`` flags, ``x_adv`` (like ``x``: the first adversarial point, else ``x``),
    ``broken_by`` codes (a member's index, or ``ROBUST`` / ``CLEAN`` / ``RESUMED``), ``queries``
    spent per example, per-member :class:`AttackStats`, the members ``completed``, the ``seed`` the
    members' generators derive from, and ``robust_after``: robust accuracy after each step.
    """

    names: list[str]
    robust: torch.Tensor
    x_adv: torch.Tensor
    broken_by: torch.Tensor
    queries: torch.Tensor
    stats: dict[str, AttackStats]
    completed: list[str]
    seed: int
    n_classes: int
    x_shape: list[int]
    x_sum: float
    robust_after: dict[str, float] = field(default_factory=dict)

    def broken_by_names(self) -> list[str]:
        """Per example: the member that broke it, ``"clean"``, ``"resumed"`` or ``""`` (robust)."""
        return [self.names[c] if c >= 0 else _CODE_NAMES[c] for c in self.broken_by.tolist()]

    def cost_report(self) -> dict[str, Any]:
        """Per member: examples attacked, broken, nominal iterations, floor work = iterations ×
        examples attacked, queries and seconds; plus the totals and ``queries_per_floor``."""
        per, floor, known = {}, 0, True
        for name in self.names:
            s = self.stats[name]
            work = None if s.iterations is None else s.iterations * s.attacked
            known &= work is not None or s.attacked == 0
            floor += work or 0
            per[name] = {**dataclasses.asdict(s), "floor_work": work}
        queries = int(self.queries.sum())
        return {"attacks": per, "floor_work": floor if known else None, "queries": queries,
                "seconds": sum(s.seconds for s in self.stats.values()),
                "queries_per_floor": queries / floor if known and floor else None}

    def to_bytes(self) -> bytes:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["stats"] = {k: dataclasses.asdict(v) for k, v in self.stats.items()}
        for k in ("robust", "x_adv", "broken_by", "queries"):
            d[k] = d[k].detach().cpu()
        buf = io.BytesIO()
        torch.save({"format": _FORMAT, **d}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EnsembleState:
        d = torch.load(io.BytesIO(data), weights_only=True)
        if not isinstance(d, dict) or d.pop("format", None) != _FORMAT:
            raise RunError("not an ensemble state file (or one of another format)",
                           fix="pass a file written by Ensemble.save_state")
        d["stats"] = {k: AttackStats(**v) for k, v in d["stats"].items()}
        return cls(**d)

    def to(self, device: torch.device) -> EnsembleState:
        """A copy with its tensors cloned onto ``device``."""
        new = copy.deepcopy(self)
        for k in ("robust", "x_adv", "broken_by", "queries"):
            setattr(new, k, getattr(self, k).detach().clone().to(device))
        return new


def _member(spec: Attack | Member | Mapping[str, Any]) -> Member:
    if isinstance(spec, Member):
        return spec
    if isinstance(spec, Attack):
        return Member(type(spec).__name__.lower(), spec)
    if isinstance(spec, Mapping) and "name" in spec:
        from robustlab.core import registry

        params = {k: v for k, v in spec.items() if k not in ("name", "id", "min_classes")}
        attack = registry.create(spec["name"], kind="attack", **params)
        return Member(str(spec.get("id") or spec["name"]), attack, int(spec.get("min_classes", 2)))
    raise ConfigError(f"Ensemble: cannot use {spec!r} as an attack",
                      fix="pass Attack objects, Member(name, attack) or dicts like {'name': 'apgd_ce', ...}")


@register("attack", "ensemble")
class Ensemble(Attack):
    """Run ``attacks`` in order, each only on the examples no earlier one broke (AutoAttack's loop).

    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks" (ICML 2020). Examples the model misclassifies at the start are not
    attacked. After each attack, one forward pass on its output (counted as a query) decides which
    examples it broke; those are frozen at that first adversarial point and never attacked again.
    Examples never broken are returned unchanged. Every output is checked to lie in the threat.

    Args:
        attacks: Attack objects, :class:`Member` s, or registry specs ``{"name": "apgd_ce",
            "id": ..., "min_classes": ..., **params}``; all with the same threat (norm and eps).
        seed: base seed of the members' generators; ``None`` draws it from the call's generator.
            Member ``i`` gets ``torch_generator(derive_seed(seed, "ensemble", i, name))``.

    Shapes: ``x`` (B, ...) raw inputs, ``y`` (B,) -> ``x_adv`` like ``x``, ``queries`` (B,).
    ``extras``: ``robust`` (B,) bool, ``broken_by`` list of B names (``""`` = robust),
    ``per_attack`` {name: {attacked, broken, queries, seconds, iterations, skipped}},
    ``robust_accuracy`` after each attack, ``cost`` (:meth:`EnsembleState.cost_report`),
    ``skipped`` {name: reason}, ``seed``.
    """

    def __init__(self, attacks: Sequence[Attack | Member | Mapping[str, Any]], *, seed: int | None = None):
        if isinstance(attacks, (str, Mapping, Attack)) or not attacks:
            raise ConfigError("Ensemble needs a non-empty list of attacks",
                              fix="pass e.g. [APGDCE(), Square()]")
        members = [_member(a) for a in attacks]
        names = [m.name for m in members]
        for i, m in enumerate(members):  # unique names: apgd, apgd-2, ...
            if names.count(m.name) > 1 and names.index(m.name) < i:
                members[i] = dataclasses.replace(m, name=f"{m.name}-{i + 1}")
                names[i] = members[i].name
        self._check_threats(members)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"Ensemble: seed must be an integer or None, got {seed!r}",
                              fix="pass e.g. seed=0")
        self.members: tuple[Member, ...] = tuple(members)
        self.threat = members[0].attack.threat
        self.needs_gradients = any(m.attack.needs_gradients for m in members)
        self.default_settings = members[0].attack.default_settings
        self.seed = seed
        self.state: EnsembleState | None = None

    @staticmethod
    def _check_threats(members: Sequence[Member]) -> None:
        def key(t: object) -> tuple | None:
            return (t.norm, t.eps, t.low, t.high) if isinstance(t, LpBall) else None

        t0 = members[0].attack.threat
        for m in members:
            t = m.attack.threat
            if key(t) is None or key(t) != key(t0):
                raise ConfigError(f"Ensemble: attack {m.name!r} has threat {t}, the first one {t0}",
                                  fix="give every attack the same norm and eps (the ensemble sweeps eps)")

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def at(self, eps: float) -> Ensemble:
        """This ensemble with every member at radius ``eps`` (and no state)."""
        new = copy.copy(self)
        new.members = tuple(dataclasses.replace(m, attack=m.attack.at(eps)) for m in self.members)
        new.threat = new.members[0].attack.threat
        new.state = None
        return new

    def check_model(self, model: Model) -> None:
        for m in self.members:
            m.attack.check_model(model)

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator) -> AttackResult:
        """Run every member on the survivors; see the class docstring for ``extras``."""
        st = self.run(model, x, y, generator=generator)
        return AttackResult(st.x_adv, st.queries, extras=self.extras(st))

    def extras(self, st: EnsembleState) -> dict[str, Any]:
        """The per-example and per-attack record of ``st`` as :class:`AttackResult` extras."""
        return {"robust": st.robust.clone(), "broken_by": st.broken_by_names(),
                "per_attack": {k: dataclasses.asdict(v) for k, v in st.stats.items()},
                "robust_accuracy": dict(st.robust_after), "cost": st.cost_report(),
                "skipped": {k: v.skipped for k, v in st.stats.items() if v.skipped}, "seed": st.seed}

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator,
            flags: torch.Tensor | None = None, state: EnsembleState | None = None,
            checkpoint: str | Path | None = None) -> EnsembleState:
        """Run the members still to run and return (and keep in ``self.state``) the final state.

        Args:
            model, x (B, ...), y (B,): as ``__call__``; generator: seeds the members unless
                ``seed`` was given or a ``state`` is resumed.
            flags: (B,) bool robust flags saved from an earlier run: examples flagged False are
                taken as broken (``broken_by == "resumed"``, ``x_adv == x``) and never attacked;
                every member runs on the others. No clean check is made.
            state: a state from :meth:`load_state` for the same ``x``: members it completed are
                skipped, its seed is reused, so the result equals the uninterrupted run's.
            checkpoint: save the state there (atomically) after every member.
        """
        if flags is not None and state is not None:
            raise ConfigError("Ensemble.run: give flags or state, not both",
                              fix="resume from the saved state (it holds the flags)")
        if not isinstance(x, torch.Tensor) or x.shape[0] != y.shape[0]:
            raise ProbeError("Ensemble needs a tensor x with one label per row",
                             fix="pass x (B, ...) and y (B,)")
        dev, n = x.device, x.shape[0]
        if state is not None:
            self._check_state(state, x)
            st = state.to(dev)
        else:
            st = self._fresh(model, x, y, generator, flags)
        for i, m in enumerate(self.members):
            if m.name in st.completed:
                continue
            stats = st.stats[m.name]
            stats.iterations = (m.iterations if m.iterations is not None
                                else nominal_iterations(m.attack, st.n_classes))
            idx = st.robust.nonzero().squeeze(1)
            if idx.numel() and st.n_classes < m.min_classes:
                stats.skipped = f"needs >= {m.min_classes} classes, the model has {st.n_classes}"
            elif idx.numel():
                self._run_member(i, m, model, x, y, idx, st, generator)
            st.completed.append(m.name)
            st.robust_after[m.name] = float(st.robust.float().mean()) if n else 0.0
            if checkpoint is not None:
                atomic_write_bytes(checkpoint, st.to_bytes())
        self.state = st
        return st

    def _fresh(self, model: Model, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
               flags: torch.Tensor | None) -> EnsembleState:
        dev, n = x.device, x.shape[0]
        if self.seed is not None:
            seed = self.seed
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        queries = torch.zeros(n, dtype=torch.long, device=dev)
        codes = torch.full((n,), ROBUST, dtype=torch.long, device=dev)
        if flags is None and n == 0:
            robust, n_classes = torch.zeros(0, dtype=torch.bool, device=dev), model.num_classes or 0
        elif flags is None:
            scores = checked_scores(model, x).to(dev)
            robust = scores.argmax(dim=1) == y.to(dev)
            codes[~robust] = CLEAN
            queries += 1
            n_classes = scores.shape[1]
        else:
            flags = torch.as_tensor(flags)
            if flags.dtype != torch.bool or tuple(flags.shape) != (n,):
                raise ConfigError(f"Ensemble: flags must be a bool tensor of shape ({n},), got "
                                  f"{flags.dtype} {tuple(flags.shape)}", fix="pass the saved robust flags")
            robust = flags.to(dev).clone()
            codes[~robust] = RESUMED
            n_classes = model.num_classes
            if n_classes is None and n:
                n_classes = int(checked_scores(model, x[:1]).shape[1])
        st = EnsembleState(names=self.names, robust=robust, x_adv=x.detach().clone(), broken_by=codes,
                           queries=queries, stats={m.name: AttackStats() for m in self.members}, completed=[],
                           seed=seed, n_classes=int(n_classes or 0), x_shape=list(x.shape),
                           x_sum=float(x.double().sum()))
        st.robust_after["clean" if flags is None else "resumed"] = float(robust.float().mean()) if n else 0.0
        return st

    def _run_member(self, i: int, m: Member, model: Model, x: torch.Tensor, y: torch.Tensor,
                    idx: torch.Tensor, st: EnsembleState, generator: torch.Generator) -> None:
        stats = st.stats[m.name]
        g = torch_generator(derive_seed(st.seed, "ensemble", i, m.name), device=generator.device)
        t0 = time.perf_counter()
        res = m.attack(model, x[idx], y[idx], generator=g)
        xa = res.x_adv.detach().to(x.device)
        inside = self.threat.contains(x[idx], xa)
        if not bool(inside.all()):
            raise ProbeError(f"ensemble member {m.name!r} returned {int((~inside).sum())} inputs outside "
                             f"{self.threat}", fix="this is a robustlab bug: please report it")
        broke = checked_scores(model, xa).argmax(dim=1).to(x.device) != y[idx].to(x.device)
        stats.seconds += time.perf_counter() - t0
        q = res.queries.to(x.device).long() + 1  # + the check above
        st.queries[idx] += q
        stats.attacked += int(idx.numel())
        stats.broken += int(broke.sum())
        stats.queries += int(q.sum())
        hit = idx[broke]
        st.x_adv[hit] = xa[broke].to(st.x_adv.dtype)
        st.robust[hit] = False
        st.broken_by[hit] = i

    def _check_state(self, state: EnsembleState, x: torch.Tensor) -> None:
        if list(state.names) != self.names:
            raise RunError(f"the saved state is of attacks {state.names}, this ensemble runs {self.names}",
                           fix="resume with the same ensemble (same version and attacks)")
        same_sum = math.isclose(state.x_sum, float(x.double().sum()), rel_tol=1e-9, abs_tol=1e-6)
        if list(state.x_shape) != list(x.shape) or not same_sum:
            raise RunError("the saved state belongs to other inputs (shape or checksum differ)",
                           fix="resume on the same examples, in the same order")

    def save_state(self, path: str | Path) -> Path:
        """Write the last run's state to ``path`` atomically (``torch.save`` of plain tensors and dicts)."""
        if self.state is None:
            raise RunError("this ensemble has no state to save yet", fix="call run(...) first")
        return atomic_write_bytes(path, self.state.to_bytes())

    def load_state(self, path: str | Path) -> EnsembleState:
        """Read a state saved by :meth:`save_state` (or a ``checkpoint``), keep and return it."""
        path = Path(path)
        if not path.is_file():
            raise RunError(f"no ensemble state at {path}",
                           fix="pass the path given to save_state / checkpoint")
        st = EnsembleState.from_bytes(path.read_bytes())
        if list(st.names) != self.names:
            raise RunError(f"the saved state is of attacks {st.names}, this ensemble runs {self.names}",
                           fix="load it into the same ensemble (same version and attacks)")
        self.state = st
        return st

    def cost_report(self) -> dict[str, Any]:
        """:meth:`EnsembleState.cost_report` of the last run."""
        if self.state is None:
            raise RunError("this ensemble has not run yet", fix="call run(...) or the attack first")
        return self.state.cost_report()

    def __repr__(self) -> str:
        inner = ", ".join(f"{m.name}={m.attack!r}" for m in self.members)
        return f"{type(self).__name__}([{inner}])"
