"""Executors run independent jobs: in this process, or on a Dask cluster (loopback by default).

Both yield results as jobs finish, so the runner can record each one at once. Jobs are pure
functions of (suite, job), seeded by name, so every executor gives identical outcomes.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from robustlab.core.errors import ConfigError

__all__ = ["Executor", "InProcessExecutor", "DaskExecutor", "make_executor"]


class Executor(ABC):
    """Runs ``fn(item)`` for each item and yields ``(item, result)`` as they finish."""

    name = "executor"

    @abstractmethod
    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(item, fn(item))`` in completion order."""

    def close(self) -> None:
        """Release resources (clusters, clients)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class InProcessExecutor(Executor):
    """Runs jobs one after another in this process (the default)."""

    name = "inprocess"

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        for item in items:
            yield item, fn(item)


class DaskExecutor(Executor):
    """Runs jobs on Dask: a loopback ``LocalCluster`` by default, any cluster given its ``scheduler`` address.

    The local cluster binds 127.0.0.1 only, with no dashboard, one thread per worker process (no
    nested parallelism on small machines).
    """

    name = "dask"

    def __init__(self, scheduler: str | None = None, n_workers: int | None = None, threads_per_worker: int = 1):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as exc:
            raise ConfigError("--executor dask needs Dask", fix='pip install "robustlab[dask]"') from exc
        self.scheduler = scheduler
        self._cluster = None
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")  # inherited by worker processes
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="20s")
            except OSError as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}",
                                  fix="check the address (tcp://HOST:8786) and that the scheduler runs") from exc
        else:
            workers = n_workers or max(1, min(2, os.cpu_count() or 1))
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                                         processes=True, host="127.0.0.1", dashboard_address=None)
            self.client = Client(self._cluster)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        from dask.distributed import as_completed

        if not items:
            return
        futures = self.client.map(fn, list(items), pure=False)
        index = {f.key: item for f, item in zip(futures, items)}
        try:
            for fut in as_completed(futures):
                yield index[fut.key], fut.result()
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "scheduler": self.scheduler or "LocalCluster(127.0.0.1)",
                "workers": len(self.client.scheduler_info().get("workers", {}))}


def make_executor(name: str, scheduler: str | None = None) -> Executor:
    """An executor by name: ``inprocess`` or ``dask``."""
    if name in ("inprocess", "local", "serial"):
        if scheduler:
            raise ConfigError("--scheduler only applies to --executor dask", fix="add --executor dask")
        return InProcessExecutor()
    if name == "dask":
        return DaskExecutor(scheduler=scheduler)
    raise ConfigError(f"unknown executor {name!r}", fix="use --executor inprocess or --executor dask")
