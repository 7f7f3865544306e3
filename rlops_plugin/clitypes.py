"""The one ``KEY=VALUE`` click parameter type behind every such option (``--set``, ``--arg``, ``--param``, ``--shift``).

It lives below every layer so any command (the main CLI, the monitor's) can use it without imports going up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click


class KeyValue(click.ParamType):
    """``KEY=VALUE`` -> ``(key, value)``; ``value`` parsed by ``convert_value`` (its ValueError names the fix)."""

    name = "KEY=VALUE"

    def __init__(self, convert_value: Callable[[str, str], Any] | None = None, metavar: str = "KEY=VALUE",
                 hint: str = "write KEY=VALUE") -> None:
        self.convert_value = convert_value
        self.metavar = metavar
        self.hint = hint

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """What ``--help`` shows."""
        return self.metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, Any]:
        """Split at the first ``=`` and convert the value; a bad item fails naming the option."""
        if isinstance(value, tuple):
            return value
        key, sep, raw = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"{value!r} is not {self.metavar}: {self.hint}", param, ctx)
        try:
            return key.strip(), self.convert_value(key.strip(), raw) if self.convert_value else raw
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


def json_or_text(key: str, raw: str) -> Any:
    """A JSON value when it parses, else the text; ``*_json`` keys keep their JSON text as it is."""
    if key.endswith("_json"):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def number(key: str, raw: str) -> float:
    """A float, or a ValueError that says so."""
    try:
        return float(raw)
    except ValueError:
        raise ValueError("VALUE must be a number") from None


def number_range(key: str, raw: str) -> dict[str, float]:
    """``LOW:HIGH`` -> ``{"low": LOW, "high": HIGH}``."""
    low, _, high = raw.partition(":")
    try:
        return {"low": float(low), "high": float(high)}
    except ValueError:
        raise ValueError("write NAME=LOW:HIGH with numbers") from None
