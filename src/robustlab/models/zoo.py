"""The model zoo: reference models trained by robustlab itself, seeded and cached, rebuilt when missing.

``load("shapeworld-resnet")`` returns a ready :class:`~robustlab.core.model.Model` (normalization
inside, raw [0, 1] inputs). The first call trains it (seconds to a few minutes on 2 CPU cores) and
caches it under ``<cache>/zoo/<name>[-quick]/`` as ``model.pt`` (a torch ``state_dict``) or
``model.pkl`` (a pickled scikit-learn pipeline) plus ``meta.json`` (measured clean test accuracy, seed,
config, package versions, the weights' SHA-256). Both files are written atomically and ``meta.json``
last, so a killed training never leaves a cache that reads as finished; an unreadable or mismatched
cache is retrained with a :class:`ZooCacheWarning`. ``quick=True`` gives a tiny variant for tests.
Entries whose config has ``"adversarial"`` (``digits-cnn-at``, ``digits-cnn-trades``,
``shapeworld-resnet-at``) are trained by :func:`robustlab.defend.train.adversarial_train` and record
their PGD-20 test accuracy at the training eps in ``meta.json["robust_accuracy"]``; entries whose config has
``"certified"`` (``digits-mlp-ibp``, ``digits-cnn-crownibp``, ``shapeworld-cnn-ibp``) are trained by
:func:`robustlab.defend.train.certified_train` and record their IBP / CROWN certified test accuracy in
``meta.json["certified_accuracy"]``.

Example::

    from robustlab.models import zoo
    model = zoo.load("digits-cnn")        # trains once (~5 s), then loads from the cache
    model.zoo_info["test_accuracy"]       # measured clean accuracy on the test split
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import io
import json
import os
import pickle
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.model import Model, SklearnModel, TorchModel
from robustlab.core.outcomes import atomic_write_bytes
from robustlab.models.architectures import DigitsCNN, DigitsMLP, ShapeWorldResNet
from robustlab.models.entries import ENTRIES, ZooEntry

__all__ = ["FORMAT", "ZooCacheWarning", "cache_dir", "info", "load", "model_dir", "names"]

FORMAT = 1
"""Version of the cache layout; bump it to invalidate every cached model."""

ARCHITECTURES = {"DigitsMLP": DigitsMLP, "DigitsCNN": DigitsCNN, "ShapeWorldResNet": ShapeWorldResNet}


class ZooCacheWarning(UserWarning):
    """A cached zoo model was unreadable or stale and is being retrained."""


def cache_dir() -> Path:
    """robustlab's cache folder: ``$ROBUSTLAB_CACHE``, else ``$XDG_CACHE_HOME/robustlab``, else
    ``~/.cache/robustlab``."""
    env = os.environ.get("ROBUSTLAB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "robustlab"


def names() -> list[str]:
    """The zoo's model names."""
    return list(ENTRIES)


def _entry(name: str) -> ZooEntry:
    if name in ENTRIES:
        return ENTRIES[name]
    close = difflib.get_close_matches(str(name), list(ENTRIES), n=1, cutoff=0.4)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown zoo model {name!r}",
                      fix=f"{hint}pick one of: {', '.join(ENTRIES)}")


def _key(name: str, quick: bool) -> str:
    return f"{name}-quick" if quick else name


def model_dir(name: str, *, quick: bool = False) -> Path:
    """The cache folder of one zoo model: ``<cache>/zoo/<name>[-quick]``."""
    _entry(name)
    return cache_dir() / "zoo" / _key(name, quick)


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists), so configs compare equal."""
    return json.loads(json.dumps(obj))


def _versions() -> dict[str, str]:
    import sklearn

    from robustlab import __version__

    return {"robustlab": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "sklearn": sklearn.__version__, "python": platform.python_version()}


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (POSIX ``flock``), so parallel loads train only once."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock; atomic writes still keep the cache consistent
        yield
        return
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_meta(folder: Path) -> dict[str, Any] | None:
    path = folder / "meta.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _check_meta(meta: dict[str, Any], entry: ZooEntry, quick: bool) -> None:
    """Raise ``ValueError`` saying why ``meta`` does not describe the current zoo entry."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"cache format {meta.get('format')} != {FORMAT}")
    if meta.get("name") != entry.name or bool(meta.get("quick")) != quick:
        raise ValueError("meta.json belongs to another model")
    if meta.get("config") != _jsonable(entry.config(quick)):
        raise ValueError("the zoo's training config changed since it was cached")
    if entry.kind == "sklearn" and meta.get("versions", {}).get("sklearn") != _versions()["sklearn"]:
        raise ValueError(f"cached with scikit-learn {meta.get('versions', {}).get('sklearn')}, "
                         f"running {_versions()['sklearn']}")


