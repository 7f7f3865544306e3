"""Retraining triggers: rules over window summaries that emit :class:`TriggerEvent` and call hooks.

Rules (written as strings on the command line, objects in code):

* ``drift:SIGNAL:K`` (:class:`DriftStreakRule`): the signal drifted in K consecutive windows.
  ``SIGNAL`` ``*`` makes one rule per monitored signal, ``any`` watches the window as a whole. A
  window where the signal is insufficient (or not drifted) resets the streak; a streak fires once.
* ``reward-below:THRESHOLD[:CONFIDENCE[:COLUMN]]`` (:class:`RewardBelowRule`): the one-sided
  upper confidence bound of the window's mean reward (``COLUMN`` ``reward``, the default, or
  ``return`` for episode returns) is below ``THRESHOLD``: with the stated confidence (default 0.95)
  the policy now earns less. It fires once, then re-arms when a window's bound is back above.
* ``schedule:DURATION`` (:class:`ScheduleRule`): at least ``DURATION`` (``90s``, ``30m``, ``24h``,
  ``7d``) of decision time has passed since the last firing (or since the first window).

Every event goes to all ``rlops_on_trigger`` hook implementations (results collected on the event)
and then to the trigger actions chosen with ``--on-trigger NAME[:ARG]`` (or :class:`ActionSpec`,
which also carries the action's own ``settings``). Actions are looked up by name in the registry of
the ``rlops_register_trigger_actions`` hook (built-ins: ``rlops_plugin.default_plugins.actions``).
A *dispatch* action (:func:`dispatch_action`: it hands the work to another system, such as a Kubeflow
Pipelines host, and returns its receipt at once) runs first, before the audit trail records the event,
so the trigger's audit event carries its receipt (a run id) or its failure; its typed failures
(``RLOpsError``) are recorded on the event and the monitor goes on.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import re
import time
import types
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from statistics import NormalDist
from typing import Any, Protocol

from rlops_plugin import plugins
from rlops_plugin.errors import PluginError, RLOpsError
from rlops_plugin.hookspecs import hookimpl
from rlops_plugin.monitoring.config import (
    DEFAULT_RULES,
    MonitorConfigError,
    TriggerError,
    check_settings,
    check_settings_keys,
)
from rlops_plugin.monitoring.results import DRIFT, INSUFFICIENT, WindowSummary

TRIGGER_ACTIONS_HOOK = "rlops_register_trigger_actions"
TriggerAction = Callable[..., Any]
"""``action(event, arg=None, **settings) -> result``: see the ``rlops_register_trigger_actions`` hook."""
DISPATCH_MARK = "rlops_dispatch"
"""Attribute set on an action by :func:`dispatch_action`."""
logger = logging.getLogger("rlops.monitoring.triggers")


def dispatch_action(action: TriggerAction) -> TriggerAction:
    """Mark ``action`` as a dispatch: it hands the work to another system and returns its receipt at once.

    A dispatch action runs before the trigger's audit event is written (which then records the receipt)
    and before the ``rlops_on_trigger`` hooks; an ``RLOpsError`` it raises is recorded on the event as
    ``{"error": TYPE, "message": ...}`` instead of stopping the monitor.
    """
    setattr(action, DISPATCH_MARK, True)
    return action


class RuleKind(StrEnum):
    """The first field of a trigger rule string."""

    DRIFT = "drift"
    REWARD_BELOW = "reward-below"
    SCHEDULE = "schedule"


class RewardColumn(StrEnum):
    """What ``reward-below`` bounds: per-decision rewards or episode returns."""

    REWARD = "reward"
    RETURN = "return"


ANY_SIGNAL, EVERY_SIGNAL = "any", "*"
"""``drift:any:K`` watches the window as a whole; ``drift:*:K`` makes one rule per monitored signal."""


@dataclass
class TriggerEvent:
    """A retraining trigger: which rule fired, for which model and policy, on which window, and why."""

    rule: str
    model: str | None
    policy_version: str | None
    window: int
    evidence: dict[str, Any]
    time: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    results: list[Any] = field(default_factory=list)
    """What the ``rlops_on_trigger`` implementations returned (``None`` answers are dropped)."""
    actions: dict[str, Any] = field(default_factory=dict)
    """What each ``--on-trigger`` action returned, by action spec."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (hook results that are not JSON are stored as their ``repr``)."""
        return {"id": self.id, "rule": self.rule, "model": self.model, "policy_version": self.policy_version,
                "window": self.window, "time": self.time, "evidence": _jsonable(self.evidence),
                "results": [_jsonable(r) for r in self.results],
                "actions": {k: _jsonable(v) for k, v in self.actions.items()}}


