"""References to compare windows with: the champion's rollouts, a production window, or a file.

* :func:`rollout_reference` rolls the bundle's policy out in its own ``EnvSpec`` simulator, the way
  production traffic arrives (``n_envs`` episodes in lockstep, the serving exploration), scoring each
  step with the bundle's ``RewardSpec``: what the champion's evaluation looks like.
* :func:`production_reference` takes a chosen window of the policy's own logged traffic.
* :func:`read_reference` / :func:`write_reference`: a frame with the monitoring columns
  (:mod:`.frames`) in Parquet or CSV, for references built elsewhere.

Keep reference rows in log order: calibration cuts the reference into consecutive windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.env_spec import EnvSpec
from rlops_plugin.experience.join import JoinConfig
from rlops_plugin.experience.store import ExperienceStore
from rlops_plugin.monitoring.config import MonitorError
from rlops_plugin.monitoring.frames import (
    EpisodeCarry,
    add_episode_returns,
    attach_feedback,
    build_frame,
    load_decisions,
)


def rollout_reference(bundle: PolicyBundle, decisions: int = 50_000, *, n_envs: int = 16, seed: int = 0,
                      exploration: Any = None, env_spec: EnvSpec | None = None) -> pd.DataFrame:
    """``decisions`` rows of the policy acting in its simulator, with rewards, episode ends and returns.

    ``exploration`` (an ``ExplorationConfig`` or its dict, as logged with each decision batch) makes
    the executed distribution match the deployment's; the default samples the policy's own softmax.
    """
    import torch

    from rlops_plugin.bundle.policy import sample_categorical
    from rlops_plugin.serving.exploration import ExplorationConfig, executed_distribution

    if decisions < 1 or n_envs < 1:
        raise MonitorError(f"rollout reference: decisions and n_envs must be positive, got {decisions}, {n_envs}")
    if isinstance(exploration, Mapping):
        exploration = ExplorationConfig(**{k: v for k, v in exploration.items()
                                           if k in ("mode", "epsilon", "temperature", "max_epsilon")})
    exploration = exploration or ExplorationConfig()
    spec = env_spec or bundle.env_spec
    policy = bundle.policy
    rng = np.random.default_rng(seed)
    envs = [spec.make() for _ in range(n_envs)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    episode = [f"ref-{seed}-{i}" for i in range(n_envs)]
    step = [0] * n_envs
    next_episode = n_envs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 16x64 matmuls: threads only add synchronization (restored below)
    cols: dict[str, list[Any]] = {k: [] for k in ("obs", "action", "propensity", "probs", "reward", "end",
                                                  "episode", "step")}
    try:
        while len(cols["action"]) < decisions:
            batch = np.asarray(obs, dtype=np.float32).reshape(n_envs, -1)
            with torch.no_grad():
                if policy.discrete:
                    logits = policy(policy.as_tensor(batch)).numpy().astype(np.float64)
                    probs = executed_distribution(logits, exploration)
                    actions = sample_categorical(probs, rng)
                    props = probs[np.arange(n_envs), actions]
                else:
                    actions, props = policy.act(batch, rng=rng)
                    probs = None
            for i, env in enumerate(envs):
                action = int(actions[i]) if policy.discrete else np.asarray(actions[i])
                next_obs, env_reward, terminated, truncated, _ = env.step(action)
                reward = bundle.reward_spec(obs=obs[i], action=action, next_obs=next_obs, env_reward=float(env_reward),
                                            terminated=bool(terminated), truncated=bool(truncated), outcome=None)
                cols["obs"].append(batch[i])
                cols["action"].append(actions[i])
                cols["propensity"].append(props[i])
                cols["probs"].append(None if probs is None else probs[i])
                cols["reward"].append(reward)
                cols["end"].append("terminated" if terminated else "truncated" if truncated else None)
                cols["episode"].append(episode[i])
                cols["step"].append(step[i])
                step[i] += 1
                if terminated or truncated:
                    next_obs, _ = env.reset(seed=seed + next_episode)
                    episode[i], step[i] = f"ref-{seed}-{next_episode}", 0
                    next_episode += 1
                obs[i] = next_obs
    finally:
        torch.set_num_threads(threads)
        for env in envs:
            env.close()
    n = decisions
    frame = build_frame(np.asarray(cols["obs"][:n]), np.asarray(cols["action"][:n]),
                        np.asarray(cols["propensity"][:n]),
                        np.asarray(cols["probs"][:n]) if policy.discrete else None,
                        ids={"seq": np.arange(n), "ts": np.zeros(n), "episode_id": np.asarray(cols["episode"][:n],
                                                                                               dtype=object),
                             "step": np.asarray(cols["step"][:n], dtype=np.float64)})
    frame["reward"] = np.asarray(cols["reward"][:n], dtype=np.float64)
    frame["episode_end"] = np.asarray(cols["end"][:n], dtype=object)
    add_episode_returns(frame)
    return frame


def production_reference(store: ExperienceStore, policy_version: str | None, decisions: int, *, offset: int = 0,
                         model: str | None = None, since_seq: int = 0, join: JoinConfig | None = None,
                         now: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The ``decisions`` logged decisions after the first ``offset`` as reference, with feedback joined.

    Returns ``(reference, rest, last_seq)``: ``rest`` holds the rows read past the reference
    (they start the first monitored window) and ``last_seq`` where reading stopped.
    """
    loaded = load_decisions(store, policy_version=policy_version, model=model, since_seq=since_seq,
                            limit=offset + decisions)
    if len(loaded.frame) < offset + decisions:
        raise MonitorError(f"the production reference needs {offset + decisions} decisions of "
                           f"{policy_version or 'the model'}; the store has {len(loaded.frame)}")
    frame = attach_feedback(loaded.frame, store, join, now)
    add_episode_returns(frame, EpisodeCarry())
    reference = frame.iloc[offset:offset + decisions].reset_index(drop=True)
    rest = loaded.frame.iloc[offset + decisions:].reset_index(drop=True)
    return reference, rest, loaded.last_seq


def read_reference(path: str | Path) -> pd.DataFrame:
    """A reference frame from ``.parquet`` or ``.csv`` (monitoring columns, rows in log order)."""
    path = Path(path)
    if not path.is_file():
        raise MonitorError(f"reference file {path} does not exist")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        raise MonitorError(f"reference file {path}: use .parquet or .csv")
    if frame.empty:
        raise MonitorError(f"reference file {path} has no rows")
    return frame


def write_reference(frame: pd.DataFrame, path: str | Path) -> Path:
    """Save a reference frame as ``.parquet`` or ``.csv``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        raise MonitorError(f"reference file {path}: use .parquet or .csv")
    return path
