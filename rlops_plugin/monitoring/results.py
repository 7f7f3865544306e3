"""What monitors return: per-column test results, per-signal results, and the statuses they use."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

DRIFT, OK, INSUFFICIENT, ERROR = "drift", "ok", "insufficient", "error"
"""Statuses of a column, a signal and a window. ``insufficient`` (too few values, an empty or
all-NaN column, no reference) and ``error`` (the stat test refused the data) never trigger."""
TESTED = (DRIFT, OK)


@dataclass
class ColumnResult:
    """One Evidently stat test on one column of one window."""

    column: str
    stattest: str
    status: str
    threshold: float
    score: float | None = None
    kind: str = "num"
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
        from rlops_plugin.monitoring.stattests import evidence

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


def signal_status(columns: list[ColumnResult], drift_share: float) -> tuple[str, str]:
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
