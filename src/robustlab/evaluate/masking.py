"""Model-level checks that catch false robustness from gradient masking, and a more-effort check.

The outcome checks of :mod:`robustlab.evaluate.checks` read results only; these look at the model
itself, cheaply (a few forward/backward passes on at most 64 examples), for the symptoms listed by
Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security" (2018), Carlini et
al., "On Evaluating Adversarial Robustness" (2019) and checked by AutoAttack (Croce & Hein, 2020):

* randomized outputs (two passes on the same batch differ): use EOT (``eot_pgd``);
* probabilities instead of logits (a softmax inside the model): CE on them masks gradients;
* zero or non-finite input gradients (saturated softmax or a non-differentiable step);
* a gradient-free model: only query-based, BPDA and EOT-over-a-surrogate attacks apply;
* more effort still helps (PGD-k vs PGD-4k): the evaluation has not converged.

Every check returns dicts ``{"check", "severity", "probe", "message"}`` as
:func:`robustlab.evaluate.checks.check_result` builds them (``probe`` is None for model checks).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError
from robustlab.core.model import Model
from robustlab.evaluate.checks import TOLERANCE, Check, check_result

__all__ = [
    "MAX_EXAMPLES",
    "check_gradients",
    "check_probability_outputs",
    "check_randomized",
    "effort_pairs",
    "more_effort_check",
    "more_effort_probe",
    "run_model_checks",
]

#: examples the model checks look at
MAX_EXAMPLES = 64
#: fraction of examples with zero / non-finite gradients from which a warning (not an info) is raised
MAX_ZERO_GRAD_FRACTION = 0.1


def _scores(model: Model, x: Any) -> torch.Tensor:
    with torch.no_grad():
        s = model(x)
    return torch.as_tensor(s).detach().float().cpu()


def check_randomized(model: Model, x: Any, y: torch.Tensor | None = None, *, passes: int = 3,
                     tol: float = 1e-4) -> Check:
    """Warn if ``passes`` forward passes on the same ``x`` differ (outputs normalized per row, as
    AutoAttack's ``check_randomized``) or the model declares ``randomized=True``."""
    outs = [_scores(model, x) for _ in range(max(2, passes))]
    unit = [o / o.norm(dim=1, keepdim=True).clamp_min(1e-10) for o in outs]
    diff = max(float((a - b).norm(dim=1).max()) for a, b in itertools.combinations(unit, 2))
    preds = torch.stack([o.argmax(1) for o in outs])
    flips = int((preds != preds[0]).any(dim=0).sum())
    declared = bool(getattr(model, "randomized", False))
    if diff > tol or flips:
        return check_result("randomized_outputs", "warning",
                            f"randomized model: {len(outs)} forward passes on the same inputs differ (largest "
                            f"normalized change {diff:.3g}; {flips} of {len(preds[0])} predictions change). One "
                            "gradient and one evaluation are single random draws, which fools gradient attacks: "
                            "use EOT (eot_pgd, or AutoAttack's 'rand' version) and judge accuracy over many draws")
    if declared:
        return check_result("randomized_outputs", "info", "the model declares randomized=True but "
                            f"{len(outs)} passes gave the same outputs: use EOT if its randomness matters")
    return check_result("randomized_outputs", "ok", f"{len(outs)} forward passes give the same outputs "
                        "(deterministic model)")


def check_probability_outputs(model: Model, x: Any, *, tol: float = 1e-5,
                              scores: torch.Tensor | None = None) -> Check:
    """Warn if every output row is a probability vector (in [0, 1], summing to 1): a softmax inside
    the model (AutoAttack's ``check_range_output``). Log-probabilities are fine."""
    s = _scores(model, x) if scores is None else scores
    in_range = bool((s >= -tol).all()) and bool((s <= 1 + tol).all())
    if in_range and bool(((s.sum(dim=1) - 1).abs() <= 1e-4).all()):
        return check_result("probability_outputs", "warning",
                            "the model outputs probabilities (every row is in [0, 1] and sums to 1): a "
                            "cross-entropy on top applies a second softmax and masks gradients. Return logits "
                            "(remove the final softmax), or attack with loss='margin' / 'dlr'")
    return check_result("probability_outputs", "ok", "the outputs are not probabilities (logits or "
                        "log-probabilities, as attacks expect)")


def _input_grads(model: Model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input gradients of the CE and the margin loss (B, ...) and the float32 scores (B, C)."""
    from robustlab.attacks.goals import margin_loss

    with torch.inference_mode(False), torch.enable_grad():
        xr = x.detach().clone().requires_grad_(True)
        scores = model(xr)
        if not scores.requires_grad:
            z = torch.zeros_like(xr)
            return z, z, scores.detach().float()
        scores = scores.float()
        ce = F.cross_entropy(scores, y, reduction="sum")
        (g_ce,) = torch.autograd.grad(ce, xr, retain_graph=True, allow_unused=True)
        (g_m,) = torch.autograd.grad(margin_loss(scores, y).sum(), xr, allow_unused=True)
    z = torch.zeros_like(xr)
    return (z if g_ce is None else g_ce.detach()), (z if g_m is None else g_m.detach()), scores.detach()


def _bad_rows(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = g.reshape(g.shape[0], -1)
    finite = torch.isfinite(flat).all(dim=1)
    return (flat.abs().sum(dim=1) == 0) & finite, ~finite


def check_gradients(model: Model, x: Any, y: torch.Tensor, *,
                    max_fraction: float = MAX_ZERO_GRAD_FRACTION) -> Check:
    """Input gradients of the cross-entropy must be finite and non-zero (AutoAttack's
    ``check_zero_gradients``); a gradient-free model gets an info on which attacks apply.

    Warns when more than ``max_fraction`` of the examples have a zero or non-finite gradient (an
    info when only a few do), and tells vanishing gradients (the margin loss still has a gradient:
    use margin / DLR) from shattered ones (zero for every loss: use BPDA or a query attack).
    """
    from robustlab.attacks.bpda import supports_bpda

    if not model.has_gradients:
        how = ("it supplies a BPDA surrogate (bpda_forward): use bpda_pgd" if supports_bpda(model) else
               "give it a bpda_forward surrogate (robustlab.defend.wrap.InputTransform) to use bpda_pgd")
        return check_result("gradient_free", "info",
                            "the model declares has_gradients=False: gradient attacks (fgsm, pgd, apgd) do not "
                            "apply; only query-based attacks (square), BPDA and EOT over a surrogate do; "
                            f"{how}. A robust accuracy measured without them says little")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return check_result("input_gradients", "info", "inputs are not a float tensor: input gradients "
                            "not checked")
    g_ce, g_m, scores = _input_grads(model, x.to(model.device), y.to(model.device).long())
    zero, nonfinite = _bad_rows(g_ce)
    bad = zero | nonfinite
    n, k = len(bad), int(bad.sum())
    if k == 0:
        return check_result("input_gradients", "ok", f"cross-entropy input gradients are finite and "
                            f"non-zero for all {n} checked examples")
    m_zero, m_nonfinite = _bad_rows(g_m)
    m_ok = int((bad & ~(m_zero | m_nonfinite)).sum())
    onehot = int((torch.softmax(scores.float(), dim=1).amax(dim=1) == 1.0).sum())
    what = f"{int(zero.sum())} zero and {int(nonfinite.sum())} non-finite"
    if m_ok >= 0.5 * k:
        why = (f"vanishing gradients: the softmax is saturated ({onehot} of {n} outputs are exactly one-hot "
               f"in float32) but the margin loss still has a gradient on {m_ok} of them; attack with "
               "loss='margin' or 'dlr' (APGD-DLR), not cross-entropy")
    else:
        why = ("shattered gradients: the margin loss has no gradient there either (a non-differentiable "
               "step such as rounding); use BPDA with a surrogate (bpda_pgd) or a query-based attack (square)")
    severity = "warning" if k > max_fraction * n else "info"
    return check_result("input_gradients", severity,
                        f"{what} cross-entropy input gradients on {k} of {n} checked examples: gradient "
                        f"attacks cannot move there and report false robustness. Likely {why}")


def _correct_array(v: Any) -> np.ndarray | None:
    if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool):
        return None
    arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    return arr.astype(bool).reshape(-1)


def _compare(weak: str, strong: str, acc_w: float, acc_s: float, where: str, tol: float,
             flipped: int | None, probe: str | None, n: int | None = None) -> Check:
    extra = f"; {flipped} examples robust to {weak} are broken by {strong}" if flipped else ""
    if n and round((acc_w - acc_s) * n) <= 1 and acc_s < acc_w - tol:  # one example of a small sample
        return check_result("more_effort", "info",
                            f"more effort lowers robust accuracy{where} by one example of {n} ({weak} "
                            f"{acc_w:.3f} -> {strong} {acc_s:.3f}): close to converged", probe)
    if acc_s < acc_w - tol:
        return check_result("more_effort", "warning",
                            f"more effort still lowers robust accuracy{where}: {weak} {acc_w:.3f} -> {strong} "
                            f"{acc_s:.3f}{extra}. The evaluation has not converged: report the stronger attack "
                            "and raise steps / restarts until accuracy stops dropping", probe)
    if acc_s > acc_w + tol:
        return check_result("more_effort", "info",
                            f"the higher-effort {strong} leaves more robust accuracy{where} than {weak} "
                            f"({acc_s:.3f} vs {acc_w:.3f}): random restarts differ; take the per-example "
                            "minimum of both", probe)
    return check_result("more_effort", "ok", f"more effort does not lower robust accuracy{where} ({weak} "
                        f"{acc_w:.3f}, {strong} {acc_s:.3f}): converged", probe)


def more_effort_check(results: Any, *, pairs: Sequence[tuple[str, str]] | None = None,
                      tolerance: float = TOLERANCE) -> list[Check]:
    """Warn when a higher-effort run of the same attack (more steps / restarts, e.g. PGD-10 vs
    PGD-40) lowers robust accuracy by more than ``tolerance``: the weaker one had not converged.

    Args:
        results: either a mapping ``label -> robust accuracy`` (float) or ``label -> per-example
            correctness`` (bool array / tensor, the same examples in every entry), ordered from
            least to most effort (consecutive entries are compared); or an ``Outcomes`` / outcome
            DataFrame, compared per pair of probes at each shared eps on their shared examples.
        pairs: for outcomes, ``(weaker_probe, stronger_probe)`` keys (see :func:`effort_pairs`).
        tolerance: absolute slack on robust accuracy (0.01).

    With per-example results a net drop of a single example is only an info (noise on a small
    sample). Returns one ``"more_effort"`` check per compared pair (and eps).
    """
    if isinstance(results, Mapping):
        out = []
        items = list(results.items())
        for (wl, wv), (sl, sv) in itertools.pairwise(items):
            a, b = _correct_array(wv), _correct_array(sv)
            if a is not None and b is not None:
                if a.shape != b.shape:
                    raise ConfigError(f"more_effort_check: {wl!r} and {sl!r} cover {a.size} and {b.size} "
                                      "examples", fix="pass per-example correctness of the same examples")
                out.append(_compare(wl, sl, float(a.mean()), float(b.mean()), "", tolerance,
                                    int((a & ~b).sum()), sl, a.size))
            else:
                acc_w = float(a.mean()) if a is not None else float(wv)
                acc_s = float(b.mean()) if b is not None else float(sv)
                out.append(_compare(wl, sl, acc_w, acc_s, "", tolerance, None, sl))
        return out
    from robustlab.evaluate.metrics import as_frame

    frame = as_frame(results)
    if not pairs:
        return [check_result("more_effort", "info", "convergence not checked: add the same attack again "
                             "with ~4x the steps or restarts (a different id) to see whether robust accuracy "
                             "still drops")]
    att = frame[(frame["kind"] == "attack")]
    out = []
    for weak, strong in pairs:
        rw, rs = att[att["probe"] == weak], att[att["probe"] == strong]
        merged = rw.merge(rs, on=["example_id", "param"], suffixes=("_w", "_s"))
        if merged.empty:
            out.append(check_result("more_effort", "info", f"{weak} and {strong} share no eps and examples: "
                                    "convergence not checked", strong))
            continue
        for eps, m in merged.groupby("param", sort=True):
            cw, cs = m["correct_w"].to_numpy(bool), m["correct_s"].to_numpy(bool)
            out.append(_compare(weak, strong, float(cw.mean()), float(cs.mean()), f" at eps={eps:g}",
                                tolerance, int((cw & ~cs).sum()), strong, len(cw)))
    return out


def _effort(probe: Any) -> float | None:
    steps = getattr(probe, "steps", None) or getattr(probe, "n_iter", None)
    if not isinstance(steps, (int, float)):
        return None
    restarts = getattr(probe, "restarts", None) or getattr(probe, "n_restarts", None) or 1
    samples = getattr(probe, "eot_samples", None) or 1
    return float(steps) * float(restarts) * float(samples)


def effort_pairs(probes: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(weaker, stronger)`` probe keys that run the same attack (class, norm, goal) at increasing
    effort (steps x restarts x EOT samples), for :func:`more_effort_check` on a run's outcomes."""
    groups: dict[tuple[Any, ...], list[tuple[float, str]]] = {}
    for key, p in probes.items():
        effort = _effort(p)
        threat = getattr(p, "threat", None)
        if getattr(p, "kind", None) != "attack" or effort is None or threat is None:
            continue
        sig = (type(p).__name__, getattr(threat, "norm", None), repr(getattr(p, "goal", None)),
               repr(getattr(p, "loss", None)), bool(getattr(p, "bpda", False)))
        groups.setdefault(sig, []).append((effort, key))
    pairs = []
    for members in groups.values():
        members.sort()
        pairs += [(a, b) for (ea, a), (eb, b) in itertools.pairwise(members) if eb > ea]
    return pairs


def more_effort_probe(model: Model, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator,
                      eps: float, norm: str = "inf", steps: int = 10, factor: int = 4,
                      loss: str = "ce", tolerance: float = TOLERANCE) -> list[Check]:
    """Run PGD with ``steps`` and ``factor * steps`` steps at ``eps`` on the clean-correct examples
    of ``(x, y)`` and apply :func:`more_effort_check` (costs ``(1 + factor) * steps`` passes)."""
    from robustlab.attacks.pgd import PGD
    from robustlab.core.model import checked_scores

    if not model.has_gradients:
        return [check_result("more_effort", "info", "gradient-free model: PGD convergence not checked")]
    xd, yd = x.to(model.device), y.to(model.device).long()
    ok = checked_scores(model, xd).argmax(1).to(yd.device) == yd
    if not bool(ok.any()):
        return [check_result("more_effort", "info", "no clean-correct example: convergence not checked")]
    xd, yd = xd[ok], yd[ok]
    correct = {}
    for k in (steps, factor * steps):
        res = PGD(norm, eps, steps=k, loss=loss)(model, xd, yd, generator=generator)
        correct[f"PGD-{k} (eps={eps:g})"] = (checked_scores(model, res.x_adv).argmax(1) == yd.cpu()).numpy()
    return more_effort_check(correct, tolerance=tolerance)


def _subset(x: Any, y: torch.Tensor, k: int, generator: torch.Generator) -> tuple[Any, torch.Tensor]:
    n = len(y)
    if n <= k:
        return x, y
    idx = torch.randperm(n, generator=generator, device=generator.device)[:k].sort().values.cpu()
    xs = x[idx] if isinstance(x, torch.Tensor) else [x[int(i)] for i in idx]
    return xs, y[idx.to(y.device)]


def _guarded(name: str, fn: Any, *args: Any, **kwargs: Any) -> list[Check]:
    try:
        got = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a failing model must not hide the other checks; say what failed
        return [check_result(name, "warning", f"the check could not run: {type(exc).__name__}: {exc}")]
    return got if isinstance(got, list) else [got]


def run_model_checks(model: Model, x: Any, y: torch.Tensor, *, generator: torch.Generator,
                     attack_results: Any = None, max_examples: int = MAX_EXAMPLES,
                     effort_eps: float | None = None, effort_norm: str = "inf") -> list[Check]:
    """All model-level masking checks on at most ``max_examples`` of ``(x, y)`` (drawn with ``generator``).

    Args:
        model: the model under evaluation.
        x: inputs (a float tensor (N, ...) or a list of strings) and ``y`` (N,) labels.
        generator: picks the examples (and seeds the optional PGD effort probe).
        attack_results: optional input of :func:`more_effort_check` (a mapping of results ordered by
            effort, or outcomes — then pass through :func:`more_effort_check` yourself with pairs).
        effort_eps: if given, also run :func:`more_effort_probe` (PGD-10 vs PGD-40) at this eps.
    Returns:
        check dicts ``{"check", "severity", "probe", "message"}``: randomized outputs, probability
        outputs, input gradients (or gradient-free), and the more-effort checks asked for.
    """
    xs, ys = _subset(x, y, max_examples, generator)
    if isinstance(xs, torch.Tensor):
        xs = xs.to(model.device)
    out = _guarded("randomized_outputs", check_randomized, model, xs, ys)
    out += _guarded("probability_outputs", check_probability_outputs, model, xs)
    out += _guarded("input_gradients", check_gradients, model, xs, ys)
    if attack_results is not None:
        out += _guarded("more_effort", more_effort_check, attack_results)
    if effort_eps is not None and isinstance(xs, torch.Tensor):
        out += _guarded("more_effort", more_effort_probe, model, xs, ys, generator=generator, eps=effort_eps,
                        norm=effort_norm)
    return out
