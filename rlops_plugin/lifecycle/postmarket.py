"""The post-market monitoring report of a registered policy (EU AI Act Article 72; Article 12's logs, read back).

``post_market_report(NAME, since)`` answers, for a period, what a market-surveillance reader asks of any
policy kind (vector or agent): which version decided, where and when; how it was watched (every
monitoring window and its verdict); what went wrong (retraining triggers, rollbacks, guard vetoes);
and, for each update, its before/after numbers, the dataset it learned from, its safety evaluation
(gate checks, scenario and red-team suites), its canary and who approved it. Nothing new is recorded:
the report is read from the audit trail (``rlops-audit`` runs), the registry (versions, lineage tags,
approval tags), the monitoring runs (``windows/NNNNNN/summary.json``) and, when given, the
experience store (vetoes are counted per decision there, not in the trail).

Service intervals are derived from the trail by :func:`service_intervals`, a pure function: the
registry's ``champion`` alias (moved by ``promotion`` and ``rollback`` events) is one lane, each
deployment (``deployment``, ``canary_step``, ``promotion`` and ``rollback`` events naming it) another.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlops_plugin.audit.chain import verify_chain
from rlops_plugin.audit.events import AUDIT_EXPERIMENT, AuditEvent, list_events
from rlops_plugin.audit.export import render_html
from rlops_plugin.defaults import CHAMPION
from rlops_plugin.errors import ConfigError, RegistryError
from rlops_plugin.flavor import registry

REGISTRY_LANE = "registry champion"
"""Lane of the ``champion`` alias: the version production traffic goes to by default."""
MONITOR_TAG = "rlops.monitor"
"""Tag by which a monitoring run is found, whatever monitor it names (``MonitoringRun.start`` sets it, with
``rlops.model_name``)."""
CANARY_STATES = ("canary", "awaiting_approval")
"""Canary-step decisions during which the challenger decides a share of the traffic."""
FORMATS = ("json", "html")


@dataclass
class ServiceInterval:
    """A stretch of time in which one version decided on one lane (the champion alias or a deployment)."""

    version: str
    lane: str
    """``registry champion`` or ``deployment NAME``."""
    role: str
    """``champion`` (all traffic not given to a canary) or ``canary`` (``fraction`` of it)."""
    start: float
    end: float | None = None
    """``None``: still deciding when the report was made."""
    fraction: float = 1.0
    opened_by: str = ""
    """The event that started it: ``KIND DECISION by ACTOR`` and its event id."""
    closed_by: str | None = None

    def seconds_within(self, since: float, until: float) -> float:
        """Seconds of this interval inside ``[since, until]``."""
        return max(0.0, min(self.end if self.end is not None else until, until) - max(self.start, since))


@dataclass
class VersionRecord:
    """One registered version: its lineage, its service in the period, its monitoring verdicts and vetoes."""

    version: str
    kind: str | None
    """Policy kind from the version's MLmodel (``vector``, ``agent``, ...); ``None`` when unreadable."""
    created: float
    parent_version: str | None
    trainer: str | None
    dataset_digest: str | None
    bundle_sha: str | None
    gate: str | None
    """The ``rlops.gate`` tag (``passed``/``failed``) when it was gated."""
    approval: dict[str, str] | None
    aliases: list[str] = field(default_factory=list)
    intervals: list[ServiceInterval] = field(default_factory=list)
    seconds_in_service: float = 0.0
    """Seconds inside the period in which it decided on any lane (overlaps counted once)."""
    window_verdicts: dict[str, int] = field(default_factory=dict)
    decisions: int | None = None
    """Decisions (agent: choices) it made in the period, from ``--store``; ``None`` when not counted."""
    vetoes: int | None = None
    """Guard vetoes of its decisions in the period, from ``--store``; ``None`` when not counted."""


