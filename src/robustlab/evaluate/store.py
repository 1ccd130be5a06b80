"""The run store: every finished run appended to an embedded DuckDB file (``robustlab leaderboard``).

One row per run in ``runs`` and one row per (run, metric) in ``metrics``. DuckDB is the optional
``store`` extra; without it runs are simply not recorded (the run directory stays the source of truth).
The file is ``$ROBUSTLAB_STORE`` or ``<cache>/runs.duckdb``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from robustlab.core.errors import ConfigError

__all__ = ["store_path", "append_run", "leaderboard", "duckdb_available"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_dir VARCHAR PRIMARY KEY, suite VARCHAR, model VARCHAR, data VARCHAR, n INTEGER, seed BIGINT,
    finished VARCHAR, wall_seconds DOUBLE, clean_accuracy DOUBLE, fingerprint VARCHAR, summary JSON);
CREATE TABLE IF NOT EXISTS metrics (run_dir VARCHAR, metric VARCHAR, value DOUBLE);
"""


def duckdb_available() -> bool:
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


def store_path() -> Path:
    """Where the store lives."""
    env = os.environ.get("ROBUSTLAB_STORE")
    if env:
        return Path(env).expanduser()
    from robustlab.models.zoo import cache_dir

    return cache_dir() / "runs.duckdb"


def append_run(summary: dict[str, Any], run_dir: str | Path, path: str | Path | None = None) -> bool:
    """Record a finished run (replacing an earlier record of the same run directory); False without DuckDB."""
    if not duckdb_available():
        return False
    import duckdb

    path = Path(path) if path else store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(Path(run_dir).resolve())
    metrics = summary.get("metrics", {})
    with duckdb.connect(str(path)) as con:
        con.execute(_SCHEMA)
        con.execute("DELETE FROM runs WHERE run_dir = ?", [key])
        con.execute("DELETE FROM metrics WHERE run_dir = ?", [key])
        con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [key, summary["suite"].get("name"), summary["model"].get("name"), summary["data"].get("name"),
             summary["data"].get("n"), summary.get("seed"), summary.get("finished"), summary.get("wall_seconds"),
             metrics.get("clean_accuracy"), summary.get("fingerprint"), json.dumps(summary, default=str)])
        rows = [(key, k, float(v)) for k, v in metrics.items() if isinstance(v, (int, float))]
        if rows:
            con.executemany("INSERT INTO metrics VALUES (?, ?, ?)", rows)
    return True


def leaderboard(metric: str = "clean_accuracy", *, suite: str | None = None, limit: int = 20,
                path: str | Path | None = None) -> list[dict[str, Any]]:
    """Runs ranked by ``metric`` (highest first), optionally only those of one suite."""
    if not duckdb_available():
        raise ConfigError("the run store needs DuckDB", fix='pip install "robustlab[store]"')
    import duckdb

    path = Path(path) if path else store_path()
    if not path.exists():
        return []
    query = ("SELECT r.run_dir, r.suite, r.model, r.data, r.n, r.finished, m.value FROM runs r "
             "JOIN metrics m ON m.run_dir = r.run_dir WHERE m.metric = ?")
    params: list[Any] = [metric]
    if suite:
        query += " AND r.suite = ?"
        params.append(suite)
    query += " ORDER BY m.value DESC, r.finished DESC LIMIT ?"
    params.append(int(limit))
    with duckdb.connect(str(path), read_only=True) as con:
        known = {r[0] for r in con.execute("SELECT DISTINCT metric FROM metrics").fetchall()}
        if known and metric not in known:
            import difflib

            close = difflib.get_close_matches(metric, sorted(known), n=3)
            raise ConfigError(f"no run has a metric {metric!r}",
                              fix=f"did you mean {', '.join(close)}?" if close else "see summary.json for names")
        rows = con.execute(query, params).fetchall()
    cols = ["run_dir", "suite", "model", "data", "n", "finished", "value"]
    return [dict(zip(cols, r)) for r in rows]
