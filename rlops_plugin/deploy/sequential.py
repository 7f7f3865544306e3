"""An always-valid sequential test on the difference of mean reward, that never promotes on no evidence.

The canary is watched continuously, so a fixed-sample test would inflate false alarms with every
look. We use the mixture sequential probability ratio test (mSPRT, Johari et al. 2017, "Always
valid inference"): with ``D = mean(challenger) - mean(champion)`` and its variance
``V = s_c^2 / n_c + s_b^2 / n_b``, the interval

    D +- sqrt( V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)) )

covers the true difference at every sample size simultaneously with probability >= 1 - alpha, so
stopping whenever it excludes a margin keeps the error rate at alpha. ``tau`` is the scale of
effects we expect to detect (``tau_relative`` times the champion's mean reward); the default 0.07
minimises the interval width around 1,000-2,000 challenger decisions for 10% effects, where
canaries must decide.

The interval rests on a normal approximation with plug-in variances. Three kinds of data break
that approximation, and each once made a challenger be promoted on no evidence at all:

* **Zero observed variance.** Constant rewards (CartPole's +1 per step whatever the policy), or a
  challenger that has not converted yet against a 0.1% champion, give ``s^2 = 0``: the interval
  collapsed to a point, which then "lay above" the non-inferiority limit. An arm's observed spread
  of zero says the true variance is small, not zero (0 successes in n is compatible with a rate up
  to ~3/n). Each arm's variance is therefore regularized as Agresti and Caffo (2000) do for the
  difference of two proportions, where adding one success and one failure to each arm repairs
  the coverage of the Wald interval near 0 and 1: for rewards spanning ``[lo, hi]`` (the range
  observed over both arms), one pseudo-reward at each end enters the arm's squared deviations,
  ``(M2 + (lo - m)^2 + (hi - m)^2) / (n + 1)``, used as a floor under the plain ``M2 / (n - 1)``.
  The pseudo-rewards are not added to the mean, so the estimated difference stays unbiased; the
  interval only ever widens, by a weight that fades as 1/n. For Bernoulli rewards near p = 0.5 (the
  benchmark's case) the floor lies below the plain variance, so the test's power is unchanged
  where the approximation already held.
* **Too little information.** A variance prior widens a degenerate interval but does not create
  evidence: after enough constant rewards it narrows again and would, in the end, certify two
  policies "equal" on a metric that cannot tell policies apart. Non-inferiority (and so every
  canary step and the promotion) also needs a minimum *effective* sample of the rewards of both
  arms pooled, ``n_eff = n / (1 + skewness^2)``: the leading (Edgeworth) error of the normal
  approximation of a mean is ``skewness / sqrt(n)``, that is ``1 / sqrt(n / skewness^2)``, and the
  added 1 caps ``n_eff`` at ``n`` for symmetric rewards. It is ``n`` for symmetric rewards, about the
  number of events for rare binary ones, and 0 for rewards that never vary. The default minimum,
  10, is the textbook rule for the normal approximation of a binomial (``np >= 10`` and
  ``n(1-p) >= 10``) generalized to any reward; skewed but informative rewards qualify within a few
  dozen samples (CartPole episode returns: ``n_eff ~ 0.2-0.3 n``, measured for a random and a noisy
  balancing policy). Constant rewards on both sides therefore never promote, and a challenger that
  never converts never shows non-inferiority: while the champion has converted too rarely,
  ``n_eff`` is below the minimum; once it has converted at all, the difference itself lies below
  the margin. Rollback needs no such minimum: going back to the champion needs no evidence in the
  challenger's favour.
* **Absurd magnitudes.** Rewards near 1e308 overflowed the moments to inf/NaN, and a NaN
  variance also collapsed the interval. Rewards are bounded: a declared ``reward_range`` (or, by
  default, ``+-MAX_ABS_REWARD``) clips each value, and the clipped values are counted and
  reported. A careful statistician neither lets one corrupt feedback row crash a running canary
  (which would leave the challenger serving its share) nor lets data that break the test's
  assumptions decide a promotion: clipping bounds the influence of any one value, and a single
  clipped value on either side withholds non-inferiority for the rest of the analysis (the
  reason names the count; fix the reward pipeline or widen ``reward_range``). A non-finite
  interval, however reached, means "continue", never a verdict. NaN rewards are missing rewards
  and are ignored.

Invalid configuration (a range that is empty, non-finite or beyond ``MAX_ABS_REWARD``; statistics
built for another range; non-numeric rewards) is refused with :class:`~rlops_plugin.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from rlops_plugin.errors import ConfigError

WORSE, NON_INFERIOR, CONTINUE, NO_DATA = "worse", "non_inferior", "continue", "no_data"

MAX_ABS_REWARD = 1e12
"""Largest reward magnitude accepted without a declared range (larger values are clipped to it).

