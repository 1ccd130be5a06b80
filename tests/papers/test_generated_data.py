"""Paper 23 (generated-data): procedural shifts and the quick reproduction's contract."""

import math

import torch

from robustlab.core.rng import torch_generator
from robustlab.data import load_dataset
from robustlab.papers.generated_data import SHIFTS, grey_dilation, reproduce, rotate_images, shift_tests
from tests.papers.conftest import quick_contract

CLAIMS = ["er-implementation", "generated-is-harder", "real+gen-effective-robustness", "real+gen-accuracy",
          "er-grows-with-amount"]


def test_shift_sets_are_seeded_label_preserving_and_in_range():
    test = load_dataset("digits", split="test", n=60, seed=0)
    a, b = shift_tests(test, seed=0), shift_tests(test, seed=0)
    assert tuple(a) == SHIFTS
    for name, ds in a.items():
        assert ds.x.shape == test.x.shape and torch.equal(ds.y, test.y)
        assert float(ds.x.min()) >= 0 and float(ds.x.max()) <= 1
        assert torch.equal(ds.x, b[name].x) and not torch.equal(ds.x, test.x)
    assert not torch.equal(shift_tests(test, seed=1)["speckle"].x, a["speckle"].x)


def test_dilation_thickens_and_rotation_by_zero_is_identity():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 0.7
    d = grey_dilation(x)[0, 0]
    assert int((d > 0).sum()) == 5 and d[1, 2] == d[2, 1] == d[2, 2] == torch.tensor(0.7) and d[1, 1] == 0
    img = torch.rand(3, 1, 8, 8, generator=torch_generator(0))
    assert torch.allclose(rotate_images(img, 0.0, torch_generator(0)), img, atol=1e-5)
    r = rotate_images(img, 90.0, torch_generator(0))  # ±90° turns are exact pixel permutations
    assert all(torch.allclose(r[i], img[i].rot90(1, (1, 2)), atol=1e-5)
               or torch.allclose(r[i], img[i].rot90(-1, (1, 2)), atol=1e-5) for i in range(3))


def test_quick_reproduction_returns_the_contract_with_measured_numbers():
    res = quick_contract("generated-data", reproduce, CLAIMS)
    by = {c.id: c.measured for c in res.claims}
    assert by["er-implementation"]["on_line_er"] == 0.0
    assert all(math.isfinite(v) for v in by["er-implementation"]["mean_baseline_residual"].values())
    real, gen = by["generated-is-harder"]["real_test_acc"], by["generated-is-harder"]["generated_test_acc"]
    assert 0.5 < real <= 1 and 0 <= gen["pca-mixture"] <= 1
    er = by["real+gen-effective-robustness"]
    assert math.isfinite(er["er_real"]["mean_er"]) and math.isfinite(er["er_real+gen"]["mean_er"])
    assert set(er["er_real"]["er_per_shift"]) == set(SHIFTS)
    amount = by["er-grows-with-amount"]
    assert amount["ratio"] == [0.0, 1.0, 2.0] and all(math.isfinite(v) for v in amount["mean_er"])
    assert amount["mean_er"][0] == er["er_real"]["mean_er"]  # the same Real-only models
    assert res.notes and res.seconds > 0
