"""Shared checks of the reproduction tests (a conftest, so pytest rewrites their asserts)."""

from collections.abc import Callable, Sequence

from robustlab.papers import catalog
from robustlab.papers.base import Reproduction


def quick_contract(key: str, reproduce: Callable[..., Reproduction], claims: Sequence[str]) -> Reproduction:
    """Run ``reproduce(quick=True)`` and check the contract: catalogued, no error, the claim ids, measured claims."""
    assert catalog.status(key) == "implemented"
    res = reproduce(quick=True)
    assert isinstance(res, Reproduction) and res.key == key and res.error is None
    assert [c.id for c in res.claims] == list(claims)
    for c in res.claims:
        assert isinstance(c.held, bool) and c.statement and c.measured
    return res
