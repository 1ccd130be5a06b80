"""Metrics from synthetic outcomes: closed-form numbers, the fail-under parser and its errors."""

import math

import numpy as np
import pytest

from robustlab.core.errors import ConfigError
from robustlab.core.outcomes import Outcomes
from robustlab.evaluate.metrics import (
    TABLE_COLUMNS,
    check_fail_under,
    compute_metrics,
    metrics_table,
    parse_fail_under,
    transform_group,
)

N = 10
IDS = np.arange(N)
LABELS = IDS % 2
CLEAN_OK = IDS < 8  # clean accuracy 0.8


def part(probe, kind, setting, param, correct, status=None, queries=1, distance=np.nan):
    correct = np.asarray(correct, dtype=bool)
    pred = np.where(correct, LABELS, 1 - LABELS)
    if status is None:
        status = np.where(correct, "robust", "broken")
    return Outcomes({"example_id": IDS, "probe": probe, "kind": kind, "setting": setting, "param": param,
                     "status": np.asarray(status, dtype=object), "label": LABELS,
                     "clean_pred": np.where(CLEAN_OK, LABELS, 1 - LABELS), "pred": pred,
                     "clean_correct": CLEAN_OK, "correct": correct, "queries": queries,
                     "distance": distance, "seconds": 0.5, "seed": 0, "job": "j"})


def attack(setting, eps, n_broken):
    correct = CLEAN_OK & (IDS >= n_broken)
    status = np.where(~CLEAN_OK, "skipped", np.where(correct, "robust", "broken"))
    queries = np.where(CLEAN_OK, IDS + 1, 0)
    distance = np.where(correct, eps, 0.05 + 0.01 * IDS)
    return part("pgd_linf", "attack", setting, eps, correct, status, queries, distance)


def synthetic() -> Outcomes:
    return Outcomes.concat([
        part("clean", "clean", "none", np.nan, CLEAN_OK),
        part("gauss", "transform", "severity=1", 1.0, IDS < 6),
        part("gauss", "transform", "severity=2", 2.0, IDS < 4),
        part("blur", "transform", "severity=1", 1.0, np.ones(N, bool)),
        attack("eps=0.1", 0.1, 4),
        attack("eps=0.2", 0.2, 6),
    ])


def test_metrics_table_closed_form():
    t = metrics_table(synthetic())
    assert list(t.columns) == TABLE_COLUMNS
    assert list(t["kind"]) == ["clean", "transform", "transform", "transform", "attack", "attack"]
    row = t[(t.probe == "gauss") & (t.setting == "severity=1")].iloc[0]
    assert row.n == N and row.accuracy == pytest.approx(0.6)
    assert row.clean_accuracy == pytest.approx(0.8)
    assert row.accuracy_drop == pytest.approx(0.2)
    assert row.relative_robustness == pytest.approx(0.75)
    assert math.isnan(row.robust_accuracy) and math.isnan(row.attack_success_rate)
    assert row.seconds == pytest.approx(5.0)
    a = t[(t.probe == "pgd_linf") & (t.param == 0.1)].iloc[0]
    assert a.robust_accuracy == pytest.approx(0.4)  # 4 robust of 10; clean-wrong count as not robust
    assert a.attempted == 8 and a.broken == 4
    assert a.attack_success_rate == pytest.approx(0.5)
    assert a.mean_queries == pytest.approx(4.5) and a.median_queries == pytest.approx(4.5)
    assert a.mean_distance == pytest.approx(np.mean([0.05, 0.06, 0.07, 0.08]))
    b = t[(t.probe == "pgd_linf") & (t.param == 0.2)].iloc[0]
    assert b.robust_accuracy == pytest.approx(0.2) and b.attack_success_rate == pytest.approx(0.75)


def test_compute_metrics_closed_form():
    m = compute_metrics(synthetic())
    assert m["clean_accuracy"] == pytest.approx(0.8)
    assert m["n_examples"] == N
    assert m["gauss.accuracy[severity=1]"] == pytest.approx(0.6)
    assert m["gauss.mean_accuracy"] == pytest.approx(0.5)
    assert m["gauss.min_accuracy"] == pytest.approx(0.4)
    # every transform weighs the same: mean(0.5, 1.0), not the mean of the 3 cells (0.667)
    assert m["corruption.mean_accuracy"] == pytest.approx(0.75)
    assert m["corruption.min_accuracy"] == pytest.approx(0.4)
    assert m["corruption.relative_robustness"] == pytest.approx(0.75 / 0.8)
    assert m["pgd_linf.robust_accuracy[eps=0.1]"] == pytest.approx(0.4)
    assert m["pgd_linf.accuracy[eps=0.2]"] == pytest.approx(0.2)
    assert m["pgd_linf.attack_success_rate[eps=0.2]"] == pytest.approx(0.75)
    assert m["pgd_linf.min_accuracy"] == pytest.approx(0.2)
    assert not any(k.startswith("clean.") for k in m)
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())


