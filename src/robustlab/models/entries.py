"""The zoo's entries: which data, which architecture and which training settings make each model.

Settings are data, not code, so that ``meta.json`` records them and a changed setting invalidates the
cache. Each entry has a full configuration (the reference model, with an accuracy target) and a
``quick`` one (a tiny variant for tests: seconds to train, lower accuracy acceptable).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ENTRIES", "ZooEntry"]


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model.

    Attributes:
        name: the zoo name (``"digits-cnn"``).
        dataset: the :func:`robustlab.data.load_dataset` name it is trained and tested on.
        kind: ``"torch"`` or ``"sklearn"``.
        modality: the model's input kind.
        description: one line for listings and reports.
        target_accuracy: the clean test accuracy the full model is meant to reach (reported, not enforced).
        full: the full training configuration.
        quick: overrides of ``full`` for the quick variant.
    """

    name: str
    dataset: str
    kind: str
    modality: str
    description: str
    target_accuracy: float
    full: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)

    def config(self, quick: bool = False) -> dict[str, Any]:
        """The training configuration (a fresh copy), with the quick overrides when ``quick``."""
        cfg = copy.deepcopy(self.full)
        if quick:
            cfg.update(copy.deepcopy(self.quick))
        return cfg


_DIGITS = {"seed": 0, "data_seed": 0, "train_n": None, "test_n": None, "schedule": "onecycle",
           "batch_size": 64}

#: the digits CNN recipe shared by the standard and the adversarially trained entries
_DIGITS_CNN = dict(_DIGITS, architecture="DigitsCNN", arch_kwargs={"channels": [32, 64, 64], "hidden": 128},
                   optimizer="sgd", lr=0.05, weight_decay=5e-4, epochs=50, augment={"max_shift": 1})
_DIGITS_QUICK = {"epochs": 4, "train_n": 400, "test_n": 200}

#: the robust CBC recipe (paper 36): model, loss and training settings of train_prototype_model
_CBC = {"model": "cbc", "loss": "robust", "num_components": 20, "concepts_per_class": 2, "epochs": 40,
        "batch_size": 128, "lr": 0.01, "robust_margin": 1.58}

