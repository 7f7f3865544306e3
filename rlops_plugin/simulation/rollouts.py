"""Rollout evaluation: a policy on fixed episode seeds, so two policies face identical episodes.

Several environments run in lockstep and the policy acts on all of them in one batched
forward pass. Episode ``i`` always uses seed ``seeds[i]`` (initial state and any domain
randomization drawn at reset), whatever policy is evaluated: champion and candidate are
compared episode by episode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlops_plugin.bundle.env_spec import EnvSpec
from rlops_plugin.bundle.policy import Policy, sample_categorical
from rlops_plugin.bundle.reward_spec import RewardSpec
from rlops_plugin.errors import ConfigError
from rlops_plugin.local.threads import torch_threads
from rlops_plugin.simulation.stats import Interval, bootstrap_mean

ConstraintFn = Callable[..., float]


@dataclass
class RolloutReport:
    """Per-episode results of one policy on one env spec."""

    seeds: list[int]
    returns: np.ndarray
    """Return under the bundle's RewardSpec (equal to the env return for the ``env`` reward)."""
    env_returns: np.ndarray
    lengths: np.ndarray
    action_counts: np.ndarray
    """``(n_actions,)`` total counts over all episodes (Discrete only; empty for Box)."""
    constraint_costs: dict[str, np.ndarray] = field(default_factory=dict)
    """Per constraint name, the summed cost per episode."""
    forbidden_actions: np.ndarray | None = None
    """Per episode, how many times a forbidden action was taken."""

    def summary(self, confidence: float = 0.95) -> dict[str, Any]:
        """Mean return with a bootstrap CI, lengths, action frequencies and constraint costs."""
        ci: Interval = bootstrap_mean(self.returns, confidence)
        total = self.action_counts.sum()
        out = {
            "episodes": len(self.seeds), "return_mean": ci.estimate, "return_ci_low": ci.low,
            "return_ci_high": ci.high, "return_std": float(np.std(self.returns)) if len(self.returns) else 0.0,
            "length_mean": float(np.mean(self.lengths)) if len(self.lengths) else 0.0,
            "action_frequencies": (self.action_counts / total).tolist() if total else [],
        }
        for name, costs in self.constraint_costs.items():
            out[f"constraint/{name}/mean"] = float(np.mean(costs))
            out[f"constraint/{name}/max"] = float(np.max(costs))
        return out


def rollout(policy: Policy, env_spec: EnvSpec, seeds: Sequence[int], *, deterministic: bool = True,
            reward_spec: RewardSpec | None = None, n_envs: int = 8, max_steps: int | None = None,
            constraints: dict[str, ConstraintFn] | None = None, forbidden: Callable[..., bool] | None = None,
            rng_seed: int = 0, reset_state: Callable[[Any, int], None] | None = None,
            observation_noise: float = 0.0, action_noise: float = 0.0) -> RolloutReport:
    """Run one episode per seed and report returns, lengths, actions and constraint costs.

    ``constraints`` map names to ``fn(obs, action, next_obs, info) -> cost`` (reward-independent
    safety checks); ``forbidden(obs, action) -> bool`` counts forbidden actions;
    ``reset_state(env, seed)`` can place the env in an adversarial initial state after reset;
    ``observation_noise`` adds Gaussian noise to what the policy sees and ``action_noise`` replaces
    the chosen action by a uniformly random one with that probability (Discrete; perturbations).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("rollout needs at least one episode seed")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1 (zero-length episodes score nothing), got {max_steps}")
    constraints = constraints or {}
    use_spec = reward_spec is not None and reward_spec.ref != "env"
    rng = np.random.default_rng(rng_seed)
    n = len(seeds)
    returns, env_returns, lengths = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
    costs = {name: np.zeros(n) for name in constraints}
    forbidden_counts = np.zeros(n, dtype=np.int64)
    action_counts = np.zeros(policy.n_actions if policy.discrete else 0, dtype=np.int64)
    envs = [env_spec.make() for _ in range(min(n_envs, n))]
    slots: list[int | None] = [None] * len(envs)
    obs: list[Any] = [None] * len(envs)
    queue = list(range(n))

    def start(slot: int) -> None:
        if not queue:
            slots[slot] = None
            return
        episode = queue.pop(0)
        o, _ = envs[slot].reset(seed=seeds[episode])
        if reset_state is not None:
            reset_state(envs[slot], seeds[episode])
            o = current_obs(envs[slot], o)
        slots[slot], obs[slot] = episode, o

    for slot in range(len(envs)):
        start(slot)
    try:
        with torch_threads(1):
            while any(s is not None for s in slots):
                active = [i for i, s in enumerate(slots) if s is not None]
                batch = np.asarray([obs[i] for i in active], dtype=np.float32)
                seen = batch + rng.normal(0.0, observation_noise, batch.shape).astype(np.float32) \
                    if observation_noise else batch
                actions = _act(policy, seen, deterministic, rng)
                if action_noise and policy.discrete:
                    actions = [int(rng.integers(policy.n_actions)) if rng.random() < action_noise else a
                               for a in actions]
                for k, slot in enumerate(active):
                    episode = slots[slot]
                    action = actions[k]
                    if forbidden is not None and forbidden(obs[slot], action):
                        forbidden_counts[episode] += 1
                    next_obs, reward, terminated, truncated, info = envs[slot].step(action)
                    env_returns[episode] += reward
                    if use_spec:
                        returns[episode] += reward_spec(obs=obs[slot], action=action, next_obs=next_obs,
                                                        env_reward=reward, terminated=terminated,
                                                        truncated=truncated, outcome=None)
                    else:
                        returns[episode] += reward
                    for name, fn in constraints.items():
                        costs[name][episode] += float(fn(obs[slot], action, next_obs, info))
                    if policy.discrete:
                        action_counts[int(action)] += 1
                    lengths[episode] += 1
                    obs[slot] = next_obs
                    if terminated or truncated or (max_steps is not None and lengths[episode] >= max_steps):
                        start(slot)
    finally:
        for env in envs:
            env.close()
    return RolloutReport(seeds, returns, env_returns, lengths, action_counts, costs, forbidden_counts)


def _act(policy: Policy, obs: np.ndarray, deterministic: bool, rng: np.random.Generator) -> list[Any]:
    with torch.inference_mode():
        out = policy.network(torch.from_numpy(obs))
        if policy.discrete:
            probs = torch.softmax(out, dim=-1).numpy().astype(np.float64)
            picks = probs.argmax(axis=1) if deterministic else sample_categorical(probs, rng)
            return [int(a) for a in picks]
        mean, log_std = out
        acts = mean if deterministic else mean + log_std.exp() * torch.from_numpy(
            rng.standard_normal(mean.shape).astype(np.float32))
        low = np.asarray(policy.action_space.low, dtype=np.float32).reshape(-1)
        high = np.asarray(policy.action_space.high, dtype=np.float32).reshape(-1)
        return list(np.clip(acts.numpy(), low, high))


def current_obs(env: Any, fallback: Any) -> Any:
    """The observation of an env whose ``state`` was just placed (CartPole-style), else ``fallback``."""
    base = env.unwrapped
    state = getattr(base, "state", None)
    return np.asarray(state, dtype=np.float32) if state is not None else fallback
