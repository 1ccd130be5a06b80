"""The reproduction contract: a paper's qualitative findings as Claims checked on measured numbers.

``robustlab reproduce KEY`` exits 0 when every claim held, 1 when it ran and a claim did not hold,
2 when it could not run (including papers not implemented yet: never a fake result).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Claim", "Reproduction"]


@dataclass
class Claim:
    """One finding of a paper, checked on numbers measured here."""

    id: str
    statement: str
    held: bool
    measured: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reproduction:
    """The result of running one paper's reproduction."""

    key: str
    title: str
    claims: list[Claim] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return 2
        return 0 if all(c.held for c in self.claims) else 1

    def to_dict(self) -> dict[str, Any]:
        d = {"key": self.key, "title": self.title, "claims": [asdict(c) for c in self.claims],
             "seconds": round(self.seconds, 3), "notes": list(self.notes)}
        if self.error is not None:
            d["error"] = self.error
        return d
