"""KServe request-logger CloudEvents and CloudEvents-wrapped feedback.

An InferenceService's ``logger`` spec posts every request and response to a sink as binary-mode
CloudEvents (``ce-type: org.kubeflow.serving.inference.request|response``, the same ``ce-id``
for both). Pointing it at ``/v1/cloudevents`` of an rlops server makes a cluster deployment's
decisions land in the experience store even when the predictor pod logs nowhere itself: once
both halves of a pair are stored, the decisions are reconstructed from the request's
observations and our predictor's response (decision ids, actions, propensities, versions)
and inserted if absent, so a predictor that also logs directly is never double-counted.

Events of type ``rlops.feedback`` (binary or structured mode) carry feedback objects. Both modes are
parsed by the CloudEvents SDK (``cloudevents.http.from_http``); this module adds errors that name the
missing attribute and the reconstruction of decisions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from cloudevents.exceptions import DataUnmarshallerError, GenericException
from cloudevents.http import CloudEvent, from_http

from rlops_plugin.errors import InvalidObservationError
from rlops_plugin.experience.feedback import parse_feedback_body
from rlops_plugin.experience.records import DecisionBatch, split_decision_id
from rlops_plugin.experience.store import ExperienceStore

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
FEEDBACK_TYPE = "rlops.feedback"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
REQUIRED_ATTRIBUTES = ("id", "type", "source", "specversion")
MAX_ERROR_CHARS = 300


def parse_cloudevent(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """A binary- or structured-mode CloudEvent parsed by the CloudEvents SDK; field-named errors."""
    lower = {k.lower(): v for k, v in headers.items()}
    structured = lower.get("content-type", "").startswith(STRUCTURED_CONTENT_TYPE)
    if not structured:  # the SDK reads a request lacking any ce- header as structured: name the header here
        _require({name: lower.get(f"ce-{name}") for name in REQUIRED_ATTRIBUTES}, "header ce-{}")
    try:
        event = from_http(lower, body, data_unmarshaller=_json_data)
    except DataUnmarshallerError as exc:  # raised while handling the decoder's error: report that one
        raise InvalidObservationError(f"cloudevent: data is not valid JSON ({exc.__context__ or exc})") from None
    except (GenericException, ValueError) as exc:  # SDK messages may quote the body: keep them short
        raise InvalidObservationError(f"cloudevent: {str(exc)[:MAX_ERROR_CHARS]}") from None
    _require({name: event.get(name) for name in REQUIRED_ATTRIBUTES}, "field {}" if structured else "header ce-{}")
    return event


def ingest_cloudevent(store: ExperienceStore, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Store one CloudEvent; returns what happened (for the HTTP response)."""
    event = parse_cloudevent(headers, body)
    ce_id, ce_type, data = str(event["id"]), str(event["type"]), event.get_data()
    if ce_type == FEEDBACK_TYPE:
        events = parse_feedback_body(data, idempotency_key=f"ce:{event['source']}:{ce_id}"
                                     if not isinstance(data, list) else None)
        return {"type": ce_type, "feedback": store.add_feedback(events)}
    if ce_type not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise InvalidObservationError(f"cloudevent: type {ce_type!r} is not a KServe logger event or {FEEDBACK_TYPE}")
    model = str(event.get("inferenceservicename") or event.get("component") or "unknown")
    status = store.add_logger_events([(ce_id, ce_type, model, json.dumps(data).encode())])[0]
    pair = {t: b for cid, t, _m, b in store.logger_events() if cid == ce_id}
    decisions = 0
    if REQUEST_TYPE in pair and RESPONSE_TYPE in pair:
        batch = batch_from_logged_pair(model, json.loads(pair[REQUEST_TYPE]), json.loads(pair[RESPONSE_TYPE]))
        if batch is not None:
            store.log_decisions_if_absent(batch)
            decisions = batch.n
    return {"type": ce_type, "status": status, "decisions": decisions}


def _json_data(raw: str | bytes | None) -> Any:
    """The event's data as JSON (no data: None); the SDK wraps a decoding error in ``DataUnmarshallerError``."""
    return json.loads(raw) if raw else None


def _require(attributes: Mapping[str, Any], where: str) -> None:
    """Refuse a missing or empty required attribute, naming it and where it is read from."""
    for name, value in attributes.items():
        if value is None or value == "":
            raise InvalidObservationError(f"cloudevent: attribute '{name}' is required ({where.format(name)})")


def batch_from_logged_pair(model: str, request: Any, response: Any) -> DecisionBatch | None:
    """Rebuild a decision batch from a logged v1 request/response pair of an rlops predictor."""
    if not isinstance(response, Mapping) or not isinstance(response.get("predictions"), list):
        return None
    rows = response["predictions"]
    if not rows or not all(isinstance(r, Mapping) and "decision_id" in r for r in rows):
        return None
    instances = request.get("instances") if isinstance(request, Mapping) else None
    if not isinstance(instances, list) or len(instances) != len(rows):
        raise InvalidObservationError("cloudevent: request and response sizes differ")
    obs = np.asarray([i["obs"] if isinstance(i, Mapping) else i for i in instances], dtype=np.float32)
    batch_id, _ = split_decision_id(rows[0]["decision_id"])
    roles = np.asarray([1 if r.get("decided_by") == "challenger" else 0 for r in rows], dtype=np.uint8)
    by_role = {int(role): r["policy_version"] for role, r in zip(roles, rows, strict=True)}
    policies = [by_role.get(0, "unknown")] + ([by_role[1]] if 1 in by_role else [])
    actions = np.asarray([r["action"] for r in rows])
    return DecisionBatch(
        batch_id=batch_id, ts=float(int(batch_id[:16], 16)) / 1e9, model=model, obs=obs,
        actions=actions.astype(np.int64) if actions.ndim == 1 else actions.astype(np.float32),
        propensities=np.asarray([np.nan if r.get("propensity") is None else r["propensity"] for r in rows],
                                dtype=np.float64),
        probs=None, decided_by=roles, policies=policies, extra={"source": "kserve-logger"},
    )