No reward we know of (per-decision rewards, episode returns, revenue in cents) comes near it, so
a value beyond it is a units bug or a sentinel (1e308 standing for "infinity"); and below it the
first three moments of up to 1e9 rewards stay finite in float64 (``(2e12)^3 * 1e9 ~ 1e46``)."""


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
    effective_samples: float = math.nan
    """Effective sample size of both arms' rewards pooled (``n / (1 + skewness^2)``)."""
    clipped_challenger: int = 0
    """Challenger rewards outside the reward range (clipped; any withholds non-inferiority)."""
    clipped_champion: int = 0
    """Champion rewards outside the reward range (clipped; any withholds non-inferiority)."""

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON form."""
        return asdict(self)


def reward_bounds(reward_range: Sequence[float] | None) -> tuple[float, float]:
    """``(low, high)`` of a declared reward range, or ``+-MAX_ABS_REWARD`` when none is declared.

    Raises :class:`ConfigError` for a range that is not two finite numbers ``low < high`` within
    ``+-MAX_ABS_REWARD``.
    """
    if reward_range is None:
        return -MAX_ABS_REWARD, MAX_ABS_REWARD
    try:
        low, high = (float(x) for x in reward_range)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"reward_range must be two numbers [low, high], got {reward_range!r}") from exc
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"reward_range must be finite with low < high, got {reward_range!r}")
    if max(abs(low), abs(high)) > MAX_ABS_REWARD:
        raise ConfigError(f"reward_range {reward_range!r} exceeds +-{MAX_ABS_REWARD:g}: rescale the rewards "
                          "(the test's moments must stay finite)")
    return low, high


@dataclass
class RewardStats:
    """Count, mean, 2nd and 3rd central moment sums, range and clipping count of bounded rewards.

    Batches merge incrementally and exactly (Chan et al. for ``m2``, Pebay 2008 for ``m3``). Values
    outside ``[low, high]`` (including +-inf) are clipped to it and counted in ``clipped``; NaN
    values are missing rewards and are ignored. An arm whose rewards never varied is stored exactly
    (``mean`` is the value, ``m2 = m3 = 0``), so float rounding cannot invent a difference.
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    """Sum of squared deviations from the mean."""
    m3: float = 0.0
    """Sum of cubed deviations from the mean."""
    minimum: float = math.inf
    maximum: float = -math.inf
    clipped: int = 0
    """Values that lay outside ``[low, high]`` and were clipped to it."""
    low: float = -MAX_ABS_REWARD
    high: float = MAX_ABS_REWARD

    def __post_init__(self) -> None:
        self.low, self.high = reward_bounds((self.low, self.high))

    @classmethod
    def for_range(cls, reward_range: Sequence[float] | None = None) -> RewardStats:
        """Empty statistics clipping to ``reward_range`` (``+-MAX_ABS_REWARD`` when None)."""
        low, high = reward_bounds(reward_range)
        return cls(low=low, high=high)

    @classmethod
    def of(cls, values: np.ndarray | RewardStats, reward_range: Sequence[float] | None = None) -> RewardStats:
        """Statistics of an array under ``reward_range``; given statistics must use that same range."""
        low, high = reward_bounds(reward_range)
        if isinstance(values, RewardStats):
            if (values.low, values.high) != (low, high):
                raise ConfigError(f"reward statistics clip to [{values.low:g}, {values.high:g}] but the test "
                                  f"expects [{low:g}, {high:g}]: build them with RewardStats.for_range(reward_range)")
            return values
        stats = cls(low=low, high=high)
        stats.add(values)
        return stats

    def add(self, values: np.ndarray | Sequence[float]) -> None:
        """Merge a batch of rewards (clipped to the range, NaN ignored)."""
        try:
            v = np.asarray(values, dtype=float).ravel()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"rewards must be numbers: {exc}") from exc
        v = v[~np.isnan(v)]
        if v.size == 0:
            return
        outside = (v < self.low) | (v > self.high)
        if outside.any():
            self.clipped += int(outside.sum())
            v = np.clip(v, self.low, self.high)
        lo_b, hi_b = float(v.min()), float(v.max())
        n_b = int(v.size)
        if lo_b == hi_b:
            mean_b, m2_b, m3_b = lo_b, 0.0, 0.0
        else:
            mean_b = float(v.mean())
            dev = v - mean_b
            m2_b, m3_b = float((dev * dev).sum()), float((dev * dev * dev).sum())
        self._merge(n_b, mean_b, m2_b, m3_b, lo_b, hi_b)

    def _merge(self, n_b: int, mean_b: float, m2_b: float, m3_b: float, lo_b: float, hi_b: float) -> None:
        """Fold in another sample's moments (Chan et al. for ``m2``, Pebay 2008 for ``m3``)."""
        n_a, n = self.n, self.n + n_b
        delta = mean_b - self.mean
        self.m3 += (m3_b + delta ** 3 * n_a * n_b * (n_a - n_b) / (n * n)
                    + 3.0 * delta * (n_a * m2_b - n_b * self.m2) / n)
        self.m2 += m2_b + delta * delta * n_a * n_b / n
        self.mean += delta * n_b / n
        self.n = n
        self.minimum, self.maximum = min(self.minimum, lo_b), max(self.maximum, hi_b)
        if self.minimum == self.maximum:  # never varied: exact, whatever the rounding of the merges
            self.mean, self.m2, self.m3 = self.minimum, 0.0, 0.0

    def combined(self, other: RewardStats) -> RewardStats:
        """Statistics of both samples together (for the pooled effective sample)."""
        out = dataclasses.replace(self)
        if other.n:
            out._merge(other.n, other.mean, other.m2, other.m3, other.minimum, other.maximum)
            out.clipped += other.clipped
        return out

    @property
    def variance(self) -> float:
        """Unbiased sample variance."""
        return self.m2 / (self.n - 1) if self.n > 1 else math.nan

    @property
    def effective_samples(self) -> float:
        """``n / (1 + skewness^2)``: ``n`` for symmetric rewards, ~events for rare ones, 0 if constant."""
        if self.n == 0 or not self.m2 > 0 or self.minimum == self.maximum:
            return 0.0
        skew2 = self.n * (self.m3 / self.m2 ** 1.5) ** 2
        return self.n / (1.0 + skew2)

    def regularized_variance(self, low: float, high: float) -> float:
        """The sample variance, floored by one pseudo-reward at ``low`` and one at ``high``.

        The Agresti-Caffo correction generalized to bounded rewards (see the module docstring): never
        below the plain estimate, never zero while ``low < high``; the mean is left as observed.
        ``[low, high]`` is the range observed over both arms.
        """
        if self.n == 0:
            return math.nan
        floor = (self.m2 + (low - self.mean) ** 2 + (high - self.mean) ** 2) / (self.n + 1)
        return max(floor, self.variance) if self.n > 1 else floor


