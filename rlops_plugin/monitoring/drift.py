"""Drift detection: Evidently's stat tests, calibrated thresholds, column monitors, the drift monitor.

**Stat tests.** A full Evidently ``Report`` costs 0.2-0.5 s per window; the decision it contains is
one call of an Evidently ``StatTest`` per column (~1 ms). We call those same ``StatTest`` objects
(from ``evidently.legacy.calculations.stattests``, which the new ``ValueDrift`` metric also uses),
and build the HTML ``Report`` only for windows that drift or on demand (:mod:`.report`). Evidently
is imported on first use: it takes seconds to import.

**Calibration: pricing in the autocorrelation of episodes.** Stat tests assume independent
samples. A window of decisions is not: consecutive steps of one episode are strongly correlated, so
a 1,000-decision window holds far fewer independent samples than 1,000 and every fixed threshold
alarms on stationary traffic (measured on CartPole, see docs/monitoring.md). The remedy used here
needs no model of the correlation: cut the reference (kept in log order) into windows of the
monitoring size, score each against the rest of the reference with the same Evidently stat test,
and put the threshold in the tail of those stationary scores.

The tail is extrapolated from a gamma distribution fitted (by moments) to the stationary scores on
the "evidence" scale: ``-ln p`` for p-value tests (exponential, a gamma, for independent samples),
PSI and KL as they are, and the square of distances that grow like the shift itself (Jensen-Shannon,
Hellinger, Wasserstein, energy distance), whose squares behave like chi-square statistics. The
threshold is the fitted ``1 - alpha`` quantile, ``alpha`` being the per-column false-alarm budget:
more exactly an upper 90% bootstrap bound of it, and never less than the largest stationary score
seen. Windows of a stationary log are few (50 in 50,000 decisions), too few for an empirical 99.9%
quantile; a two-parameter fit extrapolates from their mean and spread, a heavier spread (stronger
autocorrelation) moves the threshold up, and the bootstrap bound pays for fitting on few windows.
The configured threshold stays the floor: calibration only makes a column harder to flag.

**Column monitors.** The built-in monitors (registered in ``rlops_plugin.default_plugins.monitors``):

* ``observations``: every observation feature ``obs_i`` (numerical);
* ``actions``: the action frequencies (``action``, categorical; Box actions: ``action_j``);
* ``propensities``: each action's probability ``prob_k`` and the policy entropy (Box: the logged
  propensity density). With two actions ``prob_0 = 1 - prob_1`` adds nothing and is skipped;
* ``rewards``: the per-decision joined reward;
* ``returns``: per-episode returns (one value per episode that ended in the window).

And for agents (the frame of :mod:`.agent`): ``prompts`` (``prompt_chars``, ``prompt_words``,
``prompt_turns``), ``topics`` (``topic_<word>``, ``topic_oov``), ``tools`` (``tool`` and ``action``,
categorical, ``n_tool_calls``), ``responses`` (``response_chars``), ``refusals``, ``vetoes``, ``ratings``,
``outcomes`` and ``judge`` (``judge_score``). They are the same :class:`ColumnDriftMonitor` over other
columns; until ``rlops_plugin.default_plugins.monitors`` registers them, :class:`DriftMonitor` builds these
built-ins itself when the registry does not name them (a registered monitor of the same name wins).

A monitor follows the ``rlops_register_monitors`` contract: ``signal`` and
``evaluate(reference, current) -> MonitorResult``. ``prepare`` (optional) samples and calibrates
once per reference so that ``evaluate`` costs one stat test per column.

**The drift monitor.** ``DriftMonitor(reference, config)`` instantiates the registered monitors
named in the config (each with its signal's config dict, ``settings`` included), samples the
reference once and calibrates every column's threshold on it; then :meth:`DriftMonitor.evaluate`
turns one window into a :class:`WindowSummary` at the cost of one Evidently stat test per column,
and :meth:`DriftMonitor.report` builds the full Evidently HTML report for a window when it is wanted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin import plugins
from rlops_plugin.monitoring.config import (
    ACTIONS,
    JUDGE,
    OBSERVATIONS,
    OUTCOMES,
    PROMPTS,
    PROPENSITIES,
    RATINGS,
    REFUSALS,
    RESPONSES,
    RETURNS,
    REWARDS,
    TOOLS,
    TOPICS,
    VETOES,
    MonitorConfig,
    MonitorConfigError,
    SignalConfig,
    check_settings,
)
from rlops_plugin.monitoring.frames import add_episode_returns
from rlops_plugin.monitoring.results import (  # noqa: F401  (DISTANCE_TESTS, evidence, is_distance: re-exported)
    DISTANCE_TESTS,
    DRIFT,
    ERROR,
    INSUFFICIENT,
    OK,
    ColumnKind,
    ColumnResult,
    MonitorResult,
    WindowSummary,
    evidence,
    is_distance,
    signal_status,
)

# --- Evidently stat tests ---------------------------------------------------------------------------

NUMERICAL, CATEGORICAL = ColumnKind.NUMERICAL, ColumnKind.CATEGORICAL
ROOT_DISTANCES = frozenset({"ed", "hellinger", "jensenshannon", "wasserstein"})
"""Distances that grow like the size of a shift (their squares behave like chi-square statistics)."""


@dataclass(frozen=True)
class TestOutcome:
    """One Evidently stat test on one column: score, threshold used, verdict."""

    score: float
    threshold: float
    drifted: bool


@cache
def _stattest(name: str, kind: str) -> Any:
    from evidently.legacy.calculations.stattests.registry import (
        StatTestInvalidFeatureTypeError,
        StatTestNotFoundError,
        get_registered_stattest,
    )
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == NUMERICAL else ColumnType.Categorical
    try:
        return get_registered_stattest(name, column_type), column_type
    except StatTestNotFoundError:
        raise MonitorConfigError(f"Evidently has no stat test named {name!r}; known: {', '.join(stattest_names())}") \
            from None
    except StatTestInvalidFeatureTypeError:
        raise MonitorConfigError(f"Evidently stat test {name!r} does not accept "
                                 f"{'numerical' if kind == NUMERICAL else 'categorical'} columns") from None


def stattest_names() -> list[str]:
    """Names of Evidently's registered stat tests (text-only tests excluded)."""
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests

    return sorted(name for name, by_type in _registered_stat_tests.items()
                  if any(t.value in set(ColumnKind) for t in by_type))


