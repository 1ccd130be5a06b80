"""Training-time defenses: ``train(model, data, threat) -> Model`` (adversarial training).

* :class:`PGDAT` — PGD adversarial training (Madry et al., 2018).
* :class:`TRADES` — TRADES (Zhang et al., ICML 2019).
* :func:`adversarial_train` — either of them in one call, training a network in place.
* :class:`IBPTraining` / :class:`CROWNIBPTraining` — certified training (Gowal et al., 2018; Zhang et al., 2020).

Both attack in the raw [0, 1] domain through the model (normalization stays inside a
:class:`~robustlab.core.model.TorchModel`), support L∞ and L2 balls, ramp eps up linearly over the
first epochs, and are seeded end to end.
"""

from robustlab.defend.train.adversarial import (
    AdversarialTraining,
    BatchLoss,
    adversarial_train,
    as_torch_model,
    robust_accuracy,
    warmup_eps,
)
from robustlab.defend.train.certified import (
    CertifiedTraining,
    CROWNIBPTraining,
    IBPTraining,
    certified_accuracy,
    certified_train,
    margin_lower_bounds,
    ramp_value,
    worst_case_logits,
)
from robustlab.defend.train.generated import (
    GENERATION_MODES,
    GeneratedDataAugmentation,
    PCAMixtureGenerator,
    generate_dataset,
    generated_counts,
    train_with_generated,
)
from robustlab.defend.train.noise import GaussianAugmentation, gaussian_augmentation_train
from robustlab.defend.train.pgd_at import PGDAT, pgd_examples
from robustlab.defend.train.trades import TRADES, kl_divergence, trades_examples

__all__ = [
    "PGDAT",
    "TRADES",
    "AdversarialTraining",
    "BatchLoss",
    "adversarial_train",
    "as_torch_model",
    "kl_divergence",
    "pgd_examples",
    "robust_accuracy",
    "trades_examples",
    "warmup_eps",
    "CertifiedTraining",
    "CROWNIBPTraining",
    "IBPTraining",
    "certified_accuracy",
    "certified_train",
    "margin_lower_bounds",
    "ramp_value",
    "worst_case_logits",
    "GENERATION_MODES",
    "GeneratedDataAugmentation",
    "PCAMixtureGenerator",
    "generate_dataset",
    "generated_counts",
    "train_with_generated",
    "GaussianAugmentation",
    "gaussian_augmentation_train",
]
