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
import re
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
    else:
        _check_specversion(body)
    try:
        event = from_http(lower, body, data_unmarshaller=_json_data)
    except DataUnmarshallerError as exc:  # raised while handling the decoder's error: report that one
        raise InvalidObservationError(f"cloudevent: data is not valid JSON ({exc.__context__ or exc})") from None
    except (GenericException, ValueError) as exc:  # SDK messages may quote the body: keep them short
        raise InvalidObservationError(f"cloudevent: {str(exc)[:MAX_ERROR_CHARS]}") from None
    _require({name: event.get(name) for name in REQUIRED_ATTRIBUTES}, "field {}" if structured else "header ce-{}")
    return event


def ingest_cloudevent(store: ExperienceStore, headers: Mapping[str, str], body: bytes,
                      catalog: PolicyCatalog | None = None) -> dict[str, Any]:
    """Store one CloudEvent; returns what happened (for the HTTP response).

    A complete request/response pair becomes decisions only if they pass the checks direct decisions pass
    (:func:`check_logged_batch`); otherwise the pair goes to the store's quarantine with the reason and the
    response says so (202: kept for review, never learned from). ``catalog`` knows the policy versions.
    """
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
    pair = store.logger_pair(ce_id)
    decisions = 0
    if REQUEST_TYPE in pair and RESPONSE_TYPE in pair:
        try:
            batch = batch_from_logged_pair(model, json.loads(pair[REQUEST_TYPE]), json.loads(pair[RESPONSE_TYPE]))
            if batch is not None:
                check_logged_batch(batch, catalog)
        except InvalidObservationError as exc:
            body = json.dumps({"request": json.loads(pair[REQUEST_TYPE]),
                               "response": json.loads(pair[RESPONSE_TYPE])}).encode()
            store.quarantine("kserve-logger", ce_id, str(exc), body)
            return {"type": ce_type, "status": status, "decisions": 0, "quarantined": str(exc)}
        if batch is not None:
            store.log_decisions_if_absent(batch)
            decisions = batch.n
    return {"type": ce_type, "status": status, "decisions": decisions}


class PolicyCatalog:
    """The policy versions a collector accepts decisions of, with their spaces.

    ``known`` maps a policy version (``name/version@bundle12``) to its policy (the served ones); with
    ``registry`` set, other versions are looked up in the MLflow registry once each (the bundle hash prefix
    must match the registered version's) and cached. Without either, only the version's form is checked.
    """

    def __init__(self, known: Mapping[str, Any] | None = None, registry: bool = False) -> None:
        self.known = dict(known or {})
        self.registry = registry
        self._looked_up: dict[str, Any] = {}

    @property
    def checks_versions(self) -> bool:
        """True when unknown versions are refused (a served policy or the registry to ask)."""
        return bool(self.known) or self.registry

    def policy(self, version: str) -> Any | None:
        """The policy of ``version`` (its spaces), or ``None`` when it is not known."""
        if version in self.known:
            return self.known[version]
        if not self.registry:
            return None
        if version not in self._looked_up:
            self._looked_up[version] = _registered_policy(version)
        return self._looked_up[version]


_VERSION = re.compile(r"^((?P<name>[^/@]+)/(?P<version>\d+)@)?(?P<sha>[0-9a-f]{12})$")
"""A policy version: ``name/version@bundle12``, or the bare ``bundle12`` of an unregistered model."""


def _registered_policy(version: str) -> Any | None:
    """The registered policy ``name/N@sha12`` names, if the registry has it with that bundle hash."""
    from rlops_plugin.errors import RLOpsError
    from rlops_plugin.flavor.model import load_model_with_source

    match = _VERSION.match(version)
    if not match or not match["name"]:
        return None
    try:
        loaded = load_model_with_source(f"models:/{match['name']}/{match['version']}")
    except RLOpsError:
        return None
    return loaded.bundle.policy if loaded.bundle.bundle_sha.startswith(match["sha"]) else None


def check_logged_batch(batch: DecisionBatch, catalog: PolicyCatalog | None = None) -> None:
    """Refuse a reconstructed batch that a direct request could never have produced (``InvalidObservationError``).

    Observations finite; each row's policy version of the ``name/version@bundle`` form and, with a catalog
    that knows versions, a known one whose observation size and action space the row fits; Discrete actions
    integers in range with ``0 < propensity <= 1``; Box actions inside the bounds with a positive finite
    density or none.
    """
    catalog = catalog or PolicyCatalog()
    if not np.isfinite(batch.obs).all():
        raise InvalidObservationError("cloudevent: request observations must be finite numbers")
    for role, version in enumerate(batch.policies):
        rows = np.flatnonzero(batch.decided_by == role)
        if not rows.size:
            continue
        if not _VERSION.match(str(version)):
            raise InvalidObservationError(f"cloudevent: policy_version {version!r} is not name/version@bundle12 "
                                          "or bundle12")
        if catalog.checks_versions and catalog.policy(version) is None:
            raise InvalidObservationError(f"cloudevent: policy_version {version!r} is not a known policy version")
        policy = catalog.policy(version)
        if policy is not None and batch.obs.shape[1] != policy.obs_dim:
            raise InvalidObservationError(f"cloudevent: observations have {batch.obs.shape[1]} values, "
                                          f"{version} takes {policy.obs_dim}")
        _check_actions(batch, rows, None if policy is None else policy.action_space)


