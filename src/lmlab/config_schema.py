"""Typed configs from composed ones, the same way for every entry point.

Hydra's `+key=value` adds a key even under a structured schema, and `OmegaConf.to_object` then drops it: a misspelt
`+model.d_modle=64` would train the default model. `parse` refuses every key its schema does not declare, however
it was added, then lets each config dataclass check itself (`validate()`, children before parents, so a parent's
cross-group checks see valid parts)."""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmlab.errors import InputError, MissingInputFile

T = TypeVar("T")


def parse(cfg: DictConfig, schema: type[T]) -> T:
    """`cfg` (without its `hydra` node) as an instance of the dataclass `schema`, validated; InputError otherwise."""
    unknown = unknown_keys(cfg, schema)
    if unknown:
        raise InputError("; ".join(unknown))
    try:
        parsed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise InputError(f"invalid config value: {err}") from err
    if not isinstance(parsed, schema):
        raise InputError(f"the config is not a {schema.__name__} (its schema was not composed in)")
    validate_tree(parsed)
    return parsed


def parse_node(node: Mapping[str, Any], schema: type[T], prefix: str) -> T:
    """A config node chosen by name at run time (an objective, a task family) as its own `schema`: unknown keys
    (named as `prefix`.key), wrong types and `validate()` failures are InputError."""
    unknown = unknown_keys(node, schema, prefix)
    if unknown:
        raise InputError("; ".join(unknown))
    try:
        parsed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except OmegaConfBaseException as err:
        raise InputError(f"invalid {prefix.rstrip('.')} config ({schema.__name__}): {err}") from err
    assert isinstance(parsed, schema), parsed
    validate_tree(parsed, prefix)
    return parsed


def unknown_keys(node: Any, schema: type, path: str = "") -> list[str]:
    """One message per key of `node` that `schema` (a dataclass) does not declare, recursing into nested schemas.
    Fields typed `Any` (an objective's settings, checked by the objective's own schema) are not looked into."""
    if not isinstance(node, Mapping):
        return []
    declared = {f.name for f in fields(schema)}
    hints = typing.get_type_hints(schema)
    problems = []
    for key in node:
        name = f"{path}{key}"
        if key == "hydra" and not path:
            continue
        if key not in declared:
            close = difflib.get_close_matches(str(key), declared, n=1)
            hint = f"; did you mean {path}{close[0]}?" if close else ""
            where = path.rstrip(".") or "the top level"
            problems.append(f"{name} is not a setting (the settings under {where}: {sorted(declared)}){hint}")
        elif not (isinstance(node, DictConfig) and OmegaConf.is_missing(node, key)):
            child = _schema_of(node[key], hints[key])
            if child is not None:
                problems.extend(unknown_keys(node[key], child, f"{name}."))
    return problems


def _schema_of(value: Any, hint: Any) -> type | None:
    """The dataclass a node is checked against: its field's type, or (a field typed `Any` that a structured node
    filled, such as a task family's config) the node's own."""
    if isinstance(hint, type) and is_dataclass(hint):
        return hint
    if isinstance(value, DictConfig):
        own = OmegaConf.get_type(value)
        return own if isinstance(own, type) and is_dataclass(own) else None
    return None


def validate_tree(obj: Any, prefix: str = "") -> None:
    """Refuse a number that is not finite anywhere in `obj`, then call `validate()` on every dataclass in it,
    children first.

    One rule for every numeric setting: NaN passes every comparison-based check (`nan < low` is False) and an
    infinite lr, eps or temperature trains or samples nothing, so no setting may be either."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            validate_tree(value, f"{prefix}{f.name}.")
        else:
            require_finite(f"{prefix}{f.name}", value)
    if hasattr(obj, "validate"):
        obj.validate()


def require_finite(key: str, value: Any) -> None:
    """Refuse NaN or ±inf in `value` (a number, or a list or mapping of them), naming `key`."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{key}={value} is not a finite number; every numeric setting must be finite")
    if isinstance(value, Mapping):
        for k, v in value.items():
            require_finite(f"{key}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            require_finite(f"{key}[{i}]", v)


def choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    """Refuse `value` for `key` unless it is one of `allowed`."""
    if value not in allowed:
        raise InputError(f"{key}={value!r} is not supported; expected one of {list(allowed)}")


def require_file(path: str, key: str) -> None:
    """Refuse a config that names a file that is not there."""
    if not Path(path).expanduser().is_file():
        raise MissingInputFile(f"{key}: {path} does not exist or is not a file")


def at_least(key: str, value: float, low: float) -> None:
    if not value >= low:  # NaN is refused too
        raise InputError(f"{key} must be >= {low}, got {value}")