def default_threshold(stattest: str, kind: str) -> float:
    """Evidently's default threshold of ``stattest``."""
    return float(_stattest(stattest, kind)[0].default_threshold)


def check_stattest(stattest: str, kind: str) -> None:
    """Raise ``MonitorConfigError`` unless Evidently has ``stattest`` for columns of ``kind``."""
    _stattest(stattest, kind)


def run_stattest(stattest: str, kind: str, reference: pd.Series, current: pd.Series,
                 threshold: float) -> TestOutcome:
    """Evidently's ``stattest`` on two non-empty, NaN-free series, with ``threshold``."""
    test, column_type = _stattest(stattest, kind)
    result = test(reference, current, column_type, threshold)
    score = float(result.drift_score)
    return TestOutcome(score=score, threshold=float(result.actual_threshold), drifted=bool(result.drifted))


def evidence_power(stattest: str) -> float:
    """Power that makes the evidence of ``stattest`` roughly gamma-distributed on stationary data."""
    return 2.0 if stattest in ROOT_DISTANCES else 1.0


def from_evidence(stattest: str, value: float) -> float:
    """Inverse of :func:`evidence`: a threshold in the test's own units."""
    return float(value) if is_distance(stattest) else math.exp(-float(value))


def stricter(stattest: str, a: float, b: float) -> float:
    """The stricter (harder to flag) of two thresholds for ``stattest``."""
    return max(a, b) if is_distance(stattest) else min(a, b)


