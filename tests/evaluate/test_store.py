"""The DuckDB run store: runs are appended once per run directory and ranked by a metric."""

import pytest

from robustlab.core.errors import ConfigError
from robustlab.evaluate.store import append_run, leaderboard

pytest.importorskip("duckdb")


def _summary(name, acc):
    return {"suite": {"name": name}, "model": {"name": "m"}, "data": {"name": "d", "n": 10}, "seed": 0,
            "finished": "2026-01-01", "wall_seconds": 1.0, "metrics": {"clean_accuracy": acc, "x.mean_accuracy": 0.5}}


def test_append_and_rank(tmp_path):
    db = tmp_path / "runs.duckdb"
    assert append_run(_summary("a", 0.7), tmp_path / "r1", path=db)
    assert append_run(_summary("b", 0.9), tmp_path / "r2", path=db)
    assert append_run(_summary("a", 0.8), tmp_path / "r1", path=db)  # same run dir: replaced, not duplicated
    rows = leaderboard("clean_accuracy", path=db)
    assert [r["value"] for r in rows] == [0.9, 0.8]
    assert [r["suite"] for r in leaderboard("clean_accuracy", suite="a", path=db)] == ["a"]


def test_unknown_metric_suggests(tmp_path):
    db = tmp_path / "runs.duckdb"
    append_run(_summary("a", 0.7), tmp_path / "r1", path=db)
    with pytest.raises(ConfigError, match="clean_accuracy"):
        leaderboard("clean_acuracy", path=db)


def test_empty_store(tmp_path):
    assert leaderboard(path=tmp_path / "none.duckdb") == []
