"""Strict loading of JSON mappings: unknown keys, missing keys and wrong types fail, naming the field.

One helper for every ``from_dict``-style loader, so a typo in a spec, a config or a request body is
an error that says where (``env_spec.max_episode_steps: expected int or null, got str``) instead of
being dropped silently or surfacing as a ``TypeError`` from a constructor. Each caller passes its
own typed error (``ConfigError`` for stored specs, ``InvalidObservationError`` for HTTP bodies).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from rlops_plugin.errors import ConfigError

T = TypeVar("T")
_JSON_NAMES = {dict: "object", list: "list", tuple: "list", str: "str", int: "int", float: "float", bool: "bool",
               type(None): "null"}


def check_keys(data: Any, allowed: Iterable[str], where: str, error: Callable[[str], Exception] = ConfigError, *,
               required: Iterable[str] = (), noun: str = "fields") -> Mapping[str, Any]:
    """Return ``data`` if it is a mapping with only ``allowed`` keys and every ``required`` one; else raise."""
    if not isinstance(data, Mapping):
        raise error(f"{where}: must be a JSON object, got {type(data).__name__}")
    known = sorted(allowed)
    unknown = sorted(str(k) for k in set(data) - set(known))
    if unknown:
        raise error(f"{where}: unknown {noun} {unknown}; known: {known}")
    for name in required:
        if name not in data:
            raise error(f"{where}.{name}: required")
    return data


def load_dataclass(cls: type[T], data: Any, where: str, error: Callable[[str], Exception] = ConfigError) -> T:
    """Build dataclass ``cls`` from a JSON mapping, checking keys and each value against its type hint."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    required = [name for name, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    check_keys(data, fields, where, error, required=required)
    hints = _type_hints(cls)
    for name, value in data.items():
        problem = type_problem(value, hints.get(name, Any), f"{where}.{name}")
        if problem:
            raise error(problem)
    return cls(**data)


def type_problem(value: Any, hint: Any, where: str) -> str | None:
    """Why ``value`` (parsed JSON) does not fit type ``hint``, naming the (nested) field; None if it fits."""
    if _fits(value, hint):
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            problems = [type_problem(value, h, where) for h in typing.get_args(hint) if _fits(value, h)]
            return None if None in problems else problems[0]
        args = typing.get_args(hint)
        if origin in (dict, Mapping) and len(args) == 2:
            for key, item in value.items():
                problem = type_problem(item, args[1], f"{where}[{key!r}]")
                if problem:
                    return problem
        elif origin in (list, tuple, Sequence) and args:
            items = args[:1] * len(value) if origin is not tuple or args[-1] is Ellipsis else args
            for i, (item, item_hint) in enumerate(zip(value, items, strict=False)):
                problem = type_problem(item, item_hint, f"{where}[{i}]")
                if problem:
                    return problem
        return None
    return f"{where}: expected {_describe(hint)}, got {_type_name(value)}"


def _type_name(value: Any) -> str:
    """The JSON name of a value's type, or its qualified Python name (``numpy.bool``, not a bare ``bool``)."""
    kind = type(value)
    if kind in _JSON_NAMES:
        return _JSON_NAMES[kind]
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _fits(value: Any, hint: Any) -> bool:
    """Shallow check of one JSON value against a type hint (containers: the container type only)."""
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
    if origin in (list, tuple, Sequence) or hint in (list, tuple, Sequence):
        args = typing.get_args(hint)
        fixed = origin is tuple and args and args[-1] is not Ellipsis
        return isinstance(value, (list, tuple)) and (not fixed or len(value) == len(args))
    # Python callers pass numpy scalars and paths where JSON has numbers and strings: accept those too
    if hint is float:
        return isinstance(value, numbers.Real) and not _is_bool(value)
    if hint is int:
        return isinstance(value, numbers.Integral) and not _is_bool(value)
    if hint is bool:
        return _is_bool(value)
    if hint is str and isinstance(value, os.PathLike):
        return True
    return isinstance(hint, type) and isinstance(value, hint)


def _is_bool(value: Any) -> bool:
    """``bool`` or a numpy bool (which is not a ``bool`` subclass)."""
    return isinstance(value, bool) or type(value).__name__ == "bool" and type(value).__module__ == "numpy"


def _describe(hint: Any) -> str:
    """A short name of a type hint for error messages (``int or null``, ``object``, ``list``)."""
    if hint is None or hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    args = typing.get_args(hint)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"list of {len(args)}"
    base = origin or hint
    if base in (dict, Mapping):
        return "object"
    if base in (list, tuple, Sequence):
        return "list"
    return _JSON_NAMES.get(base, getattr(base, "__name__", str(base)))


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass (its module's names resolve ``from __future__`` strings)."""
    return typing.get_type_hints(cls)