@dataclass
class MonitoringWindow:
    """One evaluated window of a monitoring run (``windows/NNNNNN/summary.json``)."""

    run_id: str
    model_version: str | None
    policy_version: str | None
    window: int
    status: str
    n_decisions: int
    start_ts: float | None
    end_ts: float | None
    drifted_signals: list[str] = field(default_factory=list)
    drifted_columns: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    message: str = ""


@dataclass
class Incident:
    """A retraining trigger, a rollback, or the guard vetoes of one version."""

    kind: str
    """``trigger``, ``rollback`` or ``guard_veto``."""
    time: float | None
    version: str | None
    actor: str
    summary: str
    count: int = 1
    event_id: str | None = None
    run_id: str | None = None


@dataclass
class UpdateRecord:
    """A policy (or judge) update with its evidence; ``rejected_candidate``: a gate failure never registered."""

    kind: str
    """``policy_update``, ``judge_update`` or ``rejected_candidate``."""
    version: str | None
    time: float
    actor: str
    reason: str
    parent_version: str | None = None
    trainer: str | None = None
    dataset_digest: str | None = None
    """The transitions or preference dataset it learned from (``None``: simulator or initial version)."""
    judges: list[str] = field(default_factory=list)
    """Judges that labelled its preference data (agent updates)."""
    calibration: str | None = None
    before_after: dict[str, float] = field(default_factory=dict)
    safety: list[dict[str, Any]] = field(default_factory=list)
    """Gate verdicts on it: time, decision, champion, each check (scenario and red-team suites included)."""
    canary: list[dict[str, Any]] = field(default_factory=list)
    outcome: str | None = None
    """What became of it, in order (``promoted``, ``rolled back``, ``promoted -> rolled back``); ``None``: undecided."""
    approvals: list[dict[str, str]] = field(default_factory=list)
    event_id: str | None = None


@dataclass
class PostMarketReport:
    """Everything the post-market report says about one registered model over one period."""

    model_name: str
    since: float
    until: float
    generated_at: float
    policy_kinds: list[str]
    versions: list[VersionRecord]
    service: list[ServiceInterval]
    monitoring_runs: list[dict[str, Any]]
    windows: list[MonitoringWindow]
    incidents: list[Incident]
    updates: list[UpdateRecord]
    events: list[dict[str, Any]]
    """Every audit event of the period, oldest first (kind, time, version, decision, actor, reason, run id)."""
    vetoes_counted: bool
    store: str | None = None
    notes: list[str] = field(default_factory=list)
    audit_chain: dict[str, Any] = field(default_factory=dict)
    """Whether the model's audit trail verified as a hash chain (:func:`~rlops_plugin.audit.chain.verify_chain`)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what ``--format json`` prints)."""
        return _finite(dataclasses.asdict(self))


# ----- the report --------------------------------------------------------------------------------

