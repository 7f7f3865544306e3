"""The broken-policy shield: a policy whose outputs are not finite is refused at load, or fallen back from.

Valid hashes say a policy is the one registered, not that it computes numbers: weights with a NaN load
fine and give NaN logits, and sampling from them would answer 500 or log a made-up propensity. Before a
policy serves (at start and on ``/configure``), :func:`check_policy` runs it on a fixed probe batch drawn
from its observation space and refuses it if any output is NaN or infinite. At run time the engine
checks each row's outputs: a broken challenger row is decided by the champion, a broken champion row by
the deployment's declared ``safe_action`` (propensity 1: the fallback is deterministic), and without one
the request is refused with a 503 (:class:`~rlops_plugin.errors.BrokenPolicyError`). Every fallback is
flagged on the logged batch and counted (``rlops_policy_fallbacks_total`` on ``/metrics``).
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from prometheus_client import Counter

from rlops_plugin.errors import BrokenPolicyError, ConfigError

PROBE_ROWS = 64
PROBE_SEED = 20_240_601
FALLBACKS = Counter("rlops_policy_fallbacks_total", "Decisions whose policy outputs were not finite, by what "
                    "decided instead", ["model", "role", "to"])


def probe_observations(space: gym.Space, obs_dim: int, rows: int = PROBE_ROWS) -> np.ndarray:
    """A fixed batch of observations inside ``space`` (bounded dimensions uniform, unbounded standard normal)."""
    rng = np.random.default_rng(PROBE_SEED)
    if not isinstance(space, gym.spaces.Box):
        return np.zeros((rows, obs_dim), dtype=np.float32)
    low = np.broadcast_to(space.low, space.shape).reshape(-1).astype(np.float64)
    high = np.broadcast_to(space.high, space.shape).reshape(-1).astype(np.float64)
    bounded = np.isfinite(low) & np.isfinite(high)
    uniform = rng.uniform(np.where(bounded, low, 0.0), np.where(bounded, high, 1.0), size=(rows, low.size))
    normal = np.clip(rng.standard_normal((rows, low.size)), low, high)
    obs = np.where(bounded, uniform, normal)
    obs[0] = np.clip(0.0, low, high)
    return obs.astype(np.float32).reshape(rows, obs_dim)


def check_policy(policy: Any, role: str, version: str) -> None:
    """Refuse a policy with any non-finite output on the probe batch (before it serves anything)."""
    obs = torch.from_numpy(probe_observations(policy.observation_space, policy.obs_dim))
    with torch.inference_mode():
        out = policy.network(obs)
    parts = out if isinstance(out, tuple) else (out,)
    bad = np.zeros(len(obs), dtype=bool)
    for part in parts:
        bad |= ~torch.isfinite(part.reshape(len(obs), -1)).all(dim=1).numpy()
    if bad.any():
        raise BrokenPolicyError(f"{role} {version}: non-finite outputs (NaN or inf) on {int(bad.sum())} of "
                                f"{len(obs)} probe observations from its observation space; refusing to serve it")


def check_safe_action(safe_action: int | list[float] | None, action_space: gym.Space) -> None:
    """Refuse a declared safe action that is not an action of ``action_space``."""
    if safe_action is None:
        return
    if isinstance(action_space, gym.spaces.Discrete):
        if not isinstance(safe_action, int) or not action_space.contains(np.int64(safe_action)):
            raise ConfigError(f"safe_action {safe_action!r} is not an action of {action_space}")
        return
    value = np.asarray(safe_action, dtype=np.float32)
    if not isinstance(safe_action, list) or value.size != int(np.prod(action_space.shape)) \
            or not action_space.contains(value.reshape(action_space.shape)):
        raise ConfigError(f"safe_action {safe_action!r} is not an action of {action_space}")


def nonfinite_rows(*arrays: np.ndarray) -> np.ndarray:
    """Rows (first axis) where any of ``arrays`` holds NaN or inf."""
    bad = np.zeros(len(arrays[0]), dtype=bool)
    for a in arrays:
        bad |= ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    return bad


class FallbackLog:
    """Fallbacks of one engine: flagged per batch (``extra["fallbacks"]``), counted here and on ``/metrics``."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.counts: Tally[str] = Tally()

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Count the fallbacks of one batch (``{"i", "from", "to"}`` per row)."""
        for row in rows:
            self.counts[f"{row['from']}->{row['to']}"] += 1
            FALLBACKS.labels(self.model, row["from"], row["to"]).inc()
