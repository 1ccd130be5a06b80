"""Tests of ``robustlab.core.errors``: messages carry the fix; the hierarchy."""

import pytest

from robustlab.core import errors
from robustlab.core.errors import (
    ConfigError,
    DataError,
    ModelError,
    ProbeError,
    RobustlabError,
    RunError,
    UnsupportedModelError,
)

ALL = [ConfigError, DataError, ModelError, UnsupportedModelError, ProbeError, RunError]


@pytest.mark.parametrize("cls", ALL)
def test_message_includes_fix(cls):
    err = cls("eps must be >= 0", fix="pass eps=8/255")
    assert str(err) == "eps must be >= 0\n  fix: pass eps=8/255"
    assert err.message == "eps must be >= 0" and err.fix == "pass eps=8/255"
    assert isinstance(err, RobustlabError) and isinstance(err, Exception)


def test_message_without_fix():
    err = RunError("run dir missing")
    assert str(err) == "run dir missing" and err.fix is None and "fix" not in str(err)


def test_hierarchy():
    assert issubclass(UnsupportedModelError, ModelError)
    for cls in ALL:
        assert issubclass(cls, RobustlabError)
    assert not issubclass(ConfigError, ValueError)  # user errors are not confused with bugs
    with pytest.raises(ModelError):
        raise UnsupportedModelError("no gradients", fix="use square")


def test_all_exports():
    assert set(errors.__all__) == {c.__name__ for c in ALL} | {"RobustlabError"}


def test_errors_are_picklable():
    """Errors cross process boundaries (dask workers): the message and fix must survive."""
    import pickle

    err = pickle.loads(pickle.dumps(ConfigError("bad", fix="do x")))
    assert isinstance(err, ConfigError) and err.message == "bad" and err.fix == "do x"
    assert str(err) == "bad\n  fix: do x"
