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
    "robustlab.transforms.text",
    "robustlab.attacks.fgsm",
    "robustlab.attacks.pgd",
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


def names(kind: str | None = None) -> list[str]:
    """Registered names of ``kind`` (all kinds if None), sorted."""
    _load_builtins()
    kinds = [kind] if kind else list(KINDS)
    return sorted(n for k in kinds for n in _REGISTRY[k])


def available() -> dict[str, dict[str, Callable[..., Any]]]:
    """kind -> name -> factory for everything registered."""
    _load_builtins()
    return {k: dict(sorted(v.items())) for k, v in _REGISTRY.items() if v}


def get(name: str, kind: str | None = None) -> Callable[..., Any]:
    """The factory registered as ``name``; a :class:`ConfigError` with close matches if unknown."""
    _load_builtins()
    kinds = [kind] if kind else list(KINDS)
    for k in kinds:
        if name in _REGISTRY[k]:
            return _REGISTRY[k][name]
    all_names = [n for k in kinds for n in _REGISTRY[k]]
    close = difflib.get_close_matches(name, all_names, n=3)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else "run `robustlab list` to see them"
    raise ConfigError(f"unknown {kind or 'probe'} {name!r}", fix=hint)


def create(name: str, kind: str | None = None, **params: Any) -> Any:
    """Instantiate ``name`` with ``params``; unknown parameters give a :class:`ConfigError`."""
    factory = get(name, kind)
    try:
        return factory(**params)
    except TypeError as exc:
        import inspect

        try:
            accepted = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
        except (TypeError, ValueError):
            accepted = []
        raise ConfigError(f"bad parameters for {name!r}: {exc}",
                          fix=f"{name!r} accepts: {', '.join(accepted) or '(none)'}") from exc
