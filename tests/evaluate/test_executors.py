"""The Dask executor gives the same outcomes as the in-process run, on a loopback cluster."""

import pytest

from robustlab.core.errors import ConfigError
from robustlab.evaluate.executors import InProcessExecutor, make_executor


def test_inprocess_map_yields_all():
    ex = InProcessExecutor()
    assert sorted(r for _, r in ex.map(lambda v: v * 2, [1, 2, 3])) == [2, 4, 6]


def test_unknown_executor():
    with pytest.raises(ConfigError, match="inprocess"):
        make_executor("ray")
    with pytest.raises(ConfigError, match="--executor dask"):
        make_executor("inprocess", scheduler="tcp://127.0.0.1:1")


def test_dask_matches_inprocess(tmp_path):
    pytest.importorskip("dask.distributed")
    from robustlab.core.outcomes import Outcomes
    from robustlab.evaluate.executors import DaskExecutor
    from robustlab.evaluate.runner import run_suite
    from robustlab.evaluate.suite import parse_suite

    from .test_runner import COMPARE, SUITE

    suite = parse_suite(SUITE)
    a = run_suite(suite, out_dir=tmp_path / "a", progress=False)
    with DaskExecutor(n_workers=2) as ex:
        addr = ex.client.scheduler.address
        assert addr.startswith(("tcp://127.0.0.1", "inproc://"))
        b = run_suite(suite, out_dir=tmp_path / "b", executor=ex, progress=False)
    assert b.summary["executor"]["name"] == "dask"
    fa = Outcomes.load(a.run_dir / "outcomes.parquet").to_frame().sort_values(["job", "example_id"])
    fb = Outcomes.load(b.run_dir / "outcomes.parquet").to_frame().sort_values(["job", "example_id"])
    for col in COMPARE:
        assert (fa[col].to_numpy() == fb[col].to_numpy()).all(), col
