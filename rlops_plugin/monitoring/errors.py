"""Errors raised by drift monitoring and retraining triggers."""

from __future__ import annotations

from rlops_plugin.errors import ConfigError, RLOpsError


class MonitorError(RLOpsError):
    """Monitoring cannot run as asked: no decisions for the policy, an unusable reference, ..."""


class MonitorConfigError(MonitorError, ConfigError):
    """A monitor, signal, stat test, trigger rule or action is misconfigured; the message names it."""


class TriggerError(MonitorError):
    """An ``rlops_on_trigger`` hook implementation or a trigger action failed."""
