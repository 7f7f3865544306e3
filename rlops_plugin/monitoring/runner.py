"""A monitoring session and the one call that runs it: what ``rlops monitor`` and the pipeline component call.

``run_monitor("cartpole@champion", ".rlops/experience.db", MonitorOptions(...))`` resolves the policy
version, builds the reference (``rollouts[:N]``, ``production[:N]``, ``production:OFFSET:N`` or a
file), calibrates, opens the MLflow monitoring run, evaluates every full window (once, or every
``every_s`` seconds), fires triggers, and returns a :class:`MonitorOutcome`. Output goes through the
``on_window`` and ``echo`` callbacks, so the CLI prints and a Kubeflow component stays quiet.

**The session.** ``MonitorSession.tick()`` reads the rows appended since the last tick, joins the
feedback known *now* (rewards arriving after their window was evaluated are not seen by it),
evaluates every full window, logs it to MLflow, checks the trigger rules and hands each window to
``on_window``. ``rlops monitor --once`` ticks once; ``--every 60s`` ticks forever.

**Policy kinds.** The session is the same for every kind; what differs is where its rows come from (a
:class:`FrameSource`): :class:`DecisionFrames` reads a vector policy's decision batches,
:class:`~rlops_plugin.monitoring.agent.InteractionFrames` an agent's interactions (shadow records left out),
and :func:`build_monitor` picks the source, the default signals (``MonitorConfig.for_kind``) and the
reference by the bundle's kind (``rlops_plugin.kinds.kind_of``). For an agent ``rollouts[:N]`` means its
task suite (``tasks[:N]``: the agent kind's rollout is its task suite).

**MLflow.** A session is one run (:class:`MonitoringRun`) linked to the model version: tags naming
what it watches (``rlops.model_name``, ``rlops.model_version``, ``rlops.model_alias``,
``rlops.policy_version``), the config and calibrated thresholds as artifacts; each window logs its
metrics with ``step`` = window index (so the MLflow UI plots them over time),
``windows/NNNNNN/summary.json`` and, when built, ``windows/NNNNNN/report.html``; each trigger event
logs ``triggers/NNNNNN-<rule>.json`` and a ``trigger`` audit event. The model version gets the tag
``rlops.monitoring_run_id`` (the latest monitoring run), so the registry UI links to it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse, urlunparse

import pandas as pd

from rlops_plugin.errors import RLOpsError
from rlops_plugin.experience.join import JoinConfig
from rlops_plugin.experience.store import ExperienceStore
from rlops_plugin.flavor.refs import ModelRef
from rlops_plugin.monitoring.agent import (
    InteractionFrames,
    production_interactions,
    require_interactions,
    task_reference,
    vocabulary_of,
)
from rlops_plugin.monitoring.agent import agent_frame as _agent_frame
from rlops_plugin.monitoring.config import DEFAULT_RULES, MonitorConfig, MonitorConfigError, MonitorError, ReportMode
from rlops_plugin.monitoring.drift import DriftMonitor
from rlops_plugin.monitoring.frames import EpisodeCarry, add_episode_returns, attach_feedback, load_decisions
from rlops_plugin.monitoring.reference import production_reference, read_reference, rollout_reference
from rlops_plugin.monitoring.results import DRIFT, TESTED, WindowSummary
from rlops_plugin.monitoring.triggers import ActionSpec, TriggerEngine, TriggerEvent, action_key, parse_rules

# --- MLflow tracking ------------------------------------------------------------------------------

DEFAULT_EXPERIMENT = "rlops-monitoring"
"""MLflow experiment of the monitoring runs."""
TAG_MODEL_NAME, TAG_MODEL_VERSION, TAG_MODEL_ALIAS, TAG_POLICY_VERSION = (
    "rlops.model_name", "rlops.model_version", "rlops.model_alias", "rlops.policy_version")
TAG_MONITORING_RUN = "rlops.monitoring_run_id"


class RunStatus(StrEnum):
    """How a monitoring session ended: the MLflow run status it is closed with."""

    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    """Stopped with Ctrl-C (``--every`` runs until then)."""


class MonitoringRun:
    """The MLflow run of one ``rlops monitor`` session."""

    def __init__(self, *, policy_version: str, model_name: str | None = None, model_version: str | None = None,
                 model_alias: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 run_name: str | None = None, extra_tags: dict[str, str] | None = None) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient()
        self.policy_version = policy_version
        self.model_name, self.model_version, self.model_alias = model_name, model_version, model_alias
        self.experiment = experiment
        self.run_name = run_name or (f"monitor-{model_name}-v{model_version}" if model_version
                                     else f"monitor-{policy_version}")
        self.extra_tags = dict(extra_tags or {})
        self.run_id: str | None = None

    def start(self, config: dict[str, Any] | None = None, calibration: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None) -> str:
        """Create the run with its tags, params, config and calibration; link the model version to it."""
        experiment = self.client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
        tags = {"mlflow.runName": self.run_name, "rlops.monitor": "drift", TAG_POLICY_VERSION: self.policy_version,
                **self.extra_tags}
        for key, value in ((TAG_MODEL_NAME, self.model_name), (TAG_MODEL_VERSION, self.model_version),
                           (TAG_MODEL_ALIAS, self.model_alias)):
            if value:
                tags[key] = str(value)
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        if params:
            self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        if config is not None:
            self.client.log_dict(self.run_id, config, "monitor_config.json")
        if calibration is not None:
            self.client.log_dict(self.run_id, calibration, "calibration.json")
        if self.model_name and self.model_version:
            self.client.set_model_version_tag(self.model_name, self.model_version, TAG_MONITORING_RUN, self.run_id)
        return self.run_id

    def log_window(self, summary: WindowSummary, report_path: str | Path | None = None) -> None:
        """Metrics (step = window index), the JSON summary, and the HTML report when there is one."""
        from mlflow.entities import Metric

        run_id = self._require()
        stamp = int((summary.end_ts or time.time()) * 1000)
        metrics = [Metric(key, value, stamp, summary.index) for key, value in summary.metrics().items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start:start + 1000])
        folder = f"windows/{summary.index:06d}"
        if report_path is not None:
            self.client.log_artifact(run_id, str(report_path), folder)
            summary.report_path = f"{folder}/{Path(report_path).name}"
        self.client.log_dict(run_id, summary.to_dict(), f"{folder}/summary.json")

    def log_trigger(self, event: Any) -> None:
        """The trigger event as ``triggers/NNNNNN-<rule>.json``."""
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", event.rule)
        self.client.log_dict(self._require(), event.to_dict(), f"triggers/{event.window:06d}-{name}.json")

    def audit_trigger(self, event: Any) -> None:
        """A ``trigger`` event in the model's audit trail (before the trigger's actions run, dispatch actions
        excepted: their results go into the event), linking this run."""
        from rlops_plugin.audit.events import AuditEvent, record_event

        if not self.model_name:
            return
        evidence = event.to_dict()["evidence"]
        metrics = {f"evidence/{k}": float(v) for k, v in evidence.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        record_event(AuditEvent("trigger", self.model_name, self.model_version, actor="rlops:monitor",
                                decision=event.rule, reason=f"{event.rule} fired on window {event.window} of "
                                                            f"{event.policy_version}",
                                metrics=metrics, time=event.time,
                                details={"trigger": event.to_dict(), "monitoring_run_id": self.run_id}))

    def end(self, status: str = RunStatus.FINISHED) -> None:
        """Close the run with a :class:`RunStatus` (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, str(status))

    def _require(self) -> str:
        if self.run_id is None:
            raise MonitorError("MonitoringRun.start() was not called")
        return self.run_id