def post_market_report(name: str, since: float, until: float | None = None, *, store: str | None = None,
                       now: float | None = None) -> PostMarketReport:
    """Build the report of registered model ``name`` for events from ``since`` to ``until`` (unix seconds).

    ``store`` (an experience store path or URL) adds decisions and guard vetoes per version; without
    it the report says that vetoes were not counted. Raises :class:`RegistryError` for an unknown name.
    """
    generated = time.time() if now is None else now
    until = generated if until is None else until
    if until < since:
        raise ConfigError(f"the report's period ends ({_iso(until)}) before it starts ({_iso(since)})")
    versions = _registry_versions(name)
    trail = list_events(name)
    in_period = [e for e in trail if since <= e.time <= until]
    intervals = [iv for iv in service_intervals(trail, until)
                 if iv.start <= until and (iv.end is None or iv.end >= since)]
    windows, runs = monitoring_windows(name, since, until)
    counts = count_vetoes(store, name, since, until) if store else None
    notes = _consistency_notes(name, intervals, trail)
    for record in versions:
        record.intervals = [iv for iv in intervals if iv.version == record.version]
        record.seconds_in_service = _union_seconds(record.intervals, since, until)
        record.window_verdicts = dict(Counter(w.status for w in windows if w.model_version == record.version))
        if counts is not None:
            record.decisions, record.vetoes = counts.get(record.version, (0, 0))
    incidents = _incidents(in_period, counts)
    if counts is None:
        notes.append("guard vetoes were not counted: they are kept per decision in the experience store; "
                     "give --store to count them")
    known = {v.version for v in versions}
    if counts:
        unregistered = sorted(set(counts) - known)
        if unregistered:
            notes.append(f"the store holds decisions of versions not in the registry: {unregistered}")
    kinds = sorted({v.kind for v in versions if v.kind and (v.intervals or _updated(v.version, in_period))})
    return PostMarketReport(
        model_name=name, since=since, until=until, generated_at=generated, policy_kinds=kinds,
        versions=versions, service=intervals, monitoring_runs=runs, windows=windows, incidents=incidents,
        updates=_updates(in_period, trail, versions), events=[_brief(e) for e in in_period],
        vetoes_counted=counts is not None, store=store, notes=notes, audit_chain=verify_chain(name).to_dict())


def service_intervals(events: list[AuditEvent], now: float) -> list[ServiceInterval]:
    """When each version decided, per lane, from ``promotion``, ``rollback``, ``deployment`` and ``canary_step`` events.

    Pure: the same trail always gives the same intervals. A rollback that names the version currently
    deciding on a lane (``from``) hands that lane to ``to``; one whose ``from`` was only a challenger
    ends its canary and leaves the champion as it was. Shadow traffic decides nothing and is no interval.
    """
    del now  # open intervals keep end=None; the caller clips them to its period
    open_: dict[tuple[str, str], ServiceInterval] = {}
    done: list[ServiceInterval] = []

    def close(lane: str, role: str, at: float, why: str) -> None:
        current = open_.pop((lane, role), None)
        if current is not None:
            current.end, current.closed_by = at, why
            done.append(current)

    def start(lane: str, role: str, version: str, at: float, fraction: float, why: str) -> None:
        current = open_.get((lane, role))
        if current is not None and current.version == version and current.fraction == fraction:
            return
        close(lane, role, at, why)
        open_[(lane, role)] = ServiceInterval(version, lane, role, at, None, fraction, why)

    def hand_over(lane: str, at: float, old: str | None, new: str | None, why: str) -> None:
        current = open_.get((lane, "champion"))
        if new and (current is None or old is None or current.version == old):
            start(lane, "champion", new, at, 1.0, why)

    for event in sorted(events, key=lambda e: e.time):
        d, at = event.details or {}, event.time
        why = f"{event.kind} {event.decision} by {event.actor} ({event.event_id})".replace("  ", " ")
        lane = f"deployment {d['deployment']}" if d.get("deployment") else None
        if event.kind == "promotion":
            new = str(d.get("new_champion") or event.model_version or "") or None
            if new:
                start(REGISTRY_LANE, "champion", new, at, 1.0, why)
                if lane:
                    close(lane, "canary", at, why)
                    start(lane, "champion", new, at, 1.0, why)
        elif event.kind == "rollback":
            old, new = _str(d.get("from")), _str(d.get("to"))
            hand_over(REGISTRY_LANE, at, old, new, why)
            if lane:
                close(lane, "canary", at, why)
                hand_over(lane, at, old, new, why)
        elif event.kind == "deployment" and lane:
            config = d.get("config") or {}
            if event.decision == "deleted":
                close(lane, "canary", at, why)
                close(lane, "champion", at, why)
            elif event.model_version:
                fraction = float(config.get("fraction") or 0.0)
                if config.get("mode") == "canary" and fraction > 0:
                    start(lane, "canary", event.model_version, at, fraction, why)
                elif config.get("mode") != "shadow":
                    start(lane, "champion", event.model_version, at, 1.0, why)
        elif event.kind == "canary_step" and lane:
            fraction = float((event.metrics or {}).get("fraction") or 0.0)
            if event.decision in CANARY_STATES and fraction > 0 and event.model_version:
                start(lane, "canary", event.model_version, at, fraction, why)
            elif event.decision not in CANARY_STATES:  # started (shadow), restarted, inconclusive: the canary ends
                close(lane, "canary", at, why)
    return sorted(done + list(open_.values()), key=lambda iv: (iv.start, iv.lane, iv.role))


