"""Benchmark: throughput of every registered image corruption, against the ``imagecorruptions`` package.

On the first ``--n`` ShapeWorld 32×32 RGB test images (500 by default), with ``--threads`` torch
threads (2 by default, the issue's "2 cores"), it measures, per registered image corruption
(every transform whose class is an :class:`~robustlab.transforms.image.ImageCorruption`):

* ``cifar_seconds[c]``: robustlab, CIFAR-10-C table (the default, the one the built-in suites use
  on 32 px images), severity ``--severity`` (3), one batched call on all n images;
* ``total_seconds[c]``: the same table, severities 1..5 (five batched calls);
* ``seconds[c]``: robustlab with ``table="imagenet"`` (ImageNet-C parameters) at ``--severity``,
  the setting that matches the ``imagecorruptions`` package, which only has ImageNet-C parameters
  (made for 224 px images);
* ``imagecorruptions_seconds[c]``: ``imagecorruptions.corrupt(image, corruption_name=c,
  severity=s)`` looped over the n images (uint8 HWC numpy, its only input; the conversion from
  the float tensor is not timed), and ``speedup[c] = imagecorruptions_seconds[c] / seconds[c]``.
  A peer function that raises (several do on 32×32 images or with current numpy / scikit-image)
  is reported in ``imagecorruptions_error[c]`` with null times; one whose first ``--peer-probe``
  images extrapolate past ``--peer-budget`` seconds is timed on those images only and scaled
  (``imagecorruptions_extrapolated[c]`` true).

``suite_seconds`` is the sum of ``total_seconds`` (every corruption × 5 severities × n images,
CIFAR table), ``imagenet_suite_seconds`` the same with the ImageNet table. ``suite_speedup`` is the
whole comparable suite's ratio: the sum of ``imagecorruptions_seconds`` over the corruptions both
sides ran (frost excluded: not the same work) divided by the sum of robustlab's ``seconds`` over the
same ones (``suite_compared``). ``min_speedup`` / ``median_speedup`` are over the corruptions both
sides ran. Each time is the median of
``--repeats`` (3) runs after one warm-up call on all n images (the peer: on one image);
stochastic corruptions get a seeded ``torch.Generator`` (the peer draws from numpy's global RNG,
seeded with ``--seed``). On a shared machine single times vary by 2× or more. Targets
(≤ 60 s for the suite on 2 cores, ≥ 5× faster than imagecorruptions) are reported, never asserted.
Run::

    python benchmarks/corruptions.py --json > corruptions.json     # table on stderr, JSON on stdout
    python benchmarks/corruptions.py --n 8 --quick --repeats 1 --json   # seconds, for smoke tests
    python benchmarks/corruptions.py --only spatter,jpeg_compression    # a subset (suite totals then cover it only)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

import robustlab
from robustlab.core import registry
from robustlab.core.rng import torch_generator
from robustlab.data import load_dataset
from robustlab.transforms.image import ImageCorruption

__all__ = ["image_corruptions", "main", "parse_args", "peer_version", "run_benchmark", "targets"]

SEVERITIES = (1, 2, 3, 4, 5)


def image_corruptions() -> list[str]:
    """Names of every registered transform that is an image corruption (not the attribute edits)."""
    out = []
    for name in registry.names("transform"):
        cls = registry.get(name, "transform")
        if isinstance(cls, type) and issubclass(cls, ImageCorruption):
            out.append(name)
    return sorted(out)


def peer_version() -> str | None:
    """The installed ``imagecorruptions`` version, or None when it is missing."""
    if importlib.util.find_spec("imagecorruptions") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imagecorruptions")
    except PackageNotFoundError:
        return "unknown"


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _robustlab(name: str, table: str, x: torch.Tensor, severities: Sequence[int], seed: int,
               repeats: int) -> tuple[float | None, str | None]:
    """Seconds for ``name`` (given table) over ``severities`` on all of ``x``, or (None, error)."""
    try:
        t = registry.create(name, "transform", table=table)

        def run(xs: torch.Tensor = x) -> None:
            for s in severities:
                t(xs, severity=s, generator=torch_generator(seed))

        t(x, severity=severities[0], generator=torch_generator(seed))  # warm-up on the full batch
        return _median_time(run, repeats), None
    except Exception as e:  # noqa: BLE001 - reported per corruption
        return None, f"{type(e).__name__}: {e}"


def _import_peer() -> Callable[..., Any]:
    """``imagecorruptions.corrupt``; shims ``pkg_resources.resource_filename`` where setuptools ≥ 81 lacks it."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:  # imagecorruptions 1.1.2 imports it only to locate its frost photographs
        import os
        import types

        def resource_filename(package: str, resource: str) -> str:
            spec = importlib.util.find_spec(package)
            return os.path.join(os.path.dirname(spec.origin), resource)

        sys.modules["pkg_resources"] = types.SimpleNamespace(resource_filename=resource_filename)
    from imagecorruptions import corrupt

    return corrupt


