"""Sanity checks over outcomes that catch *false* robustness (a weak or broken evaluation).

A robust-looking number is only as good as the attack behind it. These checks read the outcomes
(no model) and flag the classic symptoms listed by Carlini et al., "On Evaluating Adversarial
Robustness" (2019) and checked by AutoAttack (Croce & Hein, 2020, ``fra31/auto-attack`` checks.py)
and ART's ``SecurityCurve``: robust accuracy rising with eps, accuracy not reaching ~0 at a large
eps, a stronger attack doing worse than a weaker one (or a black-box one beating a white-box one),
attacks that never queried the model, and rows whose fields contradict each other.

Every check returns dicts ``{"check", "severity", "probe", "message"}`` with severity ``"warning"``,
``"info"`` or ``"ok"``; passed checks are listed too, so a report shows what was checked.
Model-level checks (softmax outputs, zero gradients, randomized outputs) need the model; the runner
computes them and passes the results (or callables) through ``run_checks(..., extra=[...])``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from robustlab.evaluate.metrics import as_frame, clean_accuracy, metrics_table, reference_correct

__all__ = [
    "DEFAULT_EPS_LARGE",
    "OUTCOME_CHECKS",
    "SEVERITIES",
    "TOLERANCE",
    "check_result",
    "probe_norm",
    "run_checks",
]

SEVERITIES = ("warning", "info", "ok")
#: eps from which a perfect attack should take (almost) every example of a [0, 1] image domain
DEFAULT_EPS_LARGE = {"inf": 0.3, "2": 3.0}
#: robust accuracy allowed at a large eps before it looks like gradient masking
MAX_ROBUST_AT_LARGE = 0.1
#: absolute slack on accuracy comparisons (random restarts make curves a little noisy)
TOLERANCE = 0.01
#: relative strength of well-known white-box attacks, by name token
_STRENGTH = {"fgsm": 1, "fgm": 1, "bim": 2, "ifgsm": 2, "mifgsm": 2, "pgd": 2, "cw": 2, "apgd": 3,
             "apgdce": 3, "apgddlr": 3, "apgdt": 3, "fab": 3, "autoattack": 4, "aa": 4}
_GRADIENT_FREE = {"square", "boundary", "hsja", "hopskipjump", "spsa", "simba", "nes", "random", "noise",
                  "transfer", "bayesian_transfer"}
_NORM_TOKENS = {"linf": "inf", "inf": "inf", "linfty": "inf", "l_inf": "inf", "l2": "2", "l1": "1",
                "fgsm": "inf", "bim": "inf", "ifgsm": "inf", "mifgsm": "inf"}

Check = dict[str, Any]
CheckFn = Callable[[Any, Any, Mapping[str, Mapping[str, Any]]], list[Check]]


def check_result(check: str, severity: str, message: str, probe: str | None = None) -> Check:
    """One check result; ``severity`` is one of :data:`SEVERITIES`."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return {"check": check, "severity": severity, "probe": probe, "message": message}


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def probe_norm(probe: str, info: Mapping[str, Any] | None = None) -> str | None:
    """The Lp norm ("inf", "2", "1") of an attack: ``info["norm"]`` if given, else guessed from the
    name ("pgd_linf", "apgd-l2", "fgsm"); None when unknown."""
    if info and info.get("norm") is not None:
        n = str(info["norm"]).lower().lstrip("l")
        return {"infinity": "inf", "infty": "inf"}.get(n, n)
    for t in _tokens(probe):
        if t in _NORM_TOKENS:
            return _NORM_TOKENS[t]
    return None


def _strength(probe: str, info: Mapping[str, Any]) -> tuple[float | None, bool]:
    """(strength rank or None, gradient-free?) from ``info`` or the probe name."""
    toks = _tokens(probe)
    free = bool(info.get("gradient_free", any(t in _GRADIENT_FREE for t in toks)))
    if info.get("strength") is not None:
        return float(info["strength"]), free
    ranks = [_STRENGTH[t] for t in toks if t in _STRENGTH]
    return (float(max(ranks)) if ranks else None), free


def _fmt(v: float) -> str:
    return f"{v:.3f}" if np.isfinite(v) else "n/a"


def _attack_tables(table) -> dict[str, Any]:
    att = table[table["kind"] == "attack"].sort_values("param")
    return {p: rows for p, rows in att.groupby("probe", sort=True)}


