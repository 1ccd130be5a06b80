"""Attack strength on the zoo's standard and adversarially trained models (the attacks issue's acceptance).

Measures, on the same examples: robust accuracy of PGD-20, APGD-CE, APGD-T, FAB-T, Square and
AutoAttack standard (full budget) at one eps; the security curve of PGD up to a large eps; and a
deliberately masked model (inputs quantized) attacked by PGD, BPDA-PGD and Square, with the
gradient-masking checks. Prints a table and, with ``--json``, one JSON object.

    python benchmarks/strength.py --json                  # digits-cnn and digits-cnn-at, 200 images
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import torch  # noqa: E402

from robustlab.attacks import APGDCE, APGDT, BPDA, PGD, AutoAttack, Square, fab_t  # noqa: E402
from robustlab.core.rng import torch_generator  # noqa: E402
from robustlab.data import load_dataset  # noqa: E402
from robustlab.defend.wrap.masked import QuantizedInput  # noqa: E402
from robustlab.evaluate.masking import run_model_checks  # noqa: E402
from robustlab.models import zoo  # noqa: E402


def robust_accuracy(attack, model, x, y, seed=0):
    """Accuracy on attack outputs (clean-wrong examples count as not robust); seconds."""
    t0 = time.perf_counter()
    ok = model.predict(x) == y
    x_adv = x.clone()
    if ok.any():
        x_adv[ok] = attack(model, x[ok], y[ok], generator=torch_generator(seed)).x_adv
    acc = (model.predict(x_adv) == y).float().mean().item()
    return acc, time.perf_counter() - t0


def model_strength(name, x, y, eps, large_eps, quick):
    model = zoo.load(name, progress=False)
    n_iter, queries = (10, 300) if quick else (100, 5000)
    attacks = {
        "pgd20": PGD(eps=eps, steps=20),
        "apgd_ce": APGDCE(eps=eps, n_iter=n_iter),
        "apgd_t": APGDT(eps=eps, n_iter=n_iter),
        "fab_t": fab_t(eps=eps, n_iter=n_iter),
        "square": Square(eps=eps, n_queries=queries),
        "autoattack": AutoAttack(eps=eps, version="standard", n_iter=n_iter if quick else None,
                                 square_queries=queries if quick else None),
    }
    out = {"clean_accuracy": (model.predict(x) == y).float().mean().item(), "eps": eps}
    for key, attack in attacks.items():
        out[key], out[f"{key}_seconds"] = robust_accuracy(attack, model, x, y)
    singles = [out[k] for k in ("apgd_ce", "apgd_t", "fab_t", "square")]
    out["apgd_ce_le_pgd20"] = out["apgd_ce"] <= out["pgd20"]
    out["autoattack_le_each_member"] = all(out["autoattack"] <= s for s in singles)
    out["pgd_security_curve"] = {f"{e:.3g}": robust_accuracy(PGD(eps=e, steps=20), model, x, y)[0]
                                 for e in (eps / 2, eps, 2 * eps, large_eps)}
    return model, out


def masked_model(model, x, y, eps, quick):
    masked = QuantizedInput(model, levels=8)
    naive = QuantizedInput(model, levels=8, expose_gradients=True)
    res = {
        "pgd_on_naive_quantized": robust_accuracy(PGD(eps=eps, steps=20), naive, x, y)[0],
        "bpda_pgd": robust_accuracy(BPDA(eps=eps, steps=20), masked, x, y)[0],
        "square": robust_accuracy(Square(eps=eps, n_queries=300 if quick else 5000), masked, x, y)[0],
    }
    checks = run_model_checks(naive, x, y, generator=torch_generator(0))
    res["flagged_by_checks"] = [c["check"] for c in checks if c["severity"] == "warning"]
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--large-eps", type=float, default=0.5)
    p.add_argument("--models", default="digits-cnn,digits-cnn-at")
    p.add_argument("--quick", action="store_true", help="reduced budgets (NOT the paper's) for smoke tests")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset("digits", split="test", n=args.n, seed=0)
    x, y = data.x, data.y
    report = {"n": len(y), "quick": args.quick, "models": {}}
    first = None
    for name in args.models.split(","):
        model, report["models"][name] = model_strength(name, x, y, args.eps, args.large_eps, args.quick)
        first = first or model
    report["masked"] = masked_model(first, x, y, args.eps, args.quick)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for name, r in report["models"].items():
            print(name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
        print("masked", report["masked"])
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
