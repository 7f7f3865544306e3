"""Canary evidence for agents: per-interaction or per-session rewards by policy version, shadow answers counted.

An interaction's reward is its latest rating normalised to [0, 1] (thumbs up 1, down 0; ``"1-5"`` stars
linear), else its outcome's value (its own, or its session's), else it has none and is left out (counted).
``metric="episode"`` means per session: the mean reward of a conversation's rewarded answers, for sessions
answered by one policy version only (sticky routing keeps them whole). Shadow answers (``role="shadow"``)
are counted, with the ones that errored or timed out, for the shadow step and the canary analysis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin.experience.interactions import join_interactions
from rlops_plugin.experience.records import SHADOW_ROLE
from rlops_plugin.kinds.agent.signals import interaction_reward
from rlops_plugin.kinds.base import CanarySamples


def canary_samples(store: Any, *, model: str | None, since: int, champion: str, challenger: str, metric: str,
                   join: Any) -> CanarySamples:
    """Both versions' reward samples from interactions logged after ``since`` (interaction sequence numbers)."""
    frame = join_interactions(store, join, model=model, since_seq=since).decisions
    rewards = np.array([_reward(row) for row in frame.to_dict("records")], dtype=float)
    frame = frame.assign(reward=rewards)
    versions = frame["policy_version"].to_numpy()
    decided = int(frame.loc[versions == challenger, "interaction_id"].nunique())
    shadow_seen, shadow_failures = shadow_counts(store, model=model, since=since, challenger=challenger)
    details = {"unrewarded_answers": int(np.isnan(rewards).sum()), "rewarded_answers": int((~np.isnan(rewards)).sum())}
    if metric == "episode":
        sessions = session_rewards(frame)
        return CanarySamples(sessions.get(champion, np.array([])), sessions.get(challenger, np.array([])),
                             shadow_seen, decided, shadow_failures, details)
    rewarded = ~np.isnan(rewards)
    return CanarySamples(rewards[(versions == champion) & rewarded], rewards[(versions == challenger) & rewarded],
                         shadow_seen, decided, shadow_failures, details)


def shadow_counts(store: Any, *, model: str | None, since: int, challenger: str) -> tuple[int, int]:
    """``(answered, failed)``: the challenger's shadow records after ``since``."""
    answered = failed = 0
    for _, record in store.iter_interactions(model=model, since_seq=since):
        if record.role != SHADOW_ROLE or record.policy_version != challenger:
            continue
        if record.extra.get("error"):
            failed += 1
        else:
            answered += 1
    return answered, failed


def session_rewards(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Mean reward per session answered by a single policy version, grouped by that version."""
    rated = frame[frame["session_id"].notna() & frame["reward"].notna()]
    if rated.empty:
        return {}
    mixed = frame[frame["session_id"].notna()].groupby("session_id")["policy_version"].nunique()
    single = set(mixed[mixed == 1].index)
    rated = rated[rated["session_id"].isin(single)]
    means = rated.groupby("session_id").agg(version=("policy_version", "first"), reward=("reward", "mean"))
    return {version: group["reward"].to_numpy(dtype=float) for version, group in means.groupby("version")}


def _reward(row: Mapping[str, Any]) -> float:
    value = interaction_reward(row)
    return float("nan") if value is None else value
