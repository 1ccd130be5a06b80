"""Certification: sound guarantees in a threat model (IBP, CROWN bounds; randomized smoothing)."""

from robustlab.certify.bounds import (
    METHODS,
    BestCertifier,
    BoundCertifier,
    CROWNCertifier,
    IBPCertifier,
    bound_margins,
    check_supported,
    interval_bounds,
    margin_spec,
)
from robustlab.certify.smoothing import (
    ABSTAIN,
    Certificate,
    RandomizedSmoothing,
    Smooth,
    clopper_pearson_lower,
    train_noise_augmented,
)
from robustlab.certify.tightness import TightnessResult, expected_dln_tightness, tightness

__all__ = [
    "ABSTAIN",
    "BestCertifier",
    "bound_margins",
    "BoundCertifier",
    "Certificate",
    "check_supported",
    "clopper_pearson_lower",
    "CROWNCertifier",
    "expected_dln_tightness",
    "IBPCertifier",
    "interval_bounds",
    "margin_spec",
    "METHODS",
    "RandomizedSmoothing",
    "Smooth",
    "tightness",
    "TightnessResult",
    "train_noise_augmented",
]
