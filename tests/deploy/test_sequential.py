"""The sequential test never promotes without evidence: zero variance, no information, absurd rewards.

Each case here once made a challenger be promoted: constant rewards on both sides (CartPole's +1 per
step), a challenger that never converts against a 0.1% champion, and rewards near 1e308.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlops_plugin.deploy.analysis import (
    CANARY,
    FINAL,
    INCONCLUSIVE,
    PROMOTED,
    ROLLED_BACK,
    Action,
    CanaryAnalysis,
    PromotionPolicy,
)
from rlops_plugin.deploy.promotion import _test_metrics
from rlops_plugin.deploy.sequential import (
    CONTINUE,
    MAX_ABS_REWARD,
    NON_INFERIOR,
    WORSE,
    RewardStats,
    always_valid_interval,
    sequential_test,
)
from rlops_plugin.errors import ConfigError

FAST = PromotionPolicy(steps=[0.2, 0.5], shadow_decisions=60, min_decisions_per_step=60, max_duration_s=900)
"""The controller tests' quick policy: small steps are where too little evidence used to promote."""


def simulate(policy: PromotionPolicy, challenger_draw, champion_draw, rng: np.random.Generator,
             max_polls: int = 400, poll_every: int = 100) -> CanaryAnalysis:
    """One canary, the challenger's rewards handed over as the whole array each look (as the controller does)."""
    analysis = CanaryAnalysis(policy, started_at=0.0)
    chal: list[np.ndarray] = []
    champ = RewardStats.for_range(policy.reward_range)
    shadow = 0
    for poll in range(max_polls):
        if analysis.state in FINAL:
            break
        n_c = rng.binomial(poll_every, analysis.fraction)
        if analysis.state == "shadow":
            shadow += poll_every
        else:
            chal.append(challenger_draw(rng, n_c))
            champ.add(champion_draw(rng, poll_every - n_c))
        analysis.update(np.concatenate(chal) if chal else np.array([]), champ, now=poll, shadow_seen=shadow)
    return analysis


# ----- statistics -------------------------------------------------------------------------------
def test_moments_merge_equals_direct():
    rng = np.random.default_rng(0)
    values = rng.exponential(2.0, 1000)
    merged = RewardStats()
    for part in np.array_split(values, 9):
        merged.add(part)
    dev = values - values.mean()
    assert merged.n == 1000 and merged.mean == pytest.approx(values.mean())
    assert merged.m2 == pytest.approx((dev ** 2).sum()) and merged.m3 == pytest.approx((dev ** 3).sum())
    assert (merged.minimum, merged.maximum) == (values.min(), values.max())
    pooled = RewardStats.of(values[:300]).combined(RewardStats.of(values[300:]))
    assert pooled.m3 == pytest.approx(merged.m3) and pooled.n == 1000


def test_effective_sample_is_n_for_symmetric_events_for_rare_and_zero_for_constant():
    assert RewardStats.of(np.tile([0.0, 1.0], 500)).effective_samples == pytest.approx(1000)
    rare = RewardStats.of(np.r_[np.ones(10), np.zeros(9990)])
    assert rare.effective_samples == pytest.approx(10, rel=0.01)  # about the number of events
    assert RewardStats.of(np.full(10_000, 1.0)).effective_samples == 0.0
    normal = RewardStats.of(np.random.default_rng(1).normal(5, 1, 4000))
    assert normal.effective_samples > 3900


def test_constant_rewards_are_stored_exactly_whatever_the_rounding():
    a, b = RewardStats(), RewardStats()
    for size in (7, 13, 101, 3):
        a.add(np.full(size, 0.1))
    b.add(np.full(1234, 0.1))
    assert a.mean == b.mean == 0.1 and a.m2 == a.m3 == 0.0
    result = sequential_test(a, b, min_samples=10)
    assert result.difference == 0.0 and result.verdict != WORSE


