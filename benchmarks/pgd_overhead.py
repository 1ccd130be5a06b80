"""Micro benchmark: PGD-20's cost against its floor of 20 batched forward+backward passes.

Times one forward+backward of a small CNN on 500 random 1x8x8 inputs (the floor), then PGD-20
(L∞, eps=8/255, CE, random start) on the same batch, and prints
``ratio = pgd_time / (steps * floor)``. A ratio near 1 means the search adds little beyond the
model calls; below 1 means examples were broken early and stopped paying (survivors only).

Run: ``OMP_NUM_THREADS=1 python benchmarks/pgd_overhead.py [--device cuda] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import PGD
from robustlab.core.model import TorchModel
from robustlab.core.rng import torch_generator


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 10))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def floor_time(model: TorchModel, x: torch.Tensor, y: torch.Tensor) -> float:
    """One batched forward+backward w.r.t. the input (what one PGD step must at least pay)."""
    _sync(model.device)
    t0 = time.perf_counter()
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    xr = (x + 0.01 * g.sign()).clamp(0, 1)  # the cheapest possible update, for fairness
    _sync(model.device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = TorchModel(small_cnn(), num_classes=10, device=args.device)
    dev = model.device
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 1, 8, 8, generator=g).to(dev)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example starts correct: all are attacked
    attack = PGD(eps=8 / 255, steps=args.steps)
    for _ in range(2):  # warm-up
        floor_time(model, x, y)
        attack(model, x, y, generator=torch_generator(0))
    floors, pgd_times = [], []
    for r in range(args.repeats):  # interleaved, so load from other processes hits both alike
        floors += [floor_time(model, x, y) for _ in range(5)]
        _sync(dev)
        t0 = time.perf_counter()
        res = attack(model, x, y, generator=torch_generator(r))
        _sync(dev)
        pgd_times.append(time.perf_counter() - t0)
    queries = res.queries
    floor, pgd = statistics.median(floors), statistics.median(pgd_times)
    broken = float((res.extras["success"]).float().mean())
    print(f"device={dev} n={args.n} steps={args.steps} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"floor (1 fwd+bwd) = {floor * 1e3:.3f} ms   PGD-{args.steps} = {pgd * 1e3:.3f} ms")
    print(f"broken = {broken:.1%}   mean queries/example = {float(queries.float().mean()):.2f}")
    print(f"ratio = time / (steps x floor) = {pgd / (args.steps * floor):.3f}")


if __name__ == "__main__":
    main()
