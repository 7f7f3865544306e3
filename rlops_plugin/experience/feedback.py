"""Parsing and validating feedback: rewards, ratings, human corrections and raw outcomes.

Every event carries an idempotency key (given by the client, or derived from its content),
so a reward posted twice is stored once. Validation errors name the field and the reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from rlops_plugin.bundle.hashing import sha256_json
from rlops_plugin.bundle.strict import check_keys
from rlops_plugin.errors import InvalidObservationError
from rlops_plugin.experience.records import (
    FEEDBACK_KINDS,
    SESSION_PREFIX,
    FeedbackEvent,
    decision_id,
    split_decision_id,
)

_FIELDS = {"decision_id", "interaction_id", "choice", "session_id", "kind", "value", "action", "response", "text",
           "scale", "rater", "payload", "idempotency_key", "timestamp"}
_AGENT_FIELDS = ("response", "text", "scale", "rater")
_AGENT_KINDS = ("comment",)
MAX_KEY_LENGTH = 200
MAX_TEXT_LENGTH = 100_000
THUMBS = "thumbs"
"""Rating scale of a thumbs-up (``1``) / thumbs-down (``-1``) widget; other scales are declared as ``"1-5"``."""


def parse_feedback(item: Any, where: str = "feedback", idempotency_key: str | None = None,
                   now: float | None = None) -> FeedbackEvent:
    """Validate one JSON feedback object and return the event (raises with the field named).

    A vector decision is named by ``decision_id``; an agent's answer by ``interaction_id`` (and ``choice``,
    default 0), a whole conversation by ``session_id``. Agent fields (``response`` of a correction, ``text``
    of a comment, ``scale`` of a rating, ``rater``) are kept in the event's payload.
    """
    check_keys(item, _FIELDS, where, InvalidObservationError)
    decision = _target(item, where)
    kind = item.get("kind", "reward")
    if kind not in FEEDBACK_KINDS:
        raise InvalidObservationError(f"{where}.kind: {kind!r} is not one of {list(FEEDBACK_KINDS)}")
    agent = item.get("decision_id") is None  # an agent's answer (interaction_id) or conversation (session_id)
    if not agent:
        used = [name for name in _AGENT_FIELDS if item.get(name) is not None]
        if kind in _AGENT_KINDS or used:
            raise InvalidObservationError(f"{where}.{used[0] if used else 'kind'}: "
                                          f"{'kind ' + repr(kind) if not used else repr(used[0])} is for agent "
                                          "interactions (name interaction_id or session_id); a decision takes "
                                          "reward, rating, correction (action) or outcome (payload)")
        if kind == "outcome" and item.get("value") is not None:
            raise InvalidObservationError(f"{where}.value: not used for kind 'outcome' of a decision; put data "
                                          "in 'payload'")
    payload = item.get("payload")
    if payload is not None and not isinstance(payload, Mapping):
        raise InvalidObservationError(f"{where}.payload: must be a JSON object")
    payload = dict(payload or {})
    value = _value(item, kind, where)
    action = item.get("action")
    response = item.get("response")
    if kind == "correction":
        if (action is None) == (response is None):
            raise InvalidObservationError(f"{where}.action: the corrected action (int or list) is required, or "
                                          "else 'response' (the corrected assistant message of an agent); not both")
        if action is not None and (isinstance(action, bool) or not isinstance(action, (int, list))):
            raise InvalidObservationError(f"{where}.action: the corrected action (int or list) is required")
        if response is not None:
            payload["response"] = _corrected_response(response, f"{where}.response")
    elif action is not None or response is not None:
        raise InvalidObservationError(f"{where}.{'action' if action is not None else 'response'}: "
                                      "only used for kind 'correction'")
    text = item.get("text")
    if kind == "comment":
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_LENGTH:
            raise InvalidObservationError(f"{where}.text: a comment needs non-empty text up to {MAX_TEXT_LENGTH} chars")
        payload["text"] = text
    elif text is not None:
        raise InvalidObservationError(f"{where}.text: only used for kind 'comment'")
    if kind == "outcome" and value is None and not payload:
        raise InvalidObservationError(f"{where}.payload: an outcome needs a non-empty payload, or a 'value' "
                                      "(success 1/0 or a score)")
    for name in ("scale", "rater"):
        if item.get(name) is not None:
            payload[name] = item[name]
    if item.get("rater") is not None and (not isinstance(item["rater"], str) or not item["rater"]
                                          or len(item["rater"]) > MAX_KEY_LENGTH):
        raise InvalidObservationError(f"{where}.rater: a non-empty string up to {MAX_KEY_LENGTH} chars")
    _check_finite(payload, f"{where}.payload")
    received = time.time() if now is None else now
    event_ts = _parse_timestamp(item.get("timestamp"), f"{where}.timestamp", received)
    key = item.get("idempotency_key", idempotency_key)
    if key is None:
        content = {"decision_id": decision, "kind": kind, "value": value, "action": action,
                   "payload": item.get("payload")}  # a decision's event hashes exactly as before agents existed
        if agent:
            content["agent"] = {name: item.get(name) for name in (*_AGENT_FIELDS, "choice")}
        key = "sha256:" + sha256_json(content)
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidObservationError(f"{where}.idempotency_key: non-empty string up to {MAX_KEY_LENGTH} chars")
    return FeedbackEvent(decision_id=decision, kind=kind, idempotency_key=key, value=value,
                         action=action, payload=payload or None, event_ts=event_ts, received_ts=received)


def _target(item: Mapping[str, Any], where: str) -> str:
    """The decision id the event is about: a decision, an agent choice, or a session."""
    given = [name for name in ("decision_id", "interaction_id", "session_id") if item.get(name) is not None]
    if not given:
        raise InvalidObservationError(f"{where}.decision_id: required string (an agent's feedback names "
                                      "interaction_id or session_id instead)")
    if len(given) > 1:
        raise InvalidObservationError(f"{where}: name one of decision_id, interaction_id or session_id, got {given}")
    name = given[0]
    value = item[name]
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_LENGTH:
        raise InvalidObservationError(f"{where}.{name}: a non-empty string up to {MAX_KEY_LENGTH} chars")
    if item.get("choice") is not None and name != "interaction_id":
        raise InvalidObservationError(f"{where}.choice: only used with interaction_id")
    if name == "session_id":
        return SESSION_PREFIX + value
    if name == "interaction_id":
        choice = item.get("choice", 0)
        if isinstance(choice, bool) or not isinstance(choice, int) or not 0 <= choice < 1024:
            raise InvalidObservationError(f"{where}.choice: an integer 0..1023 (the choice index), got {choice!r}")
        value = decision_id(value, choice)
    try:
        split_decision_id(value)
    except InvalidObservationError as exc:
        raise InvalidObservationError(f"{where}.{name}: {exc}") from None
    return value


def _value(item: Mapping[str, Any], kind: str, where: str) -> float | None:
    value = item.get("value")
    scale = item.get("scale")
    if scale is not None and kind != "rating":
        raise InvalidObservationError(f"{where}.scale: only used for kind 'rating'")
    if kind in ("reward", "rating", "outcome"):
        if value is None and kind == "outcome":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidObservationError(f"{where}.value: a number is required for kind {kind!r}")
        if not _finite(value):
            raise InvalidObservationError(f"{where}.value: must be finite")
        if scale is not None:
            _check_scale(value, scale, where)
        return float(value)
    if value is not None:
        raise InvalidObservationError(f"{where}.value: not used for kind {kind!r}; put data in 'payload'")
    return None


def _check_scale(value: float, scale: Any, where: str) -> None:
    if scale == THUMBS:
        if value not in (1, -1):
            raise InvalidObservationError(f"{where}.value: a thumbs rating is 1 (up) or -1 (down), got {value}")
        return
    low, sep, high = str(scale).partition("-") if isinstance(scale, str) else ("", "", "")
    if not sep or not _digits(low) or not _digits(high) or int(low) >= int(high):
        raise InvalidObservationError(f"{where}.scale: 'thumbs' or an integer range such as '1-5', got {scale!r}")
    if value != int(value) or not int(low) <= value <= int(high):
        raise InvalidObservationError(f"{where}.value: an integer from {low} to {high} on scale {scale!r}, got {value}")


def _corrected_response(response: Any, where: str) -> dict[str, Any]:
    """A corrected assistant message: ``{"content": str}`` and/or ``{"tool_calls": [{"name", "arguments"}]}``."""
    if isinstance(response, str):
        response = {"content": response}
    if not isinstance(response, Mapping):
        raise InvalidObservationError(f"{where}: the corrected text, or an object with content and/or tool_calls")
    check_keys(response, ("content", "tool_calls"), where, InvalidObservationError)
    content, calls = response.get("content"), response.get("tool_calls")
    if content is None and not calls:
        raise InvalidObservationError(f"{where}: needs content or tool_calls")
    if content is not None and (not isinstance(content, str) or len(content) > MAX_TEXT_LENGTH):
        raise InvalidObservationError(f"{where}.content: a string up to {MAX_TEXT_LENGTH} chars")
    out: dict[str, Any] = {"content": content}
    if calls is not None:
        if not isinstance(calls, list):
            raise InvalidObservationError(f"{where}.tool_calls: a list of {{name, arguments}} objects")
        out["tool_calls"] = [_tool_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(calls)]
    return out


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    """``{"name", "arguments"}`` (OpenAI's ``{"function": {...}}`` wrapper and JSON-string arguments accepted)."""
    if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
        call = call["function"]
    if not isinstance(call, Mapping) or not isinstance(call.get("name"), str) or not call["name"]:
        raise InvalidObservationError(f"{where}.name: the tool's name is required")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError as exc:
            raise InvalidObservationError(f"{where}.arguments: not valid JSON ({exc})") from None
    if not isinstance(arguments, Mapping):
        raise InvalidObservationError(f"{where}.arguments: a JSON object")
    return {"name": call["name"], "arguments": dict(arguments)}


def parse_feedback_body(body: Any, idempotency_key: str | None = None) -> list[FeedbackEvent]:
    """A JSON object or a non-empty list of objects (``{"events": [...]}`` also accepted)."""
    if isinstance(body, Mapping) and "events" in body and len(body) == 1:
        body = body["events"]
    if isinstance(body, list):
        if not body:
            raise InvalidObservationError("events: empty list")
        if idempotency_key is not None and len(body) > 1:
            raise InvalidObservationError("Idempotency-Key header applies to a single event only")
        return [parse_feedback(item, f"events[{i}]", idempotency_key) for i, item in enumerate(body)]
    return [parse_feedback(body, "feedback", idempotency_key)]


def _parse_timestamp(value: Any, where: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise InvalidObservationError(f"{where}: unix seconds or an ISO-8601 time expected, got {value!r}")


def _finite(value: int | float) -> bool:
    """A finite number that a float holds (JSON parsed by ``json`` keeps integers of any size)."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts ``'²'``, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _check_finite(obj: Any, where: str) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise InvalidObservationError(f"{where}: {obj} is not finite")
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")
