"""Sanity checks fire on false-robustness symptoms and stay quiet on a healthy evaluation."""

import numpy as np
import pytest

from robustlab.core.outcomes import Outcomes
from robustlab.evaluate.checks import check_result, probe_norm, run_checks

N = 40
IDS = np.arange(N)
LABELS = IDS % 4
CLEAN_OK = IDS < 36  # clean accuracy 0.9, majority baseline 0.25


def clean() -> Outcomes:
    return Outcomes({"example_id": IDS, "probe": "clean", "kind": "clean", "setting": "none", "param": np.nan,
                     "status": "robust", "label": LABELS, "clean_pred": LABELS, "pred": LABELS,
                     "clean_correct": CLEAN_OK, "correct": CLEAN_OK, "queries": 1})


def attack(probe, eps, robust, queries=10):
    """Attack rows at ``eps`` where the clean-correct examples in ``robust`` (a mask) survive."""
    correct = CLEAN_OK & robust
    status = np.where(~CLEAN_OK, "skipped", np.where(correct, "robust", "broken"))
    return Outcomes({"example_id": IDS, "probe": probe, "kind": "attack", "setting": f"eps={eps:g}",
                     "param": eps, "status": status.astype(object), "label": LABELS,
                     "clean_pred": LABELS, "pred": np.where(correct, LABELS, (LABELS + 1) % 4),
                     "clean_correct": CLEAN_OK, "correct": correct,
                     "queries": np.where(CLEAN_OK, queries, 0), "distance": np.where(CLEAN_OK, eps * 0.99, 0.0)})


def curve(probe, points):
    """A sweep: ``points`` maps eps -> number of surviving examples (the first ones survive)."""
    return [attack(probe, e, IDS < k) for e, k in points.items()]


def by_check(results, check, probe=None):
    return [r for r in results if r["check"] == check and (probe is None or r["probe"] == probe)]


def test_good_evaluation_has_no_warnings():
    frame = Outcomes.concat([clean(), *curve("pgd_linf", {0.03: 20, 0.1: 8, 0.3: 1}),
                             *curve("fgsm", {0.03: 24, 0.1: 14, 0.3: 6})])
    results = run_checks(frame)
    assert [r for r in results if r["severity"] == "warning"] == []
    oks = {(r["check"], r["probe"]) for r in results if r["severity"] == "ok"}
    for check in ("monotone_eps", "per_example_eps", "large_eps", "queries", "consistency"):
        assert (check, "pgd_linf") in oks, check
    assert ("attack_strength", "pgd_linf") in oks and ("clean_accuracy", None) in oks
    # FGSM keeps 0.15 at eps 0.3: a single step is not expected to reach 0, so info only
    assert by_check(results, "large_eps", "fgsm")[0]["severity"] == "info"
    assert all(set(r) == {"check", "severity", "probe", "message"} for r in results)


def test_non_monotone_curve_warns():
    frame = Outcomes.concat([clean(), *curve("pgd_linf", {0.03: 20, 0.1: 28, 0.3: 0})])
    (mono,) = by_check(run_checks(frame), "monotone_eps", "pgd_linf")
    assert mono["severity"] == "warning"
    assert "0.500 at eps=0.03 -> 0.700 at eps=0.1" in mono["message"]
    # the 8 examples that recover at eps=0.1 are flagged per example too
    (per,) = by_check(run_checks(frame), "per_example_eps", "pgd_linf")
    assert per["severity"] == "warning" and per["message"].startswith("8 of 36")


def test_small_wobble_within_tolerance_is_ok():
    frame = Outcomes.concat([clean(), *curve("pgd_linf", {0.03: 20, 0.1: 20})])
    assert by_check(run_checks(frame), "monotone_eps")[0]["severity"] == "ok"
    wobble = {"pgd_linf": {"tolerance": 0.05}}
    frame = Outcomes.concat([clean(), *curve("pgd_linf", {0.03: 20, 0.1: 21})])
    assert by_check(run_checks(frame), "monotone_eps")[0]["severity"] == "warning"
    assert by_check(run_checks(frame, wobble), "monotone_eps")[0]["severity"] == "ok"


def test_large_eps_nonzero_accuracy_warns():
    frame = Outcomes.concat([clean(), *curve("pgd_linf", {0.03: 30, 0.3: 25})])
    (large,) = by_check(run_checks(frame), "large_eps")
    assert large["severity"] == "warning" and "gradient masking" in large["message"]
    # an L2 attack at 0.3 is not "large": info, not checked
    (l2,) = by_check(run_checks(Outcomes.concat([clean(), *curve("pgd_l2", {0.03: 30, 0.3: 25})])), "large_eps")
    assert l2["severity"] == "info" and "below the large eps 3" in l2["message"]
    # probe_info overrides the norm and the threshold
    info = {"pgd_l2": {"eps_large": 0.25}}
    frame = Outcomes.concat([clean(), *curve("pgd_l2", {0.03: 30, 0.3: 25})])
    assert by_check(run_checks(frame, info), "large_eps")[0]["severity"] == "warning"


def test_unknown_norm_is_info():
    frame = Outcomes.concat([clean(), *curve("myattack", {0.5: 30})])
    (large,) = by_check(run_checks(frame), "large_eps")
    assert large["severity"] == "info" and "unknown" in large["message"]
    assert by_check(run_checks(frame, {"myattack": {"norm": "Linf"}}), "large_eps")[0]["severity"] == "warning"


