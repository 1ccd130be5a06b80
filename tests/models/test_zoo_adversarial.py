"""The zoo's adversarially trained entries: config hook, robust-accuracy metadata, fine-tuning from a base."""

import json

import pytest
import torch

from robustlab.core.model import TorchModel
from robustlab.defend.train import robust_accuracy
from robustlab.models import zoo

ROBUST = ["digits-cnn-at", "digits-cnn-trades", "shapeworld-resnet-at"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path))
    return tmp_path


def _weights(model):
    return {k: v.clone() for k, v in model.module.state_dict().items()}


def test_robust_entries_are_listed_and_configured():
    for name in ROBUST:
        assert name in zoo.names()
        cfg = zoo.info(name)["train"]
        quick = zoo.info(name, quick=True)["train"]
        assert cfg["adversarial"]["norm"] == quick["adversarial"]["norm"] == "inf"
        assert cfg["adversarial"]["eps"] == quick["adversarial"]["eps"]
        assert 5 <= cfg["adversarial"]["steps"] <= 7
    assert zoo.info("digits-cnn-trades")["train"]["adversarial"]["method"] == "trades"
    assert zoo.info("shapeworld-resnet-at")["train"]["adversarial"]["eps"] == pytest.approx(8 / 255)


@pytest.mark.parametrize("name", ["digits-cnn-at", "digits-cnn-trades"])
def test_quick_digits_robust_models_train_cache_and_record_pgd_accuracy(cache, name, monkeypatch):
    model = zoo.load(name, quick=True, progress=False)
    assert isinstance(model, TorchModel) and model.num_classes == 10
    meta = json.loads((cache / "zoo" / f"{name}-quick" / "meta.json").read_text())
    rob = meta["robust_accuracy"]
    assert rob["attack"] == "pgd" and rob["steps"] == 20 and rob["eps"] == 0.1 and rob["n"] == 200
    assert 0 <= rob["value"] <= meta["test_accuracy"]
    assert len(meta["history"]["adv_acc"]) == 4 and meta["history"]["eps"][-1] == pytest.approx(0.1)
    assert meta["config"]["adversarial"]["method"] == ("trades" if "trades" in name else "pgd")
    assert zoo.info(name, quick=True)["robust_accuracy"] == rob and meta["init_from"] is None
    monkeypatch.setattr(zoo, "_train", lambda *a, **k: pytest.fail("a cached model was retrained"))
    again = zoo.load(name, quick=True, progress=False)
    w1, w2 = _weights(model), _weights(again)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_quick_shapeworld_at_fine_tunes_the_cached_base_model(cache):
    model = zoo.load("shapeworld-resnet-at", quick=True, progress=False)
    assert (cache / "zoo" / "shapeworld-resnet-quick" / "meta.json").exists()  # the base was trained first
    base = zoo.load("shapeworld-resnet", quick=True, progress=False)
    wb, wa = _weights(base), _weights(model)
    assert wb.keys() == wa.keys() and not all(torch.equal(wb[k], wa[k]) for k in wb)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, model.num_classes)
    rob = model.zoo_info["robust_accuracy"]
    assert rob["eps"] == pytest.approx(8 / 255) and rob["n"] == 256
    assert model.zoo_info["init_from"] == {"name": "shapeworld-resnet-quick",
                                           "weights_sha256": base.zoo_info["weights_sha256"]}


@pytest.mark.slow
@pytest.mark.parametrize(("robust", "standard"), [("digits-cnn-at", "digits-cnn"),
                                                  ("digits-cnn-trades", "digits-cnn"),
                                                  ("shapeworld-resnet-at", "shapeworld-resnet")])
def test_full_robust_models_beat_their_standard_counterparts(robust, standard):
    """Full models (session cache, or ROBUSTLAB_TEST_CACHE to reuse trained ones): clean target met and
    PGD-20 accuracy at the training eps well above the standard model's."""
    from robustlab.data import load_dataset

    model = zoo.load(robust, progress=False)
    info = model.zoo_info
    assert info["meets_target"], f"{robust}: {info['test_accuracy']:.4f} < {info['target_accuracy']}"
    test = load_dataset(info["dataset"], split="test", n=info["config"]["test_n"], seed=info["config"]["data_seed"])
    eps = info["config"]["adversarial"]["eps"]
    std_rob = robust_accuracy(zoo.load(standard, progress=False), test, eps=eps, steps=20)
    assert info["robust_accuracy"]["value"] > std_rob + 0.2
