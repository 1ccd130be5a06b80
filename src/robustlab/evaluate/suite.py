"""The suite file: model, data and probes with their settings, validated with pydantic.

Every validation error is turned into one :class:`~robustlab.core.errors.ConfigError` that names the
field, the value and the fix (a typo'd field gets a "did you mean"). Settings may be written as
fractions (``8/255``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robustlab.core.errors import ConfigError

__all__ = ["Suite", "ModelSpec", "DataSpec", "ProbeSpec", "SliceSpec", "load_suite", "parse_suite", "builtin_suite",
           "BUILTIN_SUITES"]

BUILTIN_SUITES = {"demo": "demo.yaml", "demo-quick": "demo-quick.yaml", "text-demo": "text-demo.yaml",
                  "vision-natural": "vision-natural.yaml"}


def _number(v: Any) -> float:
    """A float from a number or a fraction string such as ``"8/255"``."""
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if "/" in s:
            a, b = s.split("/", 1)
            return float(a) / float(b)
        return float(s)
    raise ValueError(f"expected a number or a fraction like 8/255, got {v!r}")


class ModelSpec(BaseModel):
    """Which model to evaluate: a zoo entry, a saved torch / TorchScript / scikit-learn model, or a factory."""

    model_config = ConfigDict(extra="forbid")
    zoo: str | None = None
    path: str | None = None
    format: Literal["torch", "torchscript", "sklearn"] | None = None
    factory: str | None = Field(default=None, description="'package.module:function' returning a model")
    mean: list[float] | float | None = None
    std: list[float] | float | None = None
    num_classes: int | None = None
    modality: Literal["image", "tabular", "text"] | None = None
    quick: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        given = [k for k in ("zoo", "path", "factory") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of 'zoo', 'path' or 'factory' "
                             f"(got {', '.join(given) or 'none'})")
        if self.path and not self.format:
            suffix = Path(self.path).suffix.lower()
            self.format = {".pkl": "sklearn", ".joblib": "sklearn", ".ts": "torchscript"}.get(suffix, "torch")
        return self

    @property
    def label(self) -> str:
        return self.zoo or self.factory or Path(self.path or "model").name


class DataSpec(BaseModel):
    """Which data: a built-in dataset or a user file, the split, how many examples and the subset seed."""

    model_config = ConfigDict(extra="forbid")
    name: str
    split: Literal["train", "val", "test"] = "test"
    n: int | None = Field(default=None, gt=0)
    seed: int = 0
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ProbeSpec(BaseModel):
    """One probe: its registry ``name``, an optional display ``id``, the swept ``settings``, its parameters.

    ``severities`` (transforms) and ``eps`` (attacks) are accepted as spellings of ``settings``; every
    other key is passed to the probe's constructor, which rejects unknown ones by name.
    """

    model_config = ConfigDict(extra="allow")
    name: str
    id: str | None = None
    settings: list[float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for alias in ("severities", "severity", "eps"):
                if alias in data:
                    if "settings" in data:
                        raise ValueError(f"give either 'settings' or '{alias}', not both")
                    v = data.pop(alias)
                    data["settings"] = v if isinstance(v, list) else [v]
        return data

    @field_validator("settings", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, list) or not v:
            raise ValueError("settings must be a non-empty list of numbers")
        return [_number(x) for x in v]

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def key(self) -> str:
        return self.id or self.name


class SliceSpec(BaseModel):
    """A named subset of the examples, evaluated for every probe: by class, by a dataset attribute (any
    column of ``Dataset.attrs``: ShapeWorld's ``background_name``, ``size``, ...; a CSV / JSONL loader's
    extra columns) matched by value, by a list of values or by a [min, max] range, or by a user function
    ``'package.module:function'`` taking the outcomes frame (joined with the attributes) and returning
    one boolean per row."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str | None = None
    label: int | None = Field(default=None, alias="class", description="a class index")
    attribute: str | None = None
    value: Any = None
    values: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    function: str | None = Field(default=None, description="'package.module:function'")

    @model_validator(mode="after")
    def _one_selector(self) -> SliceSpec:
        given = [k for k in ("label", "attribute", "function") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a slice needs exactly one of 'class', 'attribute' or 'function'"
                             + (f" (got {', '.join('class' if g == 'label' else g for g in given)})" if given else ""))
        matchers = [k for k in ("value", "values") if getattr(self, k) is not None]
        ranged = self.min is not None or self.max is not None
        if self.attribute is not None:
            if len(matchers) + ranged != 1:
                raise ValueError(f"slice on attribute {self.attribute!r} needs exactly one of 'value', 'values' "
                                 "or a range ('min' and/or 'max')")
        elif matchers or ranged:
            raise ValueError("'value', 'values', 'min' and 'max' go with 'attribute' only")
        if self.function is not None and ":" not in self.function:
            raise ValueError(f"function {self.function!r} must look like 'package.module:function'")
        return self

    @property
    def key(self) -> str:
        """The slice's name: given, or derived from its selector."""
        if self.name:
            return self.name
        if self.label is not None:
            return f"class={self.label}"
        if self.function is not None:
            return self.function.rsplit(":", 1)[1]
        if self.value is not None:
            return f"{self.attribute}={self.value}"
        if self.values is not None:
            return f"{self.attribute} in {self.values}"
        lo = "" if self.min is None else f"{self.min:g}<="
        hi = "" if self.max is None else f"<={self.max:g}"
        return f"{lo}{self.attribute}{hi}"


