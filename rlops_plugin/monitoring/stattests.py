"""Evidently's stat tests, called directly: the per-window drift decision.

A full Evidently ``Report`` costs 0.2-0.5 s per window; the decision it contains is one call of
an Evidently ``StatTest`` per column (~1 ms). We call those same ``StatTest`` objects (from
``evidently.legacy.calculations.stattests``, which the new ``ValueDrift`` metric also uses), and
build the HTML ``Report`` only for windows that drift or on demand (:mod:`.report`). Evidently is
imported on first use: it takes seconds to import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin.monitoring.errors import MonitorConfigError

NUMERICAL, CATEGORICAL = "num", "cat"
DISTANCE_TESTS = frozenset({"ed", "hellinger", "jensenshannon", "kl_div", "psi", "wasserstein"})
"""Tests whose score is a distance (drift when ``score >= threshold``); all others return p-values."""
ROOT_DISTANCES = frozenset({"ed", "hellinger", "jensenshannon", "wasserstein"})
"""Distances that grow like the size of a shift (their squares behave like chi-square statistics)."""


@dataclass(frozen=True)
class TestOutcome:
    """One Evidently stat test on one column: score, threshold used, verdict."""

    score: float
    threshold: float
    drifted: bool


def is_distance(stattest: str) -> bool:
    """True when ``stattest`` scores a distance, False when it returns a p-value."""
    return stattest in DISTANCE_TESTS


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
                  if any(t.value in ("num", "cat") for t in by_type))


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


def evidence(stattest: str, score: float) -> float:
    """A score on a "bigger is more drift" scale: the distance itself, or ``-ln p`` for p-values."""
    if is_distance(stattest):
        return float(score)
    return -math.log(max(float(score), 1e-300))


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
