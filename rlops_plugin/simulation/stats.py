"""Small statistics used by evaluation and gates: bootstrap intervals and paired comparisons."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float

    def to_dict(self) -> dict[str, float]:
        """JSON form."""
        return asdict(self)


def bootstrap_mean(values: np.ndarray, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of the mean (exact point for one value, NaN for none)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), confidence)
    if values.size == 1:
        v = float(values[0])
        return Interval(v, v, v, confidence)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return Interval(float(values.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)),
                    confidence)


def paired_difference(candidate: np.ndarray, baseline: np.ndarray, confidence: float = 0.95,
                      n_boot: int = 2000, seed: int = 0) -> Interval:
    """Bootstrap interval of mean(candidate - baseline) over paired samples (same seeds)."""
    candidate = np.asarray(candidate, dtype=float)
    baseline = np.asarray(baseline, dtype=float)
    if candidate.shape != baseline.shape:
        raise ValueError(f"paired samples differ in length: {candidate.shape} vs {baseline.shape}")
    return bootstrap_mean(candidate - baseline, confidence, n_boot, seed)
