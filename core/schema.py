"""The study schema on pydantic v2, and the one line a user reads when a study is wrong.

Every part of a study is a pydantic dataclass (``@spec``, a ``Spec`` subclass): pydantic checks
types, defaults and unknown keys as the YAML is read, then runs the part's own rules
(``Spec.check``), which need several fields at once. ``parse`` turns pydantic's first error into
a ``StudyError``: ``field: problem (fix: ...)``, with a did-you-mean for a typo'd key or value,
worded as the loader always has (tests/test_schema.py pins each wording).

What YAML hands us is taken on purpose: one value where a list goes (``methods: lora``:
``Listed``), a number where text goes, ``1e-3`` (text to YAML 1.1) where a number goes, an
empty section (``training:`` with its keys commented out) as that section's defaults. Booleans
stay strict (``eval_base: 1`` is refused), as are integers given as booleans.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import pydantic
from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError, model_validator

from core.errors import StudyError

T = TypeVar("T")


def _as_list(value: Any) -> Any:
    return value if value is None or isinstance(value, (list, tuple)) else [value]


# A list that also takes a single value (``methods: lora``). Booleans are pydantic's StrictBool
# (its lax mode would read 1 or "yes" as true).
Listed = Annotated[list[T], BeforeValidator(_as_list)]


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


# Numbers that refuse true/false (pydantic's lax mode reads True as 1).
Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]

CONFIG = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class Spec:
    """Base of every part of a study. Subclasses are declared with ``@spec``."""

    @model_validator(mode="before")
    @classmethod
    def _empty_is_defaults(cls, data: Any) -> Any:
        return {} if data is None else data

    @model_validator(mode="after")
    def _own_rules(self) -> Any:
        self.check()
        return self

    def check(self) -> None:
        """The part's rules beyond its fields' types. Raise ``StudyError`` with the field's
        path below this part (``parse`` puts the part's own path in front)."""


def spec(cls: type) -> type:
    """``@dataclasses.dataclass`` for study parts: pydantic-validated, unknown keys refused."""
    return pydantic.dataclasses.dataclass(config=CONFIG)(cls)


@functools.lru_cache(maxsize=None)
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def parse(cls: type, data: Any, path: str = "") -> Any:
    """``cls`` (a ``@spec`` class) from plain data, or a one-line ``StudyError`` naming the
    field under ``path``."""
    try:
        return _adapter(cls).validate_python({} if data is None else data)
    except ValidationError as exc:
        raise study_error(exc, cls, path) from None


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _strip(tp: Any) -> Any:
    """``tp`` without ``Annotated`` and without the ``None`` of an ``Optional``."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _strip(args[0])
    return tp


def _type_name(tp: Any) -> str:
    tp = _strip(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


@dataclasses.dataclass
class _Place:
    path: str  # the dotted path of the offending value, as the user wrote it
    tp: Any  # its declared type
    owner: Any  # the dataclass whose field it is (for unknown keys: the one it is not a field of)


def _place(root: type, loc: tuple[Any, ...], prefix: str) -> _Place:
    """Walk pydantic's error location down the declared types. Union members' tags (which
    pydantic appends to the location) are not part of the path."""
    tp: Any = root
    owner: Any = root
    path = prefix
    for key in loc:
        tp = _strip(tp)
        origin = get_origin(tp)
        if dataclasses.is_dataclass(tp):
            owner = tp
            path = _join(path, key)
            tp = get_type_hints(tp, include_extras=True).get(key, Any)
        elif origin is list:
            path = _join(path, key)
            tp = get_args(tp)[0]
        elif origin is dict:
            path = _join(path, key)
            tp = get_args(tp)[1]
        elif origin in (Union, types.UnionType):
            break  # the rest names the member pydantic tried
        else:
            path = _join(path, key)
            tp = Any
    return _Place(path, tp, owner)


def _got(value: Any, expected: str) -> str:
    return f"got {value!r}, expected {expected}"


EXPECTED = {  # pydantic error type -> what the value should have been
    "bool_type": "true or false", "bool_parsing": "true or false",
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping", "dataclass_type": "a mapping", "dataclass_exact_type": "a mapping", "model_type": "a mapping",
}


def study_error(exc: ValidationError, root: type, prefix: str = "") -> StudyError:
    """The first of pydantic's errors as our one line."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    place = _place(root, tuple(first["loc"]), prefix)
    kind, value = first["type"], first.get("input")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, StudyError):  # a part's own rule: its field is relative to the part
        return StudyError(_join(place.path, cause.field) if cause.field else place.path, cause.problem, cause.fix)
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        known = [f.name for f in dataclasses.fields(place.owner) if f.init]
        parent, _, key = place.path.rpartition(".")
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        fix = f"did you mean {_join(parent, near[0])!r}?" if near else f"known keys: {', '.join(known)}"
        return StudyError(place.path, "unknown key", fix)
    if kind in ("missing", "missing_argument"):
        return StudyError(place.path, "is required", f"add '{place.path.rpartition('.')[2]}:' to the study")
    stripped = _strip(place.tp)
    if get_origin(stripped) in (Union, types.UnionType):
        return StudyError(place.path, _got(value, _type_name(stripped)))
    if kind == "literal_error" or get_origin(stripped) is Literal:
        allowed = [str(a) for a in get_args(stripped)]
        near = difflib.get_close_matches(str(value), allowed, n=1)
        return StudyError(place.path, f"unknown value {value!r}", f"did you mean {near[0]!r}?" if near else f"use one of {', '.join(allowed)}")
    if stripped in (int, float) and kind == "value_error":  # a boolean given for a number
        return StudyError(place.path, _got(value, EXPECTED["int_type" if stripped is int else "float_type"]))
    if kind in EXPECTED:
        return StudyError(place.path, _got(value, EXPECTED[kind]))
    return StudyError(place.path, first["msg"])


def to_dict(obj: Any) -> Any:
    """Plain-data view of a dataclass tree (for logging and dry-run plans)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


__all__ = ["Spec", "spec", "parse", "study_error", "to_dict", "Listed", "Int", "Float"]
