"""``robustlab.errors``: the public home of the error hierarchy (see :mod:`robustlab.core.errors`)."""

from robustlab.core.errors import *  # noqa: F401,F403
from robustlab.core.errors import __all__  # noqa: F401
