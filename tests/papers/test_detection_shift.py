"""Paper 13 (detection-shift): augmentation pool and the quick reproduction's contract."""

import math

import pytest
import torch

from robustlab.papers import catalog
from robustlab.papers.base import Reproduction
from robustlab.papers.detection_shift import DOMAINS, FULL, diverse_augment, reproduce


def test_diverse_augment_is_seeded_and_keeps_shape_and_range():
    x = torch.rand(12, 3, 16, 16)
    a = diverse_augment(x, torch.Generator().manual_seed(0))
    b = diverse_augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and not torch.equal(a, x)


def test_full_setup_has_a_family_of_at_least_five_and_the_six_coco_o_domains():
    assert len(FULL.family) >= 5 and DOMAINS == ("sketch", "cartoon", "painting", "weather", "handmade", "tattoo")
    names = {s.name for s in FULL.family}
    assert set(FULL.backbone_series) <= names and set(FULL.head_series) <= names
    assert all(s.augment for s in FULL.robust) and not any(s.augment for s in FULL.family)


def test_quick_reproduction_contract():
    rep = reproduce(quick=True, progress=False)
    assert isinstance(rep, Reproduction) and rep.key == "detection-shift" and rep.error is None
    assert [c.id for c in rep.claims] == ["C1", "C2", "C3", "C4"]
    for c in rep.claims:
        assert isinstance(c.held, bool)
        for k, v in c.measured.items():
            if isinstance(v, float):
                assert math.isfinite(v), (c.id, k)
    c2 = rep.claims[1].measured
    assert abs(c2["residual_sum"]) < 1e-9 and c2["n_detectors"] == 5
    table = rep.claims[0].measured["detectors"]
    assert set(table["w8"]["domains"]) == set(DOMAINS)
    assert rep.notes
    assert catalog.status("detection-shift") == "implemented"


@pytest.mark.slow
def test_full_reproduction_holds_the_drop_line_and_effective_robustness_claims():
    rep = reproduce(quick=False, progress=False)
    held = {c.id: c.held for c in rep.claims}
    assert held["C1"] and held["C2"] and held["C3"], [(c.id, c.measured) for c in rep.claims if not c.held]
    assert 0.2 < rep.claims[1].measured["slope"] < 0.8  # COCO-O's line: slope ≈ 0.45, intercept ≈ 0
