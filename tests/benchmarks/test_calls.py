"""``benchmarks/_calls.py``: the model-call log and its replay."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from robustlab.attacks import APGDCE
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator
from tests.benchmarks.conftest import load_script


@pytest.fixture(scope="module")
def calls():
    return load_script("_calls.py")


def _model() -> TorchModel:
    torch.manual_seed(0)
    return TorchModel(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)), mean=0.5, std=0.25,
                      num_classes=4)


def test_logged_model_is_the_same_model_and_logs_batch_and_kind(calls):
    base = _model()
    logged = calls.LoggedModel(base)
    x = torch.rand(5, 1, 4, 4)
    assert torch.equal(logged(x), base(x)) and logged.module is base.module
    xr = x.clone().requires_grad_(True)
    logged(xr)
    with torch.no_grad():
        logged(xr)  # grad mode off: a forward-only call even though the input requires grad
    assert logged.calls == [(5, False), (5, True), (5, False)]
    assert logged.counts() == Counter({(5, False): 2, (5, True): 1})


def test_an_attack_on_the_logged_model_logs_its_queries(calls):
    logged = calls.LoggedModel(_model())
    x, y = torch.rand(6, 1, 4, 4), torch.randint(0, 4, (6,))
    APGDCE(eps=0.1, n_iter=5)(logged, x, y, generator=torch_generator(0))
    kinds = logged.counts()
    assert sum(n for (_, grad), n in kinds.items() if grad) >= 1  # gradient queries were logged as such
    assert all(0 < b <= 6 for b, _ in kinds)


def test_replay_sums_count_times_time_per_kind(calls):
    model = _model()
    x, y = torch.rand(4, 1, 4, 4), torch.randint(0, 4, (4,))
    rep = calls.replay_seconds(model, Counter({(3, True): 2, (7, False): 5}), x, y, reps=2)  # 7 > 4 rows: wraps
    assert rep["calls"] == 7
    assert rep["gradient_seconds"] > 0 and rep["forward_seconds"] > 0
    assert rep["seconds"] == pytest.approx(rep["gradient_seconds"] + rep["forward_seconds"])
    assert calls.replay_seconds(model, Counter(), x, y)["seconds"] == 0.0


def test_query_timer_counts_the_searches_queries_and_restores_the_method(calls):
    from robustlab.attacks.goals import Goal

    before = Goal.query
    model = _model()
    x, y = torch.rand(6, 1, 4, 4), torch.randint(0, 4, (6,))
    with calls.QueryTimer() as qt:
        res = APGDCE(eps=0.1, n_iter=5)(model, x, y, generator=torch_generator(0))
    assert Goal.query is before
    assert qt.calls >= 1 and qt.seconds > 0
    assert qt.calls <= int(res.queries.max())  # one timed call per query of the batched search
    with calls.QueryTimer() as idle:
        pass
    assert (idle.calls, idle.seconds) == (0, 0.0)
