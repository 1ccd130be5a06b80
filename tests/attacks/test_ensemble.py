"""Ensemble: survivors only, first success kept, per-attack records, deterministic, resumable."""

from __future__ import annotations

import pytest
import torch

from robustlab.attacks.apgd import APGDCE, APGDT
from robustlab.attacks.ensemble import Ensemble, EnsembleState, Member, nominal_iterations
from robustlab.attacks.pgd import PGD
from robustlab.attacks.square import Square
from robustlab.core import registry
from robustlab.core.errors import ConfigError, ProbeError, RunError
from robustlab.core.model import TorchModel
from robustlab.core.probe import Attack, AttackResult
from robustlab.core.rng import torch_generator

from .conftest import blobs, trained_mlp

EPS = 0.1


def six_class_mlp() -> TorchModel:
    """The shared blob MLP on 6-class blobs, so APGD-T has 5 targets."""
    return trained_mlp(classes=6, steps=200)


def data(n: int = 40):
    return blobs(n, classes=6, seed=3)


class Recording(Attack):
    """Delegates to ``inner`` and records the inputs it was given and the queries it returned."""

    def __init__(self, inner: Attack, fail_first: bool = False, shift: float = 0.0):
        self.inner, self.threat, self.needs_gradients = inner, inner.threat, inner.needs_gradients
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.fail_first, self.shift = fail_first, shift

    def __call__(self, model, x, y, *, generator):
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("interrupted")
        res = self.inner(model, x, y, generator=generator)
        res = AttackResult(res.x_adv + self.shift, res.queries, res.extras)
        self.calls.append((x.clone(), res.queries.clone()))
        return res

    def nominal_iterations(self, n_classes):
        return nominal_iterations(self.inner, n_classes)


def members(fail_first: bool = False):
    return [Member("a", Recording(APGDCE(eps=EPS, n_iter=10))),
            Member("b", Recording(PGD(eps=EPS, steps=10))),
            Member("c", Recording(APGDT(eps=EPS, n_iter=10), fail_first=fail_first), min_classes=4),
            Member("d", Recording(Square(eps=EPS, n_queries=30)))]


def test_later_attacks_see_only_survivors_and_first_success_is_kept():
    model, (x, y) = six_class_mlp(), data()
    ms = members()
    ens = Ensemble(ms)
    st = ens.run(model, x, y, generator=torch_generator(0))
    robust = torch.ones(len(y), dtype=torch.bool)  # the model gets every example right
    assert bool((model.predict(x) == y).all())
    expected_q = torch.ones(len(y), dtype=torch.long)  # the clean check
    for k, m in enumerate(ms):
        calls = m.attack.calls
        if not bool(robust.any()):
            assert calls == []
            continue
        (xin, q), = calls
        assert torch.equal(xin, x[robust])                      # exactly the survivors
        assert st.stats[m.name].attacked == int(robust.sum())
        expected_q[robust] += q + 1
        newly = (st.broken_by == k)
        assert bool(robust[newly].all())                        # broken now => was still standing
        robust &= ~newly
    assert torch.equal(robust, st.robust)
    assert torch.equal(expected_q, st.queries)
    assert sum(s.broken for s in st.stats.values()) == int((~st.robust).sum()) > 0
    assert st.stats["a"].broken > 0 and st.stats["c"].broken > 0  # later attacks add to earlier ones
    assert bool((model.predict(st.x_adv[~st.robust]) != y[~st.robust]).all())
    assert torch.equal(st.x_adv[st.robust], x[st.robust])      # survivors keep the clean input
    names = st.broken_by_names()
    assert set(names) <= {"", "a", "b", "c", "d"} and names.count("") == int(st.robust.sum())
    assert list(st.robust_after) == ["clean", "a", "b", "c", "d"]
    assert list(st.robust_after.values()) == sorted(st.robust_after.values(), reverse=True)


