"""Canary evidence for agents: per-interaction or per-session rewards by policy version, shadow answers counted.

An interaction's reward is its latest rating normalised to [0, 1] (thumbs up 1, down 0; ``"1-5"`` stars
linear), else its outcome's value (its own, or its session's), else it has none and is left out (counted).
``metric="episode"`` means per session: the mean reward of a conversation's rewarded answers, for sessions
answered by one policy version only (sticky routing keeps them whole). Shadow answers (``role="shadow"``)
are counted, with the ones that errored or timed out, for the shadow step and the canary analysis, and
:func:`shadow_comparison` has a judge compare them pairwise with the champion's answers (RLAIF).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ShadowComparison:
    """A judge's verdicts on the shadow challenger's answers against the champion's answers to the same requests."""

    judge: str
    pairs: int
    challenger_wins: int
    champion_wins: int
    ties: int
    failed: int
    """Comparisons the judge could not make (and shadow answers that errored are not pairs: ``shadow_failures``)."""
    shadow_failures: int
    win_rate: float
    """Challenger wins over decided comparisons (NaN when none was decided)."""
    win_rate_ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (audit details, reports)."""
        return dataclasses.asdict(self)


def shadow_comparison(store: Any, judge: Any, *, model: str | None, challenger: str, since: int = 0,
                      confidence: float = 0.95, task_of: Callable[[list[dict[str, Any]]], Any] | None = None
                      ) -> ShadowComparison:
    """Judge every shadow answer of ``challenger`` against the champion's answer it shadowed (RLAIF), pairwise.

    The challenger's answer is shown as ``a`` in every other pair and as ``b`` in the rest, so a judge that
    prefers one position cannot make either policy look better. ``judge``: a :class:`~.judges.Judge`;
    ``task_of(messages)`` may give a code judge the task (its expected outcome) of a logged conversation.
    """
    from rlops_plugin.kinds.agent.judges import label_pairs, wilson_interval
    from rlops_plugin.kinds.agent.signals import assistant_message

    served: dict[str, Any] = {}
    shadows = []
    for _, record in store.iter_interactions(model=model, since_seq=since):
        if record.role == SHADOW_ROLE:
            if record.policy_version == challenger:
                shadows.append(record)
        else:
            served[record.interaction_id] = record
    failures = sum(1 for r in shadows if r.extra.get("error"))
    items, challenger_is_a = [], []
    for record in shadows:
        original = served.get(record.extra.get("shadow_of"))
        if record.extra.get("error") or not record.choices or original is None or not original.choices:
            continue
        mine = assistant_message(record.choices[0]["content"], record.choices[0]["tool_calls"])
        theirs = assistant_message(original.choices[0]["content"], original.choices[0]["tool_calls"])
        first = len(items) % 2 == 0
        messages = [m for m in original.request.get("messages") or [] if m.get("role") != "system"]
        tools = original.request.get("tools") or None
        task = task_of(messages) if task_of is not None else None
        items.append((messages, mine, theirs, tools, task) if first else (messages, theirs, mine, tools, task))
        challenger_is_a.append(first)
    judged = label_pairs(judge, items, max_failure_rate=1.0)
    wins = losses = 0
    for comparison, mine_first in zip(judged.comparisons, challenger_is_a, strict=True):
        if comparison.winner in ("a", "b"):
            if (comparison.winner == "a") == mine_first:
                wins += 1
            else:
                losses += 1
    decided = wins + losses
    return ShadowComparison(judge.name, len(items), wins, losses, judged.ties, judged.failed, failures,
                            wins / decided if decided else float("nan"),
                            wilson_interval(wins, decided, confidence) if decided else (float("nan"), float("nan")))
