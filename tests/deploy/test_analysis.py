"""The sequential test and the canary state machine, on simulated rewards."""

from __future__ import annotations

import numpy as np
import pytest

from rlops_plugin.deploy.analysis import (
    AWAITING_APPROVAL,
    CANARY,
    INCONCLUSIVE,
    PROMOTED,
    ROLLED_BACK,
    SHADOW,
    CanaryAnalysis,
    PromotionPolicy,
)
from rlops_plugin.deploy.sequential import (
    CONTINUE,
    NO_DATA,
    NON_INFERIOR,
    WORSE,
    RewardStats,
    always_valid_interval,
    sequential_test,
)
from rlops_plugin.errors import ConfigError


def test_stats_merge_equals_direct():
    rng = np.random.default_rng(0)
    values = rng.normal(3, 2, 1000)
    merged = RewardStats()
    for part in np.array_split(values, 7):
        merged.add(part)
    merged.add(np.array([np.nan]))
    assert merged.n == 1000
    assert merged.mean == pytest.approx(values.mean()) and merged.variance == pytest.approx(values.var(ddof=1))


def test_verdicts():
    rng = np.random.default_rng(1)
    base = rng.random(20000) < 0.5
    assert sequential_test(rng.random(3000) < 0.40, base).verdict == WORSE
    assert sequential_test(rng.random(3000) < 0.60, base).verdict == NON_INFERIOR
    assert sequential_test(rng.random(50) < 0.5, base[:50]).verdict == CONTINUE
    assert sequential_test(np.array([1.0] * 10), base).verdict == NO_DATA
    nan = sequential_test(np.full(500, np.nan), base)
    assert nan.verdict == NO_DATA and "0 challenger" in nan.reason


def test_interval_is_always_valid_under_the_null():
    """Peeking after every 100 decisions, the interval excludes 0 in far fewer than alpha of runs."""
    rng = np.random.default_rng(2)
    excluded = 0
    for _ in range(200):
        c, b = RewardStats(), RewardStats()
        for _ in range(60):
            c.add(rng.random(50) < 0.5)
            b.add(rng.random(50) < 0.5)
            _, low, high = always_valid_interval(c, b, alpha=0.1, tau=0.035)
            if low > 0 or high < 0:
                excluded += 1
                break
    assert excluded / 200 <= 0.1


def run(policy, ratio, rng, approve_at=None, max_polls=5000):
    analysis = CanaryAnalysis(policy, started_at=0.0)
    chal, champ = RewardStats(), RewardStats()
    states, shadow = [], 0
    for poll in range(max_polls):
        if analysis.state in (PROMOTED, ROLLED_BACK, INCONCLUSIVE):
            break
        n_c = rng.binomial(100, analysis.fraction)
        if analysis.state == SHADOW:
            shadow += 100
        else:
            chal.add((rng.random(n_c) < 0.5 * ratio).astype(float))
            champ.add((rng.random(100 - n_c) < 0.5).astype(float))
        action = analysis.update(chal, champ, now=poll, shadow_seen=shadow,
                                 approved=approve_at is not None and poll >= approve_at)
        states.append((action.state, action.fraction))
    return analysis, states


def test_better_candidate_walks_every_step_then_promotes():
    analysis, states = run(PromotionPolicy(max_duration_s=1e9), 1.2, np.random.default_rng(3))
    assert analysis.state == PROMOTED
    fractions = [f for s, f in states if s == CANARY]
    assert sorted(set(fractions)) == [0.05, 0.25, 0.5] and states[0][0] == SHADOW


def test_worse_candidate_is_rolled_back_before_full_promotion():
    analysis, states = run(PromotionPolicy(max_duration_s=1e9), 0.8, np.random.default_rng(4))
    assert analysis.state == ROLLED_BACK and max(f for _, f in states) < 1.0


def test_equal_candidates_are_rarely_rolled_back_and_never_promoted_early():
    """Repeated simulated canaries: false rollbacks stay within the configured error rate."""
    policy = PromotionPolicy(max_duration_s=300, shadow_decisions=0)
    rng = np.random.default_rng(5)
    outcomes = [run(policy, 1.0, rng)[0] for _ in range(200)]
    rollbacks = sum(a.state == ROLLED_BACK for a in outcomes) / len(outcomes)
    assert rollbacks <= policy.alpha
    for a in outcomes:
        if a.state == PROMOTED:
            assert a.step_index == len(policy.steps) - 1  # only after the last step's test concluded


