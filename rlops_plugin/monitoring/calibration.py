"""Per-column thresholds calibrated on the reference: pricing in the autocorrelation of episodes.

Stat tests assume independent samples. A window of decisions is not: consecutive steps of one
episode are strongly correlated, so a 1,000-decision window holds far fewer independent samples
than 1,000 and every fixed threshold alarms on stationary traffic (measured on CartPole, see
docs/monitoring.md). The remedy used here needs no model of the correlation: cut the reference
(kept in log order) into windows of the monitoring size, score each against the rest of the
reference with the same Evidently stat test, and put the threshold in the tail of those
stationary scores.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rlops_plugin.monitoring.stattests import evidence, evidence_power, from_evidence, run_stattest, stricter

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