class TriggerRule(Protocol):
    """A rule: ``name`` and ``check(summary)`` returning evidence when it fires, else ``None``."""

    name: str

    def check(self, summary: WindowSummary) -> dict[str, Any] | None:
        """Evidence dict when the rule fires on this window, else ``None``."""


@dataclass
class DriftStreakRule:
    """Fires when ``signal`` drifted in ``windows`` consecutive windows (``any``: the whole window)."""

    signal: str
    windows: int = 2
    streak: int = 0
    history: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.windows < 1:
            raise MonitorConfigError(f"drift rule: K must be >= 1, got {self.windows}")

    @property
    def name(self) -> str:
        """Rule string."""
        return f"{RuleKind.DRIFT}:{self.signal}:{self.windows}"

    def check(self, summary: WindowSummary) -> dict[str, Any] | None:
        """Count the streak; fire once when it reaches K."""
        if self.signal == ANY_SIGNAL:
            drifted = summary.status == DRIFT
        else:
            result = summary.signals.get(self.signal)
            drifted = result is not None and result.status == DRIFT
        if not drifted:
            self.streak, self.history = 0, []
            return None
        self.streak += 1
        self.history.append(summary.index)
        if self.streak != self.windows:
            return None
        columns = (summary.drifted_columns() if self.signal == ANY_SIGNAL
                   else summary.signals[self.signal].drifted_columns())
        evidence: dict[str, Any] = {"signal": self.signal, "windows": list(self.history),
                                    "drifted_columns": columns, "drift_share": summary.drift_share}
        if self.signal != ANY_SIGNAL:
            evidence["scores"] = {c.column: {"stattest": c.stattest, "score": c.score, "threshold": c.threshold}
                                  for c in summary.signals[self.signal].columns if c.drifted}
        return evidence


@dataclass
class RewardBelowRule:
    """Fires when the upper confidence bound of the window's mean reward is below ``threshold``."""

    threshold: float
    confidence: float = 0.95
    column: str = RewardColumn.REWARD
    """A :class:`RewardColumn`."""
    min_samples: int = 30
    armed: bool = True

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1.0:
            raise MonitorConfigError(f"reward-below: confidence must lie in [0.5, 1), got {self.confidence}")
        if self.column not in tuple(RewardColumn):
            raise MonitorConfigError(f"reward-below: column must be 'reward' or 'return', got {self.column!r}")
        if not math.isfinite(self.threshold):
            raise MonitorConfigError(f"reward-below: threshold must be finite, got {self.threshold}")

    @property
    def name(self) -> str:
        """Rule string."""
        return f"{RuleKind.REWARD_BELOW}:{self.threshold:g}:{self.confidence:g}:{self.column}"

    def check(self, summary: WindowSummary) -> dict[str, Any] | None:
        """Fire once when ``mean + z * std / sqrt(n) < threshold``; re-arm when the bound is above again."""
        prefix = "reward" if self.column == RewardColumn.REWARD else "return"
        mean, std, n = (getattr(summary, f"{prefix}_{k}") for k in ("mean", "std", "n"))
        if summary.status == INSUFFICIENT or mean is None or n < self.min_samples:
            return None
        z = NormalDist().inv_cdf(self.confidence)
        ucb = float(mean + z * (std or 0.0) / math.sqrt(n))
        if ucb >= self.threshold:
            self.armed = True
            return None
        if not self.armed:
            return None
        self.armed = False
        return {"column": self.column, "mean": mean, "std": std, "n": n, "confidence": self.confidence,
                "upper_bound": ucb, "threshold": self.threshold}