def redact_url(url: str) -> str:
    """``url`` without a password (store URLs go into run tags)."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
    return urlunparse(parsed._replace(netloc=netloc))


# --- The session ----------------------------------------------------------------------------------

REPORT_MODES: tuple[str, ...] = tuple(mode.value for mode in ReportMode)
"""The values of :class:`ReportMode`, as plain strings."""


@dataclass(frozen=True)
class ResolvedPolicy:
    """The policy version a monitor watches: its ``ModelRef`` pinned to one version, and its logged name."""

    policy_version: str
    """As logged with each decision: ``name/version@bundle12`` (registry) or ``bundle12`` (path)."""
    ref: ModelRef
    _loaded: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def model_uri(self) -> str:
        """What to load: the pinned ``models:/NAME/VERSION`` or the local directory."""
        return self.ref.download_uri

    @property
    def model_name(self) -> str | None:
        """The registered model's name (None for a local directory)."""
        return self.ref.name

    @property
    def version(self) -> str | None:
        """The registry version the alias pointed to when resolved."""
        return self.ref.version

    @property
    def alias(self) -> str | None:
        """The alias that was resolved, if any."""
        return self.ref.alias

    def load_bundle(self) -> Any:
        """Download and verify the bundle (once: rollout references and the policy kind need it)."""
        from rlops_plugin.flavor.model import load_local_model, load_model

        if "bundle" not in self._loaded:
            local = not self.ref.registered and Path(self.model_uri).is_dir()
            self._loaded["bundle"] = load_local_model(self.model_uri) if local else load_model(self.model_uri)
        return self._loaded["bundle"]

    @property
    def kind(self) -> str:
        """The bundle's policy kind (``vector``, ``agent``, ...), as :func:`rlops_plugin.kinds.kind_of` reads it."""
        from rlops_plugin.kinds.base import kind_of

        return str(kind_of(self.load_bundle()).name)


