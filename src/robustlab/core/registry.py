"""A registry so that probes, models and datasets are found by name (``robustlab list``).

Built-in modules register themselves on import; the registry imports them lazily on first lookup,
so ``import robustlab`` stays light.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

from robustlab.core.errors import ConfigError

__all__ = ["register", "get", "names", "available", "create", "KINDS"]

KINDS = ("transform", "attack", "certifier", "detector", "slice", "defense")

#: modules whose import registers the built-in entries
BUILTIN_MODULES = (
    "robustlab.transforms.image",
    "robustlab.transforms.image_digital",
    "robustlab.transforms.image_blur",
    "robustlab.transforms.image_weather",
    "robustlab.transforms.text",
    "robustlab.transforms.attributes",
    "robustlab.evaluate.slices",
    "robustlab.attacks.fgsm",
    "robustlab.attacks.pgd",
    "robustlab.attacks.apgd",
    "robustlab.attacks.cw",
    "robustlab.attacks.square",
    "robustlab.attacks.fab",
    "robustlab.attacks.autoattack",
    "robustlab.attacks.ensemble",
    "robustlab.attacks.bpda",
    "robustlab.attacks.eot",
    "robustlab.attacks.dta",
    "robustlab.attacks.transfer",
    "robustlab.certify.bounds",
    "robustlab.certify.smoothing",
    "robustlab.defend.train.pgd_at",
    "robustlab.defend.train.trades",
    "robustlab.defend.train.certified",
    "robustlab.defend.train.noise",
    "robustlab.certify.great",
    "robustlab.certify.conformal",
    "robustlab.certify.prototypes",
    "robustlab.certify.nap",
    "robustlab.transforms.styles",
    "robustlab.transforms.simplicity",
    "robustlab.defend.train.generated",
    "robustlab.attacks.oracle",
)

_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {k: {} for k in KINDS}
_loaded = False


def register(kind: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class / factory decorator: make it findable as ``name`` among ``kind``."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {KINDS}")

    def deco(obj: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[kind][name] = obj
        return obj

    return deco


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:  # a module of a later issue, or an extra not installed
            if not exc.name or not exc.name.startswith("robustlab"):
                raise


def _kinds(kind: str | None) -> list[str]:
    if kind is None:
        return list(KINDS)
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown kind {kind!r}", fix=f"use one of {', '.join(KINDS)}")
    return [kind]


def names(kind: str | None = None) -> list[str]:
    """Registered names of ``kind`` (all kinds if None), sorted."""
    _load_builtins()
    kinds = _kinds(kind)
    return sorted(n for k in kinds for n in _REGISTRY[k])


def available() -> dict[str, dict[str, Callable[..., Any]]]:
    """kind -> name -> factory for everything registered."""
    _load_builtins()
    return {k: dict(sorted(v.items())) for k, v in _REGISTRY.items() if v}


def get(name: str, kind: str | None = None) -> Callable[..., Any]:
    """The factory registered as ``name``; a :class:`ConfigError` with close matches if unknown."""
    _load_builtins()
    kinds = _kinds(kind)
    for k in kinds:
        if name in _REGISTRY[k]:
            return _REGISTRY[k][name]
    all_names = [n for k in kinds for n in _REGISTRY[k]]
    close = difflib.get_close_matches(name, all_names, n=3)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else "run `robustlab list` to see them"
    raise ConfigError(f"unknown {kind or 'probe'} {name!r}", fix=hint)


def create(name: str, kind: str | None = None, **params: Any) -> Any:
    """Instantiate ``name`` with ``params``; unknown parameters give a :class:`ConfigError`."""
    import inspect

    factory = get(name, kind)
    try:
        sig: inspect.Signature | None = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    declared = [] if sig is None else list(sig.parameters.values())
    accepted = [p.name for p in declared if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"]
    fix = f"{name!r} accepts: {', '.join(accepted) or '(none)'}"
    exact = sig is not None and not any(p.kind == p.VAR_KEYWORD for p in declared)
    if exact:
        try:
            sig.bind(**params)  # checked first: a TypeError raised *inside* the factory is a bug
        except TypeError as exc:
            raise ConfigError(f"bad parameters for {name!r}: {exc}", fix=fix) from exc
        return factory(**params)
    try:  # **kwargs or no signature: only the call can tell
        return factory(**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for {name!r}: {exc}", fix=fix) from exc
