"""The 41 seed papers: key, title, and whether robustlab reproduces them yet.

A paper is *implemented* when ``robustlab.papers.<key with _>`` exists and defines
``reproduce(quick: bool) -> Reproduction``; otherwise its status is ``missing`` and running it exits 2
with a clear message.
"""

from __future__ import annotations

import importlib
import time
import traceback
from typing import Any

from robustlab.core.errors import ConfigError
from robustlab.papers.base import Reproduction

__all__ = ["PAPERS", "listing", "run", "print_result", "status"]

#: (number in seed-papers.md, key, title)
PAPERS: list[tuple[int, str, str]] = [
    (1, "crmt", 'Quantifying and Enhancing Multi-modal Robustness with Modality Preference'),
    (2, "ranking-robustness", 'Are Neural Ranking Models Robust?'),
    (3, "weight-signatures", 'Robust Weight Signatures: Gaining Robustness as Easy as Patching Weights?'),
    (4, "tta-rewrite", 'Improving Black-box Robustness with In-Context Rewriting'),
    (5, "robustness-gym", 'Robustness Gym: Unifying the NLP Evaluation Landscape'),
    (6, "attribute-editing", 'ImageNet-E: Benchmarking Neural Network Robustness via Attribute Editing'),
    (7, "adaptive-smoothing", 'Improving the Accuracy-Robustness Trade-Off of Classifiers via Adaptive Smoothing'),
    (8, "contrabert", 'ContraBERT: Enhancing Code Pre-trained Models via Contrastive Learning'),
    (9, "robustify-distill", 'Efficiently Robustify Pre-trained Models'),
    (10, "oracle-eval", 'Foundation Model-oriented Robustness: Robust Image Model Evaluation with Pretrained Models'),
    (11, "crossmax", 'Ensemble everything everywhere: Multi-scale aggregation for adversarial robustness'),
    (12, "recode", 'ReCode: Robustness Evaluation of Code Generation Models'),
    (13, "detection-shift", 'COCO-O: A Benchmark for Object Detectors under Natural Distribution Shifts'),
    (14, "ibp-tightness", 'Understanding Certified Training with Interval Bound Propagation'),
    (15, "great-score", 'GREAT Score: Global Robustness Evaluation of Adversarial Perturbation using Generative Models'),
    (16, "flag-aggregator", 'Flag Aggregator: Scalable Distributed Training under Failures and Augmented Losses using Convex Optimization'),
    (17, "knowledge-transfer", 'Fantastic Gains and Where to Find Them: On the Existence and Prospect of General Knowledge Transfer between Any Pretrained Model'),
    (18, "beyond", 'Be Your Own Neighborhood: Detecting Adversarial Example by the Neighborhood Relations Built on Self-Supervised Learning'),
    (19, "grokking", 'To grok or not to grok: Disentangling generalization and memorization on corrupted algorithmic datasets'),
    (20, "rift", 'Improving Generalization of Adversarial Training via Robust Critical Fine-Tuning'),
    (21, "nap-specs", 'Towards Reliable Neural Specifications'),
    (22, "certdr", 'Certified Robustness to Word Substitution Ranking Attack for Neural Ranking Models'),
    (23, "generated-data", 'Leaving Reality to Imagination: Robust Classification via Generated Datasets'),
    (24, "dverge", 'DVERGE: Diversifying Vulnerabilities for Enhanced Robust Generation of Ensembles'),
    (25, "rscp-plus", 'Provably Robust Conformal Prediction with Improved Efficiency'),
    (26, "ctrl-backdoor", 'An Embarrassingly Simple Backdoor Attack on Self-supervised Learning'),
    (27, "transtee", 'Exploring Transformer Backbones for Heterogeneous Treatment Effect Estimation'),
    (28, "mlops-monitor", 'Towards Trustworthy Machine Learning in Production: An Overview of the Robustness in MLOps Approach'),
    (29, "advmoe", 'Robust Mixture-of-Expert Training for Convolutional Neural Networks'),
    (30, "simplicity-bias", 'The Pitfalls of Simplicity Bias in Neural Networks'),
    (31, "transcoders", 'Transcoders Find Interpretable LLM Feature Circuits'),
    (32, "dilution", 'Robustness of Fusion-based Multimodal Classifiers to Cross-Modal Content Dilutions'),
    (33, "t-miner", 'T-Miner: A Generative Approach to Defend Against Trojan Attacks on DNN-based Text Classification'),
    (34, "bayesian-transfer", 'Efficient and Transferable Adversarial Examples from Bayesian Neural Networks'),
    (35, "contextual-fusion", 'Contextual Fusion For Adversarial Robustness'),
    (36, "robust-prototypes", 'A Robust Prototype-Based Network with Interpretable RBF Classifier Foundations'),
    (37, "freq-prompt", 'Improving Adversarial Robustness of Masked Autoencoders via Test-time Frequency-domain Prompting'),
    (38, "effective-robustness", 'Quality Not Quantity: On the Interaction between Dataset Design and Robustness of CLIP'),
    (39, "neur2ro", 'Neur2RO: Neural Two-Stage Robust Optimization'),
    (40, "accuracy-disparity", 'Understanding the Impact of Adversarial Robustness on Accuracy Disparity'),
    (41, "dta", 'Downstream Transfer Attack: Adversarial Attacks on Downstream Models with Pre-trained Vision Transformers'),]

