"""Slices and accuracy disparity on hand-made outcomes with known numbers."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.outcomes import Outcomes
from robustlab.data.base import Dataset
from robustlab.evaluate.slices import (
    AttributeSlice,
    ClassSlice,
    FunctionSlice,
    attrs_frame,
    class_disparity,
    disparity_table,
    per_class_accuracy,
    slice_metrics,
)

# 10 examples: labels 0 x6 (majority), 1 x4 (minority); clean: class 0 5/6 right, class 1 2/4 right.
LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
CLEAN = np.array([1, 1, 1, 1, 1, 0, 1, 1, 0, 0], dtype=bool)
ADV = np.array([1, 1, 1, 0, 0, 0, 1, 0, 0, 0], dtype=bool)  # class 0: 3/6, class 1: 1/4
BG = np.array(["sky", "sky", "grass", "grass", "sky", "grass", "sky", "grass", "sky", "grass"], dtype=object)
SIZE = np.linspace(0.1, 1.0, 10)


def _frame() -> pd.DataFrame:
    ids = np.arange(100, 110)
    clean = Outcomes({"example_id": ids, "probe": "clean", "kind": "clean", "setting": "",  # param: NaN
                      "label": LABELS, "correct": CLEAN, "clean_correct": CLEAN})
    adv = Outcomes({"example_id": ids, "probe": "pgd", "kind": "attack", "setting": "eps=0.1", "param": 0.1,
                    "label": LABELS, "correct": ADV, "clean_correct": CLEAN})
    return Outcomes.concat([clean, adv]).to_frame()


def _attrs() -> pd.DataFrame:
    return pd.DataFrame({"example_id": np.arange(100, 110), "background_name": BG, "size": SIZE})


def _acc(table, probe, sl, col="accuracy"):
    row = table[(table["probe"] == probe) & (table["slice"] == sl)]
    assert len(row) == 1
    return float(row[col].iloc[0])


def test_class_and_attribute_slices_give_the_hand_counted_accuracies():
    slices = [ClassSlice(0), ClassSlice(1), AttributeSlice("background_name", "sky"),
              AttributeSlice("size", predicate=lambda s: s > 0.5, name="big"),
              FunctionSlice("even_id", lambda f: f["example_id"] % 2 == 0)]
    t = slice_metrics(_frame(), slices, attrs_frame=_attrs())
    assert len(t) == 2 * 5
    assert _acc(t, "clean", "class=0") == pytest.approx(5 / 6)
    assert _acc(t, "clean", "class=1") == pytest.approx(2 / 4)
    assert _acc(t, "pgd", "class=0") == pytest.approx(3 / 6)
    assert _acc(t, "pgd", "class=1", "clean_accuracy") == pytest.approx(2 / 4)
    assert _acc(t, "pgd", "class=1", "accuracy_drop") == pytest.approx(2 / 4 - 1 / 4)
    # sky: ids 0,1,4,6,8 -> clean 1,1,1,1,0 = 4/5; adv 1,1,0,1,0 = 3/5
    assert _acc(t, "clean", "background_name=sky") == pytest.approx(4 / 5)
    assert _acc(t, "pgd", "background_name=sky") == pytest.approx(3 / 5)
    # size > 0.5: positions 5..9 -> adv 0,1,0,0,0 = 1/5, n = 5
    assert _acc(t, "pgd", "big") == pytest.approx(1 / 5) and _acc(t, "pgd", "big", "n") == 5
    # even example ids (100, 102, ...): positions 0,2,4,6,8 -> clean 1,1,1,1,0
    assert _acc(t, "clean", "even_id") == pytest.approx(4 / 5)


def test_an_empty_slice_is_reported_with_n_zero_and_list_values_match_any():
    t = slice_metrics(_frame(), [ClassSlice(7), AttributeSlice("background_name", ["sky", "grass"])],
                      attrs_frame=_attrs())
    assert (t[t["slice"] == "class=7"]["n"] == 0).all() and t[t["slice"] == "class=7"]["accuracy"].isna().all()
    assert _acc(t, "clean", "background_name=['sky', 'grass']") == pytest.approx(7 / 10)


def test_slice_errors_say_what_to_do():
    with pytest.raises(ConfigError, match="no attribute"):
        slice_metrics(_frame(), [AttributeSlice("colour", "red")])
    with pytest.raises(ConfigError, match="exactly one"):
        AttributeSlice("size")
    with pytest.raises(ConfigError, match="repeat"):
        slice_metrics(_frame(), [ClassSlice(0), ClassSlice(0)])
    with pytest.raises(DataError, match="repeats"):
        slice_metrics(_frame(), [ClassSlice(0)], attrs_frame=pd.concat([_attrs(), _attrs()]))
    with pytest.raises(ConfigError, match="shape"):
        slice_metrics(_frame(), [FunctionSlice("bad", lambda f: np.ones(3, dtype=bool))])


def test_attrs_frame_takes_one_dimensional_attributes_of_a_dataset():
    ds = Dataset(x=torch.zeros(3, 1, 2, 2), y=torch.tensor([0, 1, 0]), ids=torch.tensor([7, 8, 9]),
                 attrs={"size": torch.tensor([0.1, 0.2, 0.3]), "background_name": ["a", "b", "a"],
                        "bbox": torch.zeros(3, 4)})
    a = attrs_frame(ds)
    assert list(a.columns) == ["example_id", "size", "background_name"]
    assert a["example_id"].tolist() == [7, 8, 9] and a["background_name"].tolist() == ["a", "b", "a"]


def test_per_class_accuracy_and_disparity_table_match_the_closed_form():
    pcs = per_class_accuracy(_frame())
    pgd = pcs[pcs["probe"] == "pgd"].set_index("label")["accuracy"]
    assert pgd.to_dict() == pytest.approx({0: 0.5, 1: 0.25})
    d = disparity_table(_frame()).set_index("probe")
    # majority = class 0 (6 examples), minority = class 1 (4)
    assert d.loc["clean", "accuracy_disparity"] == pytest.approx(5 / 6 - 1 / 2)
    assert d.loc["clean", "error_ratio"] == pytest.approx((1 / 2) / (1 / 6))
    assert d.loc["pgd", "accuracy_disparity"] == pytest.approx(0.25)
    assert d.loc["pgd", "std"] == pytest.approx(0.125) and d.loc["pgd", "worst_class"] == 1
    assert d.loc["pgd", "worst_class_accuracy"] == pytest.approx(0.25)
    swapped = disparity_table(_frame(), majority=1, minority=0).set_index("probe")
    assert swapped.loc["pgd", "accuracy_disparity"] == pytest.approx(-0.25)


def test_class_disparity_on_hand_made_accuracies():
    acc = {0: 0.9, 1: 0.6, 2: 0.75}
    d = class_disparity(acc, counts={0: 100, 1: 10, 2: 50})
    assert d["max_minus_min"] == pytest.approx(0.3)
    assert d["std"] == pytest.approx(np.std([0.9, 0.6, 0.75]))
    assert d["worst_class_accuracy"] == pytest.approx(0.6) and d["worst_class"] == 1
    assert d["accuracy_disparity"] == pytest.approx(0.3)
    assert d["error_ratio"] == pytest.approx(0.4 / 0.1)
    tied = class_disparity({0: 0.9, 1: 0.8}, counts={0: 5, 1: 5})
    assert math.isnan(tied["accuracy_disparity"]) and math.isnan(tied["error_ratio"])
    assert class_disparity({0: 1.0, 1: 0.5}, majority=0, minority=1)["error_ratio"] == math.inf
    with pytest.raises(ConfigError):
        class_disparity({0: 1.0}, majority=0, minority=3)
