"""OpenAPI request-body schemas and declared responses of the rlops routes (published, not enforced).

The handlers read raw bodies and give their own field-named errors; these schemas only describe what they
accept, so ``/openapi.json`` documents the endpoints and schema-driven fuzzers can reach them. They mirror
:func:`~rlops_plugin.experience.feedback.parse_feedback`, the CloudEvents ingestion, ``ConfigureRequest``,
:class:`~rlops_plugin.serving.routing.RoutingConfig` and :class:`~rlops_plugin.serving.exploration.ExplorationConfig`
(a test keeps the field names in step with the dataclasses).
"""

from __future__ import annotations

from typing import Any

from rlops_plugin.experience.feedback import MAX_KEY_LENGTH, MAX_TEXT_LENGTH
from rlops_plugin.experience.records import FEEDBACK_KINDS, MAX_INDEX_DIGITS
from rlops_plugin.serving.exploration import MODES as EXPLORATION_MODES
from rlops_plugin.serving.routing import ROUTING_MODES

JSON = "application/json"
CLOUDEVENTS_JSON = "application/cloudevents+json"
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_ANY_OBJECT: dict[str, Any] = {"type": "object"}
_KEY = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH}
_ACTION = {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "number"}}]}

DECISION_ID = {"type": "string", "maxLength": MAX_KEY_LENGTH, "pattern": rf"^.{{1,64}}-[0-9]{{1,{MAX_INDEX_DIGITS}}}$",
               "description": "<batch_id>-<index> as returned by predict"}
FEEDBACK_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "Feedback about a decision (decision_id), an agent's answer (interaction_id, choice) or a "
                   "whole conversation (session_id): name exactly one.",
    "additionalProperties": False,
    "properties": {
        "decision_id": DECISION_ID,
        "interaction_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "choice": {"type": "integer", "minimum": 0, "maximum": 1023, "default": 0},
        "session_id": _KEY,
        "kind": {"enum": list(FEEDBACK_KINDS), "default": "reward"},
        "value": {"type": ["number", "null"], "description": "reward, rating or outcome score (finite)"},
        "action": {**_ACTION, "description": "the corrected action (kind correction of a decision)"},
        "response": {"description": "the corrected assistant message (kind correction of an agent answer)",
                     "anyOf": [{"type": "string", "maxLength": MAX_TEXT_LENGTH}, {
                         "type": "object", "additionalProperties": False, "properties": {
                             "content": {"type": "string", "maxLength": MAX_TEXT_LENGTH},
                             "tool_calls": {"type": "array", "items": {
                                 "type": "object", "required": ["name"],
                                 "properties": {"name": {"type": "string", "minLength": 1},
                                                "arguments": {"anyOf": [_ANY_OBJECT, {"type": "string"}]}}}}}}]},
        "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH,
                 "description": "the comment (kind comment of an agent answer)"},
        "scale": {"type": "string", "pattern": "^(thumbs|[0-9]+-[0-9]+)$", "description": "rating scale"},
        "rater": _KEY,
        "payload": {**_ANY_OBJECT, "description": "outcome data (finite numbers)"},
        "idempotency_key": {**_KEY, "description": "default: a hash of the content"},
        "timestamp": {"anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}],
                      "description": "when it happened: unix seconds or ISO-8601 (default: arrival)"},
    },
    "oneOf": [{"required": ["decision_id"]}, {"required": ["interaction_id"]}, {"required": ["session_id"]}],
}
FEEDBACK_BODY = {"anyOf": [
    FEEDBACK_EVENT,
    {"type": "array", "minItems": 1, "items": FEEDBACK_EVENT},
    {"type": "object", "additionalProperties": False, "required": ["events"],
     "properties": {"events": {"type": "array", "minItems": 1, "items": FEEDBACK_EVENT}}},
]}
FEEDBACK_RESULTS = {"type": "object", "properties": {"results": {"type": "array", "items": {
    "type": "object", "properties": {"decision_id": {"type": "string"}, "idempotency_key": {"type": "string"},
                                     "status": {"enum": ["accepted", "duplicate", "conflict"]}}}}}}

_OBS = {"type": "array", "items": {"type": "number"}}
V1_REQUEST = {"type": "object", "required": ["instances"], "description": "a logged KServe v1 predict request",
              "properties": {"instances": {"type": "array", "items": {"anyOf": [_OBS, {
                  "type": "object", "required": ["obs"], "properties": {"obs": _OBS}}]}}}}
V1_RESPONSE = {"type": "object", "required": ["predictions"], "description": "a logged rlops predictor response",
               "properties": {"predictions": {"type": "array", "items": {
                   "type": "object", "required": ["decision_id", "action"],
                   "properties": {"decision_id": DECISION_ID, "action": _ACTION,
                                  "propensity": {"type": ["number", "null"]},
                                  "policy_version": {"type": "string"},
                                  "decided_by": {"enum": ["champion", "challenger"]}}}}}}
