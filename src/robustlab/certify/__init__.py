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
from robustlab.certify.conformal import (
    PTT,
    RSCPPlusCertifier,
    SmoothedScores,
    SplitConformalCertifier,
    conformal_quantile,
    coverage_and_size,
    evaluate_conformal,
    rct_loss,
    rct_train,
    rscp_plus_sets,
    rscp_plus_threshold,
    rscp_sets,
    smoothed_scores,
    split_conformal_sets,
)
from robustlab.certify.nap import (
    MILPResult,
    NAPBounds,
    NAPCertifier,
    NAPs,
    ReLUNetwork,
    hidden_preactivations,
    mine_naps,
    nap_coverage,
    nap_falsify,
    nap_margin_bounds,
    nap_max_radius,
    nap_membership,
    nap_milp,
    naps_overlap,
    relu_network,
)
from robustlab.certify.prototypes import PrototypeMargin, certified_radius
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
__all__ += ["PrototypeMargin", "certified_radius"]
__all__ += ["conformal_quantile", "coverage_and_size", "evaluate_conformal", "PTT", "rct_loss", "rct_train",
            "rscp_plus_sets", "rscp_plus_threshold", "rscp_sets", "RSCPPlusCertifier", "smoothed_scores",
            "SmoothedScores", "split_conformal_sets", "SplitConformalCertifier"]
__all__ += ["hidden_preactivations", "mine_naps", "MILPResult", "NAPBounds", "NAPCertifier", "nap_coverage",
            "nap_falsify", "nap_margin_bounds", "nap_max_radius", "nap_membership", "nap_milp", "NAPs",
            "naps_overlap", "ReLUNetwork", "relu_network"]

from robustlab.certify.great import (  # noqa: E402 - appended by the GREAT Score work
    GreatResult,
    GreatScore,
    calibrate_temperature,
    great_score,
    hoeffding_epsilon,
    local_great_scores,
    rank_correlation,
    smoothed_great_radius,
)

__all__ += ["GreatResult", "GreatScore", "calibrate_temperature", "great_score", "hoeffding_epsilon",
            "local_great_scores", "rank_correlation", "smoothed_great_radius"]

from robustlab.certify.crown import set_matmul as set_crown_matmul  # noqa: E402 - CROWN float32 products

__all__ += ["set_crown_matmul"]
