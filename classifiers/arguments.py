"""Hyper-parameter dataclasses read from YAML and overridden with `--set key=value`.

Fine-tuning and pretraining both describe their runs as frozen dataclasses whose fields are
`int`, `float`, `bool` or an optional one of those, checked in `__post_init__` (raising
`ValueError` that starts with the field's name). `load_arguments` reads such a class from a
YAML file then command-line overrides, and turns every mistake into a `ConfigError` naming the
key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from worker.config import read_yaml
from worker.errors import ConfigError

T = TypeVar("T")


def _annotation(cls: type[Any], name: str) -> str:
    return str(cls.__dataclass_fields__[name].type)


def _convert(cls: type[Any], name: str, text: str) -> object:
    """A command-line string as the type of field `name` (`null`/`none` for optional fields)."""
    annotation = _annotation(cls, name)
    if "None" in annotation and text.strip().lower() in ("null", "none", ""):
        return None
    if annotation.startswith("bool"):
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "on", "off", "yes", "no", "1", "0"):
            raise ValueError(f"expected true or false, got {text!r}")
        return lowered in ("true", "on", "yes", "1")
    if annotation.startswith("int"):
        return int(text)
    return float(text)


def _has_type(cls: type[Any], name: str, value: object) -> bool:
    """Whether a YAML value fits field `name` (an int is a float; a bool is neither)."""
    kind = _annotation(cls, name)
    if value is None:
        return "None" in kind
    if kind.startswith("bool"):
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind.startswith("int"):
        return isinstance(value, int)
    return isinstance(value, int | float)


def load_arguments(
    cls: type[T], path: Path | None, overrides: Mapping[str, str] | None = None
) -> T:
    """`cls` from a YAML file (None: the defaults) then `--set key=value` overrides."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, object] = {}
    document = read_yaml(path) if path is not None else {}
    for key, value in document.items():
        if key not in known:
            raise ConfigError(str(path), str(key), "unknown key")
        values[key] = value
    for key, text in (overrides or {}).items():
        if key not in known:
            raise ConfigError(f"--set {key}", key, "unknown key")
        try:
            values[key] = _convert(cls, key, text)
        except ValueError as exc:
            raise ConfigError(f"--set {key}", key, str(exc)) from exc
    source = str(path) if path is not None else "--set"
    for key, value in values.items():
        if not _has_type(cls, key, value):
            raise ConfigError(source, key, f"expected {_annotation(cls, key)}, got {value!r}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        key = next((k for k in values if str(exc).startswith(k)), "")
        raise ConfigError(source, key, str(exc)) from exc


def check_fields(instance: object, checks: list[tuple[str, bool, str]]) -> None:
    """Raise `ValueError` for the first failed `(field, ok, expected)` check."""
    for name, ok, expected in checks:
        if not ok:
            raise ValueError(f"{name} must be {expected}, got {getattr(instance, name)!r}")