def test_no_rewards_means_hold_then_inconclusive():
    policy = PromotionPolicy(max_duration_s=10, shadow_decisions=0)
    analysis = CanaryAnalysis(policy, started_at=0.0)
    for t in range(10):
        action = analysis.update(np.array([]), np.array([np.nan] * 100), now=t)
        assert action.state == CANARY and not action.changed and "waiting for rewards" in action.reason
    final = analysis.update(np.array([]), np.array([]), now=11)
    assert final.state == INCONCLUSIVE and final.fraction == 0.0


def test_approval_gates_the_final_promotion():
    policy = PromotionPolicy(require_approval=True, max_duration_s=1e9)
    analysis, states = run(policy, 1.3, np.random.default_rng(6), approve_at=None, max_polls=400)
    assert analysis.state == AWAITING_APPROVAL and states[-1][1] == 0.5
    analysis, _ = run(policy, 1.3, np.random.default_rng(6), approve_at=300, max_polls=2000)
    assert analysis.state == PROMOTED


def test_bad_policies():
    with pytest.raises(ConfigError, match="increasing shares"):
        PromotionPolicy(steps=[0.5, 0.25])
    with pytest.raises(ConfigError, match="alpha"):
        PromotionPolicy(alpha=1.5)


def test_episode_returns_count_only_complete_single_policy_episodes():
    import pandas as pd

    from rlops_plugin.deploy.promotion import episode_returns

    rows = [  # (episode, version, reward, end)
        ("a", "v1", 1.0, None), ("a", "v1", 1.0, "terminated"),            # complete: 2.0 for v1
        ("b", "v2", 1.0, None), ("b", "v2", 1.0, None), ("b", "v2", 1.0, "truncated"),  # complete: 3.0 for v2
        ("c", "v1", 1.0, None), ("c", "v2", 1.0, "terminated"),            # mixed policies: left out
        ("d", "v2", 1.0, None),                                             # not ended: left out
        ("e", "v1", np.nan, "terminated"),                                  # missing reward: left out
        (None, "v1", 5.0, None),                                            # no episode: left out
    ]
    frame = pd.DataFrame(rows, columns=["episode_id", "policy_version", "reward", "episode_end"])
    returns = episode_returns(frame)
    assert {k: v.tolist() for k, v in returns.items()} == {"v1": [2.0], "v2": [3.0]}
    with pytest.raises(ConfigError, match="metric"):
        PromotionPolicy(metric="steps")


def test_episode_samples_count_their_decisions_toward_a_step():
    """With metric="episode" a sample is an episode of many decisions: steps count the decisions."""
    policy = PromotionPolicy(steps=[0.5], shadow_decisions=0, min_decisions_per_step=300, min_samples=15,
                             metric="episode")
    champion, challenger = np.full(40, 160.0) + np.arange(40) % 7, np.full(20, 500.0) - np.arange(20) % 3
    held = CanaryAnalysis(policy, started_at=0.0).update(challenger, champion, now=1.0)
    assert held.state == CANARY and "only 20/300 decisions" in held.reason
    counted = CanaryAnalysis(policy, started_at=0.0).update(challenger, champion, now=1.0,
                                                            challenger_decisions=20 * 500)
    assert counted.state == PROMOTED and counted.test.n_challenger == 20


def test_approval_before_canary_holds_the_challenger_in_shadow_until_approved():
    from rlops_plugin.deploy.analysis import AWAITING_CANARY_APPROVAL

    policy = PromotionPolicy(steps=[0.5], shadow_decisions=10, approve_before_canary=True, min_samples=5)
    analysis = CanaryAnalysis(policy, started_at=0.0)
    rewards = np.ones(50)
    assert analysis.update(rewards, rewards, 1.0, shadow_seen=5).state == SHADOW
    held = analysis.update(rewards, rewards, 2.0, shadow_seen=10)
    assert held.state == AWAITING_CANARY_APPROVAL and held.changed and held.fraction == 0.0
    again = analysis.update(rewards, rewards, 3.0, shadow_seen=40)
    assert again.state == AWAITING_CANARY_APPROVAL and not again.changed and analysis.fraction == 0.0
    opened = analysis.update(rewards, rewards, 4.0, shadow_seen=40, approved=True)
    assert opened.state == CANARY and opened.changed and opened.fraction == 0.5
