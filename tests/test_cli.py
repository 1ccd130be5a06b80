"""The command line as a user meets it: exit codes, clean errors (no traceback), demo, kill + resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DESIGN_KEYS = (
    "crmt ranking-robustness weight-signatures tta-rewrite robustness-gym attribute-editing adaptive-smoothing "
    "contrabert robustify-distill oracle-eval crossmax recode detection-shift ibp-tightness great-score "
    "flag-aggregator knowledge-transfer beyond grokking rift nap-specs certdr generated-data dverge rscp-plus "
    "ctrl-backdoor transtee mlops-monitor advmoe simplicity-bias transcoders dilution t-miner bayesian-transfer "
    "contextual-fusion robust-prototypes freq-prompt effective-robustness neur2ro accuracy-disparity dta"
).split()


def cli(*args, cwd=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "robustlab.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def test_reproduce_list_json_has_all_41_keys():
    r = cli("reproduce", "--list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["key"] for row in rows] == DESIGN_KEYS
    assert all(row["status"] in ("implemented", "missing") for row in rows)


def test_reproduce_missing_paper_exits_2_with_message():
    r = cli("reproduce", "crmt", "--json")
    assert r.returncode == 2
    out = json.loads(r.stdout)
    assert out["key"] == "crmt" and out["claims"] == [] and "not implemented" in out["error"]


def test_reproduce_unknown_key():
    r = cli("reproduce", "crossmaxx")
    assert r.returncode == 2 and "crossmax" in r.stderr and "Traceback" not in r.stderr


def test_list_groups_by_kind():
    r = cli("list", "--json")
    assert r.returncode == 0, r.stderr
    kinds = json.loads(r.stdout)
    assert {"gaussian_noise", "gaussian_blur", "contrast", "char_typos"} <= set(kinds["transform"])
    assert {"fgsm", "pgd"} <= set(kinds["attack"])


@pytest.mark.parametrize("text,needle", [
    ("model: {zoo: digits-mlp}\ndata: {name: digits}\nprobs: [{name: pgd}]\n", "did you mean 'probes'"),
    ("model: {zoo: digits-mlp}\ndata: {name: digits}\nprobes: [{name: pgdd, eps: [0.1]}]\n", "pgdd"),
    ("model: {zoo: digits-mlp}\ndata: {name: digits, n: -3}\nprobes: [{name: pgd, eps: [0.1]}]\n", "data.n"),
    ("model: {zoo: digits-mlp\n", "not valid YAML"),
])
def test_user_errors_are_clean(tmp_path, text, needle):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    r = cli("run", str(p), "--out", str(tmp_path / "run"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr and "fix:" in r.stderr
    assert "Traceback" not in r.stderr


def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = cli("demo", "--quick", "--out", str(out), "--quiet", "--threads", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "report.html" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["jobs"]["computed"] == s["jobs"]["total"] > 0
    wanted = {"slice[plain-background].clean_accuracy", "attribute.mean_accuracy", "style.mean_accuracy"}
    assert wanted <= set(s["metrics"])
    r2 = cli("demo", "--quick", "--out", str(out), "--quiet")
    assert r2.returncode == 2 and "--resume" in r2.stderr
    r3 = cli("demo", "--resume", str(out), "--quiet", "--fail-under", "clean_accuracy=1.01")
    assert r3.returncode == 1 and "clean_accuracy" in r3.stderr
    s3 = json.loads((out / "summary.json").read_text())
    assert s3["jobs"]["reused"] == s3["jobs"]["total"] and s3["jobs"]["computed"] == 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_resumes_without_recomputing(tmp_path, sig):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: killme\nmodel: {zoo: digits-mlp, quick: true}\ndata: {name: digits, n: 100}\n"
        "probes:\n  - {name: pgd, steps: 20, restarts: 2, eps: [0.02, 0.05, 0.1, 0.2, 0.3, 0.4]}\n"
        "shard_size: 10\n")
    out = tmp_path / "run"
    warm = tmp_path / "warm.yaml"  # train the quick model first, cheaply
    warm.write_text("model: {zoo: digits-mlp, quick: true}\ndata: {name: digits, n: 10}\n"
                    "probes: [{name: contrast, severities: [1]}]\n")
    assert cli("run", str(warm), "--out", str(tmp_path / "warm"), "--quiet").returncode == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "robustlab.cli", "run", str(suite), "--out", str(out),
                             "--quiet", "--threads", "1"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    jobs = out / "jobs"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(jobs.glob("*.parquet"))) < 15:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err
    done = {p.name: p.stat().st_mtime_ns for p in jobs.glob("[!.]*.parquet")}  # .tmp-* = unfinished
    assert 0 < len(done) < 70, "the run should have been interrupted halfway"
    r = cli("run", "--resume", str(out), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["jobs"]["total"] == 70
    assert s["jobs"]["reused"] == len(done) and s["jobs"]["computed"] == 70 - len(done)
    for p in jobs.glob("*.parquet"):
        if p.name in done:
            assert p.stat().st_mtime_ns == done[p.name]
    assert not list(Path(jobs).glob(".tmp-*"))