def monitoring_windows(name: str, since: float, until: float) -> tuple[list[MonitoringWindow], list[dict[str, Any]]]:
    """Every window of ``name``'s monitoring runs (any experiment) that ended in ``[since, until]``, and the runs.

    Runs are found by their tags (``rlops.model_name`` and ``rlops.monitor``); each window's verdict is
    its ``windows/NNNNNN/summary.json`` artifact (a window without timestamps counts at its run's start).
    """
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient()
    experiment_ids = [e.experiment_id for e in _all_pages(
        lambda token: client.search_experiments(view_type=ViewType.ALL, page_token=token))]
    if not experiment_ids:
        return [], []
    query = f"tags.`rlops.model_name` = '{_quote(name)}' and tags.`{MONITOR_TAG}` LIKE '%'"
    found = _all_pages(lambda token: client.search_runs(experiment_ids, query, max_results=1000,
                                                        order_by=["attributes.start_time ASC"], page_token=token))
    windows: list[MonitoringWindow] = []
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in found:
            started = run.info.start_time / 1000
            ended = run.info.end_time / 1000 if run.info.end_time else None
            if started > until or (ended is not None and ended < since):
                continue
            tags = run.data.tags
            mine: list[MonitoringWindow] = []
            folders = [f.path for f in client.list_artifacts(run.info.run_id, "windows") if f.is_dir]
            for folder in folders:
                path = client.download_artifacts(run.info.run_id, f"{folder}/summary.json", f"{tmp}/{run.info.run_id}")
                summary = json.loads(Path(path).read_text())
                window = _window(run.info.run_id, tags.get("rlops.model_version"), summary)
                stamp = window.end_ts if window.end_ts is not None else started
                if since <= stamp <= until:
                    mine.append(window)
            windows.extend(mine)
            runs.append({"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                         "model_version": tags.get("rlops.model_version"),
                         "policy_version": tags.get("rlops.policy_version"), "scope": tags.get("rlops.scope"),
                         "start": started, "end": ended, "status": run.info.status, "windows": len(mine),
                         "verdicts": dict(Counter(w.status for w in mine))})
    return windows, runs


def count_vetoes(store: str, name: str, since: float, until: float) -> dict[str, tuple[int, int]]:
    """``version -> (decisions, guard vetoes)`` of ``name``'s versions in ``store`` during ``[since, until]``.

    Vector decisions carry their shield's vetoes in ``extra["vetoes"]`` (row ``i`` names the deciding
    policy); agent choices carry the tool-call guard's ``vetoes``. Both kinds are counted.
    """
    from rlops_plugin.experience.store import open_store

    counts: dict[str, list[int]] = {}
    with open_store(store) as experience:
        for _, batch in experience.iter_batches():
            if not since <= batch.ts <= until:
                continue
            versions = [_version_of(p, name) for p in batch.policies]
            for role, n in Counter(int(r) for r in batch.decided_by).items():
                if role < len(versions) and versions[role] is not None:
                    counts.setdefault(versions[role], [0, 0])[0] += n
            for veto in batch.extra.get("vetoes") or []:
                version = versions[int(batch.decided_by[int(veto["i"])])]
                if version is not None:
                    counts.setdefault(version, [0, 0])[1] += 1
        for _, record in experience.iter_interactions():
            version = _version_of(record.policy_version, name)
            if version is None or not since <= record.ts <= until:
                continue
            slot = counts.setdefault(version, [0, 0])
            slot[0] += record.n
            slot[1] += sum(len(choice.get("vetoes") or []) for choice in record.choices)
    return {version: (n, v) for version, (n, v) in counts.items()}