def always_valid_interval(challenger: RewardStats, champion: RewardStats, alpha: float, tau: float
                          ) -> tuple[float, float, float]:
    """(difference, low, high): the mSPRT confidence sequence at the current sample sizes.

    Variances are regularized over the range observed on both arms, so the interval has zero width
    only when every reward on both sides was the same value (then the difference is exactly 0).
    Statistics that are not finite give ``(-inf, inf)``: no verdict.
    """
    d = challenger.mean - champion.mean
    low = min(challenger.minimum, champion.minimum)
    high = max(challenger.maximum, champion.maximum)
    v = (challenger.regularized_variance(low, high) / challenger.n
         + champion.regularized_variance(low, high) / champion.n)
    if not (math.isfinite(d) and math.isfinite(v)):
        return d, -math.inf, math.inf
    if not v > 0:
        return d, d, d
    tau2 = tau * tau
    half = math.sqrt(v * (v + tau2) / tau2 * (2.0 * math.log(1.0 / alpha) + math.log((v + tau2) / v)))
    if not math.isfinite(half):
        return d, -math.inf, math.inf
    return d, d - half, d + half


def sequential_test(challenger: np.ndarray | RewardStats, champion: np.ndarray | RewardStats, alpha: float = 0.1,
                    tau_relative: float = 0.07, rollback_margin: float = 0.0, noninferiority_margin: float = 0.02,
                    min_samples: int = 30, reward_range: Sequence[float] | None = None,
                    min_effective_samples: float = 10.0) -> SequentialResult:
    """Compare rewards; margins are fractions of the champion's mean reward.

    ``worse`` when the interval lies entirely below ``-rollback_margin``; ``non_inferior`` when it
    lies entirely above ``-noninferiority_margin`` *and* the evidence is sound: the pooled effective
    sample reaches ``min_effective_samples`` and no reward was clipped to
    ``reward_range``; otherwise ``continue``. NaN rewards are ignored; fewer than ``min_samples``
    rewards on either side is ``no_data`` (never a decision).
    """
    if not (isinstance(min_samples, int) and min_samples >= 2):
        raise ConfigError(f"min_samples must be an int >= 2 (a variance needs two rewards), got {min_samples!r}")
    c, b = RewardStats.of(challenger, reward_range), RewardStats.of(champion, reward_range)
    clipped = {"clipped_challenger": c.clipped, "clipped_champion": b.clipped}
    clip_note = (f"{c.clipped} challenger and {b.clipped} champion rewards lay outside [{c.low:g}, {c.high:g}] and "
                 "were clipped (fix the rewards or widen reward_range)") if c.clipped or b.clipped else ""
    if c.n < min_samples or b.n < min_samples:
        return SequentialResult(NO_DATA, math.nan, math.nan, math.nan, c.n, b.n,
                                c.mean if c.n else math.nan, b.mean if b.n else math.nan,
                                f"waiting for rewards: {c.n} challenger and {b.n} champion of {min_samples} "
                                "needed on each side" + (f"; {clip_note}" if clip_note else ""), **clipped)
    n_eff = c.combined(b).effective_samples
    scale = abs(b.mean) or math.sqrt(b.variance) or 1.0
    tau = max(tau_relative * scale, 1e-9)
    d, low, high = always_valid_interval(c, b, alpha, tau)
    lower_limit, worse_limit = -noninferiority_margin * scale, -rollback_margin * scale
    interval = f"difference {d:+.4g} [{low:+.4g}, {high:+.4g}] (always valid, alpha={alpha})"
    if high < worse_limit:
        verdict, reason = WORSE, f"challenger worse: {interval} lies below {worse_limit:+.4g}"
    elif low > lower_limit:
        unsound = [clip_note] if clip_note else []
        if not n_eff >= min_effective_samples:
            unsound.append(f"the rewards carry too little information: pooled effective sample {n_eff:.1f} of "
                           f"{min_effective_samples:g} needed (constant or rare rewards cannot tell policies apart)")
        if unsound:
            verdict = CONTINUE
            reason = f"no evidence yet: {interval} lies above {lower_limit:+.4g}, but " + "; ".join(unsound)
        else:
            verdict, reason = NON_INFERIOR, f"challenger non-inferior: {interval} lies above {lower_limit:+.4g}"
    else:
        verdict, reason = CONTINUE, f"inconclusive so far: {interval}"
    if clip_note and clip_note not in reason:
        reason = f"{reason}; {clip_note}"
    return SequentialResult(verdict, d, low, high, c.n, b.n, c.mean, b.mean, reason, n_eff, **clipped)
