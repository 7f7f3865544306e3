"""The per-window summary: statuses, drift scores, reward statistics, triggers; JSON and metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rlops_plugin.monitoring.results import DRIFT, INSUFFICIENT, MonitorResult, _num


@dataclass
class WindowSummary:
    """Everything decided about one window of one policy version's decisions."""

    index: int
    status: str
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
        return [name for name, result in self.signals.items() if result.status not in ("drift", "ok")]

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
            if result.status not in ("drift", "ok"):
                continue
            out[f"monitor/{name}/drift"] = float(result.drifted)
            out[f"monitor/{name}/drift_share"] = float(result.drift_share or 0.0)
            for column in result.tested():
                out[f"monitor/{name}/{column.column}/score"] = float(column.score)  # type: ignore[arg-type]
                out[f"monitor/{name}/{column.column}/threshold"] = float(column.threshold)
        return out
