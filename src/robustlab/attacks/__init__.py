"""Attacks = Goal + ThreatModel + Search: FGSM, PGD, APGD, FAB, Square, CW-L2, BPDA, EOT, AutoAttack, transfer."""

from robustlab.attacks.apgd import APGD, APGDCE, APGDDLR, APGDT
from robustlab.attacks.autoattack import APGDEOT, AutoAttack
from robustlab.attacks.bpda import BPDA, bpda_view, straight_through
from robustlab.attacks.cw import CWL2
from robustlab.attacks.ensemble import Ensemble, Member
from robustlab.attacks.eot import EOTPGD
from robustlab.attacks.fab import FAB, fab_t
from robustlab.attacks.fgsm import FGSM
from robustlab.attacks.goals import Goal, Misclassify, Targeted, dlr_loss, margin_loss
from robustlab.attacks.oracle import (
    FMRResult,
    OracleLatentProbe,
    OracleSearchResult,
    encode_latent,
    fmr,
    oracle_latent_search,
)
from robustlab.attacks.pgd import PGD, pgd_l2, pgd_linf
from robustlab.attacks.search import GradientSearch, SearchResult, steepest_direction
from robustlab.attacks.square import Square
from robustlab.attacks.transfer import TransferAttack

__all__ = [
    "APGD",
    "APGDCE",
    "APGDDLR",
    "APGDEOT",
    "APGDT",
    "AutoAttack",
    "BPDA",
    "bpda_view",
    "CWL2",
    "dlr_loss",
    "encode_latent",
    "Ensemble",
    "EOTPGD",
    "FAB",
    "fab_t",
    "FGSM",
    "fmr",
    "FMRResult",
    "Goal",
    "GradientSearch",
    "margin_loss",
    "Member",
    "Misclassify",
    "oracle_latent_search",
    "OracleLatentProbe",
    "OracleSearchResult",
    "PGD",
    "pgd_l2",
    "pgd_linf",
    "SearchResult",
    "Square",
    "steepest_direction",
    "straight_through",
    "Targeted",
    "TransferAttack",
]