# ----- rendering ----------------------------------------------------------------------------------

def to_json(report: PostMarketReport) -> str:
    """The report as a JSON document (non-finite numbers as null)."""
    return json.dumps(report.to_dict(), indent=2, default=str)


def to_html(report: PostMarketReport, tracking_uri: str | None = None) -> str:
    """The report as one self-contained HTML page; every value is escaped by the template."""
    audit_id = None
    if tracking_uri:
        from mlflow import MlflowClient

        experiment = MlflowClient().get_experiment_by_name(AUDIT_EXPERIMENT)
        audit_id = experiment.experiment_id if experiment else None

    def event_href(run_id: str | None) -> str | None:
        return f"{tracking_uri}/#/experiments/{audit_id}/runs/{run_id}" if audit_id and run_id else None

    def run_href(run: dict[str, Any]) -> str | None:
        return f"{tracking_uri}/#/experiments/{run['experiment_id']}/runs/{run['run_id']}" if tracking_uri else None

    return render_html("postmarket.html", r=report, when=_iso, span=_span, number=_number, event_href=event_href,
                       run_href=run_href, dumps=lambda value: json.dumps(value, default=str, sort_keys=True))


def parse_when(text: str, option: str = "--since") -> float:
    """An ISO date (``2026-12-01``: midnight UTC) or datetime (``2026-12-01T08:30``, UTC unless it says), in seconds."""
    value = str(text).strip()
    try:
        if len(value) == 10:
            parsed = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
        else:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not an ISO date (2026-12-01) or datetime "
                          "(2026-12-01T08:30:00, optionally with Z or +02:00)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


# ----- pieces -------------------------------------------------------------------------------------

def _registry_versions(name: str) -> list[VersionRecord]:
    """Every version of ``name`` with its lineage tags, aliases, approval and policy kind."""
    from mlflow.exceptions import MlflowException

    client = registry.client()
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise RegistryError(f"no registered model named {name!r} in the MLflow registry; "
                                "check the name and MLFLOW_TRACKING_URI") from None
        raise
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    found = _all_pages(lambda token: client.search_model_versions(f"name = '{_quote(name)}'", page_token=token))
    records = []
    for mv in sorted(found, key=lambda v: int(v.version)):
        tags = mv.tags or {}
        approval = registry.approval_of(name, mv.version) if registry.TAG_APPROVED_BY in tags else None
        records.append(VersionRecord(
            version=str(mv.version), kind=_kind_of(name, str(mv.version)), created=mv.creation_timestamp / 1000,
            parent_version=tags.get(registry.TAG_PARENT_VERSION) or None, trainer=tags.get(registry.TAG_TRAINER),
            dataset_digest=tags.get(registry.TAG_DATASET_DIGEST), bundle_sha=tags.get(registry.TAG_BUNDLE_SHA),
            gate=tags.get("rlops.gate"), approval=approval, aliases=sorted(aliases.get(str(mv.version), []))))
    return records