@dataclass
class ScheduleRule:
    """Fires every ``every_s`` seconds of decision time (the windows' timestamps)."""

    every_s: float
    last: float | None = None

    def __post_init__(self) -> None:
        if not self.every_s > 0:
            raise MonitorConfigError(f"schedule: duration must be positive, got {self.every_s}")

    @property
    def name(self) -> str:
        """Rule string."""
        return f"{RuleKind.SCHEDULE}:{self.every_s:g}s"

    def check(self, summary: WindowSummary) -> dict[str, Any] | None:
        """Fire when the window ends at least ``every_s`` after the last firing (or the first window)."""
        if summary.end_ts is None:
            return None
        if self.last is None:
            self.last = summary.start_ts if summary.start_ts is not None else summary.end_ts
        if summary.end_ts - self.last < self.every_s:
            return None
        since, self.last = self.last, summary.end_ts
        return {"every_s": self.every_s, "since_ts": since, "window_end_ts": summary.end_ts}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"30m"``, ``"24h"`` or ``"7d"``."""
    match = _DURATION.match(str(text))
    if not match:
        raise MonitorConfigError(f"duration {text!r}: write a number with an optional unit ms, s, m, h or d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_rule(text: str, signals: Sequence[str] = ()) -> list[TriggerRule]:
    """Rules from one rule string (``drift:*:2`` gives one rule per name in ``signals``)."""
    kind, _, rest = str(text).strip().partition(":")
    args = [a for a in rest.split(":")] if rest else []
    try:
        if kind == RuleKind.DRIFT:
            signal = args[0] if args else ANY_SIGNAL
            k = int(args[1]) if len(args) > 1 else 2
            if len(args) > 2:
                raise ValueError("too many fields")
            if signal == EVERY_SIGNAL:
                return [DriftStreakRule(s, k) for s in signals]
            if signal != ANY_SIGNAL and signals and signal not in signals:
                raise MonitorConfigError(f"trigger {text!r}: signal {signal!r} is not monitored "
                                         f"(monitored: {', '.join(signals)})")
            return [DriftStreakRule(signal, k)]
        if kind == RuleKind.REWARD_BELOW:
            if not args or len(args) > 3:
                raise ValueError("expected reward-below:THRESHOLD[:CONFIDENCE[:COLUMN]]")
            return [RewardBelowRule(float(args[0]), float(args[1]) if len(args) > 1 else 0.95,
                                    args[2] if len(args) > 2 else RewardColumn.REWARD)]
        if kind == RuleKind.SCHEDULE:
            if len(args) != 1:
                raise ValueError("expected schedule:DURATION")
            return [ScheduleRule(parse_duration(args[0]))]
    except (ValueError, IndexError) as exc:
        if isinstance(exc, MonitorConfigError):
            raise
        raise MonitorConfigError(f"trigger {text!r}: {exc}") from None
    raise MonitorConfigError(f"trigger {text!r}: rules are drift:SIGNAL:K, reward-below:THRESHOLD[:CONFIDENCE"
                             "[:COLUMN]] and schedule:DURATION")


def parse_rules(texts: Sequence[str], signals: Sequence[str] = ()) -> list[TriggerRule]:
    """Every rule named by ``texts`` (duplicates removed, order kept)."""
    rules: dict[str, TriggerRule] = {}
    for text in texts:
        for rule in parse_rule(text, signals):
            rules.setdefault(rule.name, rule)
    return list(rules.values())


@dataclass(frozen=True)
class ActionSpec:
    """One trigger action to run on every event: its registered name, its ``ARG`` and its own settings."""

    name: str
    """Name in the ``rlops_register_trigger_actions`` registry (built-ins: log, jsonl, run-pipeline)."""
    arg: str | None = None
    """The text after the first colon of ``NAME:ARG`` (``None`` without a colon)."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Keyword settings passed to the action (``action(event, arg, **settings)``); built-ins refuse
    the keys they do not know, naming them."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or ":" in self.name:
            raise MonitorConfigError(f"trigger action name {self.name!r}: text without ':'")
        if self.arg is not None and not isinstance(self.arg, str):
            raise MonitorConfigError(f"trigger action {self.name!r}: arg must be text, got {self.arg!r}")
        settings = check_settings_keys(f"trigger action {self.name!r}", self.settings)
        reserved = sorted({"event", "arg"} & set(settings))
        if reserved:
            raise MonitorConfigError(f"trigger action {self.name!r}: {reserved[0]!r} is not a setting name")
        object.__setattr__(self, "settings", settings)

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any] | ActionSpec) -> ActionSpec:
        """From ``"NAME[:ARG]"``, a ``{"name", "arg", "settings"}`` mapping, or an ``ActionSpec``."""
        if isinstance(spec, ActionSpec):
            return spec
        if isinstance(spec, Mapping):
            unknown = sorted(set(spec) - {"name", "arg", "settings"})
            if unknown:
                raise MonitorConfigError(f"trigger action {dict(spec)!r}: unknown keys {unknown}; "
                                         "known: name, arg, settings")
            return cls(spec.get("name", ""), spec.get("arg"), spec.get("settings") or {})
        name, sep, arg = str(spec).partition(":")
        return cls(name, arg if sep else None)

    def __str__(self) -> str:
        """``NAME`` or ``NAME:ARG``: the key of the action's result in ``TriggerEvent.actions``."""
        return self.name if self.arg is None else f"{self.name}:{self.arg}"


