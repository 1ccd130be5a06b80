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

__all__ = [
    "ABSTAIN",
    "BestCertifier",
    "bound_margins",
    "BoundCertifier",
    "Certificate",
    "check_supported",
    "clopper_pearson_lower",
    "CROWNCertifier",
    "IBPCertifier",
    "interval_bounds",
    "margin_spec",
    "METHODS",
    "RandomizedSmoothing",
    "Smooth",
    "train_noise_augmented",
]
