"""KServe request-logger CloudEvents and CloudEvents-wrapped feedback.

An InferenceService's ``logger`` spec posts every request and response to a sink as binary-mode
CloudEvents (``ce-type: org.kubeflow.serving.inference.request|response``, the same ``ce-id``
for both). Pointing it at ``/v1/cloudevents`` of an rlops server makes a cluster deployment's
decisions land in the experience store even when the predictor pod logs nowhere itself: once
both halves of a pair are stored, the decisions are reconstructed from the request's
observations and our predictor's response (decision ids, actions, propensities, versions)
and inserted if absent, so a predictor that also logs directly is never double-counted.

Events of type ``rlops.feedback`` (binary or structured mode) carry feedback objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from rlops_plugin.errors import InvalidObservationError
from rlops_plugin.experience.feedback import parse_feedback_body
from rlops_plugin.experience.records import DecisionBatch, split_decision_id
from rlops_plugin.experience.store import ExperienceStore

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
FEEDBACK_TYPE = "rlops.feedback"


def parse_cloudevent(headers: Mapping[str, str], body: bytes) -> tuple[dict[str, str], Any]:
    """Attributes and data of a binary- or structured-mode CloudEvent; field-named errors."""
    lower = {k.lower(): v for k, v in headers.items()}
    content_type = lower.get("content-type", "")
    try:
        if content_type.startswith("application/cloudevents+json"):
            envelope = json.loads(body)
            if not isinstance(envelope, dict):
                raise InvalidObservationError("cloudevent: structured event must be a JSON object")
            attrs = {k: str(v) for k, v in envelope.items() if k != "data"}
            return attrs, envelope.get("data")
        attrs = {k[3:]: v for k, v in lower.items() if k.startswith("ce-")}
        return attrs, json.loads(body) if body else None
    except json.JSONDecodeError as exc:
        raise InvalidObservationError(f"cloudevent: data is not valid JSON ({exc})") from None


def ingest_cloudevent(store: ExperienceStore, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Store one CloudEvent; returns what happened (for the HTTP response)."""
    attrs, data = parse_cloudevent(headers, body)
    for required in ("id", "type", "source"):
        if not attrs.get(required):
            raise InvalidObservationError(f"cloudevent: attribute '{required}' is required (header ce-{required})")
    ce_type = attrs["type"]
    if ce_type == FEEDBACK_TYPE:
        events = parse_feedback_body(data, idempotency_key=f"ce:{attrs['source']}:{attrs['id']}"
                                     if not isinstance(data, list) else None)
        return {"type": ce_type, "feedback": store.add_feedback(events)}
    if ce_type not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise InvalidObservationError(f"cloudevent: type {ce_type!r} is not a KServe logger event or {FEEDBACK_TYPE}")
    model = attrs.get("inferenceservicename") or attrs.get("component") or "unknown"
    status = store.add_logger_events([(attrs["id"], ce_type, model, body)])[0]
    pair = {t: b for cid, t, _m, b in store.logger_events() if cid == attrs["id"]}
    decisions = 0
    if REQUEST_TYPE in pair and RESPONSE_TYPE in pair:
        batch = batch_from_logged_pair(model, json.loads(pair[REQUEST_TYPE]), json.loads(pair[RESPONSE_TYPE]))
        if batch is not None:
            store.log_decisions_if_absent(batch)
            decisions = batch.n
    return {"type": ce_type, "status": status, "decisions": decisions}


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
