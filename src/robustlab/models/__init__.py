"""Models: small reference architectures, a seeded trainer, and the cached model zoo.

``from robustlab.models import zoo; zoo.load("digits-cnn")`` gives a ready, cached reference model.
"""

from robustlab.models import zoo
from robustlab.models.architectures import BasicBlock, DigitsCNN, DigitsMLP, ShapeWorldResNet
from robustlab.models.prototypes import (
    GLVQ,
    RBFNetwork,
    RobustCBC,
    build_prototype_model,
    cbc_margin_loss,
    robust_cbc_loss,
    train_prototype_model,
)
from robustlab.models.training import (
    evaluate_accuracy,
    gaussian_noise,
    make_augment,
    random_shift_flip,
    train_classifier,
)

__all__ = [
    "BasicBlock", "DigitsCNN", "DigitsMLP", "ShapeWorldResNet", "evaluate_accuracy", "gaussian_noise",
    "make_augment", "random_shift_flip", "train_classifier", "zoo",
]
__all__ += ["GLVQ", "RBFNetwork", "RobustCBC", "build_prototype_model", "cbc_margin_loss", "robust_cbc_loss",
            "train_prototype_model"]

from robustlab.models.generative import (  # noqa: E402 - appended by the GREAT Score work
    ConditionalGenerator,
    ConditionalVAE,
    PCAGaussianGenerator,
    load_generator,
    train_generator,
)

__all__ += ["ConditionalGenerator", "ConditionalVAE", "PCAGaussianGenerator", "load_generator", "train_generator"]

from robustlab.models.detection import (  # noqa: E402 - the small detector of the COCO-O work (paper 13)
    CenterNet,
    DetectorConfig,
    batched_nms,
    train_detector,
)

__all__ += ["CenterNet", "DetectorConfig", "batched_nms", "train_detector"]