def check_clean_accuracy(frame, table, info) -> list[Check]:
    """Clean accuracy should beat the majority-class baseline; otherwise robustness is meaningless."""
    clean = frame[frame["kind"] == "clean"]
    if clean.empty:
        return [check_result("clean_accuracy", "info", "no clean rows: clean accuracy taken from the "
                             "probes' clean predictions")]
    acc = clean_accuracy(frame)
    base = float(clean.groupby("example_id")["label"].first().value_counts(normalize=True).max())
    if acc <= base + 0.05:
        return [check_result("clean_accuracy", "warning",
                             f"clean accuracy {acc:.3f} is at or near the majority-class baseline {base:.3f}: "
                             "the model has barely learned the task, so robustness numbers say little")]
    return [check_result("clean_accuracy", "ok", f"clean accuracy {acc:.3f} is above the majority-class "
                         f"baseline {base:.3f}")]


def check_monotone_eps(frame, table, info) -> list[Check]:
    """Robust accuracy must not rise with eps: a larger ball contains every smaller one."""
    out = []
    for probe, rows in _attack_tables(table).items():
        if len(rows) < 2:
            out.append(check_result("monotone_eps", "info", "only one eps: monotonicity not checked", probe))
            continue
        tol = float(info.get(probe, {}).get("tolerance", TOLERANCE))
        eps, acc = rows["param"].to_numpy(float), rows["accuracy"].to_numpy(float)
        bad = [f"{acc[i]:.3f} at eps={eps[i]:g} -> {acc[i + 1]:.3f} at eps={eps[i + 1]:g}"
               for i in range(len(acc) - 1) if acc[i + 1] > acc[i] + tol]
        if bad:
            out.append(check_result("monotone_eps", "warning",
                                    "robust accuracy rises with eps (" + "; ".join(bad) + "): the attack is "
                                    "not converging (too few steps or restarts) or gradients are masked", probe))
        else:
            out.append(check_result("monotone_eps", "ok", f"robust accuracy is non-increasing over "
                                    f"{len(eps)} eps values", probe))
    return out


def check_per_example_eps(frame, table, info) -> list[Check]:
    """An example broken at some eps must stay broken at every larger eps (the same perturbation
    still fits); examples that 'recover' show the attack misses adversarial inputs that exist."""
    out = []
    att = frame[(frame["kind"] == "attack") & (frame["status"] != "skipped")]
    for probe, rows in att.groupby("probe", sort=True):
        if rows["param"].nunique() < 2:
            continue
        piv = rows.pivot_table(index="example_id", columns="param", values="correct", aggfunc="max")
        v = piv.to_numpy(dtype=float)
        broken = v == 0
        seen = np.logical_or.accumulate(broken, axis=1)
        recovered = (v[:, 1:] == 1) & seen[:, :-1]
        k, n = int(recovered.any(axis=1).sum()), len(v)
        if k == 0:
            out.append(check_result("per_example_eps", "ok", f"no example broken at a small eps survives a "
                                    f"larger one ({n} attacked examples)", probe))
        else:
            sev = "warning" if k > 0.05 * n else "info"
            out.append(check_result("per_example_eps", sev,
                                    f"{k} of {n} attacked examples are broken at a smaller eps but survive a "
                                    "larger one: the attack misses adversarial inputs that exist (use more "
                                    "steps or restarts, or start from the smaller-eps solution)", probe))
    return out


def check_large_eps(frame, table, info) -> list[Check]:
    """At a large eps (L∞ >= 0.3, L2 >= 3 on [0, 1] images) robust accuracy of an iterative attack
    should approach 0; if it does not, gradient masking is the usual cause (single-step attacks such
    as FGSM only get an info)."""
    out = []
    for probe, rows in _attack_tables(table).items():
        pinfo = info.get(probe, {})
        norm = probe_norm(probe, pinfo)
        large = pinfo.get("eps_large", DEFAULT_EPS_LARGE.get(norm or ""))
        limit = float(pinfo.get("max_robust_accuracy", MAX_ROBUST_AT_LARGE))
        top = rows.iloc[-1]
        eps, acc = float(top["param"]), float(top["accuracy"])
        if large is None:
            out.append(check_result("large_eps", "info", f"norm {'unknown' if norm is None else 'L' + norm}: "
                                    "no 'large eps' known, not checked (pass probe_info with 'norm' or "
                                    "'eps_large')", probe))
        elif eps < float(large):
            out.append(check_result("large_eps", "info", f"largest eps {eps:g} is below the large eps "
                                    f"{float(large):g}: not checked (add eps >= {float(large):g} to the sweep to "
                                    "test for gradient masking)", probe))
        elif acc > limit and (_strength(probe, pinfo)[0] or 2) <= 1:
            out.append(check_result("large_eps", "info", f"robust accuracy {acc:.3f} at the large eps {eps:g}: "
                                    "a single-step attack is not expected to reach 0; judge the iterative "
                                    "attacks", probe))
        elif acc > limit:
            out.append(check_result("large_eps", "warning",
                                    f"robust accuracy {acc:.3f} at the large eps {eps:g} should be near 0 "
                                    f"(> {limit:g}): possible gradient masking or an attack that does not "
                                    "converge", probe))
        else:
            out.append(check_result("large_eps", "ok", f"robust accuracy {acc:.3f} at the large eps {eps:g} "
                                    f"is near 0", probe))
    return out


