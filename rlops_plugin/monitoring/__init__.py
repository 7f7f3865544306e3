"""Drift monitoring of deployed policies (observations, actions, rewards; an agent's answers) with Evidently.

Modules: ``config`` (errors, ``MonitorConfig``, ``SignalConfig``), ``frames`` (decisions and
feedback as frames), ``agent`` (an agent's interactions and feedback as frames, its references),
``drift`` (stat tests, calibration, column monitors, ``DriftMonitor``),
``results`` (statuses, column/signal/window results), ``reference``, ``triggers`` (rules, events,
actions), ``runner`` (``run_monitor``, ``MonitorOptions``, the session, MLflow tracking),
``report`` (HTML report, console) and ``cli``.

Light to import: names are loaded on first access, and Evidently, MLflow and torch only when a
monitor, report or run needs them (``rlops monitor --help`` stays fast). See docs/monitoring.md.
"""

from __future__ import annotations

from rlops_plugin._lazy import lazy_exports

_EXPORTS = {
    "agent": ("InteractionFrames", "agent_frame", "keyword_vocabulary", "load_interactions", "production_interactions",
              "task_reference"),
    "config": ("AGENT_MONITORS", "DEFAULT_MONITORS", "DEFAULT_RULES", "MonitorConfig", "MonitorConfigError",
               "MonitorError", "ReportMode", "SignalConfig", "TriggerError"),
    "drift": ("ColumnDriftMonitor", "DriftMonitor", "builtin_factory", "check_stattest", "run_stattest"),
    "frames": ("add_episode_returns", "attach_feedback", "load_decisions"),
    "reference": ("production_reference", "read_reference", "rollout_reference", "write_reference"),
    "report": ("ConsolePrinter", "build_report"),
    "results": ("DRIFT", "ERROR", "INSUFFICIENT", "OK", "ColumnKind", "ColumnResult", "MonitorResult", "Status",
                "WindowSummary"),
    "runner": ("DecisionFrames", "FrameSource", "MonitorOptions", "MonitorOutcome", "MonitorSession", "MonitoringRun",
               "ReferenceKind", "ResolvedPolicy", "RunStatus", "resolve_policy", "run_monitor"),
    "triggers": ("ActionSpec", "DriftStreakRule", "RewardBelowRule", "RewardColumn", "RuleKind", "ScheduleRule",
                 "TriggerEngine", "TriggerEvent", "deliver", "parse_rules", "register_trigger_action",
                 "resolve_action", "trigger_actions"),
}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
