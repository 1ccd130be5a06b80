"""Suite ``slices:``: validation, building Slice objects, and slice accuracy in summary, metrics and report."""

import json

import numpy as np
import pandas as pd
import pytest

from robustlab.core.errors import ConfigError
from robustlab.evaluate.runner import run_suite
from robustlab.evaluate.slices import AttributeSlice, ClassSlice, FunctionSlice, build_slices
from robustlab.evaluate.suite import parse_suite

BASE = {
    "name": "sliced",
    "model": {"zoo": "digits-mlp", "quick": True},
    "data": {"name": "digits", "n": 40, "seed": 0},
    "probes": [{"name": "gaussian_noise", "severities": [2]}],
    "shard_size": 40,
    "examples": 0,
}


def even_labels(frame):
    """A user slice function: rows whose true label is even."""
    return (frame["label"].to_numpy() % 2) == 0


def _suite(slices):
    return parse_suite(dict(BASE, slices=slices))


def test_slice_specs_validate_and_name_themselves():
    s = _suite([{"class": 3}, {"attribute": "size", "min": 0.2, "max": 0.4},
                {"attribute": "background_name", "values": ["plain", "stripes"]},
                {"attribute": "colour", "value": "red", "name": "reds"},
                {"function": "tests.evaluate.test_suite_slices:even_labels"}])
    assert [x.key for x in s.slices] == ["class=3", "0.2<=size<=0.4", "background_name in ['plain', 'stripes']",
                                         "reds", "even_labels"]
    built = build_slices(s.slices)
    assert isinstance(built[0], ClassSlice) and built[0].label == 3
    assert isinstance(built[1], AttributeSlice) and isinstance(built[4], FunctionSlice)
    frame = pd.DataFrame({"label": [0, 3, 3], "size": [0.1, 0.3, 0.5]})
    assert built[0].mask(frame).tolist() == [False, True, True]
    assert built[1].mask(frame).tolist() == [False, True, False]  # the range is inclusive, open ends allowed
    assert built[4].mask(frame).tolist() == [True, False, False]
    assert "class" in s.to_dict()["slices"][0]  # written back with the YAML name


@pytest.mark.parametrize("bad, needle", [
    ({}, "exactly one of 'class', 'attribute' or 'function'"),
    ({"class": 1, "attribute": "size", "value": 1}, "exactly one of"),
    ({"attribute": "size"}, "needs exactly one of 'value', 'values'"),
    ({"class": 1, "value": 2}, "go with 'attribute' only"),
    ({"function": "no_colon"}, "package.module:function"),
    ({"attribute": "size", "vale": 1}, "did you mean 'value'"),
])
def test_bad_slice_specs_are_clear_config_errors(bad, needle):
    with pytest.raises(ConfigError) as err:
        _suite([bad])
    assert needle in str(err.value) + (err.value.fix or "")


def test_repeated_slice_names_and_unimportable_functions_are_refused():
    with pytest.raises(ConfigError, match="slice names repeat"):
        _suite([{"class": 1}, {"class": 1}])
    with pytest.raises(ConfigError, match="cannot be imported"):
        build_slices(_suite([{"function": "no.such.module:fn"}]).slices)


def test_slices_do_not_change_the_fingerprint():
    assert _suite([{"class": 1}]).fingerprint() == parse_suite(BASE).fingerprint()


def test_unknown_attribute_fails_before_any_work(tmp_path):
    with pytest.raises(ConfigError) as err:
        run_suite(_suite([{"attribute": "colour", "value": "red"}]), out_dir=tmp_path / "r", progress=False)
    assert "has no attribute 'colour'" in str(err.value)
    assert not (tmp_path / "r" / "jobs").exists() or not any((tmp_path / "r" / "jobs").iterdir())


def test_slice_accuracy_reaches_summary_metrics_parquet_and_report(tmp_path):
    suite = _suite([{"class": 0}, {"function": "tests.evaluate.test_suite_slices:even_labels", "name": "even"}])
    result = run_suite(suite, out_dir=tmp_path / "r", progress=False)
    d = result.run_dir
    summary = json.loads((d / "summary.json").read_text())
    frame = pd.read_parquet(d / "outcomes.parquet")
    clean = frame[frame["kind"] == "clean"]
    even = clean[clean["label"] % 2 == 0]
    assert summary["metrics"]["slice[even].clean_accuracy"] == pytest.approx(even["correct"].mean())
    zero = frame[(frame["probe"] == "gaussian_noise") & (frame["label"] == 0)]
    key = "slice[class=0].gaussian_noise.accuracy[severity=2]"
    assert summary["metrics"][key] == pytest.approx(zero["correct"].mean())
    table = pd.read_parquet(d / "slices.parquet")
    assert set(table["slice"]) == {"class=0", "even"} and len(table) == 4
    html = (d / "report.html").read_text()
    assert 'id="slices"' in html and "Class-wise accuracy disparity" in html and "<th>even</th>" in html
    assert np.isfinite(table["accuracy"]).all()