@pytest.mark.parametrize("norm,eps", [("inf", EPS), ("2", 0.4)])
def test_outputs_inside_threat_and_box(norm, eps):
    model, (x, y) = six_class_mlp(), data()
    ens = Ensemble([APGDCE(norm, eps, n_iter=10), Square(norm, eps, n_queries=30)])
    res = ens(model, x, y, generator=torch_generator(1))
    assert bool(ens.threat.contains(x, res.x_adv).all())
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert len(res.extras["broken_by"]) == len(y) and res.extras["robust"].dtype == torch.bool


def test_member_leaving_the_threat_is_an_error():
    model, (x, y) = six_class_mlp(), data(8)
    with pytest.raises(ProbeError, match="outside"):
        Ensemble([Member("bad", Recording(APGDCE(eps=EPS, n_iter=2), shift=3 * EPS))]).run(
            model, x, y, generator=torch_generator(0))


def test_deterministic_given_the_seed():
    model, (x, y) = six_class_mlp(), data()
    r1 = Ensemble(members()).run(model, x, y, generator=torch_generator(3))
    r2 = Ensemble(members()).run(model, x, y, generator=torch_generator(3))
    assert torch.equal(r1.x_adv, r2.x_adv) and torch.equal(r1.broken_by, r2.broken_by)
    assert torch.equal(r1.queries, r2.queries) and r1.seed == r2.seed
    # a fixed seed makes the call's generator irrelevant
    f1 = Ensemble(members(), seed=5).run(model, x, y, generator=torch_generator(0))
    f2 = Ensemble(members(), seed=5).run(model, x, y, generator=torch_generator(1))
    assert f1.seed == f2.seed == 5 and torch.equal(f1.x_adv, f2.x_adv)


def test_resume_from_checkpoint_gives_the_same_result(tmp_path):
    model, (x, y) = six_class_mlp(), data()
    ref = Ensemble(members()).run(model, x, y, generator=torch_generator(0))
    ms = members(fail_first=True)
    ens = Ensemble(ms)
    ckpt = tmp_path / "state.pt"
    with pytest.raises(RuntimeError, match="interrupted"):
        ens.run(model, x, y, generator=torch_generator(0), checkpoint=ckpt)
    saved = ens.load_state(ckpt)
    assert saved.completed == ["a", "b"]
    calls_before = [len(m.attack.calls) for m in ms]
    st = ens.run(model, x, y, generator=torch_generator(123), state=saved)  # the saved seed wins
    assert [len(m.attack.calls) for m in ms][:2] == calls_before[:2]       # a and b are not run again
    (xin, _), = ms[2].attack.calls
    assert torch.equal(xin, x[saved.robust])                               # c sees the survivors only
    assert torch.equal(st.x_adv, ref.x_adv) and torch.equal(st.robust, ref.robust)
    assert torch.equal(st.broken_by, ref.broken_by) and torch.equal(st.queries, ref.queries)
    assert st.completed == ["a", "b", "c", "d"]


def test_resume_from_flags_never_attacks_broken_examples():
    model, (x, y) = six_class_mlp(), data()
    flags = torch.arange(len(y)) % 3 != 0
    ms = members()
    st = Ensemble(ms).run(model, x, y, generator=torch_generator(0), flags=flags)
    first_x, _ = ms[0].attack.calls[0]
    assert torch.equal(first_x, x[flags])
    for m in ms:
        for xin, _ in m.attack.calls:
            assert not any(bool((xin == x[i]).all(dim=1).any()) for i in (~flags).nonzero().squeeze(1))
    assert not bool((st.robust & ~flags).any())
    assert all(st.broken_by_names()[i] == "resumed" for i in (~flags).nonzero().squeeze(1).tolist())
    assert bool((st.queries[~flags] == 0).all()) and torch.equal(st.x_adv[~flags], x[~flags])


