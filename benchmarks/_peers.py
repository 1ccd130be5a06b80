"""Adapters that run peer libraries (torchattacks, ART) on a robustlab model, for benchmarks only.

The peers are never robustlab dependencies: each adapter imports its library lazily and the
benchmark reports "peer not installed" when the import fails. Every peer gets the *same* model
object (a :class:`ModelModule` around robustlab's :class:`~robustlab.core.model.TorchModel`, so the
normalization happens inside, on raw [0, 1] inputs), in eval mode, on the model's device.

Peers known to work here (see ``/work/shared/ENVIRONMENT.md``): ``pip install --no-deps
torchattacks==3.5.1`` (its torchvision requirement would pull a CUDA torch) and ``pip install
adversarial-robustness-toolbox torch==<the installed torch>``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.core.model import TorchModel

__all__ = ["ModelModule", "art_pgd", "peer_version", "time_members", "torchattacks_apgd",
           "torchattacks_autoattack", "torchattacks_budget", "torchattacks_pgd"]

#: import name of each peer -> the name shown in reports
PEERS = {"torchattacks": "torchattacks", "art": "adversarial-robustness-toolbox"}


def peer_version(name: str) -> str | None:
    """Installed version of peer ``name`` (``"torchattacks"`` / ``"art"``), or ``None`` if absent."""
    try:
        mod = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return None
    return str(getattr(mod, "__version__", "unknown"))


class ModelModule(nn.Module):
    """An ``nn.Module`` whose forward is robustlab's ``model(x)`` (normalization inside, raw inputs).

    The wrapped network is registered as a submodule so ``parameters()`` (which peers use to find
    the device) and ``eval()`` reach it.
    """

    def __init__(self, model: TorchModel):
        super().__init__()
        self.net = model.module
        self._model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._model(x)


def torchattacks_pgd(module: ModelModule, *, eps: float, alpha: float, steps: int,
                     random_start: bool = True) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """torchattacks' ``PGD`` (L∞, CE) as ``fn(x, y) -> x_adv``; draws from torch's global RNG."""
    import torchattacks

    atk = torchattacks.PGD(module, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    return atk


def torchattacks_apgd(module: ModelModule, *, eps: float, steps: int,
                      seed: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """torchattacks' ``APGD`` (L∞, CE, one restart) as ``fn(x, y) -> x_adv``."""
    import torchattacks

    return torchattacks.APGD(module, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, loss="ce")


def torchattacks_autoattack(module: ModelModule, *, eps: float, n_classes: int, seed: int,
                            square_queries: int | None = None, n_iter: int | None = None) -> Any:
    """torchattacks' ``AutoAttack(norm="Linf", version="standard")`` (10-step APGD / APGD-T / FAB-T,
    Square 5000 queries) as ``fn(x, y) -> x_adv``.

    ``square_queries`` / ``n_iter`` override its members' budgets (the benchmark's ``--quick``
    mode only, so both libraries run the same tiny budgets).
    """
    import torchattacks

    atk = torchattacks.AutoAttack(module, norm="Linf", eps=eps, version="standard", n_classes=n_classes,
                                  seed=seed)
    for member in atk._autoattack.attacks:
        if square_queries is not None and hasattr(member, "n_queries"):
            member.n_queries = square_queries
        if n_iter is not None and hasattr(member, "steps"):
            member.steps = n_iter
    return atk


def time_members(atk: Any) -> dict[str, float]:
    """Make torchattacks' AutoAttack ``atk`` record each member's wall seconds in the returned dict."""
    import time

    times: dict[str, float] = {}
    for member in atk._autoattack.attacks:
        name, forward = type(member).__name__, member.forward
        times[name] = 0.0

        def timed_forward(*args: Any, _forward=forward, _name=name, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _forward(*args, **kwargs)
            finally:
                times[_name] += time.perf_counter() - t0

        member.forward = timed_forward
    return times


def torchattacks_budget(atk: Any) -> dict[str, int]:
    """The budgets torchattacks' AutoAttack ``atk`` will actually run, member by member."""
    out = {}
    for member in atk._autoattack.attacks:
        key = type(member).__name__
        out[key] = int(getattr(member, "n_queries", getattr(member, "steps", 0)))
    return out


def art_pgd(module: ModelModule, *, eps: float, alpha: float, steps: int, n_classes: int,
            input_shape: tuple[int, ...], batch_size: int,
            device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """ART's ``ProjectedGradientDescentPyTorch`` (L∞, CE, one random init) as ``fn(x, y) -> x_adv``.

    ART works on numpy arrays; the conversion both ways is part of its cost. It draws its random
    start from numpy's global RNG.
    """
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=module, loss=nn.CrossEntropyLoss(), input_shape=input_shape,
                            nb_classes=n_classes, clip_values=(0.0, 1.0),
                            device_type="gpu" if device.type == "cuda" else "cpu")
    atk = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
                                          num_random_init=1, batch_size=batch_size, verbose=False)

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xn = x.detach().cpu().numpy().astype(np.float32)
        onehot = np.eye(n_classes, dtype=np.float32)[y.detach().cpu().numpy()]
        return torch.from_numpy(atk.generate(xn, y=onehot)).to(x.device)

    return run
