"""Model-level masking checks: every masked wrapper is flagged, an honest model is not; more-effort check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from robustlab.attacks.pgd import PGD
from robustlab.core.errors import ConfigError
from robustlab.core.model import CallableModel
from robustlab.core.rng import torch_generator
from robustlab.defend.wrap import QuantizedInput, RandomizedInput, SaturatedLogits, SoftmaxOutput
from robustlab.evaluate.checks import SEVERITIES, run_checks
from robustlab.evaluate.masking import (
    check_probability_outputs,
    check_randomized,
    effort_pairs,
    more_effort_check,
    more_effort_probe,
    run_model_checks,
)
from tests.attacks.conftest import blobs, trained_mlp


def _by_name(checks):
    return {c["check"]: c for c in checks}


def _checks(model, n=200):
    x, y = blobs(n, seed=5)
    return run_model_checks(model, x, y, generator=torch_generator(0))


def test_an_honest_model_passes_every_check():
    checks = _checks(trained_mlp())
    assert {c["check"] for c in checks} == {"randomized_outputs", "probability_outputs", "input_gradients"}
    assert all(c["severity"] == "ok" for c in checks), checks
    assert all(set(c) == {"check", "severity", "probe", "message"} and c["probe"] is None for c in checks)


def test_a_randomized_model_is_flagged_with_eot_advice():
    c = _by_name(_checks(RandomizedInput(trained_mlp(), noise=0.1, generator=torch_generator(1))))
    assert c["randomized_outputs"]["severity"] == "warning"
    assert "EOT" in c["randomized_outputs"]["message"]
    assert c["probability_outputs"]["severity"] == "ok"


def test_softmax_outputs_are_flagged():
    c = _by_name(_checks(SoftmaxOutput(trained_mlp())))
    assert c["probability_outputs"]["severity"] == "warning"
    assert "logits" in c["probability_outputs"]["message"]
    assert c["randomized_outputs"]["severity"] == "ok"


def test_log_probabilities_are_not_mistaken_for_probabilities():
    m = trained_mlp()
    x, _ = blobs(30, seed=1)
    logp = CallableModel(lambda t: torch.log_softmax(m(t), dim=1), num_classes=3, has_gradients=True)
    assert check_probability_outputs(logp, x)["severity"] == "ok"


def test_saturated_logits_are_flagged_as_vanishing_gradients():
    c = _by_name(_checks(SaturatedLogits(trained_mlp(), scale=1000)))
    g = c["input_gradients"]
    assert g["severity"] == "warning" and "vanishing" in g["message"] and "margin" in g["message"]


def test_quantization_is_flagged_as_gradient_free_or_shattered():
    m = trained_mlp()
    honest = _by_name(_checks(QuantizedInput(m, levels=8)))
    assert honest["gradient_free"]["severity"] == "info"
    assert "bpda_pgd" in honest["gradient_free"]["message"]
    assert "input_gradients" not in honest
    naive = _by_name(_checks(QuantizedInput(m, levels=8, expose_gradients=True)))
    g = naive["input_gradients"]
    assert g["severity"] == "warning" and "shattered" in g["message"] and "BPDA" in g["message"]


def test_a_few_zero_gradients_give_an_info_not_a_warning():
    m = trained_mlp()
    x, y = blobs(64, seed=5)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:3] = True

    def fn(t):  # rows 0-2 are detached from the input: zero gradient there only
        out = m(t)
        return torch.where(dead[: len(t)].view(-1, 1), out.detach(), out)

    model = CallableModel(fn, num_classes=3, has_gradients=True, modality="tabular")
    c = _by_name(run_model_checks(model, x, y, generator=torch_generator(0)))
    assert c["input_gradients"]["severity"] == "info" and "3 of 64" in c["input_gradients"]["message"]


def test_checks_look_at_at_most_max_examples_and_handle_text_models():
    sizes = []

    def fn(texts):
        sizes.append(len(texts))
        return torch.tensor([[float(len(s)), 1.0] for s in texts])

    model = CallableModel(fn, num_classes=2, modality="text")
    texts = [f"review number {i}" for i in range(500)]
    c = _by_name(run_model_checks(model, texts, torch.zeros(500, dtype=torch.long), generator=torch_generator(0),
                                  max_examples=40))
    assert max(sizes) == 40
    assert c["randomized_outputs"]["severity"] == "ok" and c["gradient_free"]["severity"] == "info"


def test_a_failing_model_gives_warnings_instead_of_crashing():
    def boom(t):
        raise RuntimeError("shape mismatch")

    checks = run_model_checks(CallableModel(boom, has_gradients=True), torch.rand(5, 3), torch.zeros(5).long(),
                              generator=torch_generator(0))
    assert len(checks) == 3 and all(c["severity"] == "warning" and "shape mismatch" in c["message"] for c in checks)


def test_check_randomized_counts_prediction_flips():
    x = torch.rand(10, 4)
    calls = iter(range(100))
    flaky = CallableModel(lambda t: torch.eye(2)[[next(calls) % 2] * len(t)], num_classes=2)
    c = check_randomized(flaky, x)
    assert c["severity"] == "warning" and "10 of 10 predictions change" in c["message"]


def test_more_effort_fires_on_a_non_converged_pair_and_stays_quiet_on_a_converged_one():
    bad = more_effort_check({"PGD-10": 0.52, "PGD-40": 0.41})
    assert len(bad) == 1 and bad[0]["severity"] == "warning" and "not converged" in bad[0]["message"]
    good = more_effort_check({"PGD-10": 0.405, "PGD-40": 0.40, "PGD-160": 0.40})
    assert [c["severity"] for c in good] == ["ok", "ok"]
    weak = np.array([1, 1, 1, 0, 1, 0, 1, 1], dtype=bool)
    strong = np.array([1, 0, 1, 0, 0, 0, 1, 1], dtype=bool)
    per = more_effort_check({"a": weak, "b": torch.as_tensor(strong)})
    assert per[0]["severity"] == "warning" and "2 examples robust to a are broken by b" in per[0]["message"]
    assert more_effort_check({"a": weak, "b": weak})[0]["severity"] == "ok"
    with pytest.raises(ConfigError):
        more_effort_check({"a": weak, "b": weak[:4]})
    one = np.ones(50, dtype=bool)
    one_less = one.copy()
    one_less[0] = False                                    # a single example of 50: not a warning
    assert more_effort_check({"a": one, "b": one_less})[0]["severity"] == "info"


def _frame(acc_by_probe_eps, n=100):
    rows = []
    for (probe, eps), acc in acc_by_probe_eps.items():
        k = round(acc * n)
        for i in range(n):
            rows.append({"example_id": i, "probe": probe, "kind": "attack", "param": eps, "correct": i < k})
    return pd.DataFrame(rows)


def test_more_effort_on_outcomes_compares_each_shared_eps():
    frame = _frame({("pgd10", 0.03): 0.60, ("pgd40", 0.03): 0.60, ("pgd10", 0.1): 0.30, ("pgd40", 0.1): 0.10})
    checks = more_effort_check(frame, pairs=[("pgd10", "pgd40")])
    assert [c["severity"] for c in checks] == ["ok", "warning"]
    assert "eps=0.1" in checks[1]["message"] and checks[1]["probe"] == "pgd40"
    assert more_effort_check(frame)[0]["severity"] == "info"               # no pair: says how to check


def test_effort_pairs_pairs_the_same_attack_at_increasing_effort():
    probes = {"p10": PGD(steps=10), "p40": PGD(steps=40), "p10x4": PGD(steps=10, restarts=8),
              "p40l2": PGD(norm=2, steps=40), "p10m": PGD(steps=10, loss="margin"),
              "p40m": PGD(steps=40, loss="margin")}
    assert sorted(effort_pairs(probes)) == [("p10", "p40"), ("p10m", "p40m"), ("p40", "p10x4")]


def test_more_effort_probe_runs_pgd_at_two_efforts():
    x, y = blobs(64, seed=5)
    checks = more_effort_probe(trained_mlp(), x, y, generator=torch_generator(0), eps=0.05)
    assert len(checks) == 1 and checks[0]["check"] == "more_effort" and "PGD-40" in checks[0]["message"]
    assert checks[0]["severity"] == "ok"                                    # converged at a small eps
    rushed = more_effort_probe(trained_mlp(), x, y, generator=torch_generator(0), eps=0.1, steps=1, factor=10)
    assert rushed[0]["severity"] == "warning" and "PGD-1 " in rushed[0]["message"]
    via_run = run_model_checks(trained_mlp(), x, y, generator=torch_generator(0), effort_eps=0.1,
                               attack_results={"x": 0.5, "y": 0.2})
    assert [c["check"] for c in via_run].count("more_effort") == 2


def test_model_checks_plug_into_run_checks_as_extra():
    checks = _checks(SoftmaxOutput(trained_mlp()))
    out = run_checks(pd.DataFrame(), extra=checks)
    assert all(c["severity"] in SEVERITIES for c in out)
    assert any(c["check"] == "probability_outputs" and c["severity"] == "warning" for c in out)