def _check_actions(batch: DecisionBatch, rows: np.ndarray, space: Any) -> None:
    import gymnasium as gym

    props = batch.propensities[rows]
    if batch.actions.ndim == 1:
        actions = batch.actions[rows]
        if isinstance(space, gym.spaces.Box):
            raise InvalidObservationError("cloudevent: the policy's actions are vectors (Box), the response's are not")
        n = int(space.n) if space is not None else None
        bad = (actions < 0) | (actions >= n) if n is not None else actions < 0
        if bad.any():
            i = int(rows[np.argmax(bad)])
            raise InvalidObservationError(f"cloudevent: predictions[{i}].action {int(batch.actions[i])} is not an "
                                          f"action of {space if space is not None else 'a Discrete space'}")
        bad = ~(np.isfinite(props) & (props > 0) & (props <= 1))
        if bad.any():
            i = int(rows[np.argmax(bad)])
            raise InvalidObservationError(f"cloudevent: predictions[{i}].propensity {batch.propensities[i]} must lie "
                                          "in (0, 1]")
        return
    if isinstance(space, gym.spaces.Discrete):
        raise InvalidObservationError("cloudevent: the policy's actions are indices (Discrete), the response's are not")
    actions = batch.actions[rows].reshape(len(rows), -1)
    if not np.isfinite(actions).all():
        raise InvalidObservationError("cloudevent: predictions[].action must be finite numbers")
    if space is not None:
        low, high = space.low.reshape(-1), space.high.reshape(-1)
        if actions.shape[1] != low.size or ((actions < low) | (actions > high)).any():
            raise InvalidObservationError(f"cloudevent: predictions[].action outside {space}")
    bad = ~np.isnan(props) & ~(np.isfinite(props) & (props > 0))
    if bad.any():
        i = int(rows[np.argmax(bad)])
        raise InvalidObservationError(f"cloudevent: predictions[{i}].propensity {batch.propensities[i]} must be a "
                                      "positive density or null")


def _json_data(raw: str | bytes | None) -> Any:
    """The event's data as JSON (no data: None); the SDK wraps a decoding error in ``DataUnmarshallerError``."""
    return json.loads(raw) if raw else None


def _check_specversion(body: bytes) -> None:
    """Refuse a structured event whose ``specversion`` is not a string (the SDK looks it up in a dict)."""
    try:
        envelope = json.loads(body)
    except ValueError:
        return  # the SDK reports the invalid JSON
    if isinstance(envelope, Mapping) and not isinstance(envelope.get("specversion", ""), str):
        raise InvalidObservationError("cloudevent: attribute 'specversion' must be a string such as \"1.0\" "
                                      "(field specversion)")


def _require(attributes: Mapping[str, Any], where: str) -> None:
    """Refuse a missing or empty required attribute, naming it and where it is read from."""
    for name, value in attributes.items():
        if value is None or value == "":
            raise InvalidObservationError(f"cloudevent: attribute '{name}' is required ({where.format(name)})")


_HEX_TIME = re.compile(r"^[0-9a-fA-F]{16}")
"""Batch ids start with the decision time in nanoseconds, 16 hex digits (``records.new_batch_id``)."""


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
    try:
        obs = np.asarray([i["obs"] if isinstance(i, Mapping) else i for i in instances], dtype=np.float32)
        actions = np.asarray([r["action"] for r in rows])
        propensities = np.asarray([np.nan if r.get("propensity") is None else r["propensity"] for r in rows],
                                  dtype=np.float64)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidObservationError(f"cloudevent: request/response pair is not an rlops predictor's ({exc})") \
            from None
    if obs.ndim != 2 or actions.dtype.kind not in "iuf" or actions.ndim not in (1, 2):
        raise InvalidObservationError("cloudevent: observations and actions must be numbers, one row per instance")
    batch_id, first = split_decision_id(rows[0]["decision_id"])
    if not _HEX_TIME.match(batch_id):
        raise InvalidObservationError(f"cloudevent: predictions[0].decision_id: batch id {batch_id[:80]!r} does not "
                                      "start with 16 hex digits (its time in nanoseconds)")
    for i, r in enumerate(rows):
        if r.get("policy_version") is not None and not isinstance(r["policy_version"], str):
            raise InvalidObservationError(f"cloudevent: predictions[{i}].policy_version: a string is required")
    for i, r in enumerate(rows):
        if split_decision_id(r["decision_id"]) != (batch_id, first + i):
            raise InvalidObservationError(f"cloudevent: predictions[{i}].decision_id {r['decision_id']!r} is not "
                                          f"{batch_id}-{first + i}")
    roles = np.asarray([1 if r.get("decided_by") == "challenger" else 0 for r in rows], dtype=np.uint8)
    by_role = {int(role): r.get("policy_version") for role, r in zip(roles, rows, strict=True)}
    if len({r.get("policy_version") for r, role in zip(rows, roles, strict=True) if role == 0}) > 1:
        raise InvalidObservationError("cloudevent: champion rows name different policy versions")
    policies = [by_role.get(0, "unknown")] + ([by_role[1]] if 1 in by_role else [])
    if actions.ndim == 1 and actions.dtype.kind == "f":
        if not np.all(np.isfinite(actions) & (actions == np.round(actions))):
            raise InvalidObservationError("cloudevent: predictions[].action must be integers")
    return DecisionBatch(
        batch_id=batch_id, ts=float(int(batch_id[:16], 16)) / 1e9, model=model, obs=obs,
        actions=actions.astype(np.int64) if actions.ndim == 1 else actions.astype(np.float32),
        propensities=propensities,
        probs=None, decided_by=roles, policies=policies, extra={"source": "kserve-logger"},
    )
