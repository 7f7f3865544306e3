"""An always-valid sequential test on the difference of mean per-decision reward.

The canary is watched continuously, so a fixed-sample test would inflate false alarms with every
look. We use the mixture sequential probability ratio test (mSPRT, Johari et al. 2017, "Always
valid inference"): with ``D = mean(challenger) - mean(champion)`` and its variance
``V = s_c^2 / n_c + s_b^2 / n_b``, the interval

    D +- sqrt( V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)) )

covers the true difference at every sample size simultaneously with probability >= 1 - alpha, so
stopping whenever it excludes a margin keeps the error rate at alpha (variances are plug-in
estimates, valid once each arm has ``min_samples``). ``tau`` is the scale of effects we expect to
detect (``tau_relative`` times the champion's mean reward); the default 0.07 minimises the interval
width around 1,000-2,000 challenger decisions for 10% effects, where canaries must decide.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

WORSE, NON_INFERIOR, CONTINUE, NO_DATA = "worse", "non_inferior", "continue", "no_data"


@dataclass(frozen=True)
class SequentialResult:
    """The current verdict and the statistics behind it."""

    verdict: str
    """``worse`` (roll back), ``non_inferior`` (may advance), ``continue`` or ``no_data``."""
    difference: float
    ci_low: float
    ci_high: float
    n_challenger: int
    n_champion: int
    challenger_mean: float
    champion_mean: float
    reason: str

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON form."""
        return asdict(self)


@dataclass
class RewardStats:
    """Count, mean and sum of squared deviations of rewards (merged incrementally, Chan et al.)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray | RewardStats) -> RewardStats:
        """Statistics of the finite values of an array (NaN rewards are ignored)."""
        if isinstance(values, RewardStats):
            return values
        stats = cls()
        stats.add(np.asarray(values, dtype=float))
        return stats

    def add(self, values: np.ndarray) -> None:
        """Merge a batch of rewards."""
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return
        n_b, mean_b = v.size, float(v.mean())
        m2_b = float(((v - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    @property
    def variance(self) -> float:
        """Unbiased sample variance."""
        return self.m2 / (self.n - 1) if self.n > 1 else math.nan


def always_valid_interval(challenger: RewardStats, champion: RewardStats, alpha: float, tau: float
                          ) -> tuple[float, float, float]:
    """(difference, low, high): the mSPRT confidence sequence at the current sample sizes."""
    d = challenger.mean - champion.mean
    v = challenger.variance / challenger.n + champion.variance / champion.n
    if not v > 0:
        return d, d, d
    tau2 = tau * tau
    half = math.sqrt(v * (v + tau2) / tau2 * (2.0 * math.log(1.0 / alpha) + math.log((v + tau2) / v)))
    return d, d - half, d + half


def sequential_test(challenger: np.ndarray | RewardStats, champion: np.ndarray | RewardStats, alpha: float = 0.1,
                    tau_relative: float = 0.07, rollback_margin: float = 0.0, noninferiority_margin: float = 0.02,
                    min_samples: int = 30) -> SequentialResult:
    """Compare per-decision rewards; margins are fractions of the champion's mean reward.

    ``worse`` when the interval lies entirely below ``-rollback_margin``; ``non_inferior`` when it
    lies entirely above ``-noninferiority_margin``; otherwise ``continue``. NaN rewards are ignored;
    fewer than ``min_samples`` rewards on either side is ``no_data`` (never a decision).
    """
    c, b = RewardStats.of(challenger), RewardStats.of(champion)
    if c.n < min_samples or b.n < min_samples:
        return SequentialResult(NO_DATA, math.nan, math.nan, math.nan, c.n, b.n,
                                c.mean if c.n else math.nan, b.mean if b.n else math.nan,
                                f"waiting for rewards: {c.n} challenger and {b.n} champion of {min_samples} "
                                "needed on each side")
    scale = abs(b.mean) or math.sqrt(b.variance) or 1.0
    tau = max(tau_relative * scale, 1e-9)
    d, low, high = always_valid_interval(c, b, alpha, tau)
    lower_limit, worse_limit = -noninferiority_margin * scale, -rollback_margin * scale
    interval = f"difference {d:+.4f} [{low:+.4f}, {high:+.4f}] (always valid, alpha={alpha})"
    if high < worse_limit:
        verdict, reason = WORSE, f"challenger worse: {interval} lies below {worse_limit:+.4f}"
    elif low > lower_limit:
        verdict, reason = NON_INFERIOR, f"challenger non-inferior: {interval} lies above {lower_limit:+.4f}"
    else:
        verdict, reason = CONTINUE, f"inconclusive so far: {interval}"
    return SequentialResult(verdict, d, low, high, c.n, b.n, c.mean, b.mean, reason)
