"""Baseline-family files (robustlab.evaluate.baseline): format, validation, ER, make_baseline, suite + report."""

import json

import numpy as np
import pandas as pd
import pytest

from robustlab.core.errors import ConfigError, DataError
from robustlab.evaluate.baseline import (
    Baseline,
    BaselineShift,
    baseline_effective_robustness,
    effective_robustness_for_run,
    load_baseline,
    make_baseline,
    save_baseline,
)
from robustlab.evaluate.effective import fit_baseline, inverse_transform, transform_accuracy
from robustlab.evaluate.suite import parse_suite

ID = [0.3, 0.45, 0.6, 0.75, 0.9]


def _shift(probe, setting, slope, intercept):
    ida = np.array(ID)
    ooda = inverse_transform(slope * transform_accuracy(ida) + intercept, "logit")
    return BaselineShift(probe, setting, tuple(ida), tuple(float(v) for v in ooda), fit_baseline(ida, ooda))


def _baseline(dataset="shapeworld"):
    return Baseline(dataset=dataset, shifts=[_shift("style_sketch", "severity=3", 0.8, -1.0),
                                             _shift("style_cartoon", "severity=3", 1.0, -0.5)],
                    dataset_options={"size": 32}, models=[{"n": i} for i in range(5)], seeds=[0],
                    robustlab_version="0.1.0")


def _table(rows):
    """A metrics-table-like frame: (probe, kind, setting, accuracy, clean_accuracy)."""
    return pd.DataFrame(rows, columns=["probe", "kind", "setting", "accuracy", "clean_accuracy"])


