"""One call that runs a monitoring session: what ``rlops monitor`` and the pipeline component call.

``run_monitor("cartpole@champion", ".rlops/experience.db")`` resolves the policy version, builds the
reference (``rollouts[:N]``, ``production[:N]``, ``production:OFFSET:N`` or a file), calibrates,
opens the MLflow monitoring run, evaluates every full window (once, or every ``every_s`` seconds),
fires triggers, and returns a :class:`MonitorOutcome`. Output goes through ``on_window`` and ``echo``
callbacks, so the CLI prints and a Kubeflow component stays quiet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlops_plugin.errors import RLOpsError
from rlops_plugin.monitoring.config import DEFAULT_RULES, MonitorConfig
from rlops_plugin.monitoring.errors import MonitorConfigError
from rlops_plugin.monitoring.tracking import DEFAULT_EXPERIMENT

REFERENCE_HELP = ("rollouts[:N] (roll the policy out in its EnvSpec simulator, default 50000 decisions), "
                  "production[:N] or production:OFFSET:N (a window of the policy's own traffic, default "
                  "20 windows), or a .parquet/.csv file with the monitoring columns")


@dataclass
class MonitorOutcome:
    """What a monitoring session produced."""

    policy: Any
    """The :class:`~rlops_plugin.monitoring.session.ResolvedPolicy` that was watched."""
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


def run_monitor(model: str, store: str, *, reference: str = "rollouts", config: MonitorConfig | None = None,
                triggers: Sequence[str] = DEFAULT_RULES, actions: Sequence[str] = (), all_versions: bool = False,
                served_name: str | None = None, reports: str = "drift", report_dir: str | Path | None = None,
                experiment: str = DEFAULT_EXPERIMENT, use_mlflow: bool = True, every_s: float | None = None,
                max_ticks: int | None = None, on_window: Callable[[Any], None] | None = None,
                echo: Callable[[str], None] | None = None,
                on_trigger: Callable[[Any], None] | None = None, max_triggers: int | None = None) -> MonitorOutcome:
    """Monitor ``model``'s decisions in ``store`` (once, or every ``every_s`` seconds until Ctrl-C).

    ``on_window`` sees each window summary after its triggers ran; ``on_trigger`` sees each trigger
    event before its hooks and actions run (after it is recorded in the audit trail).
    ``max_triggers`` caps the events of the session (e.g. 1: one retraining, not one per drifting
    signal); later firings are only counted (``MonitorOutcome.suppressed``).
    """
    from rlops_plugin.experience.store import open_store
    from rlops_plugin.monitoring.session import MonitorSession, resolve_policy
    from rlops_plugin.monitoring.triggers import TriggerEngine, parse_rules

    config = config or MonitorConfig()
    say = echo or (lambda text: None)
    rules = parse_rules(triggers, config.monitors)
    engine = TriggerEngine(rules, actions=actions, max_events=max_triggers)  # bad actions fail before any work
    resolved = resolve_policy(model)
    engine.model = resolved.model_name
    watched = None if all_versions else resolved.policy_version
    say(f"[bold]Monitoring[/bold] {watched or 'every policy version'} ({resolved.model_uri}) in {store}")
    with open_store(store) as experience:
        drift, session_args = build_monitor(reference, config, resolved, experience, served_name, watched, say)
        say(_calibration_line(drift))
        tracker = None
        if use_mlflow:
            from rlops_plugin.monitoring.tracking import MonitoringRun, redact_url

            tracker = MonitoringRun(policy_version=resolved.policy_version, model_name=resolved.model_name,
                                    model_version=resolved.version, model_alias=resolved.alias,
                                    experiment=experiment,
                                    extra_tags={"rlops.store": redact_url(store), "rlops.reference": reference,
                                                "rlops.scope": "endpoint" if all_versions else "version"})
            params: dict[str, Any] = {
                "window": config.window, "monitors": ",".join(config.monitors), "reference": reference,
                "reference_rows": len(drift.reference), "false_alarm_rate": config.false_alarm_rate,
                "triggers": ",".join(r.name for r in rules), "actions": ",".join(actions)}
            for name in config.monitors:
                params[f"{name}.stattest"] = config.signal(name).stattest
                params[f"{name}.threshold"] = config.signal(name).threshold
            tracker.start(config.to_dict(), drift.calibration, params)
            say(f"MLflow run {tracker.run_id} in experiment {experiment!r}")
        engine.on_fire = _chain(tracker.audit_trigger if tracker is not None else None, on_trigger)
        session = MonitorSession(experience, drift, policy_version=watched, served_model=served_name,
                                 model_name=resolved.model_name, triggers=engine, tracker=tracker, reports=reports,
                                 report_dir=report_dir, on_window=on_window, **session_args)
        status = "FINISHED"
        try:
            ticks = 0
            while True:
                session.tick()
                ticks += 1
                if every_s is None or (max_ticks is not None and ticks >= max_ticks):
                    break
                time.sleep(every_s)
        except KeyboardInterrupt:
            status = "KILLED"
        except RLOpsError:
            status = "FAILED"
            raise
        finally:
            if tracker is not None:
                tracker.end(status)
            session.close()
    outcome = MonitorOutcome(resolved, session.summaries, engine.events, tracker.run_id if tracker else None,
                             session.kept_report_dir, len(session.pending), drift.calibration, engine.suppressed)
    drifted = sum(s.status == "drift" for s in outcome.summaries)
    say(f"[bold]{len(outcome.summaries)} windows[/bold], {drifted} drifted, {len(outcome.events)} triggers"
        + (f" ({outcome.suppressed} more suppressed by max_triggers={max_triggers})" if outcome.suppressed else "")
        + (f"; {outcome.pending} decisions wait for a full window of {config.window}" if outcome.pending else "")
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
                  watched: str | None, echo: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """The calibrated ``DriftMonitor`` for a reference spec, and the session's start (for production)."""
    from rlops_plugin.monitoring.drift import DriftMonitor
    from rlops_plugin.monitoring.frames import load_decisions
    from rlops_plugin.monitoring.reference import production_reference, read_reference, rollout_reference
    from rlops_plugin.monitoring.session import require_decisions

    kind, _, rest = spec.partition(":")
    args = rest.split(":") if rest else []
    if kind == "rollouts" and len(args) <= 1:
        decisions = _count(args[0], "--reference rollouts:N") if args else 50_000
        probe = load_decisions(store, policy_version=watched, model=served_name, limit=1)
        bundle = resolved.load_bundle()
        echo(f"reference: rolling out {decisions} decisions of the policy in {bundle.env_spec.name} "
             f"(exploration {probe.exploration or 'softmax, temperature 1'})")
        frame = rollout_reference(bundle, decisions, exploration=probe.exploration)
        return DriftMonitor(frame, config), {}
    if kind == "production" and len(args) <= 2:
        require_decisions(store, watched, served_name)
        offset = _count(args[0], "--reference production:OFFSET:N") if len(args) == 2 else 0
        decisions = _count(args[-1], "--reference production:N") if args else 20 * config.window
        frame, pending, last_seq = production_reference(store, watched, decisions, offset=offset, model=served_name)
        echo(f"reference: decisions {offset}-{offset + decisions} of the policy's own traffic")
        return DriftMonitor(frame, config), {"pending": pending, "since_seq": last_seq}
    if Path(spec).is_file():
        echo(f"reference: {spec}")
        return DriftMonitor(read_reference(spec), config), {}
    raise MonitorConfigError(f"--reference {spec!r}: {REFERENCE_HELP}")


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
