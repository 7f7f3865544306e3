"""Configuration of drift monitoring: errors, one :class:`SignalConfig` per signal, one :class:`MonitorConfig`.

Why these defaults (windows of 1,000 decisions):

* **Jensen-Shannon distance** (Evidently's ``jensenshannon``) on observations, actions and
  propensities. It bins the data, so it measures a change of *shape* rather than of individual
  values, it is bounded (0 to 0.83 with natural logs) and it costs one histogram per column (well
  under 1 ms against 3,000 reference rows). p-value tests (KS, chi-square) assume independent
  samples; consecutive decisions of an episode are not, and on CartPole traffic KS flagged 48% of
  *stationary* 1,000-decision windows at p < 0.001 (see docs/monitoring.md).
* **Calibrated thresholds.** The configured threshold is a floor (Evidently's 0.1 for JS: a
  "moderate" change; 0.05 for two-action frequencies, a shift of about 7 points from 50/50). On top
  of it each column's threshold is raised to the tail of the same statistic computed on windows cut
  from the reference itself, so the autocorrelation of episodes is priced in: see
  :func:`rlops_plugin.monitoring.drift.calibrate`.
* **Rewards** use Evidently's normed Wasserstein distance (the shift of the reward distribution in
  units of the reference's standard deviation; 0.1, Evidently's default, is a tenth of a standard
  deviation). A constant reward (CartPole's +1) that changes at all is flagged (Evidently floors the
  norm at 0.001), and on such low-cardinality columns it costs a third of JS.
* **Episode returns** are nearly independent samples (one per episode), so they use KS with
  Evidently's p < 0.05 as the ceiling, also calibrated, and need only 30 episodes in a window.
* **Agents** (:data:`AGENT_MONITORS`, the frame of :mod:`rlops_plugin.monitoring.agent`): Jensen-Shannon for
  the prompt, topic, response and tool-call columns (0.05 for tool calls, refusals and vetoes, frequencies
  as for vector actions: 0.05 flags a rate going from 0 to about 1%), normed Wasserstein for ratings, outcomes
  and judge scores (as for rewards), each needing 30 values in a window (few answers are rated).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rlops_plugin.errors import ConfigError, RLOpsError


class MonitorError(RLOpsError):
    """Monitoring cannot run as asked: no decisions for the policy, an unusable reference, ..."""


class MonitorConfigError(MonitorError, ConfigError):
    """A monitor, signal, stat test, trigger rule or action is misconfigured; the message names it."""


class TriggerError(MonitorError):
    """An ``rlops_on_trigger`` hook implementation or a trigger action failed."""


class ReportMode(StrEnum):
    """When a window gets its Evidently HTML report (``rlops monitor --reports``)."""

    DRIFT = "drift"
    """Only windows that drifted (the default)."""
    ALWAYS = "always"
    """Every window with at least one tested column."""
    NEVER = "never"
    """No report."""


OBSERVATIONS, ACTIONS, PROPENSITIES, REWARDS, RETURNS = (
    "observations", "actions", "propensities", "rewards", "returns")
DEFAULT_MONITORS: tuple[str, ...] = (OBSERVATIONS, ACTIONS, PROPENSITIES, REWARDS, RETURNS)
PROMPTS, TOPICS, TOOLS, RESPONSES, REFUSALS, VETOES, RATINGS, OUTCOMES, JUDGE = (
    "prompts", "topics", "tools", "responses", "refusals", "vetoes", "ratings", "outcomes", "judge")
AGENT_MONITORS: tuple[str, ...] = (PROMPTS, TOPICS, TOOLS, RESPONSES, REFUSALS, VETOES, RATINGS, OUTCOMES)
"""The built-in signals of an agent policy (``judge`` is added when a judge is given): a monitor whose
``monitors`` are the vector defaults watches these instead when the model is an agent."""
KIND_MONITORS: dict[str, tuple[str, ...]] = {"vector": DEFAULT_MONITORS, "agent": AGENT_MONITORS}
"""Default monitors by policy kind (``rlops_plugin.kinds``)."""
DEFAULT_RULES: tuple[str, ...] = ("drift:*:2",)
"""Trigger rules of ``rlops monitor`` when none is given: any signal drifting in 2 consecutive windows."""


@dataclass(frozen=True)
class SignalConfig:
    """How one signal (a group of columns) is tested for drift in each window."""

    stattest: str = "jensenshannon"
    """Name of an Evidently stat test (``jensenshannon``, ``psi``, ``wasserstein``, ``ks``,
    ``chisquare``, ...), applied to every column of the signal."""
    threshold: float | None = None
    """Evidently threshold: distances drift when ``score >= threshold``, p-value tests when
    ``p < threshold``. ``None`` takes the stat test's own default. With ``calibrate`` it is the
    least strict threshold used: calibration only ever makes a column harder to flag."""
    calibrate: bool = True
    """Raise each column's threshold to the tail of the statistic on windows cut from the reference,
    so stationary but autocorrelated traffic does not alarm (needs ``min_calibration_windows``)."""
    min_samples: int = 100
    """A column with fewer non-missing values than this in the window (or the reference) is
    ``insufficient``: not tested, never a trigger."""
    drift_share: float = 0.0
    """The signal drifts when at least this share of its tested columns drift (and at least one):
    0 means any column, 0.5 is Evidently's DataDriftPreset default."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """The monitor's own settings, for monitors supplied by plugins (passed to the monitor factory
    under ``"settings"``); the built-in monitors take none, and refuse any key naming it."""

    def __post_init__(self) -> None:
        if not isinstance(self.stattest, str) or not self.stattest:
            raise MonitorConfigError(f"stattest must be an Evidently stat-test name, got {self.stattest!r}")
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise MonitorConfigError(f"threshold must be a finite number >= 0, got {self.threshold!r}")
        if not isinstance(self.min_samples, int) or self.min_samples < 2:
            raise MonitorConfigError(f"min_samples must be an int >= 2, got {self.min_samples!r}")
        if not 0.0 <= self.drift_share <= 1.0:
            raise MonitorConfigError(f"drift_share must lie in [0, 1], got {self.drift_share!r}")
        object.__setattr__(self, "settings", check_settings_keys("signal config settings", self.settings))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what monitor factories receive); ``settings`` only when there are some."""
        data = dataclasses.asdict(self)
        if not data["settings"]:
            del data["settings"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignalConfig:
        """Build from a dict; unknown keys are refused so typos do not pass silently."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise MonitorConfigError(f"signal config: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(data))


def default_signals() -> dict[str, SignalConfig]:
    """The built-in signals' defaults (justified in the module docstring)."""
    return {
        OBSERVATIONS: SignalConfig("jensenshannon", 0.1),
        ACTIONS: SignalConfig("jensenshannon", 0.05),
        PROPENSITIES: SignalConfig("jensenshannon", 0.1),
        REWARDS: SignalConfig("wasserstein", 0.1),
        RETURNS: SignalConfig("ks", 0.05, min_samples=30),
        PROMPTS: SignalConfig("jensenshannon", 0.1),
        TOPICS: SignalConfig("jensenshannon", 0.1),
        TOOLS: SignalConfig("jensenshannon", 0.05),
        RESPONSES: SignalConfig("jensenshannon", 0.1),
        REFUSALS: SignalConfig("jensenshannon", 0.05),
        VETOES: SignalConfig("jensenshannon", 0.05),
        RATINGS: SignalConfig("wasserstein", 0.1, min_samples=30),
        OUTCOMES: SignalConfig("wasserstein", 0.1, min_samples=30),
        JUDGE: SignalConfig("wasserstein", 0.1, min_samples=30),
    }


@dataclass(frozen=True)
class MonitorConfig:
    """What to monitor, over which windows, and how strict calibration is."""

    window: int = 1000
    """Decisions per window. Each window of one policy version is compared with the reference."""
    monitors: tuple[str, ...] = DEFAULT_MONITORS
    """Names of registered monitors to run (``rlops_register_monitors``); built-ins: observations,
    actions, propensities, rewards, returns."""
    signals: Mapping[str, SignalConfig] = field(default_factory=default_signals)
    """Per-signal stat test and threshold; a monitor missing here gets ``SignalConfig()``."""
    false_alarm_rate: float = 0.005
    """Calibration target: share of stationary windows in which *any* column may drift, split evenly
    (Bonferroni) over every tested column. Half of a 1% budget: stationary RL traffic has heavier
    tails than the fitted gamma (measured: docs/monitoring.md)."""
    calibration_confidence: float = 0.9
    """Calibrated thresholds are this upper bootstrap bound of the fitted quantile (few reference
    windows make the fit uncertain; the bound errs strict)."""
    max_reference_rows: int = 3_000
    """Each window is tested against at most this many reference rows (a seeded random sample). The
    stat tests' cost grows with the reference; 3,000 rows add a third of a 1,000-decision window's own
    sampling variance, and calibration (on the same sample) prices that in. Measured on CartPole:
    same false alarms and detections as 5,000 or 10,000 rows, 10-20% less CPU per window."""
    min_calibration_windows: int = 10
    """Calibration needs at least this many windows in the reference; with fewer, the configured
    thresholds are used as they are (reported as ``calibrated: false``)."""
    max_calibration_windows: int = 100
    """At most this many reference windows are scored for calibration (it runs once, at start)."""
    min_window_decisions: int = 100
    """A window with fewer decisions (agents: choices of interactions) is ``insufficient`` as a whole
    ("insufficient data": no verdict, never a trigger)."""
    seed: int = 0
    """Seed of the reference sample."""

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 2:
            raise MonitorConfigError(f"window must be an int >= 2, got {self.window!r}")
        if not 0.0 < self.false_alarm_rate < 1.0:
            raise MonitorConfigError(f"false_alarm_rate must lie in (0, 1), got {self.false_alarm_rate!r}")
        if not 0.5 <= self.calibration_confidence < 1.0:
            raise MonitorConfigError(f"calibration_confidence must lie in [0.5, 1), got {self.calibration_confidence}")
        if self.max_reference_rows < 2 or self.min_calibration_windows < 2 or self.max_calibration_windows < 2:
            raise MonitorConfigError("max_reference_rows and calibration window counts must be >= 2")
        if not self.monitors:
            raise MonitorConfigError("monitors: name at least one monitor")
        object.__setattr__(self, "monitors", tuple(self.monitors))
        merged = default_signals()
        for name, value in dict(self.signals).items():
            merged[name] = value if isinstance(value, SignalConfig) else SignalConfig.from_dict(value)
        object.__setattr__(self, "signals", merged)

    def for_kind(self, kind: str, *, judge: bool = False) -> MonitorConfig:
        """This config for a policy of ``kind``: the kind's default monitors when ``monitors`` are another
        kind's defaults (``rlops monitor`` without ``--monitors``), plus ``judge`` for an agent given a judge."""
        if kind not in KIND_MONITORS:
            return self
        monitors = self.monitors
        if monitors in KIND_MONITORS.values():
            monitors = KIND_MONITORS[kind]
        if judge and kind == "agent" and JUDGE not in monitors:
            monitors = (*monitors, JUDGE)
        return self if monitors == self.monitors else dataclasses.replace(self, monitors=monitors)

    def possible_signals(self) -> tuple[str, ...]:
        """Signals this config may monitor before the policy's kind is known (rules are checked against them):
        ``monitors`` as given, or every kind's defaults (and ``judge``) when they are a kind's defaults."""
        if self.monitors not in KIND_MONITORS.values():
            return self.monitors
        return tuple(dict.fromkeys([*(n for names in KIND_MONITORS.values() for n in names), JUDGE]))

    def signal(self, name: str) -> SignalConfig:
        """The config of signal ``name`` (defaults when not configured)."""
        return self.signals.get(name) or SignalConfig()

    def with_overrides(self, stattests: Mapping[str, str] | None = None,
                       thresholds: Mapping[str, float] | None = None, **changes: Any) -> MonitorConfig:
        """A copy with per-signal stat tests / thresholds replaced and other fields changed."""
        signals = dict(self.signals)
        for name, test in (stattests or {}).items():
            signals[name] = dataclasses.replace(self.signal(name), stattest=test, threshold=None)
        for name, value in (thresholds or {}).items():
            signals[name] = dataclasses.replace(signals.get(name) or self.signal(name), threshold=float(value))
        return dataclasses.replace(self, signals=signals, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (logged as the monitoring run's params and artifact)."""
        data = dataclasses.asdict(self)
        data["signals"] = {k: v.to_dict() for k, v in self.signals.items()}
        data["monitors"] = list(self.monitors)
        return data


def check_settings_keys(what: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """``settings`` as a plain dict, refusing anything but a mapping with string keys."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise MonitorConfigError(f"{what}: write a mapping of setting names to values, got {settings!r}")
    bad = [key for key in settings if not isinstance(key, str) or not key.isidentifier()]
    if bad:
        raise MonitorConfigError(f"{what}: setting names must be identifiers, got {bad!r}")
    return dict(settings)


def check_settings(what: str, settings: Mapping[str, Any], accepted: Collection[str] | None) -> None:
    """Refuse the keys of ``settings`` that are not ``accepted``, naming them (``None`` accepts any)."""
    if accepted is None:
        return
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        known = ", ".join(sorted(accepted)) or "none"
        raise MonitorConfigError(f"{what}: unknown setting{'s' if len(unknown) > 1 else ''} "
                                 f"{', '.join(map(repr, unknown))}; accepted: {known}")