def resolve_policy(ref: str) -> ResolvedPolicy:
    """Resolve ``NAME@ALIAS``, ``NAME/VERSION``, ``models:/...`` or a local model directory.

    Registry references are pinned to one version first; the policy version string is built from the
    version's ``rlops.bundle_sha`` tag (the model is downloaded only when the tag is missing).
    """
    from rlops_plugin.flavor.lineage import TAG_BUNDLE_SHA
    from rlops_plugin.flavor.refs import resolve_model_uri

    if Path(ref).is_dir():
        from rlops_plugin.flavor.model import load_local_model

        bundle = load_local_model(ref)
        return ResolvedPolicy(bundle.bundle_sha[:12], ModelRef(str(Path(ref).resolve())), {"bundle": bundle})
    try:
        parsed = ModelRef.parse(ref if ref.startswith("models:/") else f"models:/{ref}")
    except RLOpsError:
        parsed = ModelRef(ref)
    if not parsed.registered or (parsed.version is None and parsed.alias is None):
        raise MonitorConfigError(f"--model {ref!r}: write NAME@ALIAS, NAME/VERSION, models:/NAME@ALIAS or a "
                                 "local model directory")
    resolved = resolve_model_uri(parsed)
    sha = resolved.tags.get(TAG_BUNDLE_SHA)
    if not sha:
        from rlops_plugin.flavor.model import load_model_with_source

        sha = load_model_with_source(resolved.download_uri).bundle.bundle_sha
    return ResolvedPolicy(f"{resolved.name}/{resolved.version}@{sha[:12]}", resolved)


class FrameSource(Protocol):
    """Where a session's rows come from: one per policy kind (vector decisions, agent interactions)."""

    unit: str
    """What a row is, in messages (``decisions``, ``interactions``)."""

    def read(self, since_seq: int) -> tuple[pd.DataFrame, int]:
        """Raw rows logged after ``since_seq`` (of the watched version) and the last sequence number read."""

    def complete(self, rows: pd.DataFrame, now: float | None = None) -> pd.DataFrame:
        """Rows that fill windows, in log order, with the feedback known ``now``: monitoring frame rows."""


class DecisionFrames:
    """A vector policy's source: decision batches, rewards joined, episode returns carried across windows."""

    unit = "decisions"

    def __init__(self, store: ExperienceStore, policy_version: str | None, served_model: str | None = None,
                 join: JoinConfig | None = None) -> None:
        self.store, self.policy_version, self.served_model, self.join = store, policy_version, served_model, join
        self.carry = EpisodeCarry()

    def read(self, since_seq: int) -> tuple[pd.DataFrame, int]:
        """Decisions of the batches after ``since_seq``."""
        loaded = load_decisions(self.store, policy_version=self.policy_version, model=self.served_model,
                                since_seq=since_seq)
        return loaded.frame, loaded.last_seq

    def complete(self, rows: pd.DataFrame, now: float | None = None) -> pd.DataFrame:
        """Rewards joined, episode returns set (episodes open at the end are carried to the next call)."""
        ready = attach_feedback(rows, self.store, self.join, now)
        self.carry = add_episode_returns(ready, self.carry)
        return ready


