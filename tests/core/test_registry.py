"""Tests of ``robustlab.core.registry``: register / get / create and the error messages."""

import uuid
from dataclasses import dataclass

import pytest

from robustlab.core import registry
from robustlab.core.errors import ConfigError


@pytest.fixture
def throwaway():
    """Register two throwaway entries under unique names; remove them afterwards (global state)."""
    tag = uuid.uuid4().hex[:8]
    name, factory_name = f"zz_blur_{tag}", f"zz_factory_{tag}"

    @dataclass
    class Blur:
        sigma: float = 1.0
        radius: int = 2

    def factory(**kwargs):
        if "bad" in kwargs:
            raise TypeError("unexpected keyword 'bad'")
        return dict(kwargs)

    try:
        registry.register("transform", name)(Blur)
        registry.register("detector", factory_name)(factory)
        yield name, Blur, factory_name
    finally:
        registry._REGISTRY["transform"].pop(name, None)
        registry._REGISTRY["detector"].pop(factory_name, None)


def test_register_get_create(throwaway):
    name, cls, _ = throwaway
    assert registry.get(name) is cls
    assert registry.get(name, "transform") is cls
    obj = registry.create(name, sigma=0.5)
    assert isinstance(obj, cls) and obj.sigma == 0.5 and obj.radius == 2
    assert name in registry.names("transform") and name in registry.names()
    assert registry.available()["transform"][name] is cls
    assert registry.names() == sorted(registry.names())


def test_register_returns_the_class_unchanged():
    class Thing:
        pass

    name = f"zz_thing_{uuid.uuid4().hex[:8]}"
    try:
        assert registry.register("slice", name)(Thing) is Thing
    finally:
        registry._REGISTRY["slice"].pop(name, None)
    assert name not in registry.names("slice")


def test_unknown_name_suggests_close_matches(throwaway):
    name, _, _ = throwaway
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    with pytest.raises(ConfigError) as info:
        registry.get(typo)
    assert repr(typo) in str(info.value)
    assert info.value.fix.startswith("did you mean") and repr(name) in info.value.fix


def test_unknown_name_without_close_match_points_to_list():
    with pytest.raises(ConfigError) as info:
        registry.get("qqqqqqqqqqqqqqqqqqqqqqq", "attack")
    assert "unknown attack" in str(info.value)
    assert "robustlab list" in info.value.fix


def test_wrong_kind_does_not_find_the_name(throwaway):
    name, _, _ = throwaway
    with pytest.raises(ConfigError):
        registry.get(name, "attack")


def test_unknown_kind_errors():
    with pytest.raises(ConfigError, match="unknown kind 'attacks'"):
        registry.get("pgd", "attacks")
    with pytest.raises(ConfigError):
        registry.names("nope")
    with pytest.raises(ValueError):
        registry.register("nope", "x")


def test_bad_params_list_accepted_params(throwaway):
    name, _, _ = throwaway
    with pytest.raises(ConfigError) as info:
        registry.create(name, sigmaa=0.5)
    assert "sigmaa" in str(info.value)
    assert info.value.fix == f"{name!r} accepts: sigma, radius"


def test_type_error_inside_a_factory_is_not_reported_as_bad_params():
    """Regression: any TypeError raised while building a probe was reported as a bad parameter."""

    class Buggy:
        def __init__(self, k: int = 1):
            raise TypeError("bug inside __init__")

    name = f"zz_buggy_{uuid.uuid4().hex[:8]}"
    try:
        registry.register("certifier", name)(Buggy)
        with pytest.raises(TypeError, match="bug inside"):
            registry.create(name, k=2)
        with pytest.raises(ConfigError, match="bad parameters"):
            registry.create(name, j=2)
    finally:
        registry._REGISTRY["certifier"].pop(name, None)


def test_kwargs_factory_errors_still_become_config_errors(throwaway):
    _, _, fname = throwaway
    assert registry.create(fname, a=1) == {"a": 1}
    with pytest.raises(ConfigError, match="bad parameters"):
        registry.create(fname, bad=1)


def test_kinds_and_builtin_modules():
    assert registry.KINDS == ("transform", "attack", "certifier", "detector", "slice", "defense")
    assert set(registry._REGISTRY) == set(registry.KINDS)
    assert "robustlab.attacks.pgd" in registry.BUILTIN_MODULES