def trigger_actions() -> dict[str, str]:
    """Every registered trigger action name with its description."""
    return {entry.name: entry.description for entry in plugins.trigger_actions().entries()}


def resolve_action(spec: str | Mapping[str, Any] | ActionSpec) -> Callable[[Any], Any]:
    """The callable for an action spec, with ``arg`` and ``settings`` bound; problems raise ``MonitorConfigError``."""
    action = ActionSpec.parse(spec)
    registry = plugins.trigger_actions()
    try:
        entry = registry.get(action.name)
    except PluginError as exc:
        raise MonitorConfigError(f"unknown trigger action {action.name!r}; available: "
                                 f"{', '.join(registry.names())}") from exc
    needs = entry.extra.get("needs_arg")
    if needs and not action.arg:
        raise MonitorConfigError(f"the {action.name} action needs {needs}")
    check_settings(f"trigger action {action.name!r}", action.settings, entry.extra.get("settings"))
    bound = partial(entry.value, arg=action.arg, **action.settings)
    return _Dispatch(bound, str(action)) if getattr(entry.value, DISPATCH_MARK, False) else bound


@dataclass(frozen=True)
class _Dispatch:
    """A bound dispatch action: its typed failures become the recorded result (and a warning)."""

    action: Callable[[Any], Any]
    spec: str
    rlops_dispatch: bool = True

    def __call__(self, event: Any) -> Any:
        try:
            return self.action(event)
        except RLOpsError as exc:
            logger.warning("trigger action %s failed on %s (window %s): %s: %s", self.spec, event.rule,
                           event.window, type(exc).__name__, exc)
            return {"error": type(exc).__name__, "message": str(exc)}


def is_dispatch(spec: str | Mapping[str, Any] | ActionSpec) -> bool:
    """True when the action named by ``spec`` was marked with :func:`dispatch_action`."""
    return bool(getattr(resolve_action(spec), DISPATCH_MARK, False))


