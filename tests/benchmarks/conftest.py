"""Shared helper of the benchmark tests: load a script of ``benchmarks/`` as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(filename: str) -> ModuleType:
    """Import ``benchmarks/<filename>`` (not a package) under a private name, registered in ``sys.modules``."""
    if str(BENCHMARKS) not in sys.path:  # the scripts import their sibling helpers (_timing, _peers, ...)
        sys.path.insert(0, str(BENCHMARKS))
    name = "robustlab_bench_" + Path(filename).stem.lstrip("_")
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / filename)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
