"""The zoo: names, cache location, train-once-then-load, corrupt or stale caches, determinism, targets."""

import json
import os

import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.model import SklearnModel, TorchModel
from robustlab.models import zoo


def _has_dataset(name: str) -> bool:
    try:
        from robustlab.data import load_dataset

        load_dataset(name, split="test", n=4, seed=0)
        return True
    except Exception:  # noqa: BLE001 - any failure means 'not there yet'
        return False


def _sklearn_digits(name, *, split, n, seed, **options):
    """Stand-in for robustlab.data's digits while the data package lacks ``load_dataset``."""
    from sklearn.datasets import load_digits

    from robustlab.data.base import Dataset

    assert name == "digits"
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16
    y = torch.tensor(d.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    idx = order[:1437] if split == "train" else order[1437:]
    idx = idx if n is None else idx[:n]
    return Dataset(x[idx], y[idx], name="digits")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, private cache per test, and digits data whether or not the data package has landed."""
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path))
    if not _has_dataset("digits"):
        monkeypatch.setattr(zoo, "_dataset", _sklearn_digits)
    return tmp_path


@pytest.fixture
def count_training(monkeypatch):
    """Counts calls of the zoo's trainer (still training for real)."""
    calls = []
    real = zoo._train

    def counting(*args, **kwargs):
        calls.append(args[0].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(zoo, "_train", counting)
    return calls


def _weights(model):
    return {k: v.clone() for k, v in model.module.state_dict().items()}


def test_names_and_unknown_name():
    assert zoo.names() == ["digits-mlp", "digits-cnn", "shapeworld-resnet", "digits-cnn-at", "digits-cnn-trades",
                           "shapeworld-resnet-at", "digits-mlp-ibp", "digits-cnn-crownibp", "shapeworld-cnn-ibp",
                           "digits-cbc-rbf", "text-tfidf-lr"]
    with pytest.raises(ConfigError, match="digits-cnn") as err:
        zoo.load("digit-cnn")
    assert "did you mean" in str(err.value)
    with pytest.raises(ConfigError):
        zoo.info("resnet-50")


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "rc"))
    assert zoo.cache_dir() == tmp_path / "rc"
    assert zoo.model_dir("digits-cnn", quick=True) == tmp_path / "rc" / "zoo" / "digits-cnn-quick"
    monkeypatch.delenv("ROBUSTLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "xdg" / "robustlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "robustlab"


def test_quick_load_trains_caches_and_describes_itself(cache, count_training):
    assert zoo.info("digits-mlp", quick=True)["cached"] is False
    model = zoo.load("digits-mlp", quick=True, progress=False)
    assert isinstance(model, TorchModel) and model.num_classes == 10 and model.has_gradients
    folder = cache / "zoo" / "digits-mlp-quick"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["meta.json", "model.pt"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["quick"] is True and meta["seed"] == 0 and 0.5 < meta["test_accuracy"] <= 1
    assert meta["versions"]["torch"] == torch.__version__ and len(meta["weights_sha256"]) == 64
    assert model.zoo_info["test_accuracy"] == meta["test_accuracy"]
    assert model.zoo_info["cache_path"] == str(folder / "model.pt")
    out = model(torch.rand(5, 1, 8, 8))
    assert out.shape == (5, 10)
    info = zoo.info("digits-mlp", quick=True)
    assert info["cached"] and info["test_accuracy"] == meta["test_accuracy"]
    assert info["architecture"] == "DigitsMLP"
    assert info["train"]["epochs"] == 4 and info["cache_path"] == str(folder / "model.pt")
    assert count_training == ["digits-mlp"]
    assert not list((cache / "zoo").glob("**/.tmp-*"))


def test_cache_hit_loads_without_training(cache, count_training, monkeypatch):
    first = zoo.load("digits-cnn", quick=True, progress=False)
    monkeypatch.setattr(zoo, "_train", lambda *a, **k: pytest.fail("a cached model was retrained"))
    second = zoo.load("digits-cnn", quick=True, progress=False)
    w1, w2 = _weights(first), _weights(second)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(first(x), second(x))  # normalization restored from meta.json too
    assert count_training == ["digits-cnn"]


def test_quick_training_is_deterministic(cache, monkeypatch, tmp_path):
    a = zoo.load("digits-cnn", quick=True, progress=False)
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "other"))
    b = zoo.load("digits-cnn", quick=True, progress=False)
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.zoo_info["weights_sha256"] == b.zoo_info["weights_sha256"]


