"""Built-in code graders for agent answers: the expected tool call, and a tool call valid for its schema.

A code grader is ``fn(choice, task, tools=None, **params) -> float`` in [0, 1]; ``choice`` is a logged
choice (``content``, ``tool_calls``), ``task`` a task-suite entry (its ``expected`` outcome) or ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def expected_tool_call(choice: Mapping[str, Any], task: Mapping[str, Any] | None, tools: Any = None) -> float:
    """1.0 when the answer calls exactly the expected tools with the expected arguments (or says the expected text)."""
    expected = (task or {}).get("expected") or {}
    if "tool_calls" in expected:
        got = [(c["name"], c.get("arguments", {})) for c in choice.get("tool_calls") or []]
        want = [(c["name"], c.get("arguments", {})) for c in expected["tool_calls"]]
        return float(got == want)
    if "content" in expected:
        return float((choice.get("content") or "").strip() == str(expected["content"]).strip())
    return 0.0


def valid_tool_call(choice: Mapping[str, Any], task: Mapping[str, Any] | None,
                    tools: list[Mapping[str, Any]] | None = None) -> float:
    """1.0 when every tool call names an offered tool and its arguments validate against that tool's JSON Schema."""
    from jsonschema import ValidationError
    from jsonschema.validators import validator_for

    schemas = {t["function"]["name"]: t["function"].get("parameters", {"type": "object"}) for t in tools or []}
    for call in choice.get("tool_calls") or []:
        schema = schemas.get(call["name"])
        if schema is None:
            return 0.0
        try:
            validator_for(schema)(schema).validate(call.get("arguments", {}))
        except ValidationError:
            return 0.0
    return 1.0
