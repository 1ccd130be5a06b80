"""Attacks = Goal + ThreatModel + Search: FGSM, PGD, APGD (CE / DLR / T), CW-L2, BPDA, EOT; more build on them."""

from robustlab.attacks.apgd import APGD, APGDCE, APGDDLR, APGDT
from robustlab.attacks.bpda import BPDA, bpda_view, straight_through
from robustlab.attacks.cw import CWL2
from robustlab.attacks.eot import EOTPGD
from robustlab.attacks.fgsm import FGSM
from robustlab.attacks.goals import Goal, Misclassify, Targeted, dlr_loss, margin_loss
from robustlab.attacks.pgd import PGD, pgd_l2, pgd_linf
from robustlab.attacks.search import GradientSearch, SearchResult, steepest_direction

__all__ = [
    "APGD", "APGDCE", "APGDDLR", "APGDT", "BPDA", "CWL2", "EOTPGD", "FGSM", "PGD", "Goal", "GradientSearch",
    "Misclassify", "SearchResult", "Targeted", "bpda_view", "dlr_loss", "margin_loss", "pgd_l2", "pgd_linf",
    "steepest_direction", "straight_through",
]