class MonitorSession:
    """Incremental monitoring of one policy version's log (decisions, or an agent's interactions)."""

    def __init__(self, store: ExperienceStore, monitor: DriftMonitor, *, policy_version: str | None,
                 served_model: str | None = None, model_name: str | None = None,
                 triggers: TriggerEngine | None = None, tracker: MonitoringRun | None = None,
                 reports: str = ReportMode.DRIFT, report_dir: str | Path | None = None, since_seq: int = 0,
                 pending: pd.DataFrame | None = None, join: JoinConfig | None = None,
                 on_window: Callable[[WindowSummary], None] | None = None,
                 frames: FrameSource | None = None) -> None:
        if reports not in REPORT_MODES:
            raise MonitorConfigError(f"reports must be one of {REPORT_MODES}, got {reports!r}")
        self.store = store
        self.monitor = monitor
        self.policy_version = policy_version
        self.served_model = served_model
        self.model_name = model_name
        self.triggers = triggers
        self.tracker = tracker
        self.reports = reports
        self._own_report_dir = report_dir is None
        self._report_dir = Path(report_dir) if report_dir else None
        self.last_seq = since_seq
        self.pending = pending if pending is not None else pd.DataFrame()
        self.join = join
        self.on_window = on_window
        self.frames: FrameSource = frames or DecisionFrames(store, policy_version, served_model, join)
        """Where rows come from (default: the decision log of ``policy_version``)."""
        self.next_index = 0
        self.summaries: list[WindowSummary] = []

    @property
    def report_dir(self) -> Path:
        """Where HTML reports go (a temporary folder, made on first use, unless one was given)."""
        if self._report_dir is None:
            self._report_dir = Path(tempfile.mkdtemp(prefix="rlops-monitor-"))
        return self._report_dir

    @property
    def kept_report_dir(self) -> Path | None:
        """The folder holding this session's HTML reports after :meth:`close` (``None`` if none is kept)."""
        if self._report_dir is None or (self._own_report_dir and self.tracker is not None):
            return None
        return self._report_dir

    def tick(self, now: float | None = None) -> list[WindowSummary]:
        """Read new rows and evaluate every window that is now full; return their summaries."""
        new, self.last_seq = self.frames.read(self.last_seq)
        frames = [f for f in (self.pending, new) if not f.empty]
        rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        size = self.monitor.config.window
        full = (len(rows) // size) * size
        if full == 0:
            self.pending = rows
            return []
        ready = self.frames.complete(rows.iloc[:full].reset_index(drop=True), now)
        self.pending = rows.iloc[full:].reset_index(drop=True)
        out = []
        for start in range(0, full, size):
            window = ready.iloc[start:start + size]
            out.append(self._window(window))
        return out

    def _window(self, window: pd.DataFrame) -> WindowSummary:
        summary = self.monitor.evaluate(window, self.next_index, policy_version=self.policy_version,
                                        model=self.model_name)
        self.next_index += 1
        report_path = None
        if self.reports == ReportMode.ALWAYS or (self.reports == ReportMode.DRIFT and summary.status == DRIFT):
            if any(c.status in TESTED for r in summary.signals.values() for c in r.columns):
                report_path = self.report_dir / f"window-{summary.index:06d}.html"
                self.monitor.report(window, summary, report_path)
                summary.report_path = str(report_path)
        if self.triggers is not None:
            self.triggers.observe(summary)
        if self.tracker is not None:
            self.tracker.log_window(summary, report_path)
            for event in summary.triggers:
                self.tracker.log_trigger(event)
        self.summaries.append(summary)
        if self.on_window is not None:
            self.on_window(summary)
        return summary

    def close(self) -> None:
        """Remove the temporary report folder (reports already logged to MLflow)."""
        if self._own_report_dir and self.tracker is not None and self._report_dir is not None:
            shutil.rmtree(self._report_dir, ignore_errors=True)


def require_decisions(store: ExperienceStore, policy_version: str | None, served_model: str | None) -> None:
    """Raise ``MonitorError`` naming the versions present when the store has none of ``policy_version``."""
    probe = load_decisions(store, policy_version=policy_version, model=served_model, limit=1)
    if not probe.frame.empty:
        return
    versions = sorted({p for _, b in store.iter_batches(model=served_model) for p in b.policies})
    raise MonitorError(f"no decisions of {policy_version or 'any policy'} in {store.url}"
                       + (f" (served as {served_model})" if served_model else "")
                       + (f"; versions present: {', '.join(versions[:10])}" if versions else "; the store is empty"))


# --- run_monitor ----------------------------------------------------------------------------------

class ReferenceKind(StrEnum):
    """The first field of a ``--reference`` spec (anything else is a file)."""

    ROLLOUTS = "rollouts"
    """``rollouts[:N]``: the policy's own rollouts in its ``EnvSpec`` simulator."""
    PRODUCTION = "production"
    """``production[:N]`` or ``production:OFFSET:N``: a window of the policy's own logged traffic."""
    TASKS = "tasks"
    """``tasks[:N]`` (agents): N sampled answers of the agent to its own task suite (default 20 windows)."""


REFERENCE_HELP = ("rollouts[:N] (roll the policy out in its EnvSpec simulator, default 50000 decisions; an agent: "
                  "tasks[:N]), tasks[:N] (an agent's sampled answers to its task suite, default 20 windows), "
                  "production[:N] or production:OFFSET:N (a window of the policy's own traffic, default "
                  "20 windows), or a .parquet/.csv file with the monitoring columns")


@dataclass(frozen=True)
class MonitorOptions:
    """Everything a monitoring session is asked to do besides the model and the store (``rlops monitor``'s options).

    Defaults are the command's; each field is checked when the options are made, and an error names it.
    """

    reference: str = ReferenceKind.ROLLOUTS.value
    """What windows are compared with: ``rollouts[:N]``, ``production[:N]``, ``production:OFFSET:N``
    or a ``.parquet``/``.csv`` file (see :data:`REFERENCE_HELP`)."""
    config: MonitorConfig = field(default_factory=MonitorConfig)
    """Window size, monitors, per-signal stat tests, thresholds, settings and calibration."""
    triggers: Sequence[str] = DEFAULT_RULES
    """Trigger rule strings (``drift:SIGNAL:K``, ``reward-below:...``, ``schedule:DURATION``)."""
    actions: Sequence[str | Mapping[str, Any] | ActionSpec] = ()
    """Trigger actions run after the ``rlops_on_trigger`` hooks: ``"NAME[:ARG]"`` strings, or
    :class:`ActionSpec` (or its dict) to give an action its own ``settings``."""
    all_versions: bool = False
    """Watch every policy version in the log (the endpoint), not only ``model``'s: catches a swap."""
    served_name: str | None = None
    """Only decisions served under this KServe model name."""
    reports: str = ReportMode.DRIFT.value
    """When to build a window's Evidently HTML report: a :class:`ReportMode` (drift, always, never)."""
    report_dir: str | Path | None = None
    """Keep HTML reports in this folder too (else a temporary one, removed once logged to MLflow)."""
    experiment: str = DEFAULT_EXPERIMENT
    """MLflow experiment of the monitoring run."""
    use_mlflow: bool = True
    """Log a monitoring run to MLflow."""
    every_s: float | None = None
    """Poll for new decisions every this many seconds until Ctrl-C; ``None`` evaluates once."""
    max_ticks: int | None = None
    """With ``every_s``: stop after this many polls (the first always runs); ``None``: until Ctrl-C."""
    max_triggers: int | None = None
    """Deliver at most this many trigger events in the session (1: one retraining, not one per
    drifting signal); later firings are only counted (``MonitorOutcome.suppressed``)."""
    on_window: Callable[[WindowSummary], None] | None = None
    """Sees each window summary after its triggers ran (the CLI prints it)."""
    echo: Callable[[str], None] | None = None
    """Sees each progress line (rich markup); ``None`` keeps the session quiet."""
    on_trigger: Callable[[TriggerEvent], None] | None = None
    """Sees each trigger event before its hooks and actions run (after the audit trail recorded it)."""
    judge: Any = None
    """Agents only: a :class:`~rlops_plugin.kinds.agent.judges.Judge` that scores single answers (code or reward
    model judge), or a registered judge's name; adds the ``judge`` signal (``judge_score`` per answer)."""

    def __post_init__(self) -> None:
        if not isinstance(self.reference, str) or not self.reference:
            raise MonitorConfigError(f"MonitorOptions.reference: {REFERENCE_HELP}; got {self.reference!r}")
        if not isinstance(self.config, MonitorConfig):
            raise MonitorConfigError(f"MonitorOptions.config must be a MonitorConfig, got {type(self.config).__name__}")
        for name in ("triggers", "actions"):
            value = getattr(self, name)
            if isinstance(value, (str, Mapping, ActionSpec)) or not isinstance(value, Iterable):
                raise MonitorConfigError(f"MonitorOptions.{name} must be a list of specs, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.reports not in REPORT_MODES:
            raise MonitorConfigError(f"MonitorOptions.reports must be one of {', '.join(REPORT_MODES)}, "
                                     f"got {self.reports!r}")
        if not isinstance(self.experiment, str) or not self.experiment:
            raise MonitorConfigError(f"MonitorOptions.experiment must name an MLflow experiment, "
                                     f"got {self.experiment!r}")
        if self.every_s is not None and not (isinstance(self.every_s, (int, float)) and math.isfinite(self.every_s)
                                             and self.every_s >= 0):
            raise MonitorConfigError(f"MonitorOptions.every_s must be a number of seconds >= 0, got {self.every_s!r}")
        for name, least in (("max_ticks", 0), ("max_triggers", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                raise MonitorConfigError(f"MonitorOptions.{name} must be an int >= {least}, got {value!r}")
        for name in ("on_window", "echo", "on_trigger"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise MonitorConfigError(f"MonitorOptions.{name} must be callable, got {getattr(self, name)!r}")
        if self.judge is not None and not (isinstance(self.judge, str) or callable(getattr(self.judge, "score", None))):
            raise MonitorConfigError(f"MonitorOptions.judge must be a Judge (with score()) or a registered judge's "
                                     f"name, got {self.judge!r}")

    def replace(self, **changes: Any) -> MonitorOptions:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass
class MonitorOutcome:
    """What a monitoring session produced."""

    policy: Any
    """The :class:`ResolvedPolicy` that was watched."""
    summaries: list[Any] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    run_id: str | None = None
    """The MLflow monitoring run (``None`` without MLflow)."""
    report_dir: Path | None = None
    """Where HTML reports were kept (``None`` when none was written, or they went to MLflow only)."""
    pending: int = 0
    """Decisions read that do not fill a window yet."""
    calibration: dict[str, Any] = field(default_factory=dict)
    suppressed: int = 0
    """Trigger firings past ``max_triggers`` (not delivered)."""

    @property
    def triggered(self) -> bool:
        """True when at least one trigger fired."""
        return bool(self.events)


def run_monitor(model: str, store: str, options: MonitorOptions | None = None) -> MonitorOutcome:
    """Monitor ``model``'s decisions in ``store`` (once, or every ``options.every_s`` seconds until Ctrl-C).

    ``model`` is ``NAME@ALIAS``, ``NAME/VERSION``, ``models:/...`` or a local model directory;
    ``store`` an experience store path or URL; everything else is in ``options`` (defaults: the
    ones of ``rlops monitor``).
    """
    from rlops_plugin.experience.store import open_store

    opts = options or MonitorOptions()
    say = opts.echo or (lambda text: None)
    parse_rules(opts.triggers, opts.config.possible_signals())  # a malformed rule fails before any download
    TriggerEngine([], actions=opts.actions, max_events=opts.max_triggers)  # so do unknown actions
    resolved = resolve_policy(model)
    kind = resolved.kind
    judge = _judge(opts.judge, kind)
    config = opts.config.for_kind(kind, judge=judge is not None)
    rules = parse_rules(opts.triggers, config.monitors)
    engine = TriggerEngine(rules, actions=opts.actions, max_events=opts.max_triggers)
    engine.model = resolved.model_name
    watched = None if opts.all_versions else resolved.policy_version
    say(f"[bold]Monitoring[/bold] {watched or 'every policy version'} ({resolved.model_uri}, {kind}) in {store}")
    with open_store(store) as experience:
        drift, session_args = build_monitor(opts.reference, config, resolved, experience, opts.served_name, watched,
                                            say, judge=judge)
        say(_calibration_line(drift))
        tracker = None
        if opts.use_mlflow:
            tracker = MonitoringRun(policy_version=resolved.policy_version, model_name=resolved.model_name,
                                    model_version=resolved.version, model_alias=resolved.alias,
                                    experiment=opts.experiment,
                                    extra_tags={"rlops.store": redact_url(store), "rlops.reference": opts.reference,
                                                "rlops.scope": "endpoint" if opts.all_versions else "version",
                                                "rlops.policy_kind": kind})
            params: dict[str, Any] = {
                "window": config.window, "monitors": ",".join(config.monitors), "reference": opts.reference,
                "reference_rows": len(drift.reference), "false_alarm_rate": config.false_alarm_rate,
                "triggers": ",".join(r.name for r in rules), "actions": ",".join(map(action_key, opts.actions))}
            for name in config.monitors:
                params[f"{name}.stattest"] = config.signal(name).stattest
                params[f"{name}.threshold"] = config.signal(name).threshold
            tracker.start(config.to_dict(), drift.calibration, params)
            say(f"MLflow run {tracker.run_id} in experiment {opts.experiment!r}")
        engine.on_fire = _chain(tracker.audit_trigger if tracker is not None else None, opts.on_trigger)
        session = MonitorSession(experience, drift, policy_version=watched, served_model=opts.served_name,
                                 model_name=resolved.model_name, triggers=engine, tracker=tracker,
                                 reports=opts.reports, report_dir=opts.report_dir, on_window=opts.on_window,
                                 **session_args)
        status = RunStatus.FINISHED
        try:
            ticks = 0
            while True:
                session.tick()
                ticks += 1
                if opts.every_s is None or (opts.max_ticks is not None and ticks >= opts.max_ticks):
                    break
                time.sleep(opts.every_s)
        except KeyboardInterrupt:
            status = RunStatus.KILLED
        except RLOpsError:
            status = RunStatus.FAILED
            raise
        finally:
            if tracker is not None:
                tracker.end(status)
            session.close()
    outcome = MonitorOutcome(resolved, session.summaries, engine.events, tracker.run_id if tracker else None,
                             session.kept_report_dir, len(session.pending), drift.calibration, engine.suppressed)
    drifted = sum(s.status == DRIFT for s in outcome.summaries)
    say(f"[bold]{len(outcome.summaries)} windows[/bold], {drifted} drifted, {len(outcome.events)} triggers"
        + (f" ({outcome.suppressed} more suppressed by max_triggers={opts.max_triggers})" if outcome.suppressed else "")
        + (f"; {outcome.pending} {drift.unit} wait for a full window of {config.window}" if outcome.pending else "")
        + (f"; reports in {outcome.report_dir}" if outcome.report_dir and any(outcome.report_dir.glob("*.html"))
           else ""))
    return outcome


def _chain(*callbacks: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
    """One callback calling each given one in order (``None`` when none is given)."""
    given = [c for c in callbacks if c is not None]
    if not given:
        return None

    def call(event: Any) -> None:
        for callback in given:
            callback(event)

    return call


def build_monitor(spec: str, config: MonitorConfig, resolved: Any, store: Any, served_name: str | None,
                  watched: str | None, echo: Callable[[str], None], *, judge: Any = None) -> tuple[Any, dict[str, Any]]:
    """The calibrated ``DriftMonitor`` for a reference spec, and the session's arguments (its row source, and
    where it starts for a production reference), chosen by the policy's kind."""
    kind, _, rest = spec.partition(":")
    args = rest.split(":") if rest else []
    if resolved.kind == "agent":
        return _build_agent_monitor(spec, kind, args, config, resolved, store, served_name, watched, echo, judge)
    if kind == ReferenceKind.ROLLOUTS and len(args) <= 1:
        decisions = _count(args[0], "--reference rollouts:N") if args else 50_000
        probe = load_decisions(store, policy_version=watched, model=served_name, limit=1)
        bundle = resolved.load_bundle()
        echo(f"reference: rolling out {decisions} decisions of the policy in {bundle.env_spec.name} "
             f"(exploration {probe.exploration or 'softmax, temperature 1'})")
        frame = rollout_reference(bundle, decisions, exploration=probe.exploration)
        return DriftMonitor(frame, config), {}
    if kind == ReferenceKind.PRODUCTION and len(args) <= 2:
        require_decisions(store, watched, served_name)
        offset = _count(args[0], "--reference production:OFFSET:N") if len(args) == 2 else 0
        decisions = _count(args[-1], "--reference production:N") if args else 20 * config.window
        frame, pending, last_seq = production_reference(store, watched, decisions, offset=offset, model=served_name)
        echo(f"reference: decisions {offset}-{offset + decisions} of the policy's own traffic")
        return DriftMonitor(frame, config), {"pending": pending, "since_seq": last_seq}
    if kind == ReferenceKind.TASKS:
        raise MonitorConfigError(f"--reference {spec!r}: a task-suite reference is for agents; "
                                 f"{resolved.policy_version} is a {resolved.kind} policy")
    if Path(spec).is_file():
        echo(f"reference: {spec}")
        return DriftMonitor(read_reference(spec), config), {}
    raise MonitorConfigError(f"--reference {spec!r}: {REFERENCE_HELP}")


def _build_agent_monitor(spec: str, kind: str, args: list[str], config: MonitorConfig, resolved: Any, store: Any,
                         served_name: str | None, watched: str | None, echo: Callable[[str], None],
                         judge: Any) -> tuple[Any, dict[str, Any]]:
    """An agent's monitor: its reference frame (task suite, production or file) and its interaction source."""
    session: dict[str, Any] = {}
    if kind in (ReferenceKind.ROLLOUTS, ReferenceKind.TASKS) and len(args) <= 1:
        answers = _count(args[0], f"--reference {kind}:N") if args else 20 * config.window
        bundle = resolved.load_bundle()
        echo(f"reference: {answers} sampled answers of the agent to its task suite {bundle.env_spec.name!r}")
        frame = task_reference(bundle, answers, seed=config.seed, judge=judge)
    elif kind == ReferenceKind.PRODUCTION and len(args) <= 2:
        require_interactions(store, watched, served_name)
        offset = _count(args[0], "--reference production:OFFSET:N") if len(args) == 2 else 0
        n = _count(args[-1], "--reference production:N") if args else 20 * config.window
        frame, pending, last_seq = production_interactions(store, watched, n, offset=offset, model=served_name,
                                                           judge=judge)
        echo(f"reference: interactions {offset}-{offset + n} of the agent's own traffic")
        session = {"pending": pending, "since_seq": last_seq}
    elif Path(spec).is_file():
        echo(f"reference: {spec}")
        frame = read_reference(spec)
        if vocabulary_of(frame) is None:  # raw interaction rows: featurize them as a reference
            frame = _agent_frame(frame, judge=judge)
    else:
        raise MonitorConfigError(f"--reference {spec!r}: {REFERENCE_HELP}")
    vocabulary = vocabulary_of(frame) or []
    source = InteractionFrames(store, watched, served_name, vocabulary, judge=judge)
    return DriftMonitor(frame, config, unit=source.unit), {**session, "frames": source}


def _judge(judge: Any, kind: str) -> Any:
    """The judge runtime for ``MonitorOptions.judge`` (a name is looked up in the judge registry)."""
    if judge is None:
        return None
    if kind != "agent":
        raise MonitorConfigError(f"MonitorOptions.judge: judges score agent answers; the model is a {kind} policy")
    if isinstance(judge, str):
        from rlops_plugin.kinds.agent.judges import make_judge

        return make_judge(judge)
    return judge


def _calibration_line(drift: Any) -> str:
    parts = []
    for columns in drift.calibration.values():
        for column, cal in columns.items():
            mark = "*" if cal["calibrated"] and cal["threshold"] != cal["configured"] else ""
            parts.append(f"{column}={cal['threshold']:.3g}{mark}")
    return (f"thresholds ({len(drift.reference)} reference rows; * raised by calibration): " + ", ".join(parts)
            if parts else "thresholds: none (no column-based monitor)")


def _count(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise MonitorConfigError(f"{what}: {text!r} is not an integer") from None
    if value < 0:
        raise MonitorConfigError(f"{what}: {value} is negative")
    return value
