"""Seed papers as reproductions with Claims (``robustlab reproduce KEY``)."""

from robustlab.papers.base import Claim, Reproduction

__all__ = ["Claim", "Reproduction"]