def register_trigger_action(name: str, action: TriggerAction, description: str = "") -> None:
    """Add an action under ``name`` at run time, through the hook (refused if the name is taken).

    Registers a one-action plugin on the current plugin manager (gone after ``plugins.reset()``);
    a package should implement ``rlops_register_trigger_actions`` instead.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise MonitorConfigError(f"trigger action name {name!r}: non-empty and without ':'")
    if name in plugins.trigger_actions():
        raise MonitorConfigError(f"trigger action {name!r} is already registered")

    def rlops_register_trigger_actions(register: Callable[..., None]) -> None:
        register(name, action, description=description)

    plugin = types.SimpleNamespace(rlops_register_trigger_actions=hookimpl(rlops_register_trigger_actions))
    plugins.add_plugin(plugin, _runtime_plugin(name))


def unregister_trigger_action(name: str) -> None:
    """Remove an action added with :func:`register_trigger_action` (tests)."""
    plugins.remove_plugin(_runtime_plugin(name))


def _runtime_plugin(name: str) -> str:
    return f"rlops-trigger-action:{name}"


def deliver(event: TriggerEvent, actions: Sequence[str | Mapping[str, Any] | ActionSpec] = ()) -> TriggerEvent:
    """Call every ``rlops_on_trigger`` implementation, then each action; record what they returned."""
    pm = plugins.get_plugin_manager()
    try:
        results = pm.hook.rlops_on_trigger(event=event)
    except Exception as exc:  # any plugin error: re-raised typed, naming the event
        raise TriggerError(f"an rlops_on_trigger implementation failed on {event.rule} (window {event.window}): "
                           f"{type(exc).__name__}: {exc}") from exc
    event.results = list(results)
    for spec in actions:
        event.actions[action_key(spec)] = resolve_action(spec)(event)
    return event


def action_key(spec: str | Mapping[str, Any] | ActionSpec) -> str:
    """Where an action's result is stored on the event: the spec string as given, else ``NAME[:ARG]``."""
    return spec if isinstance(spec, str) else str(ActionSpec.parse(spec))


class TriggerEngine:
    """Checks every rule on each window summary and delivers the events that fire."""

    def __init__(self, rules: Sequence[TriggerRule], *, model: str | None = None,
                 actions: Sequence[str | Mapping[str, Any] | ActionSpec] = (),
                 on_fire: Callable[[TriggerEvent], None] | None = None, max_events: int | None = None) -> None:
        if max_events is not None and max_events < 1:
            raise MonitorConfigError(f"max triggers must be >= 1, got {max_events}")
        self.rules = list(rules)
        self.model = model
        self.on_fire = on_fire
        """Called with each event before hooks and actions, dispatch actions excepted (the audit trail
        records it there, with the dispatch actions' receipts)."""
        self.max_events = max_events
        """Fire at most this many events (one retraining per session, say); later firings are counted."""
        self.suppressed = 0
        self.actions = list(actions)
        for spec in self.actions:
            resolve_action(spec)  # unknown actions fail before the first window, not at the first trigger
        self.events: list[TriggerEvent] = []

    def observe(self, summary: WindowSummary) -> list[TriggerEvent]:
        """Check the rules on one window; deliver and return the events (also put on ``summary.triggers``)."""
        fired = []
        for rule in self.rules:
            evidence = rule.check(summary)
            if evidence is None:
                continue
            if self.max_events is not None and len(self.events) + len(fired) >= self.max_events:
                self.suppressed += 1
                continue
            event = TriggerEvent(rule.name, self.model or summary.model, summary.policy_version, summary.index,
                                 evidence)
            dispatch = [is_dispatch(spec) for spec in self.actions]
            for spec in (s for s, first in zip(self.actions, dispatch, strict=True) if first):
                event.actions[action_key(spec)] = resolve_action(spec)(event)
            if self.on_fire is not None:
                self.on_fire(event)
            fired.append(deliver(event, [s for s, first in zip(self.actions, dispatch, strict=True) if not first]))
        summary.triggers.extend(fired)
        self.events.extend(fired)
        return fired


def _jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as ``None``, numpy scalars and enums as Python, other objects as ``repr``."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "to_dict") and not isinstance(value, type):
        return _jsonable(value.to_dict())
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


__all__ = ["ANY_SIGNAL", "DEFAULT_RULES", "DISPATCH_MARK", "EVERY_SIGNAL", "ActionSpec", "DriftStreakRule",
           "RewardBelowRule", "RewardColumn", "RuleKind", "ScheduleRule", "TriggerAction", "TriggerEngine",
           "TriggerEvent", "TriggerRule", "action_key", "deliver", "dispatch_action", "is_dispatch", "parse_duration",
           "parse_rule", "parse_rules", "register_trigger_action", "resolve_action", "trigger_actions",
           "unregister_trigger_action"]
