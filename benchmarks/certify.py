"""Benchmark: certification speed and bound values (IBP, CROWN, randomized smoothing), in one run.

On the zoo's ``digits-mlp`` (64-256-256-10) and ``digits-cnn`` and the digits test split (the first
``--n`` images, 500 by default), L∞, it measures:

* **bound propagation time** per 500 examples: IBP, CROWN with CROWN intermediate bounds (full CROWN)
  and CROWN with IBP intermediate bounds (``intermediate="ibp"``), at ``--eps-time`` (0.02), each the
  median of ``--repeats`` runs of :func:`robustlab.certify.bound_margins` (default ``batch_size``),
  wall and process-CPU seconds. Full CROWN on the CNN is timed on ``--cnn-n`` examples (it is
  ~100x slower) and scaled to 500 (``crown_examples_timed_digits_cnn`` says on how many); full CROWN
  again with every product in float64 (``crown_float64_*``) and the largest margin-bound loosening of
  the default float32 folded products (``crown_float32_max_loosening_*``);
* **bound values** at every ``--eps``: the mean over examples of the smallest margin lower bound and
  the certified accuracy (clean-correct and every margin lower bound > 0), IBP and full CROWN;
* **randomized smoothing** (Cohen et al., 2019) ``CERTIFY`` throughput against its forward-pass
  floor: the same number of noisy inputs (``examples * (n0 + n)``) in the same batches through the
  model's plain no-grad forward; the ratio is ``smoothing_certify_vs_floor`` (target <= 1.2);
  ``smoothing_certify_vs_floor_plus_noise`` compares with that floor plus drawing the same noise
  alone (``smoothing_noise_seconds``), the work CERTIFY cannot skip;
* ART's ``PyTorchRandomizedSmoothing.certify`` (same model object, sigma, n0 = ``sample_size``, n,
  alpha, batch size; per example, numpy round trips; its Clopper-Pearson bound, which needs
  statsmodels, is replaced by robustlab's identical one) side by side when ART is installed:
  ``smoothing_vs_art_time_ratio`` = robustlab's time / ART's, and both certified accuracies.

Timings vary by ±30% on shared machines; ratios from one run are what count. Targets are reported,
never asserted. Run::

    python benchmarks/certify.py --json                      # ~2-4 min, 2 threads
    python benchmarks/certify.py --quick --json              # seconds, for smoke tests
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

import robustlab
from robustlab.certify import Smooth, bound_margins, clopper_pearson_lower, set_crown_matmul
from robustlab.core.model import TorchModel, checked_scores
from robustlab.core.rng import torch_generator
from robustlab.core.threat import LpBall
from robustlab.data import load_dataset
from robustlab.models import zoo

__all__ = ["main", "parse_args", "run_benchmark", "targets"]

MODELS = ("digits-mlp", "digits-cnn")


sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this file, script or not
import _peers as peers  # noqa: E402
import _timing as timing  # noqa: E402


def _key(name: str) -> str:
    return name.replace("-", "_")


def _median_time(fn: Any, repeats: int) -> tuple[float, float, Any]:
    """Median wall and CPU seconds of ``repeats`` runs of ``fn`` (after one warm-up run), and its result."""
    fn()
    return timing.median_runs(fn, repeats, None, torch.device("cpu"))


def _bound_stats(lower: torch.Tensor, correct: torch.Tensor) -> dict[str, float]:
    worst = lower.min(dim=1).values
    return {"mean_lower_bound": float(worst.mean()),
            "certified_accuracy": float((correct & (worst > 0)).float().mean())}


def _bounds_section(name: str, model: TorchModel, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace,
                    note: Any) -> dict[str, Any]:
    k, out = _key(name), {}
    correct = checked_scores(model, x).argmax(1).cpu() == y
    n_crown = len(y) if name == "digits-mlp" else min(len(y), args.cnn_n)
    threat = LpBall("inf", args.eps_time, low=model.low, high=model.high)
    for label, method, inter, m in (("ibp", "ibp", "crown", len(y)), ("crown", "crown", "crown", n_crown),
                                    ("crown_ibp_intermediate", "crown", "ibp", len(y))):
        note(f"{name}: {label} on {m} examples")
        wall, cpu, _ = _median_time(lambda me=method, it=inter, m=m: bound_margins(
            model, x[:m], y[:m], threat, method=me, intermediate=it), args.repeats)
        out[f"{label}_seconds_per_500_{k}"] = wall * 500 / m
        out[f"{label}_cpu_seconds_per_500_{k}"] = cpu * 500 / m
    out[f"crown_examples_timed_{k}"] = n_crown
    old = set_crown_matmul("float64")  # full CROWN with every product in float64 (no rounding slack)
    try:
        note(f"{name}: crown, float64 products, on {n_crown} examples")
        wall, cpu, ref = _median_time(lambda: bound_margins(model, x[:n_crown], y[:n_crown], threat, method="crown"),
                                      args.repeats)
    finally:
        set_crown_matmul(old)
    out[f"crown_float64_seconds_per_500_{k}"] = wall * 500 / n_crown
    out[f"crown_float64_cpu_seconds_per_500_{k}"] = cpu * 500 / n_crown
    fast = bound_margins(model, x[:n_crown], y[:n_crown], threat, method="crown")
    out[f"crown_float32_max_loosening_{k}"] = float((ref - fast).max()) if len(ref) else 0.0
    values: dict[str, dict[str, float]] = {}
    for eps in args.eps:
        th = LpBall("inf", eps, low=model.low, high=model.high)
        row: dict[str, float] = {}
        for method, m in (("ibp", len(y)), ("crown", n_crown)):
            stats = _bound_stats(bound_margins(model, x[:m], y[:m], th, method=method), correct[:m])
            row.update({f"{method}_{key}": v for key, v in stats.items()})
        values[f"{eps:g}"] = row
    out[f"bounds_{k}"] = values
    out[f"clean_accuracy_{k}"] = float(correct.float().mean())
    return out


def _smoothing_section(name: str, model: TorchModel, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace,
                       have_art: bool, note: Any) -> dict[str, Any]:
    k, out = _key(name), {}
    n_ex = min(len(y), args.smoothing_examples)
    xs, ys = x[:n_ex], y[:n_ex]
    n_classes = int(model.num_classes or 10)
    smooth = Smooth(model, n_classes, args.sigma)
    note(f"{name}: smoothing CERTIFY on {n_ex} examples, n0={args.n0}, n={args.n_samples}")
    wall, cpu, cert = _median_time(lambda: smooth.certify(
        xs, args.n0, args.n_samples, args.alpha, args.smoothing_batch, generator=torch_generator(args.seed)),
        args.repeats)
    # the floor: the same number of noisy inputs, in the same batches, through the plain forward
    # (Smooth.noise_chunks: k = batch // examples samples per chunk, the last chunk of n0 and of n smaller)
    per_chunk = max(1, args.smoothing_batch // n_ex)
    sizes = [min(per_chunk, num - i) for num in (args.n0, args.n_samples) for i in range(0, num, per_chunk)]
    batch = xs.repeat(per_chunk, *([1] * (xs.dim() - 1)))

    def floor() -> None:
        with torch.no_grad():
            for m in sizes:
                model(batch[:m * n_ex])

    f_wall, f_cpu, _ = _median_time(floor, args.repeats)

    def noise() -> None:  # the Gaussian draws CERTIFY cannot skip, alone (same chunks, same generator calls)
        g = torch_generator(args.seed)
        for num in (args.n0, args.n_samples):
            for _chunk in smooth.noise_chunks(xs, num, args.smoothing_batch, g):
                pass

    n_wall, n_cpu, _ = _median_time(noise, args.repeats)
    radius = cert.radius.float()
    right = (cert.prediction == ys) & ~cert.abstained
    out.update({
        f"smoothing_certify_seconds_{k}": wall, f"smoothing_certify_cpu_seconds_{k}": cpu,
        f"smoothing_floor_seconds_{k}": f_wall, f"smoothing_floor_cpu_seconds_{k}": f_cpu,
        f"smoothing_certify_vs_floor_{k}": timing.ratio(wall, f_wall),
        f"smoothing_certify_vs_floor_cpu_{k}": timing.ratio(cpu, f_cpu),
        f"smoothing_noise_seconds_{k}": n_wall,
        f"smoothing_certify_vs_floor_plus_noise_{k}": timing.ratio(wall, f_wall + n_wall),
        f"smoothing_examples_{k}": n_ex,
        f"smoothing_certified_accuracy_{k}": {f"{r:g}": float((right & (radius >= r)).float().mean())
                                             for r in args.radii},
        f"smoothing_abstain_rate_{k}": float(cert.abstained.float().mean()),
    })
    art_keys = (f"art_smoothing_seconds_{k}", f"smoothing_vs_art_time_ratio_{k}",
                f"art_smoothing_certified_accuracy_{k}")
    out.update(dict.fromkeys(art_keys))
    if have_art:
        note(f"{name}: ART randomized smoothing on {n_ex} examples")
        import numpy as np
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

        clf = PyTorchRandomizedSmoothing(
            model=peers.ModelModule(model).eval(), loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(xs.shape[1:]),
            nb_classes=n_classes, device_type="cpu", sample_size=args.n0, scale=args.sigma, alpha=args.alpha)
        # ART's lower bound imports statsmodels (not installed here): the same one-sided Clopper-Pearson
        # bound, proportion_confint(count, n, alpha=2 * alpha, method="beta")[0], from robustlab
        clf._lower_confidence_bound = lambda count, total: float(clopper_pearson_lower(count, total, args.alpha))
        xn = xs.detach().cpu().numpy().astype(np.float32)

        def run_art() -> tuple[np.ndarray, np.ndarray]:
            np.random.seed(args.seed)
            return clf.certify(xn, n=args.n_samples, batch_size=args.smoothing_batch)

        a_wall, _, (pred, rad) = _median_time(run_art, args.repeats)
        a_right = (torch.from_numpy(pred).long() == ys) & (torch.from_numpy(pred) >= 0)
        a_rad = torch.from_numpy(np.asarray(rad, dtype=np.float32))
        out.update({art_keys[0]: a_wall, art_keys[1]: timing.ratio(wall, a_wall),
                    art_keys[2]: {f"{r:g}": float((a_right & (a_rad >= r)).float().mean()) for r in args.radii}})
    return out


def targets(r: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's targets, true / false / null (not measured)."""
    crown = r.get("crown_seconds_per_500_digits_mlp")
    ratio = r.get("smoothing_certify_vs_floor")
    return {"crown digits-mlp <= 0.25 s per 500 examples": None if crown is None else crown <= 0.25,
            "smoothing CERTIFY <= 1.2x forward floor": None if ratio is None else ratio <= 1.2}


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of the module docstring, as one JSON-able dict."""
    torch.set_num_threads(args.threads)
    note = timing.Progress(args.quiet)
    ds = load_dataset("digits", split="test")
    n = min(args.n, len(ds.y))
    x, y = ds.x[:n].contiguous(), torch.as_tensor(ds.y[:n]).long()
    have_art = peers.peer_version("art") is not None and not args.skip_art
    out: dict[str, Any] = {
        "benchmark": "certify", "dataset": "digits/test", "n": n, "quick": bool(args.quick),
        "threads": torch.get_num_threads(), "norm": "inf", "eps_time": args.eps_time, "eps": list(args.eps),
        "repeats": args.repeats, "sigma": args.sigma, "n0": args.n0, "n_samples": args.n_samples,
        "alpha": args.alpha, "smoothing_batch": args.smoothing_batch, "seed": args.seed,
        "models": [m + ("-quick" if args.quick else "") for m in args.models],
        "versions": {"robustlab": robustlab.__version__, "torch": torch.__version__,
                     "python": platform.python_version(), "art": peers.peer_version("art")},
    }
    for name in args.models:
        model = zoo.load(name, quick=args.quick, progress=False)
        out.update(_bounds_section(name, model, x, y, args, note))
        out.update(_smoothing_section(name, model, x, y, args, have_art, note))
    main_model = _key("digits-cnn" if "digits-cnn" in args.models else args.models[0])
    out["smoothing_certify_vs_floor"] = out.get(f"smoothing_certify_vs_floor_{main_model}")
    out["smoothing_vs_art_time_ratio"] = out.get(f"smoothing_vs_art_time_ratio_{main_model}")
    out["targets"] = targets(out)
    return out


def _table(r: dict[str, Any], models: list[str]) -> str:
    lines = [f"certify benchmark: n={r['n']} threads={r['threads']} eps_time={r['eps_time']} "
             f"(wall s / CPU s per 500 examples)"]
    for name in models:
        k = _key(name)
        lines.append(f"  {name}: clean acc {r[f'clean_accuracy_{k}']:.3f}")
        for label in ("ibp", "crown", "crown_float64", "crown_ibp_intermediate"):
            lines.append(f"    {label:24s} {r[f'{label}_seconds_per_500_{k}']:8.3f} / "
                         f"{r[f'{label}_cpu_seconds_per_500_{k}']:8.3f}")
        for eps, row in r[f"bounds_{k}"].items():
            lines.append(f"    eps {eps:>5s}: IBP mean lb {row['ibp_mean_lower_bound']:9.3f} cert "
                         f"{row['ibp_certified_accuracy']:.3f} | CROWN mean lb {row['crown_mean_lower_bound']:9.3f} "
                         f"cert {row['crown_certified_accuracy']:.3f}")
        art = r[f"art_smoothing_seconds_{k}"]
        lines.append(f"    smoothing CERTIFY {r[f'smoothing_certify_seconds_{k}']:.3f} s, floor "
                     f"{r[f'smoothing_floor_seconds_{k}']:.3f} s, ratio {r[f'smoothing_certify_vs_floor_{k}']:.2f}; "
                     + ("ART: peer not installed" if art is None else
                        f"ART {art:.3f} s (ratio {r[f'smoothing_vs_art_time_ratio_{k}']:.3f})"))
        lines.append(f"    smoothing certified acc {r[f'smoothing_certified_accuracy_{k}']}"
                     + ("" if art is None else f", ART {r[f'art_smoothing_certified_accuracy_{k}']}"))
    lines += [f"  target {t}: {v}" for t, v in r["targets"].items()]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="digits test images (the split has 539)")
    p.add_argument("--cnn-n", type=int, default=64, help="examples for full CROWN on digits-cnn (scaled to 500)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--eps-time", type=float, default=0.02, help="L∞ radius of the timed bound runs")
    p.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1], help="radii of the bound values")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--n-samples", type=int, default=1000, help="smoothing estimation samples per example")
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--smoothing-examples", type=int, default=100)
    p.add_argument("--smoothing-batch", type=int, default=1000)
    p.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="zoo quick models, tiny sizes (smoke tests)")
    p.add_argument("--skip-art", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.cnn_n, args.repeats = min(args.n, 20), min(args.cnn_n, 4), 1
        args.eps, args.n0, args.n_samples, args.smoothing_examples = [0.02], 10, 100, min(args.smoothing_examples, 10)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = run_benchmark(args)
    print(_table(report, args.models), file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
