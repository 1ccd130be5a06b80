"""AutoAttack: the official versions' attacks and budgets, inside the threat, deterministic, not
weaker than any of its attacks alone, honest about skips and reduced budgets, runs in a suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab.attacks.apgd import APGD
from robustlab.attacks.autoattack import APGDEOT, AutoAttack
from robustlab.attacks.fab import FAB
from robustlab.attacks.square import Square
from robustlab.core import registry
from robustlab.core.errors import ConfigError
from robustlab.core.outcomes import Outcomes
from robustlab.core.rng import torch_generator
from robustlab.defend.wrap import RandomizedInput

from .conftest import blobs, trained_mlp
from .test_ensemble import data, six_class_mlp

EPS = 0.1


def quick(**kw) -> AutoAttack:
    return AutoAttack(eps=kw.pop("eps", EPS), budget="reduced", square_queries=100, **kw)


def _cfg(m):
    a = m.attack
    if isinstance(a, APGD):
        s = a.search
        targets = a.n_target_classes if a.loss == "dlr-targeted" else None
        return (type(a).__name__, a.loss, s.n_iter, s.n_restarts, targets)
    if isinstance(a, FAB):
        s = a.search
        return ("FAB", s.targeted, s.n_iter, s.n_restarts, s.n_target_classes if s.targeted else None)
    assert isinstance(a, Square)
    return ("Square", a.search.n_queries, a.search.p_init, a.search.restarts)


def test_versions_match_the_official_code():
    std = AutoAttack(eps=8 / 255)
    assert std.names == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert [_cfg(m) for m in std.members] == [
        ("APGDCE", "ce", 100, 1, None), ("APGDT", "dlr-targeted", 100, 1, 9),
        ("FAB", True, 100, 1, 9), ("Square", 5000, 0.8, 1)]
    plus = AutoAttack(eps=8 / 255, version="plus")
    assert plus.names == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert [_cfg(m) for m in plus.members] == [
        ("APGDCE", "ce", 100, 5, None), ("APGDDLR", "dlr", 100, 5, None), ("FAB", False, 100, 5, None),
        ("Square", 5000, 0.8, 1), ("APGDT", "dlr-targeted", 100, 1, 9), ("FAB", True, 100, 1, 9)]
    rand = AutoAttack(norm=2, eps=0.5, version="rand")
    assert rand.names == ["apgd-ce", "apgd-dlr"]
    assert all(isinstance(m.attack, APGDEOT) and m.attack.eot_samples == 20 and m.attack.n_iter == 100
               and m.attack.n_restarts == 1 for m in rand.members)
    assert [m.attack.loss for m in rand.members] == ["ce", "dlr"]
    assert all(m.attack.threat == rand.threat and rand.threat.norm == "2" for m in rand.members)
    assert not any(n.startswith("NOT") for n in std.notes + plus.notes + rand.notes)
    assert AutoAttack().threat.eps == pytest.approx(8 / 255)


def test_reduced_budgets_are_flagged_and_bad_arguments_rejected():
    red = AutoAttack(budget="reduced")
    assert [m.attack.search.n_iter for m in red.members[:3]] == [10, 10, 10]
    assert red.members[3].attack.n_queries == 5000
    assert any(n.startswith("NOT the paper's budget: 10 iterations") for n in red.notes)
    over = AutoAttack(n_iter=20, square_queries=300)
    assert over.members[0].attack.n_iter == 20 and over.members[3].attack.n_queries == 300
    assert sum(n.startswith("NOT") for n in over.notes) == 2
    assert "budget='full'" in repr(AutoAttack()) and "n_iter=100" in repr(AutoAttack())
    for bad in ({"version": "fast"}, {"budget": "tiny"}, {"norm": 1}, {"n_iter": 0}, {"square_queries": 1.5}):
        with pytest.raises(ConfigError):
            AutoAttack(**bad)


def test_standard_stays_inside_the_threat_and_is_deterministic():
    model, (x, y) = six_class_mlp(), data()
    for norm, eps in (("inf", EPS), ("2", 0.4)):
        aa = quick(norm=norm, eps=eps)
        r1 = aa(model, x, y, generator=torch_generator(0))
        r2 = aa(model, x, y, generator=torch_generator(0))
        assert bool(aa.threat.contains(x, r1.x_adv).all())
        assert r1.x_adv.min() >= 0 and r1.x_adv.max() <= 1
        assert torch.equal(r1.x_adv, r2.x_adv) and torch.equal(r1.queries, r2.queries)
        assert r1.extras["broken_by"] == r2.extras["broken_by"]
        assert bool((r1.queries > 0).all())
        per = r1.extras["per_attack"]
        assert list(per) == ["apgd-ce", "apgd-t", "fab-t", "square"]
        assert per["apgd-ce"]["attacked"] == len(y)
        for a, b in zip(aa.names, aa.names[1:]):  # each attack runs on the survivors of the previous
            assert per[b]["attacked"] == per[a]["attacked"] - per[a]["broken"]
        broken = [b != "" for b in r1.extras["broken_by"]]
        assert broken == (model.predict(r1.x_adv) != y).tolist()


def test_autoattack_is_not_weaker_than_any_of_its_attacks():
    model, (x, y) = six_class_mlp(), data()
    aa = quick()
    res = aa(model, x, y, generator=torch_generator(0))
    acc_aa = float((model.predict(res.x_adv) == y).float().mean())
    alone = {}
    for m in aa.members:
        r = m.attack(model, x, y, generator=torch_generator(0))
        assert bool(aa.threat.contains(x, r.x_adv).all())
        alone[m.name] = float((model.predict(r.x_adv) == y).float().mean())
    assert all(acc_aa <= a for a in alone.values()), (acc_aa, alone)
    assert acc_aa < alone["apgd-ce"] and acc_aa < 1.0  # the later attacks add something here
    assert res.extras["robust_accuracy"]["square"] == pytest.approx(acc_aa)


def test_cost_report_against_the_floor():
    model, (x, y) = six_class_mlp(), data()
    aa = quick()
    res = aa(model, x, y, generator=torch_generator(0))
    cost = res.extras["cost"]
    assert cost == aa.cost_report()
    its = {n: r["iterations"] for n, r in cost["attacks"].items()}
    assert its == {"apgd-ce": 10, "apgd-t": 10 * 5, "fab-t": 10 * 5, "square": 100}
    assert cost["floor_work"] == sum(r["iterations"] * r["attacked"] for r in cost["attacks"].values())
    assert cost["queries"] == int(res.queries.sum()) and 0 < cost["queries_per_floor"]


def test_three_classes_skip_apgd_t_but_not_silently():
    model = trained_mlp()  # 3 classes: no targeted DLR, FAB-T has 2 targets
    x, y = blobs(30, seed=6)
    aa = quick(eps=0.05)
    res = aa(model, x, y, generator=torch_generator(0))
    assert "needs >= 4 classes" in res.extras["skipped"]["apgd-t"]
    assert set(res.extras["skipped"]) == {"apgd-t"}
    per = res.extras["per_attack"]
    assert per["apgd-t"]["attacked"] == 0
    assert per["fab-t"]["iterations"] == 10 * 2
    assert per["fab-t"]["attacked"] == per["apgd-ce"]["attacked"] - per["apgd-ce"]["broken"] > 0
    assert any("skipped" in n for n in aa.notes)


def test_rand_version_uses_eot_on_a_randomized_model():
    m, (x, y) = trained_mlp(), blobs(24, seed=5)
    model = RandomizedInput(m, noise=0.1, generator=torch_generator(1))
    eot = APGDEOT(eps=EPS, n_iter=5, eot_samples=3)
    r = eot(model, x, y, generator=torch_generator(0))
    assert bool((r.queries % 3 == 0).all()) and bool((r.queries > 0).all())
    aa = AutoAttack(eps=EPS, version="rand", n_iter=5, eot_samples=3)
    res = aa(model, x, y, generator=torch_generator(0))
    assert bool(aa.threat.contains(x, res.x_adv).all())
    assert res.extras["per_attack"]["apgd-ce"]["iterations"] == 5 * 3
    assert any(n.startswith("rand:") for n in aa.notes)


def test_registry_and_eps_sweep():
    aa = registry.create("autoattack", version="standard", budget="reduced", square_queries=50)
    other = aa.at(0.2)
    assert other.threat.eps == 0.2 and all(mm.attack.threat.eps == 0.2 for mm in other.members)
    assert isinstance(other, AutoAttack) and other.version == "standard"
    assert "autoattack" in registry.names("attack") and "ensemble" in registry.names("attack")


def test_runs_through_the_suite_runner(tmp_path):
    from robustlab.evaluate.runner import run_suite
    from robustlab.evaluate.suite import parse_suite

    suite = parse_suite({
        "name": "aa", "model": {"zoo": "digits-mlp", "quick": True},
        "data": {"name": "digits", "n": 40, "seed": 0},
        "probes": [{"name": "autoattack", "eps": [0.1], "version": "standard", "budget": "reduced",
                    "square_queries": 100}],
        "examples": 0,
    })
    result = run_suite(suite, out_dir=tmp_path / "r", progress=False)
    f = Outcomes.load(result.run_dir / "outcomes.parquet").to_frame()
    aa = f[f.probe == "autoattack"]
    assert len(aa) == 40
    attacked = aa[aa.status != "skipped"]
    assert len(attacked) > 0 and bool((attacked.queries > 0).all())
    assert bool((aa[aa.status == "skipped"].queries == 0).all())
    assert bool((attacked.distance <= 0.1 + 1e-6).all())
    assert np.isclose(result.summary["metrics"]["autoattack.robust_accuracy[eps=0.1]"],
                      float((aa.status == "robust").mean()))
