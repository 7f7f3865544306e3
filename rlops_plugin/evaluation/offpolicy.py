"""Off-policy estimates of a candidate from the champion's logged decisions.

Adapts the decision log to the estimators in :mod:`rlops_plugin.evaluation.ope`: one-step
traffic (decisions without ``episode_id``) goes to IPS/SNIPS/DM/DR, episodic traffic to PDWIS
(and FQE when asked). The candidate's target distribution is its softmax over the logged
observations; the behaviour propensities are the ones the server logged with every decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from rlops_plugin.bundle.policy import Policy
from rlops_plugin.evaluation.ope import (
    Episode,
    OPEError,
    OPEEstimate,
    episodes_to_transitions,
    evaluate_bandit,
    fitted_q_evaluation,
    per_decision_wis,
)
from rlops_plugin.experience.join import JoinConfig, join_feedback
from rlops_plugin.experience.store import ExperienceStore


@dataclass
class LogEstimate:
    """Estimates for the candidate, the logged policy's own (on-policy) value, and data counts."""

    kind: str
    estimates: dict[str, OPEEstimate]
    behaviour_value: float
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "behaviour_value": self.behaviour_value, "counts": self.counts,
                "estimates": {k: v.to_dict() for k, v in self.estimates.items()}}


def target_probabilities(policy: Policy, obs: np.ndarray) -> np.ndarray:
    """The candidate's action distribution on logged observations (Discrete)."""
    if not policy.discrete:
        raise OPEError("off-policy estimates from the log need a Discrete action space")
    with torch.inference_mode():
        return torch.softmax(policy.network(torch.as_tensor(np.asarray(obs, np.float32))), -1).numpy().astype(float)


def estimate_from_log(store: ExperienceStore, model: str, candidate: Policy, *,
                      policy_versions: list[str] | None = None, gamma: float = 0.99, confidence: float = 0.95,
                      join: JoinConfig | None = None, with_fqe: bool = False, now: float | None = None,
                      seed: int = 0) -> LogEstimate:
    """Estimate ``candidate``'s value from ``model``'s logged, rewarded decisions."""
    frame = join_feedback(store, join, model=model, now=now).decisions
    if policy_versions is not None:
        frame = frame[frame["policy_version"].isin(policy_versions)]
    rewarded = frame[frame["reward"].notna()]
    counts = {"decisions": len(frame), "rewarded": len(rewarded)}
    if rewarded.empty:
        raise OPEError(f"no rewarded decisions of model {model!r} to estimate from (n == 0)")
    if rewarded["episode_id"].isna().all():
        return _bandit(rewarded, candidate, confidence, seed, counts)
    return _episodic(rewarded, candidate, gamma, confidence, with_fqe, seed, counts)


def _bandit(frame: pd.DataFrame, candidate: Policy, confidence: float, seed: int,
            counts: dict[str, int]) -> LogEstimate:
    obs = np.stack(frame["obs"].to_numpy())
    behavior = frame["probs"].to_numpy()
    behavior_probs = np.stack(behavior) if all(p is not None for p in behavior) else None
    estimates = evaluate_bandit(frame["reward"].to_numpy(float), frame["action"].to_numpy(np.int64),
                                frame["propensity"].to_numpy(float), target_probabilities(candidate, obs),
                                contexts=obs, behavior_probs=behavior_probs, confidence=confidence, seed=seed)
    return LogEstimate("bandit", estimates, float(frame["reward"].mean()), counts)


def _episodic(frame: pd.DataFrame, candidate: Policy, gamma: float, confidence: float, with_fqe: bool,
              seed: int, counts: dict[str, int]) -> LogEstimate:
    episodes, returns = [], []
    for _, ep in frame[frame["episode_id"].notna()].groupby("episode_id", sort=True):
        ep = ep.sort_values(["step", "seq"])
        ends = ep["episode_end"].dropna()
        steps = ep["step"].to_numpy(float)
        contiguous = len(ep) == 1 or bool(np.all(np.diff(steps) == 1))
        if ends.empty or ep["episode_end"].iloc[-1] is None or not contiguous or steps[0] != 0:
            continue  # incomplete episodes can't be scored from their start
        obs = np.stack(ep["obs"].to_numpy())
        final = ep["final_obs"].iloc[-1] if "final_obs" in ep else None
        last = final if isinstance(final, np.ndarray) else obs[-1]
        all_obs = np.vstack([obs, last[None]])
        probs = target_probabilities(candidate, all_obs)
        actions = ep["action"].to_numpy(np.int64)
        rewards = ep["reward"].to_numpy(float)
        episodes.append(Episode(rewards=rewards, propensities=ep["propensity"].to_numpy(float),
                                target_action_probs=probs[np.arange(len(actions)), actions], obs=all_obs,
                                actions=actions, target_probs=probs,
                                terminated=ep["episode_end"].iloc[-1] == "terminated"))
        returns.append(float(np.sum(rewards * gamma ** np.arange(len(rewards)))))
    counts["complete_episodes"] = len(episodes)
    if not episodes:
        raise OPEError("no complete episodes (from step 0 to a terminal or truncated step) in the log (n == 0)")
    estimates = {"pdwis": per_decision_wis(episodes, gamma, confidence, seed=seed)}
    if with_fqe:
        tr = episodes_to_transitions(episodes)
        ids = tr.pop("episode_ids")
        estimates["fqe"] = fitted_q_evaluation(**tr, gamma=gamma, confidence=confidence, episode_ids=ids)
    return LogEstimate("episodic", estimates, float(np.mean(returns)), counts)