def _build_torch(meta: dict[str, Any]) -> TorchModel:
    cfg = meta["config"]
    if cfg.get("prototype"):  # prototype networks take raw inputs: certificates are in raw units
        from robustlab.models.prototypes import build_prototype_model

        p = cfg["prototype"]
        module = build_prototype_model(p["model"], meta["in_shape"], meta["num_classes"],
                                       num_components=p.get("num_components", 20),
                                       concepts_per_class=p.get("concepts_per_class", 2))
        return TorchModel(module, num_classes=meta["num_classes"])
    cls = ARCHITECTURES[cfg["architecture"]]
    kwargs = dict(cfg.get("arch_kwargs", {}), num_classes=meta["num_classes"])
    if cls is ShapeWorldResNet:
        kwargs["in_channels"] = meta["in_shape"][0]
    else:
        kwargs["in_shape"] = meta["in_shape"]
    return TorchModel(cls(**kwargs), mean=meta["mean"], std=meta["std"], num_classes=meta["num_classes"])


def _load_cached(folder: Path, entry: ZooEntry, quick: bool) -> Model | None:
    """The cached model, or ``None`` if there is none; raises ``Exception`` if it is unusable."""
    meta = _read_meta(folder)
    if meta is None:
        return None
    _check_meta(meta, entry, quick)
    blob = (folder / meta["weights_file"]).read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256"):
        raise ValueError(f"{meta['weights_file']} does not match the SHA-256 in meta.json")
    if entry.kind == "sklearn":
        estimator = pickle.loads(blob)  # our own file, verified against meta.json's SHA-256 above
        model: Model = SklearnModel(estimator, modality=entry.modality, num_classes=meta["num_classes"])
    else:
        model = _build_torch(meta)
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        model.module.load_state_dict(state, strict=True)
        model.module.eval()
    model.zoo_info = meta  # type: ignore[attr-defined]
    return model


def _console_note(progress: bool, text: str) -> None:
    if progress:
        from rich.console import Console

        Console(stderr=True).print(text, highlight=False)


def _dataset(name: str, *, split: str, n: int | None, seed: int, **options: Any) -> Any:
    """One split of a named dataset (imported lazily: the data package is only needed to train)."""
    from robustlab.data import load_dataset

    return load_dataset(name, split=split, n=n, seed=seed, **options)