def test_stronger_attack_worse_than_weaker_warns():
    frame = Outcomes.concat([clean(), *curve("pgd_linf", {0.03: 30, 0.1: 20}), *curve("fgsm", {0.03: 22, 0.1: 20})])
    (strength,) = by_check(run_checks(frame), "attack_strength", "pgd_linf")
    assert strength["severity"] == "warning" and "eps=0.03: 0.750 vs 0.550" in strength["message"]


def test_black_box_beating_white_box_warns():
    info = {"pgd_linf": {"norm": "inf"}, "square_linf": {"norm": "inf"}}
    frame = Outcomes.concat([clean(), *curve("pgd_linf", {0.03: 30}), *curve("square_linf", {0.03: 10})])
    (strength,) = by_check(run_checks(frame, info), "attack_strength", "pgd_linf")
    assert strength["severity"] == "warning" and "black-box" in strength["message"]


def test_different_norms_are_not_compared():
    frame = Outcomes.concat([clean(), *curve("pgd_l2", {0.1: 30}), *curve("fgsm", {0.1: 10})])
    results = run_checks(frame)
    assert [r["severity"] for r in by_check(results, "attack_strength")] == ["info"]


def test_zero_queries_warns():
    frame = Outcomes.concat([clean(), attack("pgd_linf", 0.03, IDS < 20, queries=0)])
    (q,) = by_check(run_checks(frame), "queries")
    assert q["severity"] == "warning" and q["message"].startswith("36 of 36")


def test_inconsistent_rows_warn():
    bad = attack("pgd_linf", 0.03, IDS < 20)
    bad.columns["status"][0] = "broken"  # but predicted right
    bad.columns["distance"][1] = 0.5  # outside eps
    (c,) = by_check(run_checks(Outcomes.concat([clean(), bad])), "consistency")
    assert c["severity"] == "warning"
    assert "1 'broken' rows predicted right" in c["message"] and "1 perturbations larger than eps" in c["message"]


def test_near_chance_clean_accuracy_warns():
    o = clean()
    o.columns["correct"][:] = IDS < 10  # 0.25 = majority baseline
    (c,) = by_check(run_checks(o), "clean_accuracy")
    assert c["severity"] == "warning"


def test_no_attacks_and_empty_run():
    results = run_checks(clean())
    assert by_check(results, "attacks")[0]["severity"] == "info"
    assert run_checks(Outcomes())[0]["severity"] == "warning"


def test_extra_checks_extension_point():
    def model_check(frame, info):
        return [check_result("softmax_outputs", "warning", "scores sum to 1: pass logits")]

    ready = {"check": "zero_grads", "severity": "ok", "probe": None, "message": "gradients are non-zero"}
    results = run_checks(clean(), extra=[model_check, ready])
    assert [r["check"] for r in results[-2:]] == ["softmax_outputs", "zero_grads"]
    with pytest.raises(ValueError):
        run_checks(clean(), extra=[{"check": "x", "severity": "fatal", "message": "m"}])


@pytest.mark.parametrize("name,norm", [("pgd_linf", "inf"), ("apgd-l2", "2"), ("fgsm", "inf"), ("pgd_l1", "1"),
                                       ("square", None)])
def test_probe_norm(name, norm):
    assert probe_norm(name) == norm
    assert probe_norm(name, {"norm": "L2"}) == "2"


def test_query_free_attacks_are_not_flagged_for_zero_queries():
    from robustlab.core.outcomes import Outcomes
    from robustlab.evaluate.checks import run_checks

    n = 10
    frame = Outcomes({"example_id": list(range(n)), "probe": "transfer", "kind": "attack", "setting": "eps=0.1",
                      "param": 0.1, "status": "broken", "label": 0, "clean_pred": 0, "pred": 1,
                      "clean_correct": True, "correct": False, "queries": 0}).to_frame()
    flagged = [c for c in run_checks(frame) if c["check"] == "queries" and c["severity"] == "warning"]
    assert flagged  # without the declaration, zero queries look like a bug
    ok = [c for c in run_checks(frame, probe_info={"transfer": {"query_free": True}}) if c["check"] == "queries"]
    assert ok and all(c["severity"] == "ok" for c in ok)


def test_certified_examples_broken_by_an_attack_are_flagged():
    import pandas as pd

    from robustlab.core.outcomes import Outcomes
    from robustlab.evaluate.checks import run_checks

    def rows(probe, kind, status):
        return Outcomes({"example_id": [0, 1], "probe": probe, "kind": kind, "setting": "eps=0.1", "param": 0.1,
                         "status": status, "label": 0, "clean_pred": 0, "pred": 0, "clean_correct": True,
                         "correct": True, "queries": 1}).to_frame()

    info = {"crown": {"kind": "certifier", "norm": "inf"}, "pgd": {"kind": "attack", "norm": "inf"}}
    attacked = rows("pgd", "attack", ["robust", "broken"])
    good = pd.concat([rows("crown", "certifier", ["certified", "abstained"]), attacked])
    bad = pd.concat([rows("crown", "certifier", ["certified", "certified"]), attacked])
    sev = {c["severity"] for c in run_checks(good, probe_info=info) if c["check"] == "certified_vs_attacks"}
    assert sev == {"ok"}
    sev = {c["severity"] for c in run_checks(bad, probe_info=info) if c["check"] == "certified_vs_attacks"}
    assert sev == {"warning"}
