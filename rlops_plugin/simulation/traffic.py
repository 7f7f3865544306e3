"""Drive a policy server with simulated episodes, like production traffic would.

Several environments step in lockstep; each step sends one batched decision request (with
episode ids and steps; the episode id is also the routing key, so a canary assigns whole episodes
to one policy) through the real HTTP serving path, executes the returned actions,
and posts rewards to the feedback endpoint — optionally ``feedback_delay`` steps later, to
exercise the delayed-reward join. Used by the benchmarks, the demo and tests.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from rlops_plugin.bundle.env_spec import EnvSpec


class DecisionClient:
    """HTTP client of one served model: decisions (v1) and feedback."""

    def __init__(self, base_url: str, model: str = "policy", timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.http = httpx.Client(timeout=timeout)

    def decide(self, instances: list[Any]) -> list[dict[str, Any]]:
        """POST instances to ``/v1/models/MODEL:predict``; return the prediction rows."""
        r = self.http.post(f"{self.base_url}/v1/models/{self.model}:predict", json={"instances": instances})
        r.raise_for_status()
        return r.json()["predictions"]

    def feedback(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST feedback events; return their per-event results."""
        if not events:
            return []
        r = self.http.post(f"{self.base_url}/v1/feedback", json=events)
        r.raise_for_status()
        return r.json()["results"]

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()


@dataclass
class TrafficStats:
    """What a simulation produced."""

    steps: int = 0
    decisions: int = 0
    episodes: int = 0
    returns: list[float] = field(default_factory=list)
    feedback_events: int = 0
    elapsed_s: float = 0.0
    decision_ids: list[str] = field(default_factory=list)

    @property
    def mean_return(self) -> float:
        """Mean undiscounted return of completed episodes (NaN when none completed)."""
        return float(np.mean(self.returns)) if self.returns else float("nan")


def simulate(client: DecisionClient, env_spec: EnvSpec, steps: int | None, n_envs: int = 16, seed: int = 0,
             feedback_delay: int = 0, reward_transform: Callable[[float], float] | None = None,
             episode_prefix: str | None = None, keep_decision_ids: bool = False,
             stop: Callable[[], bool] | None = None,
             on_step: Callable[[TrafficStats], None] | None = None) -> TrafficStats:
    """Run ``steps`` decisions (in batches of ``n_envs``) of ``env_spec`` through ``client``.

    ``reward_transform`` changes the reward the world reports (e.g. ``lambda r: 0.9 * r`` to
    inject reward drift); ``env_spec`` may carry changed physics (observation drift).
    ``steps=None`` runs until ``stop()`` returns true (episodes run on across the whole call, so
    long episodes complete); ``on_step`` sees the stats after every batch (progress bars).
    """
    if steps is None and stop is None:
        raise ValueError("simulate: give steps, stop, or both")
    limit = steps if steps is not None else float("inf")
    prefix = episode_prefix or uuid.uuid4().hex[:8]
    envs = [env_spec.make() for _ in range(n_envs)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    episode = [f"{prefix}-{i}" for i in range(n_envs)]
    t = [0] * n_envs
    ret = [0.0] * n_envs
    next_episode = n_envs
    pending: deque[tuple[int, list[dict[str, Any]]]] = deque()
    stats = TrafficStats()
    start = time.perf_counter()
    try:
        while stats.decisions < limit and not (stop is not None and stop()):
            rows = client.decide([{"obs": np.asarray(o, dtype=float).tolist(), "episode_id": episode[i],
                                   "step": t[i], "routing_key": episode[i]} for i, o in enumerate(obs)])
            events = []
            for i, (env, row) in enumerate(zip(envs, rows, strict=True)):
                next_obs, reward, terminated, truncated, _ = env.step(row["action"])
                reward = float(reward_transform(reward) if reward_transform else reward)
                ret[i] += reward
                payload: dict[str, Any] = {"terminated": bool(terminated), "truncated": bool(truncated)}
                if terminated or truncated:
                    payload["next_obs"] = np.asarray(next_obs, dtype=float).tolist()
                events.append({"decision_id": row["decision_id"], "value": reward,
                               "idempotency_key": f"{row['decision_id']}:reward", "payload": payload})
                if keep_decision_ids:
                    stats.decision_ids.append(row["decision_id"])
                t[i] += 1
                if terminated or truncated:
                    stats.returns.append(ret[i])
                    stats.episodes += 1
                    ret[i], t[i] = 0.0, 0
                    episode[i] = f"{prefix}-{next_episode}"
                    next_obs, _ = env.reset(seed=seed + next_episode)
                    next_episode += 1
                obs[i] = next_obs
            stats.decisions += len(rows)
            stats.steps += 1
            pending.append((stats.steps + feedback_delay, events))
            while pending and pending[0][0] <= stats.steps:
                stats.feedback_events += len(client.feedback(pending.popleft()[1]))
            if on_step is not None:
                on_step(stats)
        while pending:
            stats.feedback_events += len(client.feedback(pending.popleft()[1]))
    finally:
        for env in envs:
            env.close()
    stats.elapsed_s = time.perf_counter() - start
    return stats
