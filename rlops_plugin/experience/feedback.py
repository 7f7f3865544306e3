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

from rlops_plugin.bundle.hashing import sha256_json
from rlops_plugin.bundle.strict import check_keys
from rlops_plugin.errors import InvalidObservationError
from rlops_plugin.experience.records import FEEDBACK_KINDS, FeedbackEvent, split_decision_id

_FIELDS = {"decision_id", "kind", "value", "action", "payload", "idempotency_key", "timestamp"}
MAX_KEY_LENGTH = 200


def parse_feedback(item: Any, where: str = "feedback", idempotency_key: str | None = None,
                   now: float | None = None) -> FeedbackEvent:
    """Validate one JSON feedback object and return the event (raises with the field named)."""
    check_keys(item, _FIELDS, where, InvalidObservationError)
    decision = item.get("decision_id")
    if not isinstance(decision, str) or not decision:
        raise InvalidObservationError(f"{where}.decision_id: required string")
    try:
        split_decision_id(decision)
    except InvalidObservationError as exc:
        raise InvalidObservationError(f"{where}.decision_id: {exc}") from None
    kind = item.get("kind", "reward")
    if kind not in FEEDBACK_KINDS:
        raise InvalidObservationError(f"{where}.kind: {kind!r} is not one of {list(FEEDBACK_KINDS)}")
    value = item.get("value")
    if kind in ("reward", "rating"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidObservationError(f"{where}.value: a number is required for kind {kind!r}")
        if not math.isfinite(value):
            raise InvalidObservationError(f"{where}.value: must be finite")
        value = float(value)
    elif value is not None:
        raise InvalidObservationError(f"{where}.value: not used for kind {kind!r}; put data in 'payload'")
    action = item.get("action")
    if kind == "correction":
        if action is None or isinstance(action, bool) or not isinstance(action, (int, list)):
            raise InvalidObservationError(f"{where}.action: the corrected action (int or list) is required")
    elif action is not None:
        raise InvalidObservationError(f"{where}.action: only used for kind 'correction'")
    payload = item.get("payload")
    if payload is not None and not isinstance(payload, Mapping):
        raise InvalidObservationError(f"{where}.payload: must be a JSON object")
    if kind == "outcome" and not payload:
        raise InvalidObservationError(f"{where}.payload: an outcome needs a non-empty payload")
    if payload is not None:
        _check_finite(payload, f"{where}.payload")
    received = time.time() if now is None else now
    event_ts = _parse_timestamp(item.get("timestamp"), f"{where}.timestamp", received)
    key = item.get("idempotency_key", idempotency_key)
    if key is None:
        key = "sha256:" + sha256_json({"decision_id": decision, "kind": kind, "value": value,
                                       "action": action, "payload": payload})
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidObservationError(f"{where}.idempotency_key: non-empty string up to {MAX_KEY_LENGTH} chars")
    return FeedbackEvent(decision_id=decision, kind=kind, idempotency_key=key, value=value,
                         action=action, payload=dict(payload) if payload else None,
                         event_ts=event_ts, received_ts=received)


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
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise InvalidObservationError(f"{where}: unix seconds or an ISO-8601 time expected, got {value!r}")


def _check_finite(obj: Any, where: str) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise InvalidObservationError(f"{where}: {obj} is not finite")
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")