def _train(entry: ZooEntry, quick: bool, device: str, progress: bool) -> tuple[Model, dict[str, Any], bytes]:
    """Train ``entry`` from scratch; returns the model, its meta dict and the weights' bytes."""
    from robustlab.models.training import evaluate_accuracy, make_augment, train_classifier

    cfg = entry.config(quick)
    opts = dict(cfg.get("data_options", {}))
    start = time.perf_counter()
    train = _dataset(entry.dataset, split="train", n=cfg.get("train_n"), seed=cfg["data_seed"], **opts)
    test = _dataset(entry.dataset, split="test", n=cfg.get("test_n"), seed=cfg["data_seed"], **opts)
    data_seconds = time.perf_counter() - start
    meta: dict[str, Any] = {
        "format": FORMAT, "name": entry.name, "key": _key(entry.name, quick), "quick": quick,
        "kind": entry.kind, "architecture": cfg["architecture"], "description": entry.description,
        "dataset": entry.dataset, "seed": cfg["seed"], "config": _jsonable(cfg),
        "num_classes": train.num_classes, "class_names": list(train.class_names),
        "train_n": len(train), "test_n": len(test), "data_seconds": round(data_seconds, 3),
        "target_accuracy": None if quick else entry.target_accuracy, "device": str(device),
    }
    start, cpu_start = time.perf_counter(), time.process_time()
    if entry.kind == "sklearn":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        tfidf = dict(cfg["tfidf"], ngram_range=tuple(cfg["tfidf"]["ngram_range"]))
        pipe = Pipeline([("tfidf", TfidfVectorizer(**tfidf)),
                         ("lr", LogisticRegression(**cfg["logreg"], random_state=cfg["seed"]))])
        pipe.fit(list(train.x), train.y.numpy())
        model: Model = SklearnModel(pipe, modality=entry.modality, num_classes=train.num_classes)
        train_seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        acc = float((model.predict(list(test.x)) == test.y).float().mean())
        blob = pickle.dumps(pipe, protocol=pickle.HIGHEST_PROTOCOL)
        meta.update(in_shape=None, mean=None, std=None, history={})
    else:
        x = train.x
        dims = [0] + list(range(2, x.dim()))
        meta.update(in_shape=list(x.shape[1:]), mean=x.mean(dim=dims).tolist(),
                    std=x.std(dim=dims).clamp_min(1e-3).tolist())
        if cfg.get("prototype"):
            meta.update(mean=None, std=None)
        model = _build_torch(meta | {"config": _jsonable(cfg)})
        if cfg.get("prototype"):
            from robustlab.models.prototypes import train_prototype_model

            module, history = train_prototype_model(train.x, train.y, num_classes=train.num_classes,
                                                    seed=cfg["seed"], **cfg["prototype"])
            model = TorchModel(module.to(device), num_classes=train.num_classes)
        elif cfg.get("adversarial"):
            history = _adversarial_fit(model, train, cfg, quick, device, progress)
        elif cfg.get("certified"):
            history = _certified_fit(model, train, cfg, device, progress)
        else:
            history = train_classifier(
                model, train, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                weight_decay=cfg["weight_decay"], seed=cfg["seed"], device=device, progress=progress,
                augment=make_augment(cfg.get("augment")), optimizer=cfg["optimizer"],
                schedule=cfg["schedule"], label_smoothing=cfg.get("label_smoothing", 0.0),
                description=f"zoo: training {_key(entry.name, quick)}")
        train_seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        acc = evaluate_accuracy(model, test, device=device)
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.module.state_dict().items()}, buf)
        blob = buf.getvalue()
        meta["history"] = {k: history[k] for k in ("loss", "acc", "clean_acc", "adv_acc", "cert_acc", "eps", "epochs",
                                                   "steps") if k in history}
        if cfg.get("adversarial"):
            meta["robust_accuracy"] = _robust_test_accuracy(model, test, cfg["adversarial"])
            meta["init_from"] = history["init_from"]  # the fine-tuned base model, or None
        if cfg.get("certified"):
            meta["certified_accuracy"] = _certified_test_accuracy(model, test, cfg["certified"])
        if cfg.get("prototype"):
            from robustlab.certify.prototypes import certified_radius

            radius = certified_radius(model, test.x.to(device), test.y.to(device), norm="2").cpu()
            meta["certified_accuracy"] = {f"l2={e:g}": round(float((radius > e).float().mean()), 6)
                                          for e in (0.25, 0.5, 1.0)}
    meta.update(test_accuracy=round(acc, 6), train_seconds=round(train_seconds, 3),
                train_cpu_seconds=round(cpu_seconds, 3),
                meets_target=None if quick else bool(acc >= entry.target_accuracy),
                weights_file="model.pkl" if entry.kind == "sklearn" else "model.pt",
                weights_sha256=hashlib.sha256(blob).hexdigest(), versions=_versions(),
                threads=torch.get_num_threads(), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return model, meta, blob


def _adversarial_fit(model: TorchModel, train: Any, cfg: dict[str, Any], quick: bool, device: str,
                     progress: bool) -> dict[str, Any]:
    """Adversarial training for entries whose config has ``"adversarial": {"method", "norm", "eps", ...}``
    (the keyword arguments of :func:`robustlab.defend.train.adversarial_train`), from scratch, or
    fine-tuning the zoo model named by ``"init_from"`` (its variant of the same ``quick``-ness)."""
    from robustlab.defend.train import adversarial_train
    from robustlab.models.training import make_augment

    adv = dict(cfg["adversarial"])
    base = adv.pop("init_from", None)
    origin = None
    if base is not None:
        start = load(base, device=device, quick=quick, progress=progress)
        model.module.load_state_dict(start.module.state_dict())
        origin = {"name": _key(base, quick), "weights_sha256": start.zoo_info["weights_sha256"]}
    history = adversarial_train(
        model, train, **adv, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
        weight_decay=cfg["weight_decay"], seed=cfg["seed"], device=device, progress=progress,
        augment=make_augment(cfg.get("augment")), optimizer=cfg["optimizer"], schedule=cfg["schedule"],
        init=base is None)
    return history | {"init_from": origin}


def _robust_test_accuracy(model: TorchModel, test: Any, adv: dict[str, Any]) -> dict[str, Any]:
    """PGD-20 accuracy on the test split at the training norm and eps (recorded in ``meta.json``)."""
    from robustlab.defend.train import robust_accuracy

    norm, eps = adv.get("norm", "inf"), float(adv["eps"])
    value = robust_accuracy(model, test, norm=norm, eps=eps, steps=20, seed=0)
    return {"attack": "pgd", "steps": 20, "norm": str(norm), "eps": eps, "n": len(test), "value": round(value, 6)}


def _certified_fit(model: TorchModel, train: Any, cfg: dict[str, Any], device: str, progress: bool) -> dict[str, Any]:
    """Certified training (IBP / CROWN-IBP) for entries whose config has ``"certified": {"method", "eps",
    "train_eps", ...}`` (``eps``: the certified radius recorded in ``meta.json``; ``train_eps``, default ``eps``:
    the training radius; ``crown_n``: not a training setting; the rest: :class:`CertifiedTraining` fields)."""
    from robustlab.defend.train import certified_train
    from robustlab.models.training import make_augment

    cert = {k: v for k, v in cfg["certified"].items() if k not in ("eps", "train_eps", "crown_n")}
    eps = float(cfg["certified"].get("train_eps", cfg["certified"]["eps"]))
    return certified_train(model, train, eps=eps, **cert, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                           lr=cfg["lr"], weight_decay=cfg["weight_decay"], seed=cfg["seed"], device=device,
                           progress=progress, augment=make_augment(cfg.get("augment")), optimizer=cfg["optimizer"],
                           schedule=cfg["schedule"])


def _certified_test_accuracy(model: TorchModel, test: Any, cert: dict[str, Any]) -> dict[str, Any]:
    """Certified test accuracy at the entry's L∞ ``eps`` (recorded in ``meta.json``): IBP on the whole split;
    CROWN-IBP (CROWN with IBP pre-activation bounds) for CROWN-IBP entries; full CROWN on the first ``crown_n``
    test examples (default all; 0 skips it)."""
    from robustlab.defend.train import certified_accuracy

    eps = float(cert["eps"])
    out: dict[str, Any] = {"method": cert["method"], "norm": "inf", "eps": eps,
                           "train_eps": float(cert.get("train_eps", eps)), "n": len(test),
                           "ibp": round(certified_accuracy(model, test, eps=eps, method="ibp"), 6)}
    if cert["method"] == "crown-ibp":
        out["crown_ibp"] = round(certified_accuracy(model, test, eps=eps, method="crown", intermediate="ibp"), 6)
    crown_n = min(int(cert.get("crown_n", len(test))), len(test))
    if crown_n > 0:
        out["crown"] = round(certified_accuracy(model, test.x[:crown_n], test.y[:crown_n], eps=eps, method="crown"), 6)
        out["crown_n"] = crown_n
    return out


def load(name: str, *, device: str = "cpu", quick: bool = False, progress: bool = True,
         retrain: bool = False) -> Model:
    """A zoo model, loaded from the cache or trained (and cached) on first use.

    Args:
        name: one of :func:`names` (``"digits-mlp"``, ``"digits-cnn"``, ``"shapeworld-resnet"``,
            ``"text-tfidf-lr"``, and the adversarially trained ``"digits-cnn-at"``,
            ``"digits-cnn-trades"``, ``"shapeworld-resnet-at"``; the certifiably trained ``"digits-mlp-ibp"``,
            ``"digits-cnn-crownibp"``, ``"shapeworld-cnn-ibp"``).
        device: where the model runs (and trains, if it must).
        quick: a tiny variant for tests (seconds to train, lower accuracy), cached separately.
        progress: show a progress bar and a note on stderr while training.
        retrain: train again even if a valid cached copy exists.

    Returns:
        A :class:`TorchModel` (images, raw [0, 1] inputs, normalization inside) or a
        :class:`SklearnModel` (text, a list of strings), with ``.zoo_info`` = the cache's meta dict
        (``test_accuracy``, ``train_seconds``, ``seed``, ``config``, ``versions``, ...).
        A model below its accuracy target still loads; ``info(name)["meets_target"]`` says so.
    """
    entry = _entry(name)
    folder = model_dir(name, quick=quick)
    model, meta = cached_or_trained(folder, f"zoo model {_key(name, quick)!r}", retrain=retrain,
                                    progress=progress, load=lambda: _load_cached(folder, entry, quick),
                                    train=lambda: _train(entry, quick, device, progress),
                                    note=f"robustlab zoo: training [bold]{_key(name, quick)}[/]")
    if meta is not None:
        model.zoo_info = meta  # type: ignore[attr-defined]
        _console_note(progress, f"robustlab zoo: {meta['key']} test accuracy "
                                f"{100 * meta['test_accuracy']:.1f}% after {meta['train_seconds']:.0f} s")
    model.zoo_info["cache_path"] = str(folder / model.zoo_info["weights_file"])  # type: ignore[attr-defined]
    return model.to(device)


def cached_or_trained(folder: Path, what: str, *, load: Callable[[], Any],
                      train: Callable[[], tuple[Any, dict, bytes]], retrain: bool, progress: bool,
                      note: str) -> tuple[Any, dict[str, Any] | None]:
    """Under ``folder``'s lock: ``load()`` the cached object, or ``train()`` it and write its weights and
    ``meta.json`` atomically (meta last, so a half-written cache reads as unfinished). A cache that fails
    to load is warned about and rebuilt, never trusted.

    Returns:
        the object and, when it was trained now, its meta dict (``None`` when it came from the cache).
    """
    with _lock(folder):
        obj, why = None, "retrain requested"
        if not retrain:
            try:
                obj, why = load(), "first use"
            except Exception as exc:  # noqa: BLE001 - anything unreadable or stale is rebuilt, never trusted
                why = "the cached copy is unusable"
                warnings.warn(f"{what}: the cache at {folder} is unusable ({exc}); retraining it", ZooCacheWarning,
                              stacklevel=3)
        if obj is not None:
            return obj, None
        _console_note(progress, f"{note} ({why}); it will be cached in {folder}")
        obj, meta, blob = train()
        (folder / "meta.json").unlink(missing_ok=True)  # "unfinished" until the new meta lands
        atomic_write_bytes(folder / meta.get("weights_file", "model.pt"), blob)
        atomic_write_bytes(folder / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
        return obj, meta


def info(name: str, *, quick: bool = False) -> dict[str, Any]:
    """What the zoo knows about ``name``: architecture, dataset, training settings, accuracy target,
    cache path and, once trained, the measured clean test accuracy and training seconds (never trains).
    """
    entry = _entry(name)
    folder = model_dir(name, quick=quick)
    cfg = entry.config(quick)
    out: dict[str, Any] = {
        "name": name, "quick": quick, "description": entry.description, "architecture": cfg["architecture"],
        "dataset": entry.dataset, "modality": entry.modality, "train": copy.deepcopy(cfg),
        "target_accuracy": None if quick else entry.target_accuracy,
        "cache_path": str(folder / ("model.pkl" if entry.kind == "sklearn" else "model.pt")),
        "cached": False, "test_accuracy": None, "train_seconds": None, "meets_target": None,
        "robust_accuracy": None, "certified_accuracy": None,
    }
    try:
        meta = _read_meta(folder)
        if meta is not None:
            _check_meta(meta, entry, quick)
            out.update(cached=True, test_accuracy=meta["test_accuracy"], train_seconds=meta["train_seconds"],
                       meets_target=meta["meets_target"], test_n=meta["test_n"], train_n=meta["train_n"],
                       versions=meta["versions"], created=meta["created"],
                       robust_accuracy=meta.get("robust_accuracy"),
                       certified_accuracy=meta.get("certified_accuracy"))
    except Exception as exc:  # noqa: BLE001 - a broken cache is reported, not raised: load() will rebuild it
        out["cache_problem"] = str(exc)
    return out

