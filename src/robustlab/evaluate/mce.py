"""mCE and relative mCE against a named baseline model, from two runs' outcomes.

"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (Hendrycks &
Dietterich, ICLR 2019): CE_c = sum_s E(f, c, s) / sum_s E(base, c, s), mCE = mean_c CE_c; relative
CE_c = sum_s (E(f, c, s) - E(f, clean)) / sum_s (E(base, c, s) - E(base, clean)). The paper's
baseline is AlexNet on ImageNet; here the baseline is any model the user names (its run's outcomes).
Only corruptions and severities present in both runs are compared, on the same examples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustlab.core.errors import ConfigError
from robustlab.evaluate.metrics import as_frame, clean_accuracy

__all__ = ["corruption_errors", "mce"]


def corruption_errors(outcomes: Any) -> dict[tuple[str, float], float]:
    """(transform probe, severity) -> error rate (1 - accuracy)."""
    frame = as_frame(outcomes)
    t = frame[frame["kind"] == "transform"]
    return {(str(p), float(s)): 1.0 - float(g["correct"].mean()) for (p, s), g in t.groupby(["probe", "param"])}


def mce(outcomes: Any, baseline: Any) -> dict[str, Any]:
    """mCE and relative mCE of ``outcomes`` against ``baseline`` (both outcome tables of the same suite).

    Returns ``{"mce", "relative_mce", "ce": {c: CE_c}, "relative_ce": {c: ...}, "corruptions": [...]}``;
    a corruption whose baseline error sum is 0 is left out (its CE is undefined) and listed in
    ``"undefined"``.
    """
    f, b = as_frame(outcomes), as_frame(baseline)
    ids_f, ids_b = set(f["example_id"].unique()), set(b["example_id"].unique())
    if ids_f != ids_b:
        raise ConfigError("the two runs were evaluated on different examples",
                          fix="run the same suite (same data, n and seed) for the model and the baseline")
    ef, eb = corruption_errors(f), corruption_errors(b)
    common = sorted(set(ef) & set(eb))
    if not common:
        raise ConfigError("the two runs share no corruption and severity",
                          fix="run the same transform probes and severities for both models")
    clean_f, clean_b = 1.0 - clean_accuracy(f), 1.0 - clean_accuracy(b)
    ce, rel, undefined = {}, {}, []
    for c in sorted({p for p, _ in common}):
        sev = [k for k in common if k[0] == c]
        num, den = sum(ef[k] for k in sev), sum(eb[k] for k in sev)
        if den <= 0:
            undefined.append(c)
            continue
        ce[c] = num / den
        rden = sum(eb[k] - clean_b for k in sev)
        if rden > 0:
            rel[c] = sum(ef[k] - clean_f for k in sev) / rden
    return {"mce": float(np.mean(list(ce.values()))) if ce else float("nan"),
            "relative_mce": float(np.mean(list(rel.values()))) if rel else float("nan"),
            "ce": ce, "relative_ce": rel, "corruptions": sorted(ce), "undefined": undefined}
