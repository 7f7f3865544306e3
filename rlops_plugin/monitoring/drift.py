"""The drift monitor: the configured monitors run over windows of a policy's decisions.

``DriftMonitor(reference, config)`` instantiates the registered monitors named in the config,
samples the reference once and calibrates every column's threshold on it; then
:meth:`DriftMonitor.evaluate` turns one window into a :class:`WindowSummary` at the cost of one
Evidently stat test per column, and :meth:`DriftMonitor.report` builds the full Evidently HTML
report for a window when it is wanted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin import plugins
from rlops_plugin.monitoring.config import MonitorConfig
from rlops_plugin.monitoring.frames import add_episode_returns
from rlops_plugin.monitoring.results import DRIFT, INSUFFICIENT, OK, MonitorResult
from rlops_plugin.monitoring.summary import WindowSummary


class DriftMonitor:
    """Compares windows of decisions with one reference, signal by signal."""

    def __init__(self, reference: pd.DataFrame, config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()
        self.reference = prepare_reference(reference)
        registry = plugins.monitors()
        self.monitors: dict[str, Any] = {
            name: registry.get(name).value(self.config.signal(name).to_dict()) for name in self.config.monitors}
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
            summary.message = f"{len(current)} decisions, need {self.config.min_window_decisions}"
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
        from rlops_plugin.monitoring.report import build_report

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
