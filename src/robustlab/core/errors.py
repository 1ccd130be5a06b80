"""The robustlab error hierarchy: every message says what is wrong *and* how to fix it.

User errors (a typo in a suite file, a wrong-shaped dataset, an unknown probe) derive from
:class:`RobustlabError`; the CLI prints them as one clean message and exits non-zero, with no
traceback. Anything else is a bug in robustlab and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "RobustlabError",
    "ConfigError",
    "DataError",
    "ModelError",
    "UnsupportedModelError",
    "ProbeError",
    "RunError",
]


class RobustlabError(Exception):
    """Base class of every error robustlab raises on purpose.

    ``fix`` is one sentence telling the user what to do; it is appended to the message.
    """

    def __init__(self, message: str, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message}\n  fix: {fix}")


class ConfigError(RobustlabError):
    """A suite file, CLI option or constructor argument is invalid."""


class DataError(RobustlabError):
    """A dataset is missing, unreadable or has the wrong shape / dtype / labels."""


class ModelError(RobustlabError):
    """A model raised, returned non-finite outputs, or returned the wrong shape."""


class UnsupportedModelError(ModelError):
    """A probe needs a capability (gradients, a layer type) the model does not have."""


class ProbeError(RobustlabError):
    """A probe (transform, attack, certifier, detector) failed on valid input."""


class RunError(RobustlabError):
    """A run directory is missing, corrupt, or belongs to a different suite."""
