"""Monitor a deployed policy: drift windows over its logged traffic, triggers, their audit events."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlops_plugin.defaults import MONITOR_REFERENCE, MONITOR_WINDOW
from rlops_plugin.monitoring.config import DEFAULT_RULES, MonitorConfig
from rlops_plugin.monitoring.runner import MonitorOptions, MonitorOutcome, run_monitor


def monitor(model: str, store: str, *, reference: str = MONITOR_REFERENCE, window: int = MONITOR_WINDOW,
            triggers: Sequence[Any] | None = None, report_dir: str | Path | None = None,
            **options: Any) -> MonitorOutcome:
    """Evaluate every full window of ``model`` (``NAME@champion``) against ``reference`` once.

    ``options`` are further :class:`~rlops_plugin.monitoring.runner.MonitorOptions` fields (actions,
    ``every_s`` for a long-running monitor, callbacks). Each trigger is an audit event.
    """
    config = options.pop("config", None) or MonitorConfig(window=window)
    return run_monitor(model, store, MonitorOptions(
        reference=reference, config=config, triggers=list(DEFAULT_RULES) if triggers is None else list(triggers),
        reports=options.pop("reports", "drift"), report_dir=report_dir, **options))
