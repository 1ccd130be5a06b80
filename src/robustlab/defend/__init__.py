"""Defenses: take a model (and maybe data), return a model that the same probes measure.

``robustlab.defend.wrap`` holds inference-time wrappers (``wrap(model) -> Model``). Each wrapper
declares honestly what it does to gradients: ``has_gradients=False`` for a non-differentiable step,
a ``bpda_forward`` surrogate for BPDA, ``randomized=True`` for stochastic outputs, so the evaluator
can pick attacks that are honest against it (Athalye, Carlini & Wagner, "Obfuscated Gradients Give
a False Sense of Security", 2018).

``robustlab.defend.train`` holds training-time defenses (``train(model, data, threat) -> Model``):
PGD adversarial training (:class:`PGDAT`) and :class:`TRADES`, or :func:`adversarial_train` in one call.
"""

from robustlab.defend.train import PGDAT, TRADES, adversarial_train

__all__ = ["PGDAT", "TRADES", "adversarial_train"]