def test_save_and_load_state_round_trip_and_errors(tmp_path):
    model, (x, y) = six_class_mlp(), data(12)
    ens = Ensemble([APGDCE(eps=EPS, n_iter=5), Square(eps=EPS, n_queries=20)])
    with pytest.raises(RunError, match="no state"):
        ens.save_state(tmp_path / "s.pt")
    st = ens.run(model, x, y, generator=torch_generator(0))
    ens.save_state(tmp_path / "s.pt")
    back = Ensemble([APGDCE(eps=EPS, n_iter=5), Square(eps=EPS, n_queries=20)]).load_state(tmp_path / "s.pt")
    assert isinstance(back, EnsembleState)
    for k in ("robust", "x_adv", "broken_by", "queries"):
        assert torch.equal(getattr(back, k), getattr(st, k))
    assert back.stats == st.stats and back.completed == st.completed and back.seed == st.seed
    with pytest.raises(RunError, match="other inputs"):
        ens.run(model, x + 0.01, y, generator=torch_generator(0), state=back)
    with pytest.raises(RunError, match="same ensemble"):
        Ensemble([Square(eps=EPS, n_queries=20)]).load_state(tmp_path / "s.pt")
    with pytest.raises(RunError, match="no ensemble state"):
        ens.load_state(tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="not both"):
        ens.run(model, x, y, generator=torch_generator(0), flags=st.robust, state=back)
    with pytest.raises(ConfigError, match="bool tensor"):
        ens.run(model, x, y, generator=torch_generator(0), flags=torch.ones(3))


def test_cost_report_counts_floor_work():
    model, (x, y) = six_class_mlp(), data()
    ens = Ensemble(members())
    st = ens.run(model, x, y, generator=torch_generator(0))
    rep = ens.cost_report()
    iters = {"a": 10, "b": 10, "c": 10 * 5, "d": 30}  # APGD-T: min(9, C - 1) = 5 targets
    for name, it in iters.items():
        row = rep["attacks"][name]
        assert row["iterations"] == it and row["floor_work"] == it * row["attacked"]
    assert rep["floor_work"] == sum(it * st.stats[k].attacked for k, it in iters.items())
    assert rep["queries"] == int(st.queries.sum()) == len(y) + sum(s.queries for s in st.stats.values())
    assert nominal_iterations(APGDT(n_iter=7, n_target_classes=9), 3) == 14


def test_attack_needing_more_classes_is_skipped_and_recorded():
    model = trained_mlp()  # 3 classes
    x, y = blobs(20, seed=4)
    ens = Ensemble([Member("apgd-ce", APGDCE(eps=0.05, n_iter=5)),
                    Member("apgd-t", APGDT(eps=0.05, n_iter=5), min_classes=4)])
    res = ens(model, x, y, generator=torch_generator(0))
    assert "needs >= 4 classes" in res.extras["skipped"]["apgd-t"]
    assert res.extras["per_attack"]["apgd-t"]["attacked"] == 0


def test_construction_checks_and_eps_sweep():
    with pytest.raises(ConfigError, match="same norm and eps"):
        Ensemble([APGDCE(eps=0.1), Square(eps=0.2)])
    with pytest.raises(ConfigError, match="non-empty"):
        Ensemble([])
    ens = Ensemble([APGDCE(eps=0.1), APGDCE(eps=0.1, n_iter=5)])
    assert ens.names == ["apgdce", "apgdce-2"]
    other = ens.at(0.2)
    assert other.threat.eps == 0.2 and all(m.attack.threat.eps == 0.2 for m in other.members)
    assert ens.threat.eps == 0.1 and all(m.attack.threat.eps == 0.1 for m in ens.members)


def test_registry_specs_and_evaluate():
    ens = registry.create("ensemble", attacks=[{"name": "apgd_ce", "n_iter": 5},
                                               {"name": "square", "id": "sq", "n_queries": 20}])
    assert ens.names == ["apgd_ce", "sq"]
    model, (x, y) = six_class_mlp(), data(16)
    out = ens.evaluate(model, x, y, EPS, clean_pred=model.predict(x), generator=torch_generator(0))
    assert bool(out.attempted.all()) and bool((out.queries > 0).all())
    assert bool((out.distance <= EPS + 1e-6).all())