def _kind_of(name: str, version: str) -> str | None:
    """The policy kind written in the version's MLmodel (only that file is read), ``None`` when unreadable."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    from rlops_plugin.bundle.bundle import DEFAULT_KIND
    from rlops_plugin.flavor.model import FLAVOR_NAME, FlavorKey

    try:
        flavors = get_model_info(f"models:/{name}/{version}").flavors
    except (MlflowException, OSError):
        return None
    conf = flavors.get(FLAVOR_NAME)
    return None if conf is None else str(conf.get(FlavorKey.KIND) or DEFAULT_KIND)


def _window(run_id: str, model_version: str | None, summary: dict[str, Any]) -> MonitoringWindow:
    start_ts, end_ts = (list(summary.get("ts") or []) + [None, None])[:2]
    policy_version = summary.get("policy_version")
    return MonitoringWindow(
        run_id=run_id, model_version=_version_of(policy_version, None) if policy_version else model_version,
        policy_version=policy_version, window=int(summary.get("window", 0)), status=str(summary.get("status")),
        n_decisions=int(summary.get("n_decisions") or 0), start_ts=start_ts, end_ts=end_ts,
        drifted_signals=list(summary.get("drifted_signals") or []),
        drifted_columns=list(summary.get("drifted_columns") or []),
        triggers=[str(t.get("rule")) if isinstance(t, dict) else str(t) for t in summary.get("triggers") or []],
        message=str(summary.get("message") or ""))


def _incidents(events: list[AuditEvent], counts: dict[str, tuple[int, int]] | None) -> list[Incident]:
    out = []
    for e in events:
        if e.kind == "trigger":
            trigger = (e.details or {}).get("trigger") or {}
            evidence = ", ".join(f"{k.removeprefix('evidence/')}={v:.4g}" for k, v in sorted(e.metrics.items()))
            out.append(Incident("trigger", e.time, e.model_version, e.actor,
                                f"{e.reason}" + (f" ({evidence})" if evidence else "")
                                + (f"; policy {trigger.get('policy_version')}" if trigger.get("policy_version")
                                   else ""), event_id=e.event_id, run_id=e.run_id))
        elif e.kind == "rollback":
            d = e.details or {}
            out.append(Incident("rollback", e.time, e.model_version, e.actor,
                                f"version {d.get('from')} -> {d.get('to')}"
                                + (f" on {d['deployment']}" if d.get("deployment") else "") + f": {e.reason}",
                                event_id=e.event_id, run_id=e.run_id))
    for version, (decisions, vetoes) in sorted((counts or {}).items(), key=lambda kv: _version_key(kv[0])):
        if vetoes:
            out.append(Incident("guard_veto", None, version, "guard", f"{vetoes} of {decisions} decisions of "
                                f"version {version} vetoed by a guard", count=vetoes))
    return out


def _updates(events: list[AuditEvent], trail: list[AuditEvent], versions: list[VersionRecord]) -> list[UpdateRecord]:
    """Each update of the period with its gates, canary, outcome and approvals (from the whole trail)."""
    approvals_by_tag = {v.version: v.approval for v in versions if v.approval}
    out = []
    for e in events:
        if e.kind not in ("policy_update", "judge_update") and not (e.kind == "gate" and not e.model_version):
            continue
        d = e.details or {}
        if e.kind == "gate":  # a failed candidate is never registered: its gate event names its model URI
            out.append(UpdateRecord("rejected_candidate", None, e.time, e.actor, e.reason,
                                    safety=[_gate(e)], event_id=e.event_id,
                                    dataset_digest=(((d.get("summary") or {}).get("candidate_lineage") or {})
                                                    .get("dataset_digest"))))
            continue
        lineage = d.get("lineage") or {}
        version = e.model_version
        mine = [x for x in trail if x.model_version == version]
        approvals = [{"by": str(x.details.get(registry.TAG_APPROVED_BY) or x.actor),
                      "at": str(x.details.get(registry.TAG_APPROVED_AT) or _iso(x.time)),
                      "note": str(x.details.get("rlops.approval.note") or "")} for x in mine if x.kind == "approval"]
        tagged = approvals_by_tag.get(str(version))
        if tagged and not any(a["by"] == tagged["by"] and a["at"] == tagged["at"] for a in approvals):
            approvals.append(dict(tagged))
        outcomes = []
        for x in trail:
            xd = x.details or {}
            if x.kind == "promotion" and str(xd.get("new_champion") or x.model_version) == str(version):
                outcomes.append("promoted")
            elif x.kind == "rollback" and str(xd.get("from")) == str(version):
                outcomes.append("rolled back")
        calibration = d.get("calibration")
        out.append(UpdateRecord(
            kind=e.kind, version=version, time=e.time, actor=e.actor, reason=e.reason,
            parent_version=_str(lineage.get("parent_version") or d.get("parent")),
            trainer="+".join(lineage.get("trainer_chain") or []) or lineage.get("trainer"),
            dataset_digest=d.get("dataset_digest"), judges=[str(j) for j in lineage.get("judges") or []],
            calibration=registry.calibration_label(calibration) if calibration else None,
            before_after=dict(e.metrics), safety=[_gate(x) for x in mine if x.kind == "gate"],
            canary=[{"time": x.time, "decision": x.decision, "fraction": x.metrics.get("fraction"),
                     "reason": x.reason} for x in mine if x.kind == "canary_step"],
            outcome=" -> ".join(outcomes) or None, approvals=approvals, event_id=e.event_id))
    return out


def _gate(e: AuditEvent) -> dict[str, Any]:
    d = e.details or {}
    return {"time": e.time, "decision": e.decision, "candidate": d.get("candidate"),
            "candidate_uri": d.get("candidate_uri"), "champion": d.get("champion"),
            "checks": [{"name": c.get("name"), "passed": c.get("passed"), "reason": c.get("reason")}
                       for c in d.get("checks") or []]}


def _consistency_notes(name: str, intervals: list[ServiceInterval], trail: list[AuditEvent]) -> list[str]:
    """Say where the registry and the trail disagree (an alias moved without an audit event)."""
    champion = registry.get_alias_version(name, CHAMPION)
    current = [iv.version for iv in intervals if iv.lane == REGISTRY_LANE and iv.end is None]
    notes = []
    if champion and current != [champion]:
        notes.append(f"the champion alias points to version {champion}, but the audit trail "
                     + (f"ends with version {current[0]} as champion" if current else "records no promotion of it")
                     + "; an alias was moved without an audit event")
    if not trail:
        notes.append("the audit trail of this model is empty")
    return notes


def _brief(e: AuditEvent) -> dict[str, Any]:
    return {"time": e.time, "kind": e.kind, "version": e.model_version, "decision": e.decision, "actor": e.actor,
            "reason": e.reason, "event_id": e.event_id, "run_id": e.run_id}


def _updated(version: str, events: list[AuditEvent]) -> bool:
    return any(e.kind == "policy_update" and e.model_version == version for e in events)


def _union_seconds(intervals: list[ServiceInterval], since: float, until: float) -> float:
    """Seconds inside ``[since, until]`` covered by any of ``intervals`` (overlapping lanes counted once)."""
    spans = sorted((max(iv.start, since), min(iv.end if iv.end is not None else until, until)) for iv in intervals)
    total, reach = 0.0, -math.inf
    for lo, hi in spans:
        if hi <= lo:
            continue
        lo = max(lo, reach)
        if hi > lo:
            total += hi - lo
        reach = max(reach, hi)
    return total


def _version_of(policy_version: str | None, name: str | None) -> str | None:
    """``3`` from ``NAME/3@bundle12`` (``None`` when it names another model, or no registered version)."""
    if not policy_version:
        return None
    head = str(policy_version).rpartition("@")[0] or str(policy_version)
    model, sep, version = head.rpartition("/")
    if not sep or (name is not None and model != name):
        return None
    return version


def _version_key(version: str) -> tuple[int, str]:
    """Numeric versions in order, anything else after them."""
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def _all_pages(search: Any) -> list[Any]:
    """Every item of a paged MLflow search (``search(page_token)`` returns a ``PagedList``)."""
    items: list[Any] = []
    token = None
    while True:
        page = search(token)
        items.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return items


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _iso(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return dt.datetime.fromtimestamp(float(stamp), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = float(seconds)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