CE_TYPES = ["org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response", "rlops.feedback"]
STRUCTURED_EVENT = {
    "type": "object", "required": ["specversion", "id", "source", "type"],
    "properties": {"specversion": {"enum": ["1.0"]}, "id": {"type": "string", "minLength": 1},
                   "source": {"type": "string", "minLength": 1}, "type": {"enum": CE_TYPES},
                   "datacontenttype": {"enum": [JSON]}, "data": {}},
}
CE_HEADERS = [
    {"name": f"ce-{name}", "in": "header", "required": False, "schema": schema,
     "description": f"binary mode: the event's {name} (required unless the body is {CLOUDEVENTS_JSON})"}
    for name, schema in (("specversion", {"enum": ["1.0"]}), ("id", {"type": "string", "minLength": 1}),
                         ("source", {"type": "string", "minLength": 1}), ("type", {"enum": CE_TYPES}))
]

ROUTING = {"type": "object", "additionalProperties": False, "properties": {
    "mode": {"enum": list(ROUTING_MODES), "default": "off"},
    "fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
    "salt": {"type": "string", "default": "rlops"}}}
EXPLORATION = {"type": "object", "additionalProperties": False, "properties": {
    "mode": {"enum": list(EXPLORATION_MODES), "default": "softmax"},
    "epsilon": {"type": "number", "minimum": 0, "maximum": 1, "default": 0,
                "description": "at most max_epsilon"},
    "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 1},
    "max_epsilon": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
    "safe_action": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "array", "items": {"type": "number"}},
                              {"type": "null"}],
                    "description": "action executed when no finite policy can decide (an action of the space)"}}}
_URI = {"type": ["string", "null"], "description": "models:/NAME@ALIAS, models:/NAME/VERSION or a path"}
CONFIGURE_BODY = {"type": "object", "additionalProperties": False, "properties": {
    "model_uri": _URI, "challenger_uri": {**_URI, "description": f"{_URI['description']}; empty: no challenger"},
    "routing": {"anyOf": [ROUTING, {"type": "null"}]}, "exploration": {"anyOf": [EXPLORATION, {"type": "null"}]}}}
STATUS = {"type": "object", "required": ["models", "store"],
          "properties": {"models": {"type": "array", "items": _ANY_OBJECT}, "store": {"type": ["object", "null"]}}}


def _body(*contents: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {kind: {"schema": schema} for kind, schema in contents}}}


def _responses(ok: int, ok_schema: dict[str, Any], ok_text: str,
               errors: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=``: the success schema and ``{"error": ...}`` for each declared error status."""
    out: dict[int | str, dict[str, Any]] = {ok: {"description": ok_text, "content": {JSON: {"schema": ok_schema}}}}
    for code, text in errors.items():
        out[code] = {"description": text, "content": {JSON: {"schema": _ERROR}}}
    return out


_STORE = "the experience store failed (locked, full, unreachable): nothing was acknowledged; retry (Retry-After)"
_LARGE = "body larger than --max_body_bytes"

FEEDBACK_ROUTE: dict[str, Any] = {
    "openapi_extra": {**_body((JSON, FEEDBACK_BODY)), "parameters": [
        {"name": "Idempotency-Key", "in": "header", "required": False, "schema": _KEY,
         "description": "idempotency key of a single event"}]},
    "responses": _responses(200, FEEDBACK_RESULTS, "stored (or duplicates of stored events)",
                            {400: "malformed feedback: the error names the field",
                            409: "no experience store, or an idempotency key reused for different feedback",
                            413: _LARGE, 503: _STORE}),
}
CLOUDEVENTS_ROUTE: dict[str, Any] = {
    "openapi_extra": {**_body((JSON, {"anyOf": [V1_REQUEST, V1_RESPONSE, FEEDBACK_BODY]}),
                              (CLOUDEVENTS_JSON, STRUCTURED_EVENT)), "parameters": CE_HEADERS},
    "responses": _responses(202, _ANY_OBJECT, "stored (a malformed pair is quarantined, named in 'quarantined')",
                            {400: "malformed event: the error names the attribute or field",
                            409: "this server runs without an experience store", 413: _LARGE, 503: _STORE}),
}
STATUS_ROUTE: dict[str, Any] = {"responses": _responses(200, STATUS, "models, policy versions, routing, store counts",
                                                        {503: _STORE})}
CONFIGURE_ROUTE: dict[str, Any] = {
    "openapi_extra": _body((JSON, CONFIGURE_BODY)),
    "responses": _responses(200, _ANY_OBJECT, "the model's new status",
                            {400: "malformed body: the error names the field",
                            404: "no model of that name is served", 413: _LARGE,
                            422: "the model or challenger cannot be loaded, or the change does not fit the policy",
                            503: "a policy is broken"}),
}
