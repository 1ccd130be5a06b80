"""robustlab: measure, certify and improve the robustness of ML models.

``import robustlab`` needs only torch and numpy; heavier pieces are imported where used.
"""

from robustlab.core import (
    Attack,
    CallableModel,
    ConfigError,
    DataError,
    LpBall,
    Model,
    ModelError,
    Outcomes,
    RobustlabError,
    SklearnModel,
    ThreatModel,
    TorchModel,
    Transform,
    as_model,
)
from robustlab.data.base import Dataset

__version__ = "0.1.0"

__all__ = [
    "Attack", "CallableModel", "ConfigError", "DataError", "Dataset", "LpBall", "Model", "ModelError",
    "Outcomes", "RobustlabError", "SklearnModel", "ThreatModel", "TorchModel", "Transform", "as_model",
    "__version__",
]
