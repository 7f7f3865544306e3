"""Drift monitoring of deployed policies (observations, actions, rewards) with Evidently, and triggers.

Light to import: names are loaded on first access, and Evidently, MLflow and torch only when a
monitor, report or run needs them (``rlops monitor --help`` stays fast). See docs/monitoring.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "config": ("DEFAULT_MONITORS", "MonitorConfig", "SignalConfig"),
    "drift": ("DriftMonitor",),
    "errors": ("MonitorConfigError", "MonitorError", "TriggerError"),
    "frames": ("add_episode_returns", "attach_feedback", "load_decisions"),
    "reference": ("production_reference", "read_reference", "rollout_reference", "write_reference"),
    "results": ("DRIFT", "ERROR", "INSUFFICIENT", "OK", "ColumnResult", "MonitorResult"),
    "runner": ("MonitorOutcome", "run_monitor"),
    "session": ("MonitorSession", "resolve_policy"),
    "summary": ("WindowSummary",),
    "triggers": ("DriftStreakRule", "RewardBelowRule", "ScheduleRule", "TriggerEngine", "TriggerEvent", "deliver",
                 "parse_rules"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import the public names lazily from their modules."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'rlops_plugin.monitoring' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rlops_plugin.monitoring.{module}"), name)
