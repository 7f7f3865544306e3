"""Audit events stored in MLflow: one run per event in the ``rlops-audit`` experiment.

Each event run carries tags (``rlops.event``, ``rlops.model_name``, ``rlops.model_version``,
``rlops.actor``, ``rlops.decision``), its metrics (before/after, gate statistics) and the full
event as ``event.json``, so the trail is browsable in the MLflow UI and exportable with
``rlops audit NAME``. A correction is a new event. The trail is tamper-evident: each event records the
hash of the model's previous event and its own content hash (a hash chain), and the registered model
carries the latest hash (``rlops.audit.head``), so ``rlops audit verify NAME``
(:mod:`rlops_plugin.audit.chain`) finds an edited, deleted or truncated event.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

AUDIT_EXPERIMENT = "rlops-audit"
EVENT_DETAILS: dict[str, tuple[str, ...]] = {
    "policy_update": ("lineage", "hashes", "run_id", "model_uri", "dataset_digest", "calibration", "gate"),
    "gate": ("candidate", "candidate_uri", "champion", "policy", "summary", "checks"),
    "deployment": ("target", "deployment", "model_uri", "config"),
    "canary_step": ("deployment", "policy", "champion", "challenger"),
    "promotion": ("previous_champion", "new_champion"),
    "rollback": ("deployment", "from", "to"),
    "approval": ("rlops.approval.by", "rlops.approval.at", "rlops.approval.note"),
    "trigger": ("trigger", "monitoring_run_id"),
    "pipeline_cycle": ("pipeline_run", "champion_after", "challenger_after"),
    "monitoring": (),
    "judge_update": ("judge_kind", "model_uri", "parent", "dataset_digest", "agreement", "run_id"),
}
"""The one shape of each event kind: the ``details`` keys every event of that kind carries (docs/audit.md)."""
EVENT_KINDS = tuple(EVENT_DETAILS)
MISSING_DETAILS = "missing_details"
"""Set by ``record_event`` on an event written without some of its kind's details (filled with null)."""


def current_actor() -> str:
    """Who is acting: ``RLOPS_ACTOR`` if set (e.g. in a pipeline's pods), else the OS user."""
    return os.environ.get("RLOPS_ACTOR") or f"user:{getpass.getuser()}"


@dataclass
class AuditEvent:
    """One auditable fact about a registered model."""

    kind: str
    model_name: str
    model_version: str | None = None
    actor: str = field(default_factory=current_actor)
    decision: str = ""
    """What was decided (``promoted``, ``rolled_back``, ``passed``, ``approved``, ...)."""
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    """Before/after metrics, dataset digest, bundle hashes, gate results, links."""
    time: float = field(default_factory=time.time)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    run_id: str | None = None
    prev_hash: str = ""
    """``hash`` of the model's previous event when this one was written ("" for the first)."""
    hash: str = ""
    """SHA-256 of this event's content, ``prev_hash`` included (:func:`event_hash`)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


TAG_EVENT_HASH = "rlops.event_hash"
TAG_PREV_HASH = "rlops.prev_hash"
TAG_AUDIT_HEAD = "rlops.audit.head"
"""Registered-model tag: the hash of the model's latest audit event (catches a deleted last event)."""


def event_hash(event: AuditEvent | dict[str, Any]) -> str:
    """SHA-256 of an event's content as stored in ``event.json`` (without ``run_id`` and ``hash``)."""
    data = event.to_dict() if isinstance(event, AuditEvent) else dict(event)
    content = {k: v for k, v in data.items() if k not in ("run_id", "hash")}
    canonical = json.loads(json.dumps(content, default=str))  # what event.json holds, read back
    return "sha256:" + hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":"))
                                      .encode()).hexdigest()


def _latest_hash(client: Any, experiment_id: str, model_name: str) -> str:
    """The hash of ``model_name``'s newest audit event ("" when none, or when it predates the chain)."""
    runs = client.search_runs([experiment_id], _model_filter(model_name), max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0].data.tags.get(TAG_EVENT_HASH, "") if runs else ""


def _model_filter(model_name: str) -> str:
    escaped = model_name.replace("'", "\\'")
    return f"tags.`rlops.model_name` = '{escaped}'"


def record_event(event: AuditEvent) -> AuditEvent:
    """Write ``event`` as a run of the audit experiment; returns it with ``run_id`` set."""
    from mlflow import MlflowClient

    if event.kind not in EVENT_KINDS:
        raise ValueError(f"unknown audit event kind {event.kind!r}; known: {EVENT_KINDS}")
    missing = [key for key in EVENT_DETAILS[event.kind] if key not in event.details]
    if missing:  # keep the one shape; say which keys the writer did not give (rlops' own writers give all)
        event.details = {**event.details, **dict.fromkeys(missing), MISSING_DETAILS: missing}
    client = MlflowClient()
    experiment = client.get_experiment_by_name(AUDIT_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(AUDIT_EXPERIMENT)
    event.prev_hash = _latest_hash(client, experiment_id, event.model_name)
    event.hash = event_hash(event)
    tags = {"rlops.event": event.kind, "rlops.model_name": event.model_name, TAG_EVENT_HASH: event.hash,
            TAG_PREV_HASH: event.prev_hash,
            "rlops.model_version": event.model_version or "", "rlops.actor": event.actor,
            "rlops.decision": event.decision, "rlops.event_id": event.event_id,
            "mlflow.runName": f"{event.kind}: {event.model_name}"
                              + (f" v{event.model_version}" if event.model_version else "")
                              + (f" {event.decision}" if event.decision else ""),
            "mlflow.note.content": event.reason[:4900]}
    run = client.create_run(experiment_id, start_time=int(event.time * 1000), tags=tags)
    event.run_id = run.info.run_id
    for key, value in event.metrics.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            client.log_metric(run.info.run_id, key, float(value), timestamp=int(event.time * 1000))
    client.log_text(run.info.run_id, json.dumps(event.to_dict(), indent=2, default=str), "event.json")
    client.set_terminated(run.info.run_id, "FINISHED", end_time=int(event.time * 1000))
    _move_head(client, event)
    return event


def _move_head(client: Any, event: AuditEvent) -> None:
    """Point the registered model's ``rlops.audit.head`` tag at ``event`` (events of unregistered names: none)."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_tag(event.model_name, TAG_AUDIT_HEAD, event.hash)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def list_events(model_name: str, kinds: list[str] | None = None, max_results: int = 10_000) -> list[AuditEvent]:
    """Events of a registered model, oldest first."""
    return [event for _, event in event_runs(model_name, kinds, max_results)]


def event_runs(model_name: str, kinds: list[str] | None = None,
               max_results: int = 10_000) -> list[tuple[Any, AuditEvent]]:
    """``(MLflow run, event read from its event.json)`` of a registered model's events, oldest first."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(AUDIT_EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], _model_filter(model_name),
                              max_results=max_results, order_by=["attributes.start_time ASC"])
    events = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            if kinds and run.data.tags.get("rlops.event") not in kinds:
                continue
            path = client.download_artifacts(run.info.run_id, "event.json", dst_path=f"{tmp}/{run.info.run_id}")
            with open(path) as fh:
                data = json.load(fh)
            data["run_id"] = run.info.run_id
            events.append((run, AuditEvent(**data)))
    return events