def test_zero_observed_variance_gets_the_agresti_caffo_variance():
    """0 conversions in n: the variance is that of one success and one failure added, not zero."""
    zeros = RewardStats.of(np.zeros(99))
    assert zeros.regularized_variance(0.0, 1.0) == pytest.approx(1 / 100)
    half = RewardStats.of(np.tile([0.0, 1.0], 50))  # where the plain estimate already holds: unchanged
    assert half.regularized_variance(0.0, 1.0) == half.variance
    d, low, high = always_valid_interval(zeros, RewardStats.of(np.tile([0.0, 1.0], 500)), alpha=0.1, tau=0.035)
    assert d == -0.5 and high - low > 0.1


def test_non_finite_statistics_give_no_verdict():
    broken = RewardStats(n=100, mean=math.inf, m2=math.nan, minimum=0.0, maximum=math.inf)
    fine = RewardStats.of(np.tile([0.0, 1.0], 100))
    assert always_valid_interval(broken, fine, 0.1, 0.035)[1:] == (-math.inf, math.inf)
    assert sequential_test(broken, fine).verdict == CONTINUE


# ----- verdicts without evidence ----------------------------------------------------------------
def test_constant_rewards_on_both_sides_never_show_non_inferiority():
    """CartPole's +1 per step under the per-decision metric: equal, and no information at all."""
    result = sequential_test(np.ones(5000), np.ones(50_000))
    assert result.verdict == CONTINUE and result.difference == 0.0 and result.effective_samples == 0.0
    assert "too little information" in result.reason and "effective sample 0.0 of 10" in result.reason


def test_constant_rewards_canary_never_advances_and_ends_inconclusive():
    policy = PromotionPolicy(shadow_decisions=0, max_duration_s=300)
    analysis = simulate(policy, lambda rng, n: np.ones(n), lambda rng, n: np.ones(n), np.random.default_rng(2))
    assert analysis.state == INCONCLUSIVE and analysis.step_index == 0


@pytest.mark.parametrize("events", [0, 1, 2, 5, 20, 40])
def test_a_challenger_that_never_converts_is_never_non_inferior(events):
    champion = np.zeros(40_000)
    champion[:events] = 1.0  # 0.1% at 40 events
    result = sequential_test(np.zeros(2000), champion)
    assert result.verdict != NON_INFERIOR, result.reason
    if events == 0:  # nothing converted anywhere: the interval is a point at 0, the evidence is nil
        assert result.verdict == CONTINUE and "too little information" in result.reason
    else:  # the champion converted: the difference itself lies below the margin
        assert result.difference == -events / 40_000 and result.ci_low < result.difference


def test_zero_conversion_canaries_are_never_promoted():
    """200 quick canaries against a 0.1% champion: the old test promoted about three in four."""
    rng = np.random.default_rng(3)
    never = lambda rng, n: np.zeros(n)  # noqa: E731
    champion = lambda rng, n: (rng.random(n) < 0.001).astype(float)  # noqa: E731
    outcomes = [simulate(FAST, never, champion, rng, max_polls=150).state for _ in range(200)]
    assert PROMOTED not in outcomes and all(s in (CANARY, ROLLED_BACK) for s in outcomes)


def test_the_effective_sample_minimum_is_configurable():
    """Two constant arms at different values: 80 pooled samples, enough for the default 10, not for 100."""
    better, base = np.ones(40), np.full(40, 0.5)
    assert sequential_test(better, base).verdict == NON_INFERIOR
    held = sequential_test(better, base, min_effective_samples=100)
    assert held.verdict == CONTINUE and "effective sample 80.0 of 100" in held.reason
    assert sequential_test(base, better).verdict == WORSE  # rollback needs no minimum