def test_round_trip_keeps_points_fits_and_provenance(tmp_path):
    b = _baseline()
    path = save_baseline(b, tmp_path / "sub" / "b.json")
    back = load_baseline(path)
    assert back.to_dict() == json.loads(path.read_text()) == b.to_dict()
    s = back.shift("style_sketch", "severity=3")
    assert s.fit.slope == pytest.approx(0.8) and s.fit.intercept == pytest.approx(-1.0)
    assert s.id_acc == tuple(ID) and back.shift("style_sketch", "severity=5") is None
    assert back.models == b.models and back.seeds == [0] and back.robustlab_version == "0.1.0"
    assert not list((tmp_path / "sub").glob(".tmp-*"))  # atomic write leaves no temp file


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.update(format="other"), "not a baseline file"),
    (lambda d: d.update(version=99), "unsupported version"),
    (lambda d: d.pop("dataset"), "missing field 'dataset'"),
    (lambda d: d.update(scale="log"), "'scale' is 'log'"),
    (lambda d: d.update(shifts=[]), "non-empty list"),
    (lambda d: d["shifts"][0].update(id_acc=[0.5, 1.5, 0.2, 0.3, 0.4]), "outside [0, 1]"),
    (lambda d: d["shifts"][0].update(ood_acc=[0.5, 0.6]), "5 id_acc but 2 ood_acc"),
    (lambda d: d["shifts"][0].update(slope="x"), "'slope' must be a finite number"),
    (lambda d: d["shifts"][1].update(probe="style_sketch"), "appears twice"),
    (lambda d: d["shifts"][0].pop("setting"), "'setting' must be a non-empty string"),
])
def test_invalid_files_are_clear_data_errors(tmp_path, edit, needle):
    d = _baseline().to_dict()
    edit(d)
    p = tmp_path / "b.json"
    p.write_text(json.dumps(d))
    with pytest.raises(DataError) as err:
        load_baseline(p)
    assert needle in str(err.value) and "robustlab baseline" in err.value.fix


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_baseline(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        load_baseline(tmp_path / "bad.json")
    with pytest.raises(ConfigError):
        save_baseline({"dataset": "x"}, tmp_path / "x.json")


def test_a_model_on_the_line_has_zero_er_and_others_the_gap():
    b = _baseline()
    line = b.shift("style_sketch", "severity=3").fit
    clean = 0.95  # beyond the family: the line is extrapolated
    on = float(line.predict(clean))
    table = _table([("clean", "clean", "none", clean, clean),
                    ("style_sketch", "transform", "severity=3", on, clean),
                    ("cart", "transform", "severity=3", 0.7, clean),
                    ("style_sketch", "transform", "severity=1", 0.9, clean),  # not in the baseline
                    ("gaussian_noise", "transform", "severity=3", 0.5, clean)])
    rows = baseline_effective_robustness(b, table, probe_names={"cart": "style_cartoon"})
    assert [(r["probe"], r["name"], r["setting"]) for r in rows] == [("style_sketch", "style_sketch", "severity=3"),
                                                                     ("cart", "style_cartoon", "severity=3")]
    assert rows[0]["effective_robustness"] == pytest.approx(0.0, abs=1e-12)
    # cartoon: logit(pred) = logit(.95) - .5 by construction
    pred = 1 / (1 + np.exp(-(np.log(0.95 / 0.05) - 0.5)))
    assert rows[1]["predicted"] == pytest.approx(pred, rel=1e-6)
    assert rows[1]["effective_robustness"] == pytest.approx(0.7 - pred, rel=1e-6)
    assert rows[1]["family_min"] == 0.3 and rows[1]["family_max"] == 0.9
    # an explicit clean accuracy overrides the table's
    r = baseline_effective_robustness(b, table, 0.6, probe_names={"cart": "style_cartoon"})[0]
    assert r["predicted"] == pytest.approx(float(line.predict(0.6)))
    with pytest.raises(DataError):
        baseline_effective_robustness(b, table, 1.5)
    with pytest.raises(ConfigError):
        baseline_effective_robustness(b.to_dict(), table)


def test_run_helper_notes_mismatches_and_never_raises(tmp_path):
    path = save_baseline(_baseline(), tmp_path / "b.json")
    frame = _table([("clean", "clean", "none", 0.9, 0.9), ("style_sketch", "transform", "severity=3", 0.6, 0.9)])
    rows, notes = effective_robustness_for_run(path, frame, dataset="shapeworld")
    assert len(rows) == 1 and "1 style settings" in notes[0] and "extrapolated" not in notes[0]
    rows, notes = effective_robustness_for_run(path, frame, dataset="digits")
    assert rows == [] and "fitted on 'shapeworld'" in notes[0]
    rows, notes = effective_robustness_for_run(path, frame, dataset="shapeworld", dataset_options={"size": 64})
    assert rows == [] and "side 32" in notes[0]
    other = _table([("clean", "clean", "none", 0.9, 0.9), ("style_sketch", "transform", "severity=5", 0.6, 0.9)])
    rows, notes = effective_robustness_for_run(path, other, dataset="shapeworld")
    assert rows == [] and "none of this run's style probes" in notes[0]
    rows, notes = effective_robustness_for_run(tmp_path / "missing.json", frame, dataset="shapeworld")
    assert rows == [] and "does not exist" in notes[0]
    (tmp_path / "junk.json").write_text("[1, 2]")
    rows, notes = effective_robustness_for_run(tmp_path / "junk.json", frame, dataset="shapeworld")
    assert rows == [] and "not computed" in notes[0]


def test_make_baseline_rejects_bad_arguments_before_any_work():
    with pytest.raises(ConfigError, match="shapeworld"):
        make_baseline("digits", ["style_sketch"], [3], quick=True)
    with pytest.raises(ConfigError, match="unknown style"):
        make_baseline("shapeworld", ["style_crayon"], [3], quick=True)
    with pytest.raises(ConfigError, match="severities"):
        make_baseline("shapeworld", ["sketch"], [0], quick=True)
    with pytest.raises(ConfigError, match="scale"):
        make_baseline("shapeworld", ["sketch"], [3], quick=True, scale="log")
    with pytest.raises(ConfigError, match="arch"):
        make_baseline("shapeworld", ["sketch"], [3], quick=True, arch="vit")


def test_quick_make_baseline_trains_the_family_and_fits_each_shift(tmp_path):
    calls = []
    b = make_baseline("shapeworld", ["sketch", "style_texture"], [3], quick=True, seed=1,
                      progress=lambda done, total, label: calls.append((done, total)))
    assert calls[-1] == (6, 6) and len(b.models) == 6 and b.seeds == [1]
    assert b.keys == [("style_sketch", "severity=3"), ("style_texture", "severity=3")]
    assert {(m["n"], tuple(m["widths"]), m["epochs"]) for m in b.models} == {(n, (4, 8, 8), e) for n in (64, 128, 192)
                                                                             for e in (1, 2)}
    for s in b.shifts:
        assert len(s.id_acc) == len(s.ood_acc) == 6 and all(0 <= a <= 1 for a in s.id_acc + s.ood_acc)
        refit = fit_baseline(s.id_acc, s.ood_acc)
        assert (s.fit.slope, s.fit.intercept) == pytest.approx((refit.slope, refit.intercept))
    assert b.shifts[0].id_acc == b.shifts[1].id_acc  # the same models on the same clean test set
    back = load_baseline(save_baseline(b, tmp_path / "q.json"))
    assert back.to_dict() == b.to_dict() and back.dataset_options == {"size": 32}


def test_suite_baseline_field_is_validated_and_outside_the_fingerprint():
    base = {"model": {"zoo": "digits-mlp", "quick": True}, "data": {"name": "digits", "n": 8},
            "probes": [{"name": "style_sketch", "severities": [3]}]}
    s = parse_suite(dict(base, baseline="fam.json"))
    assert s.baseline == "fam.json" and s.to_dict()["baseline"] == "fam.json"
    assert s.fingerprint() == parse_suite(base).fingerprint() and "baseline" not in parse_suite(base).to_dict()
    with pytest.raises(ConfigError, match="baseline"):
        parse_suite(dict(base, baseline="fam.yaml"))
    with pytest.raises(ConfigError, match="did you mean 'baseline'"):
        parse_suite(dict(base, baselin="fam.json"))


def test_suite_run_adds_er_metrics_summary_rows_and_report_table(tmp_path):
    from robustlab.core.outcomes import Outcomes
    from robustlab.evaluate.metrics import metrics_table
    from robustlab.evaluate.runner import run_suite

    # a hand-made digits baseline: sketch's line is y = x (logit), cartoon's lies .5 logits lower
    b = Baseline(dataset="digits", shifts=[_shift("style_sketch", "severity=3", 1.0, 0.0),
                                           _shift("style_cartoon", "severity=3", 1.0, -0.5)])
    path = save_baseline(b, tmp_path / "fam.json")
    suite = parse_suite({"name": "er", "model": {"zoo": "digits-mlp", "quick": True},
                         "data": {"name": "digits", "n": 48, "seed": 0}, "shard_size": 48, "examples": 0,
                         "probes": [{"name": "style_sketch", "severities": [3, 5]},
                                    {"name": "style_cartoon", "id": "cartoon", "severities": [3]},
                                    {"name": "gaussian_noise", "severities": [3]}],
                         "baseline": str(path)})
    res = run_suite(suite, out_dir=tmp_path / "run", progress=False)
    s, m = res.summary, res.summary["metrics"]
    table = metrics_table(Outcomes.load(tmp_path / "run" / "outcomes.parquet").to_frame())
    acc = {(r.probe, r.setting): r.accuracy for r in table.itertuples()}
    clean = m["clean_accuracy"]
    assert m["style_sketch.effective_robustness[severity=3]"] == pytest.approx(acc["style_sketch", "severity=3"]
                                                                              - clean, abs=1e-3)
    pred = b.shift("style_cartoon", "severity=3").fit.predict(clean)
    assert m["cartoon.effective_robustness[severity=3]"] == pytest.approx(acc["cartoon", "severity=3"] - pred)
    assert "style_sketch.effective_robustness[severity=5]" not in m  # the baseline has no severity 5
    assert not any(k.startswith("gaussian_noise.effective") for k in m)
    assert [(r["probe"], r["setting"]) for r in s["effective_robustness"]] == [("cartoon", "severity=3"),
                                                                               ("style_sketch", "severity=3")]
    assert any("Effective robustness: 2 style settings" in n for n in s["notes"])
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Effective robustness" in html and "predicted by the family's line" in html
    assert html.count("pts</span>") == 2 and "effective robustness scatter" in html


def test_cli_baseline_command_parses_options_and_writes_the_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import robustlab.evaluate.baseline as bl
    from robustlab.cli import app
    from robustlab.core.errors import RobustlabError

    seen = {}

    def fake(dataset, styles, severities, **kw):
        seen.update(dataset=dataset, styles=styles, severities=severities, **kw)
        return _baseline()

    monkeypatch.setattr(bl, "make_baseline", fake)
    out = tmp_path / "fam.json"
    r = CliRunner().invoke(app, ["baseline", "--styles", "style_sketch, cartoon", "--severities", "2,3", "--quick",
                                 "--seed", "4", "--out", str(out), "--quiet", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert seen["styles"] == ["style_sketch", "cartoon"] and seen["severities"] == [2.0, 3.0]
    assert seen["quick"] is True and seen["seed"] == 4 and seen["dataset"] == "shapeworld" and seen["arch"] == "resnet"
    assert load_baseline(out).to_dict() == _baseline().to_dict() and "style_sketch" in r.output
    r = CliRunner().invoke(app, ["baseline", "--severities", "three", "--out", str(out)])
    assert isinstance(r.exception, RobustlabError) and "--severities" in r.exception.message


def test_load_suite_resolves_a_baseline_next_to_the_suite_file(tmp_path, monkeypatch):
    from robustlab.evaluate.suite import load_suite

    (tmp_path / "s").mkdir()
    save_baseline(_baseline(), tmp_path / "s" / "fam.json")
    (tmp_path / "s" / "suite.yaml").write_text("model: {zoo: digits-mlp}\ndata: {name: digits}\n"
                                               "probes: [{name: style_sketch}]\nbaseline: fam.json\n")
    monkeypatch.chdir(tmp_path)
    assert load_suite(tmp_path / "s" / "suite.yaml").baseline == str(tmp_path / "s" / "fam.json")
    (tmp_path / "fam.json").write_text("{}")  # one in the working directory wins
    assert load_suite(tmp_path / "s" / "suite.yaml").baseline == "fam.json"
