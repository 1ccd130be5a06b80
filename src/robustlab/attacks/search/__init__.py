"""Searches: how an attack explores its threat model (gradient steps now; greedy / query-based later)."""

from robustlab.attacks.search.gradient import (
    GradientSearch,
    SearchResult,
    default_alpha,
    run_attack,
    sample_start,
    steepest_direction,
)

__all__ = ["GradientSearch", "SearchResult", "default_alpha", "run_attack", "sample_start",
           "steepest_direction"]