def test_clean_accuracy_paired_by_example_id():
    # the transform ran on examples 0..4 only: its clean reference is those examples' clean accuracy
    sub = part("gauss", "transform", "severity=1", 1.0, IDS < 2)
    sub = Outcomes({k: v[:5] for k, v in sub.columns.items()})
    clean = part("clean", "clean", "none", np.nan, IDS != 0)
    t = metrics_table(Outcomes.concat([clean, sub]))
    row = t[t.probe == "gauss"].iloc[0]
    assert row.clean_accuracy == pytest.approx(0.8)  # examples 1..4 right, 0 wrong
    assert row.accuracy == pytest.approx(0.4)


def test_without_clean_rows_uses_clean_correct():
    m = compute_metrics(Outcomes.concat([part("gauss", "transform", "severity=1", 1.0, IDS < 3)]))
    assert m["clean_accuracy"] == pytest.approx(0.8)
    assert m["n_examples"] == N


def test_empty_outcomes():
    assert metrics_table(Outcomes()).empty
    assert compute_metrics(Outcomes()) == {"n_examples": 0.0}


@pytest.mark.parametrize("spec,expected", [
    ("clean_accuracy=0.9", ("clean_accuracy", 0.9)),
    ("pgd_linf.robust_accuracy[eps=0.0314]=0.4", ("pgd_linf.robust_accuracy[eps=0.0314]", 0.4)),
    (" corruption.mean_accuracy >= 0.5 ", ("corruption.mean_accuracy", 0.5)),
    ("clean_accuracy=85%", ("clean_accuracy", 0.85)),
])
def test_parse_fail_under(spec, expected):
    name, value = parse_fail_under(spec)
    assert name == expected[0] and value == pytest.approx(expected[1])


@pytest.mark.parametrize("spec", ["clean_accuracy", "=0.5", "clean_accuracy=high", "clean_accuracy=nan", ""])
def test_parse_fail_under_errors(spec):
    with pytest.raises(ConfigError) as err:
        parse_fail_under(spec)
    assert "METRIC=VALUE" in str(err.value)


def test_check_fail_under():
    m = compute_metrics(synthetic())
    assert check_fail_under(m, ["clean_accuracy=0.8", ("gauss.mean_accuracy", 0.5)]) == []
    failures = check_fail_under(m, ["clean_accuracy=0.9", "pgd_linf.robust_accuracy[eps=0.1]=0.3",
                                    "corruption.mean_accuracy=0.8"])
    assert len(failures) == 2
    assert failures[0].startswith("clean_accuracy = 0.8 < 0.9")
    assert "corruption.mean_accuracy" in failures[1]


def test_check_fail_under_unknown_metric_lists_close_matches():
    m = compute_metrics(synthetic())
    with pytest.raises(ConfigError) as err:
        check_fail_under(m, ["pgd_linf.robust_accuracy[eps=0.15]=0.3"])
    msg = str(err.value)
    assert "unknown metric" in msg and "did you mean" in msg
    assert "pgd_linf.robust_accuracy[eps=0.1]" in msg.split("fix:")[0]
    assert "clean_accuracy" in err.value.fix  # the fix lists what exists


def test_certified_accuracy_counts_only_certified_rows():
    from robustlab.core.outcomes import Outcomes
    from robustlab.evaluate.metrics import compute_metrics

    status = ["certified", "certified", "abstained", "skipped"]
    frame = Outcomes({"example_id": [0, 1, 2, 3], "probe": "crown", "kind": "certifier", "setting": "eps=0.1",
                      "param": 0.1, "status": status, "label": 0, "clean_pred": [0, 0, 0, 1],
                      "pred": [0, 0, 0, 1], "clean_correct": [True, True, True, False],
                      "correct": [True, True, True, False]}).to_frame()
    m = compute_metrics(frame)
    assert m["crown.certified_accuracy[eps=0.1]"] == 0.5


def test_transform_families_are_summarised_apart():
    clean = part("clean", "clean", "none", np.nan, IDS < 10)
    parts = [clean, part("gauss", "transform", "severity=1", 1.0, IDS < 6),
             part("bg", "transform", "severity=1", 1.0, IDS < 2),
             part("edit_size", "transform", "severity=1", 1.0, IDS < 4)]
    m = compute_metrics(Outcomes.concat(parts), groups={"bg": "attribute"})
    assert m["corruption.mean_accuracy"] == pytest.approx(0.6)  # only gauss: edits do not dilute it
    assert m["attribute.mean_accuracy"] == pytest.approx((0.2 + 0.4) / 2)  # "bg" by its group, edit_* by name
    assert m["attribute.min_accuracy"] == pytest.approx(0.2)
    assert "style.mean_accuracy" not in m
    assert transform_group("style_sketch") == "style" and transform_group("fog") == "corruption"