def as_series(values: Any, kind: str) -> pd.Series:
    """Values as a NaN-free series of the dtype the stat tests expect."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if kind == NUMERICAL:
        if series.dtype.kind == "f":
            arr = series.to_numpy(dtype=np.float64)
        else:
            arr = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return pd.Series(arr[np.isfinite(arr)], copy=False)
    return series.dropna().reset_index(drop=True)


# --- Calibration of thresholds on the reference ---------------------------------------------------

_ANY_THRESHOLD = 0.5  # the score does not depend on it


@dataclass(frozen=True)
class Calibration:
    """The threshold chosen for one column and how it was reached."""

    threshold: float
    """Threshold in the stat test's own units (distance, or p-value)."""
    configured: float
    """The configured (floor) threshold."""
    calibrated: bool
    """False when the reference had too few windows and ``configured`` is used as is."""
    windows: int = 0
    """Reference windows scored."""
    null_max: float | None = None
    """Largest evidence (distance or -ln p) among the stationary reference windows."""

    @classmethod
    def fixed(cls, threshold: float) -> Calibration:
        """The configured threshold, used as it is."""
        return cls(float(threshold), float(threshold), False)

    def to_dict(self) -> dict[str, float | bool | int | None]:
        """JSON-able form."""
        return {"threshold": self.threshold, "configured": self.configured, "calibrated": self.calibrated,
                "windows": self.windows, "null_max": self.null_max}


def tail_threshold(evidences: np.ndarray, alpha: float, power: float = 1.0, confidence: float = 0.9,
                   resamples: int = 200, seed: int = 0) -> float:
    """Upper ``confidence`` bound of the ``1 - alpha`` quantile of a gamma fitted to ``evidences ** power``.

    The gamma is fitted by moments; the bound comes from refitting on ``resamples`` bootstrap
    resamples, so a fit on a few dozen windows errs on the strict side. Never below the largest value.
    """
    from scipy import stats

    values = np.maximum(np.asarray(evidences, dtype=np.float64), 0.0) ** power
    largest = float(values.max(initial=0.0))
    if values.size < 2 or float(values.var(ddof=1)) <= 0.0:
        return largest ** (1.0 / power)
    rng = np.random.default_rng(seed)
    samples = np.vstack([values, rng.choice(values, size=(resamples, values.size), replace=True)])
    mean, var = samples.mean(axis=1), samples.var(axis=1, ddof=1)
    ok = (mean > 0) & (var > 0)
    quantiles = stats.gamma.ppf(1.0 - alpha, mean[ok] ** 2 / var[ok], scale=var[ok] / mean[ok])
    bound = float(np.quantile(quantiles, confidence)) if quantiles.size else largest
    return max(bound, largest) ** (1.0 / power)


