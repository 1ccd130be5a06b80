"""The runner end to end on a tiny suite: outcomes, resume without recomputation, clear user errors."""

import json

import numpy as np
import pytest

from robustlab.core.errors import ConfigError, ModelError, RunError
from robustlab.core.outcomes import Outcomes
from robustlab.evaluate.runner import run_suite
from robustlab.evaluate.suite import parse_suite

SUITE = {
    "name": "tiny",
    "model": {"zoo": "digits-mlp", "quick": True},
    "data": {"name": "digits", "n": 60, "seed": 0},
    "probes": [
        {"name": "gaussian_noise", "severities": [1, 5]},
        {"name": "pgd", "id": "pgd_linf", "norm": "inf", "steps": 3, "eps": [0.05, 0.5]},
    ],
    "shard_size": 30,
    "examples": 2,
}
COMPARE = ["example_id", "probe", "setting", "status", "pred", "clean_pred", "correct", "queries", "seed"]


def _frame(run_dir):
    f = Outcomes.load(run_dir / "outcomes.parquet").to_frame()
    return f.sort_values(["probe", "setting", "example_id"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    result = run_suite(parse_suite(SUITE), out_dir=out, progress=False)
    return result


def test_run_writes_everything(first_run):
    d = first_run.run_dir
    for name in ("suite.yaml", "outcomes.parquet", "summary.json", "report.html"):
        assert (d / name).exists(), name
    f = _frame(d)
    assert len(f) == 60 * (1 + 2 + 2)
    s = json.loads((d / "summary.json").read_text())
    assert s["jobs"] == {"total": 2 * 5, "reused": 0, "computed": 10}
    assert 0.0 <= s["metrics"]["clean_accuracy"] <= 1.0
    m = s["metrics"]
    assert m["clean.worst_class_accuracy"] <= m["clean_accuracy"] <= 1.0  # per-class disparity metrics
    assert "pgd_linf.class_accuracy_gap[eps=0.05]" in m
    assert s["versions"]["torch"] and s["seed"] == 0
    assert any((d / "examples").iterdir())
    from robustlab.evaluate.store import duckdb_available, leaderboard

    if duckdb_available():  # the run was appended to the store
        assert str(d.resolve()) in {r["run_dir"] for r in leaderboard("clean_accuracy", suite="tiny", limit=100)}


def test_attack_rows_are_consistent(first_run):
    f = _frame(first_run.run_dir)
    atk = f[f.kind == "attack"]
    assert (atk[~atk.clean_correct].status == "skipped").all()
    assert (atk[~atk.clean_correct].queries == 0).all()
    small = atk[atk.param == 0.05].correct.mean()
    large = atk[atk.param == 0.5].correct.mean()
    assert large <= small
    assert (atk.distance[atk.status != "skipped"] <= atk.param[atk.status != "skipped"] + 1e-5).all()


def test_resume_reuses_finished_jobs_and_matches(first_run, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(first_run.run_dir, d)
    jobs = sorted((d / "jobs").glob("*.parquet"))
    for p in jobs[:3]:
        p.unlink()
    (d / "jobs" / ".tmp-half-written.parquet").write_bytes(b"PAR1 garbage")
    before = {p.name: p.stat().st_mtime_ns for p in jobs[3:]}
    result = run_suite(None, resume=d, progress=False)
    assert result.summary["jobs"] == {"total": 10, "reused": 7, "computed": 3}
    after = {p.name: p.stat().st_mtime_ns for p in sorted((d / "jobs").glob("*.parquet")) if p.name in before}
    assert after == before  # finished jobs were not rewritten
    a, b = _frame(first_run.run_dir), _frame(d)
    for col in COMPARE:
        assert (a[col].to_numpy() == b[col].to_numpy()).all(), col
    np.testing.assert_allclose(a.score.to_numpy(), b.score.to_numpy(), rtol=1e-5, atol=1e-5)


def test_existing_run_dir_needs_resume(first_run):
    with pytest.raises(RunError, match="--resume"):
        run_suite(parse_suite(SUITE), out_dir=first_run.run_dir, progress=False)


def test_resume_of_a_different_suite_is_refused(first_run):
    other = parse_suite({**SUITE, "seed": 7})
    with pytest.raises(RunError, match="different suite"):
        run_suite(other, resume=first_run.run_dir, progress=False)


def test_unknown_probe_named(tmp_path):
    bad = {**SUITE, "probes": [{"name": "gausian_noise", "severities": [1]}]}
    with pytest.raises(ConfigError) as e:
        run_suite(parse_suite(bad), out_dir=tmp_path / "x", progress=False)
    assert "gausian_noise" in str(e.value) and "gaussian_noise" in str(e.value)


def test_bad_probe_parameter_named(tmp_path):
    bad = {**SUITE, "probes": [{"name": "pgd", "eps": [0.1], "stepz": 3}]}
    with pytest.raises(ConfigError) as e:
        run_suite(parse_suite(bad), out_dir=tmp_path / "x", progress=False)
    assert "stepz" in str(e.value)


def test_wrong_shaped_dataset_is_explained(tmp_path):
    x = np.random.default_rng(0).random((20, 3, 5, 5)).astype("float32")
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 10)
    bad = {**SUITE, "data": {"name": "npz", "path": str(tmp_path / "d.npz")}}
    with pytest.raises(ModelError) as e:
        run_suite(parse_suite(bad), out_dir=tmp_path / "x", progress=False)
    msg = str(e.value)
    assert "(3, 5, 5)" in msg and "fix:" in msg


def test_fail_under_gate(tmp_path):
    result = run_suite(parse_suite(SUITE), out_dir=tmp_path / "g", progress=False,
                       fail_under={"clean_accuracy": 1.01, "pgd_linf.min_accuracy": 0.0})
    assert len(result.failures) == 1 and "clean_accuracy" in result.failures[0]


def test_fail_under_unknown_metric(tmp_path):
    with pytest.raises(ConfigError, match="clean_accuracy"):
        run_suite(parse_suite(SUITE), out_dir=tmp_path / "g", progress=False, fail_under={"clean_acc": 0.5})


def test_text_suite_through_the_same_runner(tmp_path):
    """Modality independence: a scikit-learn text classifier and a text transform, same Suite and report."""
    suite = parse_suite({
        "name": "text", "model": {"zoo": "text-tfidf-lr", "quick": True},
        "data": {"name": "text-sentiment", "n": 80},
        "probes": [{"name": "char_typos", "severities": [1, 5]}], "examples": 3,
    })
    result = run_suite(suite, out_dir=tmp_path / "t", progress=False)
    f = _frame(result.run_dir)
    assert set(f.kind) == {"clean", "transform"} and len(f) == 80 * 3
    m = result.summary["metrics"]
    assert m["char_typos.accuracy[severity=5]"] <= m["clean_accuracy"] + 0.05
    assert "synthetic" in result.summary["data"]["source"].lower()
    assert list((result.run_dir / "examples").glob("*.json"))
    assert "char_typos" in (result.run_dir / "report.html").read_text()


def test_attribute_edits_get_the_shard_attributes(tmp_path):
    """Probes that need scene attributes (ShapeWorld edits) receive each shard's attrs from the runner."""
    suite = parse_suite({
        "name": "edits", "model": {"zoo": "shapeworld-resnet", "quick": True},
        "data": {"name": "shapeworld", "n": 24}, "shard_size": 12,
        "probes": [{"name": "edit_size", "severities": [0, 5]}],
    })
    result = run_suite(suite, out_dir=tmp_path / "e", progress=False)
    f = _frame(result.run_dir)
    sev0 = f[(f.probe == "edit_size") & (f.param == 0)]
    assert (sev0.pred.to_numpy() == sev0.clean_pred.to_numpy()).all()  # severity 0 is the identity
    assert len(f[f.probe == "edit_size"]) == 48


def test_certificates_are_cross_checked_against_attacks(tmp_path):
    """CROWN-certified examples are never broken by PGD in the same L-inf ball; the report says so."""
    suite = parse_suite({
        "name": "cert", "model": {"zoo": "digits-mlp", "quick": True}, "data": {"name": "digits", "n": 40},
        "probes": [{"name": "crown", "eps": [0.01, 0.03]}, {"name": "pgd", "eps": [0.01, 0.03], "steps": 10}],
    })
    result = run_suite(suite, out_dir=tmp_path / "c", progress=False)
    checks = [c for c in result.summary["checks"] if c["check"] == "certified_vs_attacks"]
    assert checks and all(c["severity"] == "ok" for c in checks)
    m = result.summary["metrics"]
    assert m["crown.certified_accuracy[eps=0.03]"] <= m["pgd.robust_accuracy[eps=0.03]"]
    assert "certified acc." in (result.run_dir / "report.html").read_text()
