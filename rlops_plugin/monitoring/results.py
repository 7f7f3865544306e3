"""What monitors return: per-column and per-signal results, the per-window summary, and their statuses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

DISTANCE_TESTS = frozenset({"ed", "hellinger", "jensenshannon", "kl_div", "psi", "wasserstein"})
"""Tests whose score is a distance (drift when ``score >= threshold``); all others return p-values."""


def is_distance(stattest: str) -> bool:
    """True when ``stattest`` scores a distance, False when it returns a p-value."""
    return stattest in DISTANCE_TESTS


def evidence(stattest: str, score: float) -> float:
    """A score on a "bigger is more drift" scale: the distance itself, or ``-ln p`` for p-values."""
    if is_distance(stattest):
        return float(score)
    return -math.log(max(float(score), 1e-300))


class Status(StrEnum):
    """Status of a column, a signal and a window (equal to its string, so JSON output is plain text).

    ``insufficient`` (too few values, an empty or all-NaN column, no reference) and ``error`` (the
    stat test refused the data) never trigger.
    """

    DRIFT = "drift"
    OK = "ok"
    INSUFFICIENT = "insufficient"
    ERROR = "error"


class ColumnKind(StrEnum):
    """How a column is tested: as numbers or as categories (Evidently's column types)."""

    NUMERICAL = "num"
    CATEGORICAL = "cat"


DRIFT, OK, INSUFFICIENT, ERROR = Status.DRIFT, Status.OK, Status.INSUFFICIENT, Status.ERROR
TESTED: tuple[Status, ...] = (Status.DRIFT, Status.OK)
"""Statuses of a column that was actually tested."""


@dataclass
class ColumnResult:
    """One Evidently stat test on one column of one window."""

    column: str
    stattest: str
    status: str
    """A :class:`Status`."""
    threshold: float
    score: float | None = None
    kind: str = ColumnKind.NUMERICAL
    """A :class:`ColumnKind`."""
    n_reference: int = 0
    n_current: int = 0
    calibrated: bool = False
    """True when calibration on the reference raised the threshold above the configured one."""
    message: str = ""

    @property
    def drifted(self) -> bool:
        """True when this column drifted."""
        return self.status == DRIFT

    def severity(self) -> float:
        """How far past (>1) or below (<1) its threshold the score is, on the "more drift" scale."""
        if self.score is None or self.status not in TESTED:
            return -math.inf
        score, limit = evidence(self.stattest, self.score), evidence(self.stattest, self.threshold)
        return score / limit if limit > 0 else (math.inf if score > 0 else 0.0)

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON form."""
        out: dict[str, Any] = {"stattest": self.stattest, "status": self.status, "score": _num(self.score),
                               "threshold": _num(self.threshold), "n": self.n_current,
                               "n_reference": self.n_reference, "calibrated": self.calibrated}
        if self.message:
            out["message"] = self.message
        return out


@dataclass
class MonitorResult:
    """A signal's verdict for one window, with every column's result."""

    signal: str
    status: str
    """A :class:`Status`."""
    columns: list[ColumnResult] = field(default_factory=list)
    message: str = ""

    @property
    def drifted(self) -> bool:
        """True when the signal drifted."""
        return self.status == DRIFT

    def tested(self) -> list[ColumnResult]:
        """Columns that were actually tested (drift or ok)."""
        return [c for c in self.columns if c.status in TESTED]

    def drifted_columns(self) -> list[str]:
        """Names of the drifted columns."""
        return [c.column for c in self.columns if c.drifted]

    @property
    def drift_share(self) -> float | None:
        """Share of tested columns that drifted (``None`` when none was tested)."""
        tested = self.tested()
        return sum(c.drifted for c in tested) / len(tested) if tested else None

    def worst(self) -> ColumnResult | None:
        """The tested column closest to (or furthest past) its threshold."""
        tested = self.tested()
        return max(tested, key=lambda c: c.severity()) if tested else None

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON form."""
        out: dict[str, Any] = {"status": self.status, "drift_share": _num(self.drift_share),
                               "drifted_columns": self.drifted_columns(),
                               "columns": {c.column: c.to_dict() for c in self.columns}}
        if self.message:
            out["message"] = self.message
        return out


def signal_status(columns: list[ColumnResult], drift_share: float) -> tuple[Status, str]:
    """Combine column results into the signal's status and a message."""
    tested = [c for c in columns if c.status in TESTED]
    if not columns:
        return INSUFFICIENT, "no column of this signal in the data"
    if not tested:
        reasons = sorted({c.message for c in columns if c.message})
        return INSUFFICIENT, "; ".join(reasons) or "no column could be tested"
    drifted = sum(c.drifted for c in tested)
    if drifted >= 1 and drifted / len(tested) >= drift_share:
        return DRIFT, f"{drifted} of {len(tested)} columns drifted"
    return OK, f"{drifted} of {len(tested)} columns drifted"


def _num(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class WindowSummary:
    """Everything decided about one window of one policy version's decisions."""

    index: int
    status: str
    """A :class:`Status`."""
    n_decisions: int
    signals: dict[str, MonitorResult] = field(default_factory=dict)
    policy_version: str | None = None
    model: str | None = None
    start_seq: int | None = None
    end_seq: int | None = None
    start_ts: float | None = None
    end_ts: float | None = None
    n_episodes: int = 0
    reward_mean: float | None = None
    reward_std: float | None = None
    reward_n: int = 0
    return_mean: float | None = None
    return_std: float | None = None
    return_n: int = 0
    message: str = ""
    triggers: list[Any] = field(default_factory=list)
    """``TriggerEvent`` objects fired on this window (filled by the trigger engine)."""
    report_path: str | None = None

    def drifted_signals(self) -> list[str]:
        """Signals that drifted in this window."""
        return [name for name, result in self.signals.items() if result.status == DRIFT]

    def drifted_columns(self) -> list[str]:
        """Every drifted column, across signals."""
        return [c for result in self.signals.values() for c in result.drifted_columns()]

    def insufficient_signals(self) -> list[str]:
        """Signals that could not be tested."""
        return [name for name, result in self.signals.items() if result.status not in TESTED]

    @property
    def drift_share(self) -> float | None:
        """Share of tested columns (all signals) that drifted; ``None`` when nothing was tested."""
        tested = [c for result in self.signals.values() for c in result.tested()]
        return sum(c.drifted for c in tested) / len(tested) if tested else None

    def to_dict(self) -> dict[str, Any]:
        """The compact JSON summary logged per window."""
        return {
            "window": self.index, "status": self.status, "message": self.message,
            "model": self.model, "policy_version": self.policy_version,
            "seq": [self.start_seq, self.end_seq], "ts": [self.start_ts, self.end_ts],
            "n_decisions": self.n_decisions, "n_episodes": self.n_episodes,
            "drift_share": _num(self.drift_share), "drifted_signals": self.drifted_signals(),
            "drifted_columns": self.drifted_columns(), "insufficient_signals": self.insufficient_signals(),
            "reward": {"mean": _num(self.reward_mean), "std": _num(self.reward_std), "n": self.reward_n},
            "episode_return": {"mean": _num(self.return_mean), "std": _num(self.return_std), "n": self.return_n},
            "signals": {name: result.to_dict() for name, result in self.signals.items()},
            "triggers": [event.to_dict() if hasattr(event, "to_dict") else event for event in self.triggers],
            "report": self.report_path,
        }

    def metrics(self) -> dict[str, float]:
        """MLflow metrics for this window (logged with ``step`` = window index)."""
        out: dict[str, float] = {"monitor/n_decisions": float(self.n_decisions),
                                 "monitor/n_episodes": float(self.n_episodes),
                                 "monitor/drift": float(self.status == DRIFT),
                                 "monitor/insufficient": float(self.status == INSUFFICIENT),
                                 "monitor/insufficient_signals": float(len(self.insufficient_signals())),
                                 "monitor/triggers": float(len(self.triggers))}
        for key, value in (("monitor/drift_share", self.drift_share), ("monitor/reward_mean", self.reward_mean),
                           ("monitor/return_mean", self.return_mean)):
            if value is not None and math.isfinite(value):
                out[key] = float(value)
        for name, result in self.signals.items():
            if result.status not in TESTED:
                continue
            out[f"monitor/{name}/drift"] = float(result.drifted)
            out[f"monitor/{name}/drift_share"] = float(result.drift_share or 0.0)
            for column in result.tested():
                out[f"monitor/{name}/{column.column}/score"] = float(column.score)  # type: ignore[arg-type]
                out[f"monitor/{name}/{column.column}/threshold"] = float(column.threshold)
        return out