class Suite(BaseModel):
    """A robustness suite: model × data × probes, with the seed and how to cut the work."""

    model_config = ConfigDict(extra="forbid")
    name: str = "suite"
    description: str = ""
    model: ModelSpec
    data: DataSpec
    probes: list[ProbeSpec] = Field(min_length=1)
    seed: int = 0
    shard_size: int = Field(default=250, gt=0)
    batch_size: int = Field(default=250, gt=0)
    examples: int = Field(default=6, ge=0, description="examples per probe setting kept for the report")
    fail_under: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    slices: list[SliceSpec] = Field(default_factory=list,
                                    description="named subsets of the examples, evaluated for every probe")
    baseline: str | None = Field(default=None, description="a baseline-family JSON file (`robustlab baseline`): "
                                 "effective robustness of the style probes it covers")

    @field_validator("baseline")
    @classmethod
    def _baseline_path(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or not v.strip().lower().endswith(".json")):
            raise ValueError("baseline must be the path of a .json file written by `robustlab baseline`")
        return v.strip() if v is not None else v

    @model_validator(mode="after")
    def _unique_ids(self) -> Suite:
        seen: set[str] = set()
        for p in self.probes:
            if p.key in seen:
                raise ValueError(f"two probes are called {p.key!r}; give each an 'id'")
            seen.add(p.key)
        names = [s.key for s in self.slices]
        if len(set(names)) != len(names):
            raise ValueError(f"slice names repeat: {names}; give each slice a distinct 'name'")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json", exclude_none=True, by_alias=True)
        if not d.get("slices"):
            d.pop("slices", None)
        return d

    def fingerprint(self) -> str:
        """A hash of everything that changes outcomes (used to refuse resuming a different suite).

        Slices and the effective-robustness baseline only re-read finished outcomes, so adding one to a
        resumed run recomputes nothing."""
        d = self.to_dict()
        for k in ("description", "fail_under", "notes", "examples", "slices", "baseline"):
            d.pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _explain(exc: ValidationError, where: str) -> ConfigError:
    lines, fixes = [], []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            field = str(err["loc"][-1])
            section = str(err["loc"][0]) if len(err["loc"]) > 1 else ""
            parent = {"model": ModelSpec, "data": DataSpec, "slices": SliceSpec}.get(section, Suite)
            close = difflib.get_close_matches(field, list(parent.model_fields), n=1)
            lines.append(f"unknown field '{loc}'")
            fixes.append(f"did you mean '{close[0]}'?" if close else
                         f"allowed fields here: {', '.join(parent.model_fields)}")
        elif err["type"] == "missing":
            lines.append(f"missing field '{loc}'")
            fixes.append(f"add '{err['loc'][-1]}' to the suite (see `robustlab run --help` and docs/suites.md)")
        else:
            shown = repr(value)[:80]
            lines.append(f"'{loc}' = {shown}: {err['msg']}")
    fix = "; ".join(fixes) if fixes else "correct the value(s) named above"
    return ConfigError(f"invalid suite {where}:\n  - " + "\n  - ".join(lines), fix=fix)


def parse_suite(data: Any, where: str = "") -> Suite:
    """Validate a suite given as a dict."""
    if not isinstance(data, dict):
        raise ConfigError(f"suite {where} must be a mapping with model, data and probes, got {type(data).__name__}",
                          fix="start from `robustlab run --example` or the README's suite file")
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, where) from None


def load_suite(path: str | Path) -> Suite:
    """Read and validate a YAML suite file (or the name of a built-in suite such as ``demo``)."""
    p = Path(path)
    if not p.exists():
        if str(path) in BUILTIN_SUITES:
            return builtin_suite(str(path))
        raise ConfigError(f"suite file {path} does not exist",
                          fix=f"give a path to a YAML file, or a built-in suite: {', '.join(BUILTIN_SUITES)}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"suite file {path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}",
                          fix="fix the YAML syntax (indentation, colons, quotes)") from None
    suite = parse_suite(data, where=str(path))
    if suite.baseline and not Path(suite.baseline).is_absolute() and not Path(suite.baseline).exists() \
            and (p.parent / suite.baseline).exists():
        suite.baseline = str(p.parent / suite.baseline)  # relative to the suite file
    return suite


def builtin_suite(name: str) -> Suite:
    """One of the suites shipped with robustlab (``demo``, ``demo-quick``, ``text-demo``)."""
    if name not in BUILTIN_SUITES:
        raise ConfigError(f"no built-in suite {name!r}", fix=f"choose one of {', '.join(BUILTIN_SUITES)}")
    text = (Path(__file__).parent / "suites" / BUILTIN_SUITES[name]).read_text()
    return parse_suite(yaml.safe_load(text), where=f"(built-in {name})")
