"""The core nouns: Model, ThreatModel, probes, Outcomes, the registry, seeded RNG and errors."""

from robustlab.core.errors import (
    ConfigError,
    DataError,
    ModelError,
    ProbeError,
    RobustlabError,
    RunError,
    UnsupportedModelError,
)
from robustlab.core.model import CallableModel, Model, SklearnModel, TorchModel, as_model, checked_scores
from robustlab.core.outcomes import COLUMNS, Outcomes
from robustlab.core.probe import (
    Attack,
    AttackResult,
    Certifier,
    Defense,
    Detector,
    Probe,
    ProbeOutput,
    Transform,
)
from robustlab.core.registry import register
from robustlab.core.rng import derive_seed, numpy_generator, torch_generator
from robustlab.core.threat import LpBall, ThreatModel, lp_norm

__all__ = [
    "Attack", "AttackResult", "CallableModel", "COLUMNS", "Certifier", "ConfigError", "DataError",
    "Defense", "Detector", "LpBall", "Model", "ModelError", "Outcomes", "Probe", "ProbeError",
    "ProbeOutput", "RobustlabError", "RunError", "SklearnModel", "ThreatModel", "TorchModel",
    "Transform", "UnsupportedModelError", "as_model", "checked_scores", "derive_seed", "lp_norm",
    "numpy_generator", "register", "torch_generator",
]
