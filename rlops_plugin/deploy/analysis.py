"""Canary analysis as a pure state machine: rewards in, actions out (no I/O).

``shadow -> (approval) -> canary step 1 -> ... -> last step -> (approval) -> promote``, or ``rollback`` as soon as
the sequential test shows the challenger worse, or ``inconclusive`` when the maximum duration
passes without a verdict (traffic returns to the champion; nothing is promoted). The controller
(`promotion.py`) feeds it rewards from the decision log and applies its actions to a deployment
target; the benchmark feeds it simulated rewards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rlops_plugin.deploy.sequential import (
    NON_INFERIOR,
    WORSE,
    RewardStats,
    SequentialResult,
    reward_bounds,
    sequential_test,
)
from rlops_plugin.errors import ConfigError

SHADOW, CANARY, AWAITING_APPROVAL, PROMOTED, ROLLED_BACK, INCONCLUSIVE = (
    "shadow", "canary", "awaiting_approval", "promoted", "rolled_back", "inconclusive")
AWAITING_CANARY_APPROVAL = "awaiting_canary_approval"
"""Shadow is complete and ``approve_before_canary`` holds the challenger there until a person approves."""
FINAL = (PROMOTED, ROLLED_BACK, INCONCLUSIVE)


@dataclass
class PromotionPolicy:
    """How a challenger earns promotion."""

    steps: list[float] = field(default_factory=lambda: [0.05, 0.25, 0.5])
    """Canary shares of decisions, in order; promotion follows the last."""
    shadow_decisions: int = 200
    """Decisions scored in shadow before the canary starts (0 skips shadow)."""
    min_decisions_per_step: int = 200
    """Challenger decisions a step must see before it may advance."""
    alpha: float = 0.1
    """Error rate of the two-sided always-valid interval (about alpha/2 per side)."""
    tau_relative: float = 0.07
    """Effect scale of the mSPRT mixture, as a fraction of the champion's mean reward."""
    rollback_margin: float = 0.0
    """Roll back once the challenger is shown worse by more than this fraction of the champion's reward."""
    noninferiority_margin: float = 0.02
    """A step advances once the challenger is shown no worse than this fraction below the champion."""
    min_samples: int = 30
    """Rewards needed on each side before the test may decide anything."""
    min_effective_samples: float = 10.0
    """Pooled effective sample (``n / (1 + skewness^2)`` of both arms' rewards) a step needs to advance
    or promote. It is 0 for rewards that never vary and about the number of events for rare ones,
    so constant or never-converting traffic cannot promote; 10 is the textbook ``np >= 10`` rule of
    the binomial's normal approximation, generalized (`rlops_plugin.deploy.sequential`). Rollback
    needs no minimum."""
    reward_range: tuple[float, float] | None = None
    """Declared ``[low, high]`` of one sample (a decision's reward, or an episode's return). Values
    outside are clipped, counted and reported, and any clipped value withholds advancing and
    promotion (rollback stays possible). ``None``: ``+-1e12`` (``sequential.MAX_ABS_REWARD``)."""
    max_duration_s: float = 3600.0
    """Give up (inconclusive: back to the champion, nothing promoted) after this long."""
    require_approval: bool = False
    """Wait for `rlops approve NAME VERSION` before the final promotion."""
    approve_before_canary: bool = False
    """Keep the challenger in shadow, after its shadow decisions, until `rlops approve NAME VERSION`: a person
    signs off before it answers any user (the same approval then also satisfies ``require_approval``)."""
    poll_interval_s: float = 5.0
    """Seconds between looks at the decision log (the controller loop)."""
    metric: str = "decision"
    """``decision``: per-decision rewards (bandit-like traffic); ``episode``: returns of complete
    episodes played by one policy (episodic traffic with sticky ``routing_key = episode_id``, where
    per-step rewards such as CartPole's constant 1.0 say nothing about policy quality)."""

    def __post_init__(self) -> None:
        if self.metric not in ("decision", "episode"):
            raise ConfigError(f"metric must be 'decision' or 'episode', got {self.metric!r}")
        if not self.steps or any(not 0 < s <= 1 for s in self.steps) or self.steps != sorted(self.steps):
            raise ConfigError(f"promotion steps must be increasing shares in (0, 1], got {self.steps}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must lie in (0, 1), got {self.alpha}")
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int) or self.min_samples < 2:
            raise ConfigError(f"min_samples must be an int >= 2 (a variance needs two rewards), got "
                              f"{self.min_samples!r}")
        if isinstance(self.min_effective_samples, bool) or not isinstance(self.min_effective_samples, (int, float)) \
                or not self.min_effective_samples >= 1:
            raise ConfigError(f"min_effective_samples must be a number >= 1, got {self.min_effective_samples!r}")
        if self.reward_range is not None:
            self.reward_range = reward_bounds(self.reward_range)  # ConfigError names reward_range

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