# ----- bounded rewards --------------------------------------------------------------------------
def test_huge_rewards_are_clipped_counted_and_never_promote():
    rng = np.random.default_rng(4)
    champion = (rng.random(20_000) < 0.5).astype(float)
    result = sequential_test((rng.random(2000) < 0.5) * 1e308, champion)
    assert result.verdict == CONTINUE and result.clipped_challenger > 900 and result.clipped_champion == 0
    assert math.isfinite(result.challenger_mean) and result.challenger_mean <= MAX_ABS_REWARD
    assert "were clipped" in result.reason
    metrics = _test_metrics(Action("canary", 0.05, False, result.reason, result))
    assert metrics["challenger_rewards_clipped"] == result.clipped_challenger


def test_huge_reward_canaries_are_never_promoted():
    huge = lambda rng, n: (rng.random(n) < 0.5) * 1e308  # noqa: E731
    fair = lambda rng, n: (rng.random(n) < 0.5).astype(float)  # noqa: E731
    rng = np.random.default_rng(5)
    for _ in range(20):
        analysis = simulate(FAST, huge, fair, rng, max_polls=60)
        assert analysis.state == CANARY and analysis.step_index == 0


def test_infinite_rewards_are_clipped_and_nan_rewards_are_missing():
    stats = RewardStats.of(np.array([np.inf, -np.inf, np.nan, 0.5]))
    assert stats.n == 3 and stats.clipped == 2 and (stats.minimum, stats.maximum) == (-MAX_ABS_REWARD, MAX_ABS_REWARD)


def test_a_declared_range_clips_and_withholds_promotion():
    policy = PromotionPolicy(steps=[0.5], shadow_decisions=0, min_decisions_per_step=10, reward_range=[0, 1])
    assert policy.reward_range == (0.0, 1.0) and policy.to_dict()["reward_range"] == (0.0, 1.0)
    rng = np.random.default_rng(6)
    good, base = (rng.random(3000) < 0.7).astype(float), (rng.random(3000) < 0.5).astype(float)
    assert CanaryAnalysis(policy, 0.0).update(good, base, now=1.0).state == PROMOTED
    good[:3] = 1.5  # three rewards beyond the declared range
    held = CanaryAnalysis(policy, 0.0).update(good, base, now=1.0)
    assert held.state == CANARY and held.test.clipped_challenger == 3 and "widen reward_range" in held.reason
    assert held.test.challenger_mean <= 1.0
    worse = CanaryAnalysis(policy, 0.0).update(np.r_[base[:2000] * 0.5, [-7.0]], base, now=1.0)
    assert worse.state == ROLLED_BACK  # clipping never stops a rollback


# ----- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("reward_range, match", [
    ((1.0, 0.0), "low < high"),
    ((0.0, math.inf), "finite"),
    ((0.0, 1e300), "exceeds"),
    ((0.0,), "two numbers"),
    (("a", "b"), "two numbers"),
])
def test_bad_reward_ranges(reward_range, match):
    with pytest.raises(ConfigError, match=match):
        PromotionPolicy(reward_range=reward_range)
    with pytest.raises(ConfigError, match=match):
        sequential_test(np.ones(50), np.ones(50), reward_range=reward_range)


def test_statistics_must_match_the_declared_range():
    with pytest.raises(ConfigError, match=r"RewardStats.for_range\(reward_range\)"):
        sequential_test(RewardStats.of(np.ones(50)), np.ones(50), reward_range=(0, 1))
    stats = RewardStats.for_range((0, 1))
    stats.add(np.ones(50))
    assert sequential_test(stats, np.ones(50), reward_range=(0, 1)).n_challenger == 50


def test_bad_rewards_and_sample_minimums():
    with pytest.raises(ConfigError, match="rewards must be numbers"):
        RewardStats().add(["high", "low"])
    with pytest.raises(ConfigError, match="min_samples must be an int >= 2"):
        sequential_test(np.ones(50), np.ones(50), min_samples=1)
    with pytest.raises(ConfigError, match="min_samples must be an int >= 2"):
        PromotionPolicy(min_samples=1)
    with pytest.raises(ConfigError, match="min_effective_samples must be a number >= 1"):
        PromotionPolicy(min_effective_samples=0)
