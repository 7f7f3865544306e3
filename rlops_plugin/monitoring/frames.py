"""The monitoring frame: one flat row per decision of one policy version, rewards and returns joined.

Columns: ``seq, ts, batch_id, idx, policy_version, episode_id, step`` (where it came from),
``obs_0..obs_{d-1}``, ``action`` (Discrete) or ``action_0..`` (Box), ``propensity``,
``prob_0..prob_{k-1}`` and ``entropy`` (Discrete), then, once feedback is attached, ``reward``
(joined rewards summed, as in :func:`rlops_plugin.experience.join.join_feedback`),
``episode_end`` and ``episode_return`` (set on the row that ends an episode whose every reward is
known). A reference frame (rollouts, a production window, a file) has the same columns.

Built with numpy per stored batch rather than through ``decisions_frame``/``join_feedback``: the
monitor reads hundreds of thousands of decisions, and those build Python objects per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin.experience.join import JoinConfig, classify_events
from rlops_plugin.experience.store import ExperienceStore
from rlops_plugin.monitoring.config import MonitorError

ID_COLUMNS = ("seq", "ts", "batch_id", "idx", "policy_version", "episode_id", "step")


@dataclass
class LoadedDecisions:
    """Decisions read from the store, and how far the read went."""

    frame: pd.DataFrame
    last_seq: int
    """Highest batch sequence number read (pass it as ``since_seq`` to read only newer batches)."""
    exploration: dict[str, Any] | None = None
    """The exploration config logged with the latest batch (used to roll out a matching reference)."""


def load_decisions(store: ExperienceStore, *, policy_version: str | None = None, model: str | None = None,
                   since_seq: int = 0, until_seq: int | None = None, limit: int | None = None) -> LoadedDecisions:
    """Decisions of ``policy_version`` (all versions when ``None``) served as ``model``, in log order.

    Reads batches with ``since_seq < seq <= until_seq``; with ``limit``, stops after the batch that
    reaches ``limit`` decisions (whole batches: the frame may hold a few more rows).
    """
    until = store.max_seq() if until_seq is None else until_seq
    parts: dict[str, list[Any]] = {k: [] for k in ("seq", "ts", "batch_id", "idx", "policy", "episode", "step",
                                                   "obs", "action", "propensity", "probs")}
    count = 0
    last_seq = since_seq
    exploration = None
    obs_dim = n_actions = None
    for seq, batch in store.iter_batches(model=model, since_seq=since_seq, until_seq=until):
        last_seq = seq
        if policy_version is None:
            rows = np.arange(batch.n)
        else:
            if policy_version not in batch.policies:
                continue
            code = batch.policies.index(policy_version)
            rows = np.flatnonzero(batch.decided_by == code)
            if rows.size == 0:
                continue
        exploration = batch.extra.get("exploration", exploration)
        if obs_dim is None:
            obs_dim = batch.obs.shape[1]
            n_actions = None if batch.probs is None else batch.probs.shape[1]
        elif batch.obs.shape[1] != obs_dim:
            raise MonitorError(f"batch {batch.batch_id}: {batch.obs.shape[1]} observation features, earlier "
                               f"batches had {obs_dim}; monitor one policy version at a time")
        k = rows.size
        parts["seq"].append(np.full(k, seq, dtype=np.int64))
        parts["ts"].append(np.full(k, batch.ts))
        parts["batch_id"].append(np.full(k, batch.batch_id, dtype=object))
        parts["idx"].append(rows)
        parts["policy"].append(np.asarray(batch.policies, dtype=object)[batch.decided_by[rows]])
        episodes = batch.extra.get("episode_ids")
        parts["episode"].append(np.asarray(episodes, dtype=object)[rows] if episodes else np.full(k, None, object))
        steps = batch.extra.get("steps")
        parts["step"].append(np.asarray([np.nan if s is None else s for s in steps], dtype=np.float64)[rows]
                             if steps else np.full(k, np.nan))
        parts["obs"].append(batch.obs[rows])
        parts["action"].append(batch.actions[rows])
        parts["propensity"].append(batch.propensities[rows])
        if n_actions is not None:
            probs = batch.probs[rows] if batch.probs is not None else np.full((k, n_actions), np.nan)
            parts["probs"].append(probs)
        count += k
        if limit is not None and count >= limit:
            break
    if count == 0:
        return LoadedDecisions(empty_frame(), last_seq, exploration)
    frame = build_frame(
        obs=np.concatenate(parts["obs"]), actions=np.concatenate(parts["action"]),
        propensities=np.concatenate(parts["propensity"]),
        probs=np.concatenate(parts["probs"]) if parts["probs"] else None,
        ids={"seq": np.concatenate(parts["seq"]), "ts": np.concatenate(parts["ts"]),
             "batch_id": np.concatenate(parts["batch_id"]), "idx": np.concatenate(parts["idx"]),
             "policy_version": np.concatenate(parts["policy"]), "episode_id": np.concatenate(parts["episode"]),
             "step": np.concatenate(parts["step"])})
    return LoadedDecisions(frame, last_seq, exploration)


def build_frame(obs: np.ndarray, actions: np.ndarray, propensities: np.ndarray, probs: np.ndarray | None,
                ids: dict[str, Any] | None = None) -> pd.DataFrame:
    """The monitoring columns from arrays (also used by the rollout reference builder)."""
    obs = np.asarray(obs, dtype=np.float64)
    n = obs.shape[0]
    data: dict[str, Any] = dict(ids or {})
    for i in range(obs.shape[1]):
        data[f"obs_{i}"] = obs[:, i]
    actions = np.asarray(actions)
    if actions.ndim == 1:
        data["action"] = actions.astype(np.int64)
    else:
        for j in range(actions.shape[1]):
            data[f"action_{j}"] = actions[:, j].astype(np.float64)
    data["propensity"] = np.asarray(propensities, dtype=np.float64)
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        for k in range(probs.shape[1]):
            data[f"prob_{k}"] = probs[:, k]
        data["entropy"] = entropy(probs)
    frame = pd.DataFrame(data, index=pd.RangeIndex(n))
    return frame


def empty_frame() -> pd.DataFrame:
    """A frame with the id columns and no rows."""
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("batch_id", "policy_version", "episode_id") else float)
                         for c in ID_COLUMNS})


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of a probability matrix (``0 log 0 = 0``)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    out = -terms.sum(axis=1)
    out[np.isnan(p).any(axis=1)] = np.nan
    return out


def attach_feedback(frame: pd.DataFrame, store: ExperienceStore, config: JoinConfig | None = None,
                    now: float | None = None) -> pd.DataFrame:
    """Add ``reward`` (joined rewards summed, NaN when none yet), ``n_rewards`` and ``episode_end``."""
    out = frame.copy()
    if out.empty:
        for column in ("reward", "n_rewards", "episode_end"):
            out[column] = pd.Series(dtype=float if column != "episode_end" else object)
        return out
    events = classify_events(store, config or JoinConfig(), now)
    rewards = events[(events["status"] == "joined") & (events["kind"] == "reward")]
    ids = out["batch_id"].astype(str) + "-" + out["idx"].astype(np.int64).astype(str)
    if rewards.empty:
        out["reward"] = np.nan
        out["n_rewards"] = 0
        out["episode_end"] = None
        return out
    grouped = rewards.groupby("decision_id")["value"].agg(["sum", "count"])
    out["reward"] = ids.map(grouped["sum"]).astype(float)
    out["n_rewards"] = ids.map(grouped["count"]).fillna(0).astype(int)
    ends = rewards.assign(end=rewards["payload"].map(_episode_end)).dropna(subset=["end"])
    end_by_id = ends.groupby("decision_id")["end"].last()
    out["episode_end"] = ids.map(end_by_id) if len(end_by_id) else None
    return out


def _episode_end(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    if payload.get("terminated"):
        return "terminated"
    if payload.get("truncated"):
        return "truncated"
    return None


@dataclass
class EpisodeCarry:
    """Running return of episodes still open at the end of the rows seen so far."""

    sums: dict[Any, float] = field(default_factory=dict)
    missing: dict[Any, int] = field(default_factory=dict)


def add_episode_returns(frame: pd.DataFrame, carry: EpisodeCarry | None = None) -> EpisodeCarry:
    """Set ``episode_return`` on the row ending each episode; return the carry of open episodes.

    A return is NaN unless every reward of the episode is known and its first step is in view
    (``step == 0`` or carried in from earlier rows): a partial sum is not a return.
    """
    carry = carry or EpisodeCarry()
    frame["episode_return"] = np.nan
    if frame.empty or "episode_id" not in frame or "reward" not in frame:
        return carry
    has = frame["episode_id"].notna().to_numpy()
    if not has.any():
        return carry
    sub = frame.loc[has, ["episode_id", "reward"]].copy()
    sub["step"] = frame.loc[has, "step"] if "step" in frame else np.nan
    sub["end"] = frame.loc[has, "episode_end"].notna() if "episode_end" in frame else False
    episode = sub["episode_id"]
    reward = pd.to_numeric(sub["reward"], errors="coerce")
    csum = reward.fillna(0.0).groupby(episode, sort=False).cumsum()
    cmiss = reward.isna().astype(np.int64).groupby(episode, sort=False).cumsum()
    first = ~episode.duplicated()
    carried = episode.isin(carry.sums.keys())
    unseen_start = first & ~carried & sub["step"].notna() & (sub["step"] != 0)
    unknown = set(episode[unseen_start])
    total = csum + episode.map(carry.sums).fillna(0.0)
    miss = cmiss + episode.map(carry.missing).fillna(0).astype(np.int64) + episode.isin(unknown).astype(np.int64)
    returns = total.where(sub["end"] & (miss == 0))
    frame.loc[has, "episode_return"] = returns.to_numpy()
    last = ~episode.duplicated(keep="last")
    open_rows = last & ~sub["end"]
    ended = set(episode[sub["end"]])
    sums = {k: v for k, v in carry.sums.items() if k not in ended}
    missing = {k: v for k, v in carry.missing.items() if k not in ended}
    for key, value, gap in zip(episode[open_rows], total[open_rows], miss[open_rows], strict=True):
        sums[key] = float(value)
        missing[key] = int(gap)
    for key in ended:
        sums.pop(key, None)
        missing.pop(key, None)
    return EpisodeCarry(sums, missing)
