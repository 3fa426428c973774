"""Build typed dataclasses from plain YAML dicts, rejecting unknown keys with a suggestion.

Small on purpose: the study schema is a tree of dataclasses, and this walks it once.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from core.errors import StudyError


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def convert(tp: Any, value: Any, path: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise StudyError naming ``path``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, path)
            except StudyError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise StudyError(path, f"got {value!r}, expected {_type_name(tp)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed:
            return value
        near = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"use one of {', '.join(map(str, allowed))}"
        raise StudyError(path, f"unknown value {value!r}", hint)
    if origin is list:
        (item_tp,) = get_args(tp) or (Any,)
        if not isinstance(value, list):
            value = [value]
        return [convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = get_args(tp) or (Any, Any)
        if not isinstance(value, dict):
            raise StudyError(path, f"got {value!r}, expected a mapping")
        return {convert(key_tp, k, path): convert(val_tp, v, _join(path, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise StudyError(path, f"got {value!r}, expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise StudyError(path, f"got {value!r}, expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise StudyError(path, f"got {value!r}, expected a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise StudyError(path, f"got {value!r}, expected a string")
    return value


def parse(cls: type, data: Any, path: str = "") -> Any:
    """Instantiate dataclass ``cls`` from ``data``; unknown keys fail with a near-match hint."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise StudyError(path or cls.__name__, f"got {data!r}, expected a mapping")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            fix = f"did you mean {_join(path, near[0])!r}?" if near else f"known keys: {', '.join(fields)}"
            raise StudyError(_join(path, str(key)), "unknown key", fix)
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = convert(hints[name], data[name], _join(path, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise StudyError(_join(path, name), "is required", f"add '{name}:' to the study")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(path)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data view of a dataclass tree (for logging and dry-run plans)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


__all__ = ["parse", "convert", "to_dict"]