ENTRIES: dict[str, ZooEntry] = {
    "digits-mlp": ZooEntry(
        name="digits-mlp", dataset="digits", kind="torch", modality="image",
        description="ReLU MLP 64-256-256-10 on scikit-learn digits (8x8), AdamW, Gaussian-noise augmentation",
        target_accuracy=0.97,
        full=dict(_DIGITS, architecture="DigitsMLP", arch_kwargs={"hidden": [256, 256]}, optimizer="adamw",
                  lr=2e-3, weight_decay=0.05, epochs=40, augment={"noise": 0.1}),
        quick={"epochs": 4, "train_n": 400, "test_n": 200},
    ),
    "digits-cnn": ZooEntry(
        name="digits-cnn", dataset="digits", kind="torch", modality="image",
        description="3-conv + 2-linear CNN on scikit-learn digits (8x8), SGD, 1-pixel shift augmentation",
        target_accuracy=0.97,
        full=dict(_DIGITS_CNN),
        quick=dict(_DIGITS_QUICK),
    ),
    "shapeworld-resnet": ZooEntry(
        name="shapeworld-resnet", dataset="shapeworld", kind="torch", modality="image",
        description="ResNet-8 (stride-2 stem, widths 16/32/64, BatchNorm) on ShapeWorld 32x32 RGB, "
                    "shift + flip augmentation",
        target_accuracy=0.95,
        full={"seed": 0, "data_seed": 0, "train_n": 20000, "test_n": 2000, "architecture": "ShapeWorldResNet",
              "arch_kwargs": {"widths": [16, 32, 64], "blocks": 1, "stem_stride": 2}, "optimizer": "sgd",
              "schedule": "onecycle", "epochs": 15, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4,
              "augment": {"max_shift": 2, "flip": True}},
        quick={"epochs": 2, "train_n": 512, "test_n": 256, "batch_size": 64,
               "arch_kwargs": {"widths": [8, 16, 16], "blocks": 1, "stem_stride": 2}},
    ),
    "digits-cnn-at": ZooEntry(
        name="digits-cnn-at", dataset="digits", kind="torch", modality="image",
        description="digits-cnn with PGD adversarial training (Madry et al. 2018), L∞ eps 0.1, 7 PGD steps "
                    "(alpha 2.5*eps/7), eps ramped up over the first 15 epochs",
        target_accuracy=0.97,
        full=dict(_DIGITS_CNN,
                  adversarial={"method": "pgd", "norm": "inf", "eps": 0.1, "steps": 7, "warmup_epochs": 15}),
        quick={**_DIGITS_QUICK,
               "adversarial": {"method": "pgd", "norm": "inf", "eps": 0.1, "steps": 3, "warmup_epochs": 1}},
    ),
    "digits-cnn-trades": ZooEntry(
        name="digits-cnn-trades", dataset="digits", kind="torch", modality="image",
        description="digits-cnn with TRADES (Zhang et al. 2019), beta 6, L∞ eps 0.1, 7 KL-ascent steps "
                    "(alpha 0.226*eps, the official ratio), eps ramped up over the first 15 epochs",
        target_accuracy=0.97,
        full=dict(_DIGITS_CNN,
                  adversarial={"method": "trades", "norm": "inf", "eps": 0.1, "beta": 6.0, "steps": 7,
                               "warmup_epochs": 15}),
        quick={**_DIGITS_QUICK,
               "adversarial": {"method": "trades", "norm": "inf", "eps": 0.1, "beta": 6.0, "steps": 3,
                               "warmup_epochs": 1}},
    ),
    "shapeworld-resnet-at": ZooEntry(
        name="shapeworld-resnet-at", dataset="shapeworld", kind="torch", modality="image",
        description="shapeworld-resnet fine-tuned with PGD adversarial training (Madry et al. 2018), L∞ eps "
                    "8/255, 5 PGD steps, 4 epochs from the standard model's weights (eps ramped over 1 epoch)",
        target_accuracy=0.95,
        full={"seed": 0, "data_seed": 0, "train_n": 20000, "test_n": 2000, "architecture": "ShapeWorldResNet",
              "arch_kwargs": {"widths": [16, 32, 64], "blocks": 1, "stem_stride": 2}, "optimizer": "sgd",
              "schedule": "cosine", "epochs": 4, "batch_size": 128, "lr": 0.02, "weight_decay": 5e-4,
              "augment": {"max_shift": 2, "flip": True},
              "adversarial": {"method": "pgd", "norm": "inf", "eps": 8 / 255, "steps": 5, "warmup_epochs": 1,
                              "init_from": "shapeworld-resnet"}},
        quick={"epochs": 1, "train_n": 512, "test_n": 256, "batch_size": 64,
               "arch_kwargs": {"widths": [8, 16, 16], "blocks": 1, "stem_stride": 2},
               "adversarial": {"method": "pgd", "norm": "inf", "eps": 8 / 255, "steps": 2, "warmup_epochs": 0.5,
                               "init_from": "shapeworld-resnet"}},
    ),
    "digits-mlp-ibp": ZooEntry(
        name="digits-mlp-ibp", dataset="digits", kind="torch", modality="image",
        description="digits-mlp (64-256-256-10) with IBP certified training (Gowal et al. 2018), trained at L∞ "
                    "eps 0.15, certified at 0.1; 1 epoch at eps 0, eps/kappa (1 -> 0.5) ramped over 15 epochs",
        target_accuracy=0.9,
        full=dict(_DIGITS, architecture="DigitsMLP", arch_kwargs={"hidden": [256, 256]}, optimizer="adam",
                  schedule="cosine", lr=1e-3, weight_decay=0.0, epochs=40,
                  certified={"method": "ibp", "eps": 0.1, "train_eps": 0.15, "warmup_epochs": 1, "ramp_epochs": 15}),
        quick={"epochs": 4, "train_n": 400, "test_n": 200, "arch_kwargs": {"hidden": [64, 64]},
               "certified": {"method": "ibp", "eps": 0.1, "train_eps": 0.15, "warmup_epochs": 0.5, "ramp_epochs": 2,
                             "crown_n": 100}},
    ),
    "digits-cnn-crownibp": ZooEntry(
        name="digits-cnn-crownibp", dataset="digits", kind="torch", modality="image",
        description="small digits CNN (convs 16/32/32, linear 100) with CROWN-IBP certified training (Zhang et al. "
                    "2020), L∞ eps 0.1; 2 epochs at eps 0, eps/kappa (1 -> 0)/beta (1 -> 0) ramped over 30 epochs",
        target_accuracy=0.9,
        full=dict(_DIGITS, architecture="DigitsCNN", arch_kwargs={"channels": [16, 32, 32], "hidden": 100},
                  optimizer="adam", schedule="cosine", lr=1e-3, weight_decay=0.0, epochs=60,
                  certified={"method": "crown-ibp", "eps": 0.1, "warmup_epochs": 2, "ramp_epochs": 30,
                             "crown_n": 200}),
        quick={"epochs": 4, "train_n": 400, "test_n": 200, "arch_kwargs": {"channels": [8, 16, 16], "hidden": 32},
               "certified": {"method": "crown-ibp", "eps": 0.1, "warmup_epochs": 0.5, "ramp_epochs": 2,
                             "crown_n": 50}},
    ),
    "shapeworld-cnn-ibp": ZooEntry(
        name="shapeworld-cnn-ibp", dataset="shapeworld", kind="torch", modality="image",
        description="small CNN (convs 8/16/32, strides 1/2/2, linear 64, no BatchNorm) on ShapeWorld 32x32 RGB with "
                    "IBP certified training (Gowal et al. 2018), L∞ eps 1/255; eps, kappa (1 -> 0.5) ramped over 8 ep.",
        target_accuracy=0.5,
        full={"seed": 0, "data_seed": 0, "train_n": 10000, "test_n": 2000, "architecture": "DigitsCNN",
              "arch_kwargs": {"channels": [8, 16, 32], "hidden": 64}, "optimizer": "adam", "schedule": "cosine",
              "epochs": 20, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.0,
              "certified": {"method": "ibp", "eps": 1 / 255, "warmup_epochs": 1, "ramp_epochs": 8, "crown_n": 0}},
        quick={"epochs": 2, "train_n": 512, "test_n": 256, "arch_kwargs": {"channels": [4, 8, 8], "hidden": 16},
               "certified": {"method": "ibp", "eps": 1 / 255, "warmup_epochs": 0.5, "ramp_epochs": 1, "crown_n": 0}},
    ),
    "digits-cbc-rbf": ZooEntry(
        name="digits-cbc-rbf", dataset="digits", kind="torch", modality="image",
        description="robust CBC with RBF foundations (Saralajew et al., AAAI 2025): 20 components, 2 reasoning "
                    "concepts per class, robust loss (margin 1.58) on digits; certify with prototype_margin",
        target_accuracy=0.88,
        full={"seed": 0, "data_seed": 0, "train_n": None, "test_n": None, "architecture": "RobustCBC",
              "prototype": _CBC},
        quick={"train_n": 400, "test_n": 200, "prototype": dict(_CBC, epochs=8)},
    ),
    "text-tfidf-lr": ZooEntry(
        name="text-tfidf-lr", dataset="text-sentiment", kind="sklearn", modality="text",
        description="TF-IDF (word 1-2 grams) + logistic regression on the generated sentiment text",
        target_accuracy=0.9,
        full={"seed": 0, "data_seed": 0, "train_n": None, "test_n": None, "architecture": "TfidfLogReg",
              "tfidf": {"ngram_range": [1, 2], "sublinear_tf": True, "min_df": 1},
              "logreg": {"C": 10.0, "max_iter": 1000}},
        quick={"train_n": 400, "test_n": 200},
    ),
}
