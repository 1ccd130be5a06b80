"""``Outcomes``: one long table, one row per (example, probe, setting).

Probes never compute metrics; they produce outcomes and metrics are computed from them. Columns are
numpy arrays (torch stays inside probes); Parquet / pandas are imported only at the I/O edges.
Files are written atomically (temp file + rename), so a half-written file is never read as finished.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robustlab.core.errors import RunError

__all__ = ["Outcomes", "COLUMNS", "STATUSES", "atomic_write_bytes"]

#: column -> numpy dtype (``object`` columns hold strings)
COLUMNS: dict[str, str] = {
    "example_id": "int64",  # stable id of the example in its dataset
    "probe": "object",  # probe name as given in the suite (e.g. "pgd_linf")
    "kind": "object",  # transform | attack | certifier | detector | slice | clean
    "setting": "object",  # human label, e.g. "severity=3" or "eps=0.0314"
    "param": "float64",  # the swept number (severity, eps)
    "status": "object",  # robust | broken | skipped | certified | abstained
    "label": "int64",
    "clean_pred": "int64",
    "pred": "int64",
    "clean_correct": "bool",
    "correct": "bool",
    "score": "float64",  # margin of the true class (score_y - max other) on the probed input
    "distance": "float64",  # norm of the perturbation actually used (NaN when not defined)
    "queries": "int64",  # model calls spent on this example
    "seconds": "float64",  # wall time of the job divided by its examples
    "seed": "int64",
    "job": "object",
}
STATUSES = ("robust", "broken", "skipped", "certified", "abstained")


class Outcomes:
    """A column store of outcome rows with the fixed schema :data:`COLUMNS`."""

    def __init__(self, columns: Mapping[str, Any] | None = None):
        columns = dict(columns or {})
        unknown = set(columns) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown outcome columns: {sorted(unknown)}")
        columns = {k: v for k, v in columns.items() if v is not None}  # None: the column's default
        scalar = {k for k, v in columns.items() if isinstance(v, str) or np.ndim(v) == 0}
        n = {len(np.asarray(v, dtype=object if COLUMNS[k] == "object" else None))
             for k, v in columns.items() if k not in scalar}
        if len(n) > 1:
            raise ValueError(f"outcome columns have different lengths: {sorted(n)}")
        length = n.pop() if n else (1 if columns else 0)
        self.columns: dict[str, np.ndarray] = {}
        for name, dtype in COLUMNS.items():
            if name not in columns:
                self.columns[name] = _default(dtype, length)
            elif name in scalar:
                v = columns[name]
                v = v.item() if isinstance(v, np.ndarray) else v
                self.columns[name] = np.full(length, v, dtype=dtype)
            else:
                arr = np.asarray(columns[name], dtype=object if dtype == "object" else None)
                self.columns[name] = arr.astype(dtype)

    def __len__(self) -> int:
        return len(self.columns["example_id"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @classmethod
    def concat(cls, parts: Iterable[Outcomes]) -> Outcomes:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls()
        return cls({k: np.concatenate([p.columns[k] for p in parts]) for k in COLUMNS})

    def to_frame(self):
        """A pandas DataFrame (pandas imported lazily)."""
        import pandas as pd

        return pd.DataFrame({k: v for k, v in self.columns.items()})

    @classmethod
    def from_frame(cls, frame) -> Outcomes:
        return cls({k: frame[k].to_numpy() for k in COLUMNS if k in frame.columns})

    def save(self, path: str | os.PathLike) -> Path:
        """Write Parquet atomically; returns the path."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        # object columns are strings: typed explicitly so an empty table is not written as null columns
        table = pa.table({k: (pa.array([None if s is None else str(s) for s in v.tolist()], type=pa.string())
                              if v.dtype == object else v) for k, v in self.columns.items()})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".parquet")
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            _fsync(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Outcomes:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise RunError(f"cannot read outcomes file {path}: {exc}",
                           fix="delete the file and run again with --resume to recompute that job") from exc
        return cls({k: table.column(k).to_numpy(zero_copy_only=False) for k in table.column_names if k in COLUMNS})

    def __repr__(self) -> str:
        probes = sorted(set(self.columns["probe"].tolist()))
        return f"Outcomes(rows={len(self)}, probes={probes})"


def _default(dtype: str, n: int) -> np.ndarray:
    if dtype == "object":
        return np.array([""] * n, dtype=object)
    if dtype == "float64":
        return np.full(n, np.nan)
    if dtype == "bool":
        return np.zeros(n, dtype=bool)
    return np.full(n, -1, dtype=dtype)


def _fsync(path: str) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
