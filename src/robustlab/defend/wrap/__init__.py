"""Inference-time model wrappers; ``masked`` holds the gradient-masking ones (test subjects for the
masking checks, BPDA and EOT, and a catalogue of the failure modes for users)."""

from robustlab.defend.wrap.base import WrappedModel
from robustlab.defend.wrap.masked import (
    InputTransform,
    QuantizedInput,
    RandomizedInput,
    SaturatedLogits,
    SoftmaxOutput,
    quantize,
)

__all__ = [
    "InputTransform",
    "QuantizedInput",
    "RandomizedInput",
    "SaturatedLogits",
    "SoftmaxOutput",
    "WrappedModel",
    "quantize",
]