def check_attack_strength(frame, table, info) -> list[Check]:
    """At the same norm and eps a stronger attack (PGD vs FGSM, white-box vs black-box) must leave no
    more robust accuracy than a weaker one."""
    tabs = _attack_tables(table)
    meta = {p: (probe_norm(p, info.get(p, {})), *_strength(p, info.get(p, {}))) for p in tabs}
    out = []
    for a in tabs:
        for b in tabs:
            na, sa, fa = meta[a]
            nb, sb, fb = meta[b]
            if a == b or na is None or na != nb:
                continue
            blackbox = (not fa) and fb
            ranked = sa is not None and sb is not None and not fa and not fb and sa > sb
            if not (blackbox or ranked):
                continue
            acc_b = dict(zip(np.round(tabs[b]["param"].to_numpy(float), 8), tabs[b]["accuracy"].to_numpy(float)))
            tol = float(info.get(a, {}).get("tolerance", TOLERANCE))
            shared, bad = 0, []
            for eps, acc in zip(np.round(tabs[a]["param"].to_numpy(float), 8), tabs[a]["accuracy"].to_numpy(float)):
                if eps in acc_b:
                    shared += 1
                    if acc > acc_b[eps] + tol:
                        bad.append(f"eps={eps:g}: {acc:.3f} vs {acc_b[eps]:.3f}")
            if not shared:
                continue
            what = "the black-box attack" if blackbox else "the weaker attack"
            if bad:
                out.append(check_result("attack_strength", "warning",
                                        f"{a} leaves more robust accuracy than {what} {b} ({'; '.join(bad)}): "
                                        f"{a} is not working as it should (gradient masking, too few steps, "
                                        "or a bug)", a))
            else:
                out.append(check_result("attack_strength", "ok", f"{a} is at least as strong as {what} {b} at "
                                        f"{shared} shared eps", a))
    if not out and len(tabs) > 1:
        out.append(check_result("attack_strength", "info", "no pair of attacks with a known order shares a "
                                "norm and an eps: strength order not checked"))
    return out


def check_queries(frame, table, info) -> list[Check]:
    """Attacked examples must have cost model queries; zero queries means the attack never ran."""
    out = []
    att = frame[frame["kind"] == "attack"]
    for probe, rows in att.groupby("probe", sort=True):
        tried = rows[rows["status"] != "skipped"]
        if tried.empty:
            out.append(check_result("queries", "info", "no example was attacked (all clean-wrong)", probe))
            continue
        q = tried["queries"].to_numpy()
        if (info or {}).get(probe, {}).get("query_free"):
            out.append(check_result("queries", "ok", "a transfer attack: crafted without querying the "
                                    f"evaluated model (queries {int(q.max(initial=0))})", probe))
            continue
        if (q < 0).all():
            out.append(check_result("queries", "info", "queries were not recorded", probe))
            continue
        zero = int((q == 0).sum())
        if zero > 0.1 * len(q):
            out.append(check_result("queries", "warning", f"{zero} of {len(q)} attacked examples spent zero "
                                    "model queries: the attack did not run on them (a bug)", probe))
        elif zero:
            out.append(check_result("queries", "info", f"{zero} of {len(q)} attacked examples spent zero "
                                    "model queries", probe))
        else:
            out.append(check_result("queries", "ok", f"every attacked example queried the model (median "
                                    f"{float(np.median(q)):g})", probe))
    return out