@dataclass
class Action:
    """What the deployment should do now, and why."""

    state: str
    fraction: float
    changed: bool
    reason: str
    test: SequentialResult | None = None


class CanaryAnalysis:
    """Shadow, canary steps, promote or roll back, from cumulative per-decision rewards."""

    def __init__(self, policy: PromotionPolicy, started_at: float) -> None:
        self.policy = policy
        self.started_at = started_at
        self.state = SHADOW if policy.shadow_decisions > 0 else CANARY
        self.step_index = 0
        self.step_start_challenger = 0

    @property
    def fraction(self) -> float:
        """Current canary share (0 in shadow and after the end)."""
        if self.state in (CANARY, AWAITING_APPROVAL):
            return self.policy.steps[self.step_index]
        return 1.0 if self.state == PROMOTED else 0.0

    def update(self, challenger: np.ndarray | RewardStats, champion: np.ndarray | RewardStats, now: float,
               shadow_seen: int = 0, approved: bool = False, challenger_decisions: int | None = None) -> Action:
        """Advance the state machine with all rewards observed since the canary started.

        Rewards are arrays, or :class:`RewardStats` built with ``RewardStats.for_range(policy.reward_range)``.

        ``challenger_decisions`` counts the challenger's decisions since the start when the samples
        are not decisions (``metric="episode"``: one sample per episode); ``min_decisions_per_step``
        is measured in it.
        """
        p = self.policy
        if self.state in FINAL:
            return Action(self.state, self.fraction, False, "analysis finished")
        if now - self.started_at > p.max_duration_s:
            self.state = INCONCLUSIVE
            return Action(self.state, 0.0, True, f"no verdict within {p.max_duration_s:g}s: back to the champion, "
                                                 "nothing promoted")
        if self.state in (SHADOW, AWAITING_CANARY_APPROVAL):
            if shadow_seen < p.shadow_decisions:
                return Action(SHADOW, 0.0, False, f"shadow: {shadow_seen}/{p.shadow_decisions} decisions scored")
            if p.approve_before_canary and not approved:
                changed = self.state == SHADOW
                self.state = AWAITING_CANARY_APPROVAL
                return Action(AWAITING_CANARY_APPROVAL, 0.0, changed, f"shadow complete ({shadow_seen} decisions): "
                                                                      "waiting for `rlops approve` before the "
                                                                      "challenger serves users")
            self.state = CANARY
            return Action(CANARY, self.fraction, True, f"shadow complete ({shadow_seen} decisions): canary at "
                                                       f"{self.fraction:.0%}")
        test = sequential_test(challenger, champion, p.alpha, p.tau_relative, p.rollback_margin,
                               p.noninferiority_margin, p.min_samples, p.reward_range, p.min_effective_samples)
        if test.verdict == WORSE:
            self.state = ROLLED_BACK
            return Action(ROLLED_BACK, 0.0, True, test.reason, test)
        decided = challenger_decisions if challenger_decisions is not None else test.n_challenger
        step_seen = decided - self.step_start_challenger
        if self.state == AWAITING_APPROVAL:
            if approved:
                self.state = PROMOTED
                return Action(PROMOTED, 1.0, True, f"approved; {test.reason}", test)
            return Action(AWAITING_APPROVAL, self.fraction, False, "waiting for `rlops approve`", test)
        if test.verdict == NON_INFERIOR and step_seen >= p.min_decisions_per_step:
            if self.step_index + 1 < len(p.steps):
                self.step_index += 1
                self.step_start_challenger = decided
                return Action(CANARY, self.fraction, True, f"{test.reason}: canary to {self.fraction:.0%}", test)
            if p.require_approval and not approved:
                self.state = AWAITING_APPROVAL
                return Action(AWAITING_APPROVAL, self.fraction, True, f"{test.reason}; awaiting approval", test)
            self.state = PROMOTED
            return Action(PROMOTED, 1.0, True, test.reason, test)
        why = test.reason if test.verdict != NON_INFERIOR else \
            f"{test.reason}, but only {step_seen}/{p.min_decisions_per_step} decisions in this step"
        return Action(CANARY, self.fraction, False, f"hold at {self.fraction:.0%}: {why}", test)
