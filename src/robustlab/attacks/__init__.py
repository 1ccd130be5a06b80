"""Attacks = Goal + ThreatModel + Search: FGSM and PGD now; APGD, FAB, Square, AutoAttack build on them."""

from robustlab.attacks.fgsm import FGSM
from robustlab.attacks.goals import Goal, Misclassify, Targeted, dlr_loss, margin_loss
from robustlab.attacks.pgd import PGD, pgd_l2, pgd_linf
from robustlab.attacks.search import GradientSearch, SearchResult, steepest_direction

__all__ = [
    "FGSM",
    "PGD",
    "Goal",
    "GradientSearch",
    "Misclassify",
    "SearchResult",
    "Targeted",
    "dlr_loss",
    "margin_loss",
    "pgd_l2",
    "pgd_linf",
    "steepest_direction",
]
