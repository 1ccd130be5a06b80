"""Suite validation: typos, unknown probes and bad values give one ConfigError that names the fix."""

import pytest
import yaml

from robustlab.core.errors import ConfigError
from robustlab.evaluate.suite import BUILTIN_SUITES, builtin_suite, load_suite, parse_suite

BASE = {
    "model": {"zoo": "digits-mlp"},
    "data": {"name": "digits", "n": 50},
    "probes": [{"name": "gaussian_noise", "severities": [1, 2]}, {"name": "pgd", "eps": ["8/255", 0.1]}],
}


def test_valid_suite_parses_fractions_and_aliases():
    s = parse_suite(BASE)
    assert s.probes[0].settings == [1.0, 2.0]
    assert s.probes[1].settings == pytest.approx([8 / 255, 0.1])
    assert s.probes[1].params == {}
    assert s.seed == 0 and s.shard_size > 0


def test_typo_top_level_field_names_it_and_suggests():
    bad = dict(BASE)
    bad["probs"] = bad.pop("probes")
    with pytest.raises(ConfigError) as e:
        parse_suite(bad)
    msg = str(e.value)
    assert "probs" in msg and "did you mean 'probes'" in msg


def test_typo_in_model_section():
    bad = {**BASE, "model": {"zooo": "digits-mlp"}}
    with pytest.raises(ConfigError) as e:
        parse_suite(bad)
    assert "zooo" in str(e.value) and "zoo" in str(e.value)


def test_bad_setting_value_named():
    bad = {**BASE, "probes": [{"name": "pgd", "eps": ["eight"]}]}
    with pytest.raises(ConfigError) as e:
        parse_suite(bad)
    assert "probes.0.settings" in str(e.value)


def test_duplicate_probe_ids_rejected():
    bad = {**BASE, "probes": [{"name": "pgd", "eps": [0.1]}, {"name": "pgd", "eps": [0.2]}]}
    with pytest.raises(ConfigError, match="give each an 'id'"):
        parse_suite(bad)


def test_model_needs_exactly_one_source():
    with pytest.raises(ConfigError, match="exactly one"):
        parse_suite({**BASE, "model": {}})


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        parse_suite(["a", "b"])


def test_load_suite_yaml_errors(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_suite(tmp_path / "missing.yaml")


def test_roundtrip_and_fingerprint(tmp_path):
    s = parse_suite(BASE)
    p = tmp_path / "s.yaml"
    p.write_text(s.to_yaml())
    s2 = load_suite(p)
    assert s2.fingerprint() == s.fingerprint()
    changed = parse_suite({**BASE, "seed": 1})
    assert changed.fingerprint() != s.fingerprint()
    assert yaml.safe_load(s.to_yaml())["data"]["name"] == "digits"


@pytest.mark.parametrize("name", sorted(BUILTIN_SUITES))
def test_builtin_suites_validate(name):
    assert builtin_suite(name).probes