def _peer(name: str, images: Any, severity: int, seed: int, repeats: int, budget: float,
          probe: int) -> tuple[float | None, str | None, bool]:
    """imagecorruptions' seconds for ``name`` looped over ``images`` (N, H, W, 3 uint8), error, extrapolated."""
    import numpy as np

    corrupt = _import_peer()

    def run(k: int) -> None:
        np.random.seed(seed)
        for im in images[:k]:
            corrupt(im, corruption_name=name, severity=severity)

    n = len(images)
    try:
        run(1)  # warm-up (and the error check)
        k = min(probe, n)
        t_probe = _median_time(lambda: run(k), 1)
        if k < n and t_probe / k * n > budget:
            return t_probe / k * n, None, True
        return _median_time(lambda: run(n), repeats), None, False
    except Exception as e:  # noqa: BLE001 - reported per corruption
        return None, f"{type(e).__name__}: {e}", False


#: corruptions whose imagecorruptions counterpart does different work (frost: it reads a photograph per
#: image, robustlab draws a procedural texture); they keep their own speedup but stay out of the suite's
NOT_COMPARABLE = frozenset({"frost"})


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of the module docstring, as one JSON-able dict."""
    torch.set_num_threads(args.threads)
    say = (lambda s: None) if args.quiet else (lambda s: print(f"[corruptions] {s}", file=sys.stderr, flush=True))
    ds = load_dataset("shapeworld", n=args.n, seed=args.seed)
    x = ds.x.float().contiguous()
    n = int(x.shape[0])
    names = image_corruptions()
    if args.only:
        wanted = [c.strip() for c in args.only.split(",") if c.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise SystemExit(f"--only: unknown corruptions {unknown}; known: {names}")
        names = [c for c in names if c in wanted]
    pv = peer_version()
    out: dict[str, Any] = {
        "benchmark": "corruptions", "dataset": "shapeworld/test", "n": n, "image_shape": list(x.shape[1:]),
        "threads": torch.get_num_threads(), "severity": args.severity, "repeats": args.repeats,
        "quick": bool(args.quick), "corruptions": names, "compared_table": "imagenet",
        "suite_table": "cifar",
        "versions": {"robustlab": robustlab.__version__, "torch": torch.__version__,
                     "python": platform.python_version(), "imagecorruptions": pv},
    }
    images = None
    if pv is not None:
        images = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        try:
            import cv2

            cv2.setNumThreads(args.threads)
        except ImportError:
            pass
    speedups = {}
    for c in names:
        say(c)
        total, err = _robustlab(c, "cifar", x, SEVERITIES, args.seed, args.repeats)
        cifar, _ = _robustlab(c, "cifar", x, (args.severity,), args.seed, args.repeats)
        inet, err_i = _robustlab(c, "imagenet", x, (args.severity,), args.seed, args.repeats)
        inet_total, _ = (None, None) if args.quick else _robustlab(c, "imagenet", x, SEVERITIES, args.seed,
                                                                     args.repeats)
        out[f"total_seconds[{c}]"], out[f"cifar_seconds[{c}]"] = total, cifar
        out[f"seconds[{c}]"], out[f"imagenet_total_seconds[{c}]"] = inet, inet_total
        out[f"error[{c}]"] = err or err_i
        p_s, p_err, extra = (None, "peer not installed", False) if images is None else _peer(
            c, images, args.severity, args.seed, args.repeats, args.peer_budget, args.peer_probe)
        out[f"imagecorruptions_seconds[{c}]"] = p_s
        out[f"imagecorruptions_error[{c}]"] = p_err
        out[f"imagecorruptions_extrapolated[{c}]"] = extra
        sp = p_s / inet if p_s is not None and inet else None
        out[f"speedup[{c}]"] = sp
        if sp is not None:
            speedups[c] = sp
    totals = [out[f"total_seconds[{c}]"] for c in names]
    out["suite_seconds"] = None if any(t is None for t in totals) else float(sum(totals))
    inet_totals = [out[f"imagenet_total_seconds[{c}]"] for c in names]
    out["imagenet_suite_seconds"] = (None if args.quick or any(t is None for t in inet_totals)
                                     else float(sum(inet_totals)))
    out["compared"] = sorted(speedups)
    same = [c for c in speedups if c not in NOT_COMPARABLE]  # both ran the same corruption
    peer_sum = sum(out[f"imagecorruptions_seconds[{c}]"] for c in same)
    ours_sum = sum(out[f"seconds[{c}]"] for c in same)
    out["suite_compared"] = same
    out["suite_imagecorruptions_seconds"] = float(peer_sum) if same else None
    out["suite_robustlab_seconds"] = float(ours_sum) if same else None
    out["suite_speedup"] = float(peer_sum / ours_sum) if same and ours_sum > 0 else None
    out["min_speedup"] = min(speedups.values()) if speedups else None
    out["median_speedup"] = statistics.median(speedups.values()) if speedups else None
    out["targets"] = targets(out)
    return out


def targets(r: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's targets (None where a measurement is missing); never asserted."""
    def le(a: float | None, b: float) -> bool | None:
        return None if a is None else a <= b

    def ge(a: float | None, b: float) -> bool | None:
        return None if a is None else a >= b

    return {"suite_seconds <= 60": le(r["suite_seconds"], 60.0),
            "suite_speedup >= 5": ge(r.get("suite_speedup"), 5.0),
            "min_speedup >= 5": ge(r["min_speedup"], 5.0),
            "median_speedup >= 5": ge(r["median_speedup"], 5.0)}


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def print_table(r: dict[str, Any], file: Any) -> None:
    """A rich table: one row per corruption, then the totals and the targets."""
    from rich.console import Console
    from rich.table import Table

    s = r["severity"]
    t = Table(title=f"robustlab corruptions benchmark — shapeworld {r['image_shape']}, n={r['n']}, "
                    f"threads={r['threads']}, imagecorruptions {r['versions']['imagecorruptions'] or 'not installed'}")
    for col in ("corruption", f"cifar s{s} (s)", "cifar s1-5 (s)", f"imagenet s{s} (s)",
                f"imagecorruptions s{s} (s)", "speedup", "note"):
        t.add_column(col, justify="left" if col in ("corruption", "note") else "right")
    for c in r["corruptions"]:
        note = r[f"error[{c}]"] or r[f"imagecorruptions_error[{c}]"] or (
            "peer extrapolated" if r[f"imagecorruptions_extrapolated[{c}]"] else "")
        t.add_row(c, _fmt(r[f"cifar_seconds[{c}]"]), _fmt(r[f"total_seconds[{c}]"]), _fmt(r[f"seconds[{c}]"]),
                  _fmt(r[f"imagecorruptions_seconds[{c}]"]), _fmt(r[f"speedup[{c}]"]), note[:60])
    for k in ("suite_seconds", "imagenet_suite_seconds", "suite_speedup", "min_speedup", "median_speedup"):
        t.add_row(f"[bold]{k}[/bold]", "", "", "", "", _fmt(r[k]), "")
    for k, v in r["targets"].items():
        t.add_row(f"[bold]target[/bold] {k}", "", "", "", "", _fmt(v), "")
    Console(file=file, width=150).print(t)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="ShapeWorld test images")
    ap.add_argument("--severity", type=int, default=3, choices=SEVERITIES, help="the compared severity")
    ap.add_argument("--threads", type=int, default=2, help="torch (and OpenCV) threads")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each measure (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peer-budget", type=float, default=60.0,
                    help="seconds above which a peer corruption is timed on --peer-probe images and scaled")
    ap.add_argument("--peer-probe", type=int, default=20, help="images timed first to estimate a peer's cost")
    ap.add_argument("--only", default="", help="comma-separated corruptions to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="skip the ImageNet-table suite total (smoke tests)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (table on stderr)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    for name in ("n", "threads", "repeats", "peer_probe"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    r = run_benchmark(args)
    if args.json:
        print_table(r, sys.stderr)
        print(json.dumps(r, indent=2, sort_keys=True))
    else:
        print_table(r, sys.stdout)
    return r


if __name__ == "__main__":
    main()