def check_consistency(frame, table, info) -> list[Check]:
    """Attack rows must agree with themselves: broken -> wrong, robust -> right, skipped -> clean-wrong,
    and no perturbation larger than its eps."""
    out = []
    att = frame[frame["kind"] == "attack"]
    if att.empty:
        return out
    ref = reference_correct(frame)[(frame["kind"] == "attack").to_numpy()]
    for probe, rows in att.groupby("probe", sort=True):
        m = (att["probe"] == probe).to_numpy()
        st, ok, r = rows["status"].to_numpy(), rows["correct"].to_numpy(bool), ref[m]
        d, eps = rows["distance"].to_numpy(float), rows["param"].to_numpy(float)
        problems = []
        for what, mask in (("'broken' rows predicted right", (st == "broken") & ok),
                           ("'robust' rows predicted wrong", (st == "robust") & ~ok),
                           ("'skipped' rows that were clean-correct", (st == "skipped") & r),
                           ("perturbations larger than eps",
                            np.isfinite(d) & np.isfinite(eps) & (d > eps * (1 + 1e-4) + 1e-6))):
            if mask.any():
                problems.append(f"{int(mask.sum())} {what}")
        if problems:
            out.append(check_result("consistency", "warning", "inconsistent outcome rows: " + ", ".join(problems)
                                    + " (a bug in the attack or the runner)", probe))
        else:
            out.append(check_result("consistency", "ok", f"{len(rows)} outcome rows are consistent (status, "
                                    "correctness, distance within eps)", probe))
    return out


#: the outcome checks run by :func:`run_checks`, in order; append to add one
def check_certified_not_broken(frame, table, info) -> list[Check]:
    """No example certified in a threat model may be broken by an attack in the same threat model.

    Applies to certifiers of the evaluated model itself (bound propagation: ``info[probe]["norm"]``
    set); randomized smoothing certifies a different (smoothed) model and is not cross-checked.
    """
    info = info or {}
    out = []
    cert = frame[frame["kind"] == "certifier"]
    atk = frame[(frame["kind"] == "attack") & (frame["status"] == "broken")]
    for cprobe, crows in cert.groupby("probe", sort=True):
        norm = (info.get(cprobe) or {}).get("norm")
        if not norm:
            continue
        rivals = [a for a in atk["probe"].unique() if (info.get(a) or {}).get("norm") == norm]
        certified = crows[crows["status"] == "certified"][["example_id", "param"]].copy()
        certified["param"] = certified["param"].round(9)
        clashes = 0
        for a in rivals:
            broken = atk[atk["probe"] == a][["example_id", "param"]].copy()
            broken["param"] = broken["param"].round(9)
            clashes += len(certified.merge(broken, on=["example_id", "param"]))
        if not rivals:
            out.append(check_result("certified_vs_attacks", "info", "no attack in the same threat model to "
                                    "cross-check the certificates against", cprobe))
        elif clashes:
            out.append(check_result("certified_vs_attacks", "warning", f"{clashes} certified examples were "
                                    f"broken by an attack in the same threat model ({', '.join(rivals)}): the "
                                    "certificate is unsound (a robustlab bug: please report it)", cprobe))
        else:
            out.append(check_result("certified_vs_attacks", "ok", f"{len(certified)} certified (example, eps) "
                                    f"pairs, none broken by {', '.join(rivals)}", cprobe))
    return out


OUTCOME_CHECKS: list[CheckFn] = [check_clean_accuracy, check_monotone_eps, check_per_example_eps,
                                 check_large_eps, check_attack_strength, check_queries, check_consistency,
                                 check_certified_not_broken]


def run_checks(outcomes: Any, probe_info: Mapping[str, Mapping[str, Any]] | None = None,
               extra: Iterable[Check | Callable[..., list[Check]]] = ()) -> list[Check]:
    """Run every sanity check over the outcomes and return all results (warnings, infos and oks).

    Args:
        outcomes: an ``Outcomes`` or its DataFrame.
        probe_info: per probe name, optional hints: ``norm`` ("inf" | "2" | "1"), ``eps_large``
            (eps from which accuracy should be ~0), ``max_robust_accuracy`` (allowed there, default
            0.1), ``strength`` (rank; higher = stronger), ``gradient_free`` (black-box attack),
            ``tolerance`` (slack on accuracy comparisons, default 0.01).
        extra: extension point for model-level checks: ready result dicts (e.g. computed by the
            runner, which holds the model) and/or callables ``fn(frame, probe_info) -> list[dict]``.
    Returns:
        a list of ``{"check", "severity", "probe", "message"}`` dicts (JSON-ready).
    """
    frame = as_frame(outcomes)
    info = {str(k): dict(v) for k, v in (probe_info or {}).items()}
    if frame.empty:
        results = [check_result("outcomes", "warning", "the run has no outcome rows: nothing was measured")]
    else:
        table = metrics_table(frame)
        results = [r for fn in OUTCOME_CHECKS for r in fn(frame, table, info)]
        if not (frame["kind"] == "attack").any():
            results.append(check_result("attacks", "info", "no attack probes: the adversarial checks "
                                        "(monotonicity, large eps, attack strength, queries) did not run"))
    for item in extra:
        got = item(frame, info) if callable(item) else [item]
        for r in got:
            results.append(check_result(str(r["check"]), str(r["severity"]), str(r["message"]), r.get("probe")))
    return results
