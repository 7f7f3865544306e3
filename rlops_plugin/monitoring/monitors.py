"""Column drift monitors: each tests one signal's columns with an Evidently stat test.

The built-in monitors (registered in ``rlops_plugin.default_plugins.monitors``):

* ``observations``: every observation feature ``obs_i`` (numerical);
* ``actions``: the action frequencies (``action``, categorical; Box actions: ``action_j``);
* ``propensities``: each action's probability ``prob_k`` and the policy entropy (Box: the logged
  propensity density). With two actions ``prob_0 = 1 - prob_1`` adds nothing and is skipped;
* ``rewards``: the per-decision joined reward;
* ``returns``: per-episode returns (one value per episode that ended in the window).

A monitor follows the ``rlops_register_monitors`` contract: ``signal`` and
``evaluate(reference, current) -> MonitorResult``. ``prepare`` (optional) samples and calibrates
once per reference so that ``evaluate`` costs one stat test per column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin.monitoring.calibration import Calibration, calibrate
from rlops_plugin.monitoring.config import (
    ACTIONS,
    OBSERVATIONS,
    PROPENSITIES,
    RETURNS,
    REWARDS,
    SignalConfig,
)
from rlops_plugin.monitoring.results import DRIFT, ERROR, INSUFFICIENT, OK, ColumnResult, MonitorResult, signal_status
from rlops_plugin.monitoring.stattests import (
    CATEGORICAL,
    NUMERICAL,
    as_series,
    check_stattest,
    default_threshold,
    run_stattest,
)

ColumnSelector = Callable[[pd.DataFrame], list[tuple[str, str]]]
"""Frame -> ``[(column, kind)]`` with kind ``"num"`` or ``"cat"``."""


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


class ColumnDriftMonitor:
    """Tests each column of one signal, window against reference, with one Evidently stat test."""

    def __init__(self, signal: str, select: ColumnSelector, config: SignalConfig | Mapping[str, Any] | None = None,
                 fixed_columns: list[tuple[str, str]] | None = None) -> None:
        self.signal = signal
        self.select = select
        self.config = config if isinstance(config, SignalConfig) else SignalConfig.from_dict(config or {})
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


SELECTORS: dict[str, ColumnSelector] = {
    OBSERVATIONS: observation_columns,
    ACTIONS: action_columns,
    PROPENSITIES: propensity_columns,
    REWARDS: reward_columns,
    RETURNS: return_columns,
}


def builtin_factory(signal: str) -> Callable[[Mapping[str, Any] | None], ColumnDriftMonitor]:
    """The ``monitor_factory(config_dict)`` of a built-in signal."""
    select = SELECTORS[signal]

    def factory(config: Mapping[str, Any] | None = None) -> ColumnDriftMonitor:
        return ColumnDriftMonitor(signal, select, config)

    factory.__name__ = f"{signal}_monitor"
    factory.__doc__ = f"Build the built-in {signal!r} drift monitor from its config dict."
    return factory


__all__ = ["DRIFT", "ERROR", "INSUFFICIENT", "OK", "ColumnDriftMonitor", "SELECTORS", "builtin_factory",
           "action_columns", "observation_columns", "propensity_columns", "return_columns", "reward_columns"]