_BY_KEY = {k: (n, t) for n, k, t in PAPERS}


def _module(key: str) -> Any | None:
    try:
        return importlib.import_module(f"robustlab.papers.{key.replace('-', '_')}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("robustlab.papers"):
            return None
        raise


def status(key: str) -> str:
    """``implemented`` or ``missing``."""
    mod = _module(key)
    return "implemented" if mod is not None and hasattr(mod, "reproduce") else "missing"


def listing() -> list[dict[str, Any]]:
    """All papers with number, key, title and status."""
    return [{"number": n, "key": k, "title": t, "status": status(k)} for n, k, t in PAPERS]


def run(key: str, quick: bool = False) -> Reproduction:
    """Run paper ``key``'s reproduction; a missing paper or a crash gives a result with exit code 2."""
    if key not in _BY_KEY:
        import difflib

        close = difflib.get_close_matches(key, list(_BY_KEY), n=3)
        raise ConfigError(f"unknown paper key {key!r}",
                          fix=(f"did you mean {', '.join(close)}? " if close else "")
                          + "see `robustlab reproduce --list`")
    number, title = _BY_KEY[key]
    mod = _module(key)
    if mod is None or not hasattr(mod, "reproduce"):
        return Reproduction(key=key, title=title, error=f"paper {number} ({key}) is not implemented yet "
                            "(status: missing); no result is reported rather than a fake one")
    t0 = time.perf_counter()
    try:
        result: Reproduction = mod.reproduce(quick=quick)
    except Exception as exc:  # report, never hide, a crash
        return Reproduction(key=key, title=title, seconds=time.perf_counter() - t0,
                            error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
    result.seconds = result.seconds or (time.perf_counter() - t0)
    return result


def print_result(result: Reproduction, console: Any) -> None:
    """Human-readable claims table."""
    from rich.table import Table

    console.print(f"[bold]{result.key}[/]: {result.title}")
    if result.error:
        console.print(f"[bold red]could not run:[/] {result.error}")
        return
    table = Table()
    for col in ("claim", "held", "statement", "measured"):
        table.add_column(col)
    for c in result.claims:
        table.add_row(c.id, "[green]yes[/]" if c.held else "[red]NO[/]", c.statement,
                      ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in c.measured.items()))
    console.print(table)
    for n in result.notes:
        console.print(f"note: {n}")
    console.print(f"{result.seconds:.1f} s")
