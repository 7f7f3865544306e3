"""Verify a model's audit trail as a hash chain: edited, deleted or truncated events are reported.

Every event stores its content hash and the hash of the model's previous event
(:func:`~rlops_plugin.audit.events.record_event`); the registered model's ``rlops.audit.head`` tag holds
the newest hash. Recomputing each hash catches an edited ``event.json``; a predecessor hash that no
event has catches a deleted or rewritten event; a head that is not a stored event catches a deleted
last event; run tags that disagree with ``event.json`` catch edits made in the MLflow UI. Events written
at the same moment by two processes both name the same predecessor (a fork): that is reported, not a
break. Tamper-evident, not tamper-proof: someone able to rewrite every later event and the head tag
goes unnoticed here, which is why the head also goes into exported reports.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rlops_plugin.audit.events import TAG_AUDIT_HEAD, TAG_EVENT_HASH, AuditEvent, event_hash, event_runs

_TAGGED_FIELDS = {"rlops.event": "kind", "rlops.actor": "actor", "rlops.decision": "decision",
                  "rlops.event_id": "event_id"}


@dataclass
class ChainReport:
    """The verdict on one model's trail: ``verified`` unless a link broke; ``first_break`` names where."""

    model_name: str
    events: int
    chained: int
    head: str | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    first_break: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        """True when every chained event, link and the head check out."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for ``rlops audit verify --json`` and the post-market report)."""
        return {"model": self.model_name, "verified": self.verified, "events": self.events,
                "chained": self.chained, "head": self.head, "problems": list(self.problems),
                "notes": list(self.notes), "first_break": self.first_break}

    def summary(self) -> str:
        """One line for a terminal or a report."""
        if self.verified:
            return (f"{self.model_name}: audit chain verified ({self.chained} chained events"
                    + (f", {self.events - self.chained} older unchained" if self.events > self.chained else "") + ")")
        return f"{self.model_name}: audit chain BROKEN: {self.problems[0]}"


def verify_chain(model_name: str) -> ChainReport:
    """Check ``model_name``'s events and head against each other (see the module docstring)."""
    runs = event_runs(model_name)
    chained = [(run, event) for run, event in runs if event.hash]
    report = ChainReport(model_name, len(runs), len(chained), _head(model_name))
    known = {event.hash for _, event in chained}
    for run, event in chained:
        actual = event_hash(event)
        if actual != event.hash or run.data.tags.get(TAG_EVENT_HASH) != event.hash:
            _broken(report, event, f"event {_name(event)} was edited: its content hashes to {actual[:19]}..., "
                                   f"it records {event.hash[:19]}...")
        for tag, attr in _TAGGED_FIELDS.items():
            if run.data.tags.get(tag, "") != (getattr(event, attr) or ""):
                _broken(report, event, f"event {_name(event)}: run tag {tag}={run.data.tags.get(tag)!r} disagrees "
                                       f"with its event.json ({getattr(event, attr)!r})")
        if event.prev_hash and event.prev_hash not in known:
            _broken(report, event, f"event {_name(event)} follows {event.prev_hash[:19]}..., which no event of "
                                   "the trail has: an earlier event was deleted or rewritten")
    if chained and report.head is None:
        report.notes.append("the registered model carries no rlops.audit.head tag (not registered when the "
                            "events were written, or the tag was removed): a deleted last event would go unseen")
    elif report.head is not None and report.head not in known:
        _broken(report, None, f"the model's newest recorded event {report.head[:19]}... is not in the trail: "
                              "the last event(s) were deleted")
    forks = sum(n - 1 for n in Counter(e.prev_hash for _, e in chained).values() if n > 1)
    if forks:
        report.notes.append(f"{forks} event(s) were written concurrently with another (the chain forks there)")
    if len(runs) > len(chained):
        report.notes.append(f"{len(runs) - len(chained)} event(s) predate the hash chain and cannot be verified")
    return report


def _broken(report: ChainReport, event: AuditEvent | None, problem: str) -> None:
    report.problems.append(problem)
    if report.first_break is None:
        report.first_break = {"problem": problem, "event_id": event.event_id if event else None,
                              "run_id": event.run_id if event else None, "kind": event.kind if event else None}


def _name(event: AuditEvent) -> str:
    version = f" v{event.model_version}" if event.model_version else ""
    return f"{event.kind}{version} (run {event.run_id})"


def _head(model_name: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return (MlflowClient().get_registered_model(model_name).tags or {}).get(TAG_AUDIT_HEAD)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