@pytest.mark.parametrize("damage", ["weights", "meta", "config", "sha"])
def test_corrupt_or_stale_cache_is_retrained_with_a_warning(cache, count_training, damage):
    zoo.load("digits-mlp", quick=True, progress=False)
    folder = cache / "zoo" / "digits-mlp-quick"
    if damage == "weights":
        (folder / "model.pt").write_bytes(b"not a torch file")
    elif damage == "meta":
        (folder / "meta.json").write_text("{ truncated")
    else:
        meta = json.loads((folder / "meta.json").read_text())
        if damage == "config":
            meta["config"]["epochs"] = 999
        else:
            meta["weights_sha256"] = "0" * 64
        (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(zoo.ZooCacheWarning, match="retraining"):
        model = zoo.load("digits-mlp", quick=True, progress=False)
    assert count_training == ["digits-mlp", "digits-mlp"]
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    zoo.load("digits-mlp", quick=True, progress=False)  # and the rebuilt cache is good again
    assert len(count_training) == 2


def test_weights_without_meta_count_as_unfinished(cache, count_training):
    folder = cache / "zoo" / "digits-mlp-quick"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"half-written by a killed run")
    zoo.load("digits-mlp", quick=True, progress=False)
    assert count_training == ["digits-mlp"]


def test_interrupted_training_leaves_no_finished_cache(cache, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    from robustlab.models import training

    monkeypatch.setattr(training, "train_classifier", interrupted)
    with pytest.raises(KeyboardInterrupt):
        zoo.load("digits-mlp", quick=True, progress=False)
    folder = cache / "zoo" / "digits-mlp-quick"
    assert not (folder / "meta.json").exists() and not (folder / "model.pt").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp")]
    monkeypatch.undo()
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(cache))
    if not _has_dataset("digits"):
        monkeypatch.setattr(zoo, "_dataset", _sklearn_digits)
    assert zoo.load("digits-mlp", quick=True, progress=False).zoo_info["test_accuracy"] > 0.5


def test_retrain_forces_training(cache, count_training, capsys):
    zoo.load("digits-mlp", quick=True, progress=False)
    assert capsys.readouterr().err == ""
    zoo.load("digits-mlp", quick=True, progress=True, retrain=True)
    assert count_training == ["digits-mlp", "digits-mlp"]
    err = capsys.readouterr().err
    assert "retrain requested" in err and "test accuracy" in err


def test_quick_and_full_are_cached_separately(cache):
    assert zoo.model_dir("digits-mlp") != zoo.model_dir("digits-mlp", quick=True)
    assert zoo.info("digits-mlp")["train"]["epochs"] > zoo.info("digits-mlp", quick=True)["train"]["epochs"]
    assert zoo.info("digits-mlp")["target_accuracy"] == 0.97


@pytest.mark.skipif(not _has_dataset("shapeworld"), reason="robustlab.data has no shapeworld loader yet")
def test_shapeworld_quick(cache):
    model = zoo.load("shapeworld-resnet", quick=True, progress=False)
    assert isinstance(model, TorchModel) and model.num_classes == model.zoo_info["num_classes"] >= 8
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, model.num_classes)
    assert model.zoo_info["in_shape"] == [3, 32, 32]


@pytest.mark.skipif(not _has_dataset("text-sentiment"), reason="robustlab.data has no text-sentiment yet")
def test_text_quick(cache):
    model = zoo.load("text-tfidf-lr", quick=True, progress=False)
    assert isinstance(model, SklearnModel) and model.modality == "text" and not model.has_gradients
    assert model(["a great film", "a dull and boring mess"]).shape == (2, 2)
    assert (cache / "zoo" / "text-tfidf-lr-quick" / "model.pkl").exists()
    again = zoo.load("text-tfidf-lr", quick=True, progress=False)
    assert torch.allclose(again(["fine"]), model(["fine"]))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "shapeworld-resnet", "text-tfidf-lr"])
def test_full_models_reach_their_targets(name):
    """Full models (uses the session cache, or ROBUSTLAB_TEST_CACHE to reuse trained ones)."""
    if not _has_dataset(zoo._entry(name).dataset):
        pytest.skip(f"dataset for {name} not available")
    model = zoo.load(name, progress=False)
    info = zoo.info(name)
    assert info["cached"] and info["test_accuracy"] == model.zoo_info["test_accuracy"]
    assert info["meets_target"], f"{name}: {info['test_accuracy']:.4f} < {info['target_accuracy']}"
    if name == "shapeworld-resnet":
        assert info["test_n"] == 2000
    assert os.path.exists(info["cache_path"])


def test_below_target_loads_and_info_says_so(cache, monkeypatch):
    import dataclasses

    from robustlab.models import entries

    base = entries.ENTRIES["digits-mlp"]
    tiny = dataclasses.replace(base, target_accuracy=0.999,
                               full=dict(base.full, epochs=1, train_n=64, test_n=100))
    monkeypatch.setitem(entries.ENTRIES, "digits-mlp", tiny)
    model = zoo.load("digits-mlp", progress=False)  # no error, just a weaker model
    info = zoo.info("digits-mlp")
    assert info["cached"] and info["meets_target"] is False and info["target_accuracy"] == 0.999
    assert model.zoo_info["test_accuracy"] == info["test_accuracy"] < 0.999
    assert model.zoo_info["train_n"] == 64 and model.zoo_info["test_n"] == 100
