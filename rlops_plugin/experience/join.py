"""Joining feedback to decisions: windows, late events, orphans, and per-decision outcomes.

Classification of each stored feedback event, computed at read time (no background job):

* ``joined``: its decision exists and the event happened within ``window_s`` of the decision;
* ``late``: its decision exists but the event came later than the window — kept and counted,
  never used for training;
* ``pending``: no such decision yet, received less than ``grace_s`` ago (the decision may still
  arrive from another server process, or the feedback raced ahead of it);
* ``orphaned``: no such decision and the grace period is over.

A reward event that ends an episode may carry ``payload.terminated`` / ``payload.truncated`` and
the final observation ``payload.next_obs``. Per decision, joined rewards are **summed** (partial
rewards such as click then purchase add up), while the latest rating, correction and outcome win
(a person may revise them).
Idempotent duplicates never get here: the store collapses them on insert.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin.experience.records import ROLE_NAMES, decision_id
from rlops_plugin.experience.store import ExperienceStore

STATUSES = ("joined", "late", "pending", "orphaned")


@dataclass(frozen=True)
class JoinConfig:
    """How feedback is matched to decisions."""

    window_s: float = 3600.0
    """Feedback later than this after its decision is ``late`` (kept out of training)."""
    grace_s: float = 300.0
    """Feedback for an unknown decision waits this long before it counts as ``orphaned``."""


@dataclass
class JoinResult:
    """Per-decision frame with joined feedback, the classified events, and counts."""

    decisions: pd.DataFrame
    events: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


_DECISION_COLUMNS = ("decision_id", "batch_id", "idx", "seq", "ts", "model", "policy_version", "decided_by",
                     "action", "propensity", "obs", "probs", "episode_id", "step", "routing_key", "vetoed",
                     "veto_reason", "shadow_policy", "shadow_probs")


def decisions_frame(store: ExperienceStore, model: str | None = None, since_seq: int = 0,
                    until_seq: int | None = None) -> pd.DataFrame:
    """One row per decision: ids, policy, action, propensity, observation and request extras."""
    cols: dict[str, list[Any]] = {name: [] for name in _DECISION_COLUMNS}
    for seq, b in store.iter_batches(model=model, since_seq=since_seq, until_seq=until_seq):
        extra = b.extra
        n = b.n
        vetoes = {int(v["i"]): v["reason"] for v in extra.get("vetoes", [])}
        cols["decision_id"] += b.decision_ids()
        cols["batch_id"] += [b.batch_id] * n
        cols["idx"] += range(n)
        cols["seq"] += [seq] * n
        cols["ts"] += [b.ts] * n
        cols["model"] += [b.model] * n
        roles = b.decided_by.tolist()
        cols["policy_version"] += [b.policies[k] for k in roles]
        cols["decided_by"] += [ROLE_NAMES[k] for k in roles]
        cols["action"] += b.actions.tolist() if b.actions.ndim == 1 else list(b.actions)
        cols["propensity"] += b.propensities.tolist()
        cols["obs"] += list(b.obs)
        cols["probs"] += list(b.probs) if b.probs is not None else [None] * n
        cols["episode_id"] += extra.get("episode_ids") or [None] * n
        cols["step"] += extra.get("steps") or [None] * n
        cols["routing_key"] += extra.get("routing_keys") or [None] * n
        cols["vetoed"] += [i in vetoes for i in range(n)] if vetoes else [False] * n
        cols["veto_reason"] += [vetoes.get(i) for i in range(n)] if vetoes else [None] * n
        cols["shadow_policy"] += [b.shadow_policy] * n
        cols["shadow_probs"] += list(b.shadow_probs) if b.shadow_probs is not None else [None] * n
    return pd.DataFrame(cols, columns=list(_DECISION_COLUMNS))


def classify_events(store: ExperienceStore, config: JoinConfig, now: float | None = None) -> pd.DataFrame:
    """Every stored feedback event with its ``status`` (joined, late, pending, orphaned)."""
    now = time.time() if now is None else now
    events = pd.DataFrame(store.feedback_rows(), columns=["seq", "idempotency_key", "decision_id", "batch_id", "idx",
                                                           "kind", "value", "action", "payload", "event_ts",
                                                           "received_ts"])
    index = store.batch_index()
    known_ts = events["batch_id"].map(lambda b: index.get(b, (np.nan, 0))[0]).to_numpy(dtype=float)
    known_n = events["batch_id"].map(lambda b: index.get(b, (np.nan, 0))[1]).to_numpy(dtype=float)
    exists = ~np.isnan(known_ts) & (events["idx"].to_numpy(dtype=float) < known_n)
    waiting = now - events["received_ts"].to_numpy(dtype=float) < config.grace_s
    late = events["event_ts"].to_numpy(dtype=float) - known_ts > config.window_s
    events["status"] = np.where(exists, np.where(late, "late", "joined"), np.where(waiting, "pending", "orphaned"))
    return events


def classified_events(store: ExperienceStore, config: JoinConfig, now: float | None = None
                      ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every stored feedback event with its status, and the count per status plus collapsed duplicates."""
    events = classify_events(store, config, now)
    counts = {status: int((events["status"] == status).sum()) for status in STATUSES}
    counts["duplicates"] = store.stats()["feedback_duplicates"]
    return events, counts


def join_feedback(store: ExperienceStore, config: JoinConfig | None = None, model: str | None = None,
                  now: float | None = None, since_seq: int = 0) -> JoinResult:
    """Decisions (after ``since_seq``) with their joined feedback, plus the classified events and counts."""
    config = config or JoinConfig()
    decisions = decisions_frame(store, model=model, since_seq=since_seq)
    events, counts = classified_events(store, config, now)
    joined = events[events["status"] == "joined"]
    if (model is not None or since_seq) and len(joined):
        joined = joined[joined["decision_id"].isin(set(decisions["decision_id"]))]
    rewards = joined[joined["kind"] == "reward"].groupby("decision_id")["value"].agg(["sum", "count"])
    decisions["reward"] = decisions["decision_id"].map(rewards["sum"]) if len(rewards) else np.nan
    decisions["n_rewards"] = decisions["decision_id"].map(rewards["count"]).fillna(0).astype(int) \
        if len(rewards) else 0
    for kind, column, source in (("rating", "rating", "value"), ("correction", "correction", "action"),
                                 ("outcome", "outcome", "payload")):
        latest = joined[joined["kind"] == kind].sort_values("event_ts").groupby("decision_id")[source].last()
        decisions[column] = decisions["decision_id"].map(latest) if len(latest) else None
    reward_events = joined[joined["kind"] == "reward"]
    terminal, final_obs = {}, {}
    for did, payload in zip(reward_events["decision_id"].tolist(), reward_events["payload"].tolist(), strict=True):
        if payload and (payload.get("terminated") or payload.get("truncated")):
            terminal[did] = "terminated" if payload.get("terminated") else "truncated"
            if isinstance(payload.get("next_obs"), list):
                final_obs[did] = np.asarray(payload["next_obs"], dtype=np.float32)
    decisions["episode_end"] = decisions["decision_id"].map(terminal) if terminal else None
    decisions["final_obs"] = decisions["decision_id"].map(final_obs) if final_obs else None
    late = events[events["status"] == "late"]["decision_id"]
    decisions["late_feedback"] = decisions["decision_id"].isin(set(late))
    return JoinResult(decisions=decisions, events=events, counts=counts)


__all__ = ["JoinConfig", "JoinResult", "STATUSES", "classified_events", "classify_events", "decision_id",
           "decisions_frame", "join_feedback"]