def null_evidence(stattest: str, kind: str, full: pd.Series, sample_positions: np.ndarray, window: int,
                  max_windows: int) -> np.ndarray:
    """Evidence of consecutive ``window``-row blocks of ``full`` against the reference sample without them.

    ``full`` is the whole reference column in log order (NaN allowed); ``sample_positions`` are the
    positions of the rows the windows are tested against in production.
    """
    values = full.to_numpy()
    n_windows = min(len(values) // window, max_windows)
    out = []
    for k in range(n_windows):
        lo, hi = k * window, (k + 1) * window
        block = pd.Series(values[lo:hi]).dropna()
        keep = sample_positions[(sample_positions < lo) | (sample_positions >= hi)]
        rest = pd.Series(values[keep]).dropna()
        if len(block) < 2 or len(rest) < 2:
            continue
        outcome = run_stattest(stattest, kind, rest.reset_index(drop=True), block.reset_index(drop=True),
                               _ANY_THRESHOLD)
        if math.isfinite(outcome.score):
            out.append(evidence(stattest, outcome.score))
    return np.asarray(out, dtype=np.float64)


def calibrate(stattest: str, kind: str, configured: float, full: pd.Series, sample_positions: np.ndarray,
              window: int, alpha: float, min_windows: int, max_windows: int, confidence: float = 0.9) -> Calibration:
    """The column's threshold: the configured one, made stricter by the reference's stationary tail."""
    nulls = null_evidence(stattest, kind, full, sample_positions, window, max_windows)
    if nulls.size < min_windows:
        return Calibration(configured, configured, False, int(nulls.size),
                           float(nulls.max()) if nulls.size else None)
    fitted = from_evidence(stattest, tail_threshold(nulls, alpha, evidence_power(stattest), confidence))
    return Calibration(stricter(stattest, configured, fitted), configured, True, int(nulls.size),
                       float(nulls.max()))


# --- Column monitors ------------------------------------------------------------------------------

ColumnSelector = Callable[[pd.DataFrame], list[tuple[str, str]]]
"""Frame -> ``[(column, kind)]`` with kind a :class:`ColumnKind` (``"num"`` or ``"cat"``)."""


def _numbered(frame: pd.DataFrame, prefix: str) -> list[str]:
    pattern = re.compile(rf"^{prefix}_(\d+)$")
    found = [(int(m.group(1)), c) for c in frame.columns if (m := pattern.match(str(c)))]
    return [c for _, c in sorted(found)]


def observation_columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """``obs_0, obs_1, ...`` (numerical)."""
    return [(c, NUMERICAL) for c in _numbered(frame, "obs")]


def action_columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """``action`` (categorical) for Discrete policies, ``action_j`` (numerical) for Box."""
    if "action" in frame.columns:
        return [("action", CATEGORICAL)]
    return [(c, NUMERICAL) for c in _numbered(frame, "action")]


def propensity_columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """``prob_k`` per action (only ``prob_1`` with two actions) and ``entropy``; else ``propensity``."""
    probs = _numbered(frame, "prob")
    if len(probs) == 2:
        probs = probs[1:]
    if probs:
        return [(c, NUMERICAL) for c in probs] + ([("entropy", NUMERICAL)] if "entropy" in frame.columns else [])
    return [("propensity", NUMERICAL)] if "propensity" in frame.columns else []


def reward_columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """``reward`` (numerical)."""
    return [("reward", NUMERICAL)] if "reward" in frame.columns else []


def return_columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """``episode_return`` (numerical; NaN except on the rows that end an episode)."""
    return [("episode_return", NUMERICAL)] if "episode_return" in frame.columns else []


def _named(*columns: tuple[str, str]) -> ColumnSelector:
    """A selector of the given ``(column, kind)`` pairs that are in the frame."""

    def select(frame: pd.DataFrame) -> list[tuple[str, str]]:
        return [(c, k) for c, k in columns if c in frame.columns]

    return select


def topic_columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """``topic_<word>`` per vocabulary word and ``topic_oov`` (numerical: presence, and the unknown words' share)."""
    topics = sorted(str(c) for c in frame.columns if str(c).startswith("topic_") and c != "topic_oov")
    return [(c, NUMERICAL) for c in topics] + ([("topic_oov", NUMERICAL)] if "topic_oov" in frame.columns else [])


class ColumnDriftMonitor:
    """Tests each column of one signal, window against reference, with one Evidently stat test."""

    def __init__(self, signal: str, select: ColumnSelector, config: SignalConfig | Mapping[str, Any] | None = None,
                 fixed_columns: list[tuple[str, str]] | None = None) -> None:
        self.signal = signal
        self.select = select
        self.config = config if isinstance(config, SignalConfig) else SignalConfig.from_dict(config or {})
        check_settings(f"monitor {signal!r}", self.config.settings, BUILTIN_MONITOR_SETTINGS)
        self.fixed_columns = fixed_columns
        self._prepared: dict[str, tuple[str, pd.Series, Calibration]] = {}
        self._prepared_for: pd.DataFrame | None = None

    def columns(self, frame: pd.DataFrame) -> list[tuple[str, str]]:
        """The ``(column, kind)`` pairs this monitor tests in ``frame``."""
        return list(self.fixed_columns) if self.fixed_columns is not None else self.select(frame)

    def configured_threshold(self, kind: str) -> float:
        """The configured threshold, or the Evidently default of the stat test."""
        if self.config.threshold is not None:
            return float(self.config.threshold)
        return default_threshold(self.config.stattest, kind)

    def prepare(self, reference: pd.DataFrame, *, window: int, alpha: float, positions: np.ndarray | None = None,
                min_windows: int = 10, max_windows: int = 100, confidence: float = 0.9) -> dict[str, Calibration]:
        """Fix the reference sample (rows at ``positions``) and calibrate each column's threshold."""
        positions = np.arange(len(reference)) if positions is None else np.sort(np.asarray(positions))
        prepared = {}
        for column, kind in self.columns(reference):
            check_stattest(self.config.stattest, kind)
            configured = self.configured_threshold(kind)
            full = reference[column].reset_index(drop=True)
            sample = as_series(full.iloc[positions], kind)
            if self.config.calibrate and len(sample) >= self.config.min_samples:
                cal = calibrate(self.config.stattest, kind, configured, _clean(full, kind), positions, window, alpha,
                                min_windows, max_windows, confidence)
            else:
                cal = Calibration.fixed(configured)
            prepared[column] = (kind, sample, cal)
        self._prepared = prepared
        self._prepared_for = reference
        return {c: p[2] for c, p in prepared.items()}

    def calibration(self) -> dict[str, Calibration]:
        """Thresholds chosen by the last :meth:`prepare`."""
        return {c: p[2] for c, p in self._prepared.items()}

    def evaluate(self, reference: pd.DataFrame, current: pd.DataFrame) -> MonitorResult:
        """Test every column of the signal; never raises on missing, empty or all-NaN data."""
        if self._prepared_for is not reference:
            self._prepared = {c: (k, as_series(reference[c], k), Calibration.fixed(self.configured_threshold(k)))
                              for c, k in self.columns(reference)}
            self._prepared_for = reference
        names = dict(self._prepared)
        for column, kind in self.columns(current):
            names.setdefault(column, (kind, pd.Series(dtype=float), Calibration.fixed(self.configured_threshold(kind))))
        results = [self._test(column, kind, sample, cal, current) for column, (kind, sample, cal) in names.items()]
        status, message = signal_status(results, self.config.drift_share)
        return MonitorResult(self.signal, status, results, message)

    def _test(self, column: str, kind: str, reference: pd.Series, cal: Calibration,
              current: pd.DataFrame) -> ColumnResult:
        stattest = self.config.stattest
        base = ColumnResult(column, stattest, INSUFFICIENT, cal.threshold, kind=kind, n_reference=len(reference),
                            calibrated=cal.calibrated and cal.threshold != cal.configured)
        if column not in current.columns:
            base.message = f"{column} is not in the window"
            return base
        values = as_series(current[column], kind)
        base.n_current = len(values)
        need = self.config.min_samples
        if len(values) < need:
            base.message = (f"{column}: all {len(current)} values missing" if len(values) == 0 and len(current)
                            else f"{column}: {len(values)} values, need {need}")
            return base
        if len(reference) < need:
            base.message = f"{column}: {len(reference)} reference values, need {need}"
            return base
        try:
            outcome = run_stattest(stattest, kind, reference, values, cal.threshold)
        except (ValueError, ZeroDivisionError, FloatingPointError, TypeError) as exc:
            base.status, base.message = ERROR, f"{column}: Evidently {stattest} failed: {exc}"
            return base
        if not np.isfinite(outcome.score):
            base.message = f"{column}: {stattest} score is not finite"
            return base
        base.score = outcome.score
        base.status = DRIFT if outcome.drifted else OK
        return base


def _clean(full: pd.Series, kind: str) -> pd.Series:
    """The column with non-finite numbers turned into NaN (positions kept)."""
    if kind == NUMERICAL:
        values = pd.to_numeric(full, errors="coerce").astype(np.float64)
        return values.where(np.isfinite(values))
    return full


BUILTIN_MONITOR_SETTINGS: tuple[str, ...] = ()
"""Settings the built-in column monitors accept: none (their knobs are the ``SignalConfig`` fields)."""

SELECTORS: dict[str, ColumnSelector] = {
    OBSERVATIONS: observation_columns,
    ACTIONS: action_columns,
    PROPENSITIES: propensity_columns,
    REWARDS: reward_columns,
    RETURNS: return_columns,
    PROMPTS: _named(("prompt_chars", NUMERICAL), ("prompt_words", NUMERICAL), ("prompt_turns", NUMERICAL)),
    TOPICS: topic_columns,
    TOOLS: _named(("tool", CATEGORICAL), ("action", CATEGORICAL), ("n_tool_calls", NUMERICAL)),
    RESPONSES: _named(("response_chars", NUMERICAL)),
    REFUSALS: _named(("refusal", NUMERICAL)),
    VETOES: _named(("vetoed", NUMERICAL)),
    RATINGS: _named(("rating", NUMERICAL)),
    OUTCOMES: _named(("outcome", NUMERICAL)),
    JUDGE: _named(("judge_score", NUMERICAL)),
}
AGENT_BUILTINS: frozenset[str] = frozenset({PROMPTS, TOPICS, TOOLS, RESPONSES, REFUSALS, VETOES, RATINGS, OUTCOMES,
                                            JUDGE})
"""Agent signals built here when no plugin registers a monitor of that name (see the module docstring)."""


def builtin_factory(signal: str) -> Callable[[Mapping[str, Any] | None], ColumnDriftMonitor]:
    """The ``monitor_factory(config_dict)`` of a built-in signal."""
    select = SELECTORS[signal]

    def factory(config: Mapping[str, Any] | None = None) -> ColumnDriftMonitor:
        return ColumnDriftMonitor(signal, select, config)

    factory.__name__ = f"{signal}_monitor"
    factory.__doc__ = f"Build the built-in {signal!r} drift monitor from its config dict."
    return factory


# --- The drift monitor ----------------------------------------------------------------------------

class DriftMonitor:
    """Compares windows of decisions with one reference, signal by signal."""

    def __init__(self, reference: pd.DataFrame, config: MonitorConfig | None = None, *,
                 unit: str = "decisions") -> None:
        self.config = config or MonitorConfig()
        self.unit = unit
        """What a row is, in messages: ``decisions`` (vector) or ``interactions`` (agent choices)."""
        self.reference = prepare_reference(reference)
        registry = plugins.monitors()
        self.monitors: dict[str, Any] = {}
        for name in self.config.monitors:
            signal = self.config.signal(name)
            if name in AGENT_BUILTINS and name not in registry:
                check_settings(f"monitor {name!r}", signal.settings, BUILTIN_MONITOR_SETTINGS)
                self.monitors[name] = builtin_factory(name)(signal.to_dict())
                continue
            entry = registry.get(name)
            check_settings(f"monitor {name!r}", signal.settings, entry.extra.get("settings"))
            self.monitors[name] = entry.value(signal.to_dict())
        rng = np.random.default_rng(self.config.seed)
        n = len(self.reference)
        size = min(n, self.config.max_reference_rows)
        self.positions = np.sort(rng.choice(n, size=size, replace=False)) if size < n else np.arange(n)
        self.calibration: dict[str, dict[str, Any]] = {}
        columns = sum(len(m.columns(self.reference)) for m in self.monitors.values() if hasattr(m, "columns"))
        self.alpha = self.config.false_alarm_rate / max(columns, 1)
        for name, monitor in self.monitors.items():
            if hasattr(monitor, "prepare"):
                cal = monitor.prepare(self.reference, window=self.config.window, alpha=self.alpha,
                                      positions=self.positions, min_windows=self.config.min_calibration_windows,
                                      max_windows=self.config.max_calibration_windows,
                                      confidence=self.config.calibration_confidence)
                self.calibration[name] = {c: v.to_dict() for c, v in (cal or {}).items()}

    def windows(self, frame: pd.DataFrame) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` row ranges of the full windows in ``frame``."""
        size = self.config.window
        for start in range(0, len(frame) - size + 1, size):
            yield start, start + size

    def evaluate(self, current: pd.DataFrame, index: int = 0, *, policy_version: str | None = None,
                 model: str | None = None) -> WindowSummary:
        """Run every monitor on one window; insufficient data gives a status, never an exception."""
        summary = WindowSummary(index=index, status=OK, n_decisions=len(current), policy_version=policy_version,
                                model=model)
        _describe(summary, current)
        if len(current) < self.config.min_window_decisions:
            summary.status = INSUFFICIENT
            summary.message = (f"insufficient data: {len(current)} {self.unit}, "
                               f"need {self.config.min_window_decisions}")
            summary.signals = {name: MonitorResult(name, INSUFFICIENT, [], summary.message) for name in self.monitors}
            return summary
        for name, monitor in self.monitors.items():
            summary.signals[name] = monitor.evaluate(self.reference, current)
        statuses = [r.status for r in summary.signals.values()]
        if DRIFT in statuses:
            summary.status = DRIFT
            summary.message = "drift in " + ", ".join(summary.drifted_signals())
        elif OK not in statuses:
            summary.status = INSUFFICIENT
            summary.message = "no signal could be tested"
        return summary

    def run(self, frame: pd.DataFrame, first_index: int = 0, **meta: Any) -> list[WindowSummary]:
        """Evaluate every full window of ``frame`` (rewards and returns already attached)."""
        return [self.evaluate(frame.iloc[a:b], first_index + k, **meta)
                for k, (a, b) in enumerate(self.windows(frame))]

    def reference_sample(self) -> pd.DataFrame:
        """The reference rows every window is tested against."""
        return self.reference.iloc[self.positions]

    def report(self, current: pd.DataFrame, summary: WindowSummary, path: str | Path | None = None) -> Any:
        """The Evidently HTML report of one window (same tests and thresholds); saved when ``path`` is given."""
        from rlops_plugin.monitoring.report import build_report  # Evidently's Report: seconds to import

        return build_report(self.reference_sample(), current, summary, path)


def prepare_reference(reference: pd.DataFrame) -> pd.DataFrame:
    """The reference with ``episode_return`` computed when it has rewards and episode ends but no returns."""
    frame = reference.reset_index(drop=True)
    if "episode_return" not in frame.columns and {"reward", "episode_id", "episode_end"} <= set(frame.columns):
        frame = frame.copy()
        add_episode_returns(frame)
    return frame


def _describe(summary: WindowSummary, current: pd.DataFrame) -> None:
    if current.empty:
        return
    for column, first, last in (("seq", "start_seq", "end_seq"), ("ts", "start_ts", "end_ts")):
        if column in current:
            values = _floats(current[column])
            values = values[np.isfinite(values)]
            if values.size:
                cast = int if column == "seq" else float
                setattr(summary, first, cast(values.min()))
                setattr(summary, last, cast(values.max()))
    if "episode_id" in current:
        episodes = current["episode_id"].to_numpy()
        summary.n_episodes = int(len(pd.unique(episodes[pd.notna(episodes)])))
    for column, prefix in (("reward", "reward"), ("episode_return", "return")):
        if column in current:
            values = _floats(current[column])
            values = values[np.isfinite(values)]
            setattr(summary, f"{prefix}_n", int(values.size))
            if values.size:
                setattr(summary, f"{prefix}_mean", float(values.mean()))
                setattr(summary, f"{prefix}_std", float(values.std(ddof=1)) if values.size > 1 else 0.0)


def _floats(series: pd.Series) -> np.ndarray:
    if series.dtype.kind in "fiu":
        return series.to_numpy(dtype=np.float64)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
