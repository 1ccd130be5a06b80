"""Paper 38 (effective-robustness): data sources, mixtures and the quick reproduction's contract."""

import math

import pytest
import torch

from robustlab.data import load_dataset
from robustlab.papers import catalog
from robustlab.papers.effective_robustness import FULL, SOURCES, make_sources, mixture, reproduce
from tests.papers.conftest import quick_contract

CLAIMS = ["fit-recovery", "distinct-lines", "no-single-source-dominates", "mixture-dilution", "quality-not-quantity"]


@pytest.fixture(scope="module")
def sources():
    return make_sources(load_dataset("digits", split="train"), FULL)


def test_sources_are_the_specs_corrupted_versions_of_one_training_set(sources):
    clean = sources["clean"]
    assert tuple(sources) == SOURCES
    for ds in sources.values():
        assert ds.x.shape == clean.x.shape and float(ds.x.min()) >= 0 and float(ds.x.max()) <= 1
    assert torch.equal(sources["label_noise"].x, clean.x)
    flipped = float((sources["label_noise"].y != clean.y).double().mean())
    assert 0.12 < flipped < 0.24  # 20 % redrawn uniformly over 10 classes -> ~18 % actually change
    assert torch.equal(sources["noise"].y, clean.y) and torch.equal(sources["blur"].y, clean.y)
    assert float((sources["noise"].x - clean.x).abs().mean()) > 0.15

    def roughness(x):
        return float((x[..., 1:] - x[..., :-1]).abs().mean())

    assert roughness(sources["blur"].x) < 0.8 * roughness(clean.x)
    again = make_sources(load_dataset("digits", split="train"), FULL)
    assert torch.equal(again["noise"].x, sources["noise"].x)


def test_mixture_takes_alpha_share_from_b_on_disjoint_images(sources):
    a, b = sources["clean"], sources["noise"]
    mix = mixture(a, b, 0.25, 400, seed=1)
    assert len(mix) == 400
    def in_set(row, xs):
        return bool((row == xs).flatten(1).all(1).any())

    from_b = [in_set(row, b.x) and not in_set(row, a.x) for row in mix.x]
    assert sum(from_b) == 100
    assert all(in_set(row, a.x) for row in mixture(a, b, 0.0, 50).x)
    assert not any(in_set(row, a.x) for row in mixture(a, b, 1.0, 50).x)


def test_quick_reproduction_returns_the_contract_with_measured_numbers():
    res = quick_contract("effective-robustness", reproduce, CLAIMS)
    by = {c.id: c for c in res.claims}
    assert by["fit-recovery"].held and by["fit-recovery"].measured["max_abs_error"] < 1e-6
    ci = by["distinct-lines"].measured["mean_er_ci"]
    assert set(ci) == set(SOURCES)
    assert all(math.isfinite(v) and lo <= m <= hi for m, lo, hi in ci.values() for v in (m, lo, hi))
    mix = by["mixture-dilution"].measured
    assert len(mix["mean_er"]) == len(mix["alpha"]) and all(math.isfinite(e) for e in mix["mean_er"])
    assert all(0 <= a <= 1 for a in mix["mean_id_acc"])
    assert set(by["no-single-source-dominates"].measured["best_source_per_shift"].values()) <= set(SOURCES)
    assert any("digits" in n for n in res.notes) and res.seconds > 0


@pytest.mark.slow
def test_full_reproduction_holds_the_specs_faithfulness_claims():
    res = catalog.run("effective-robustness", quick=False)
    assert res.error is None
    by = {c.id: c for c in res.claims}
    for cid in ("fit-recovery", "distinct-lines", "no-single-source-dominates", "mixture-dilution"):
        assert by[cid].held, (cid, by[cid].measured)
