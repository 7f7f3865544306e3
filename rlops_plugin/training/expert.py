"""A near-optimal hand-written CartPole controller and its distillation into an rlops policy.

A known-good reference policy without RL training: the benchmarks use it as the behaviour and
expert policy, the tests as the "strong" policy a gate must accept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.env_spec import EnvSpec


def cartpole_heuristic(obs: np.ndarray) -> np.ndarray:
    """Push towards where the pole is falling: action 1 when ``theta + 0.5 * theta_dot > 0``."""
    obs = np.atleast_2d(obs)
    return (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)


def heuristic_transitions(bundle: PolicyBundle, episodes: int = 8, max_steps: int = 200, seed: int = 0) -> Any:
    """CartPole transitions on the states a 30%-noisy :func:`cartpole_heuristic` visits, labelled with the
    heuristic's action, under ``bundle``'s env and reward hashes (so training from ``bundle`` accepts them)."""
    from rlops_plugin.bundle.spaces import space_to_json
    from rlops_plugin.experience.dataset import Dataset

    env = bundle.env_spec.make()
    rng = np.random.default_rng(seed)
    states, nexts, dones = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed * 1000 + episode)
        for _ in range(max_steps):
            action = int(cartpole_heuristic(obs)[0]) if rng.random() > 0.3 else int(rng.integers(2))
            nxt, _, terminated, truncated, _ = env.step(action)
            states.append(obs)
            nexts.append(nxt)
            dones.append(terminated)
            obs = nxt
            if terminated or truncated:
                break
    env.close()
    obs = np.asarray(states, np.float32)
    hashes = bundle.hashes()
    return Dataset("transitions", {"obs": obs, "action": cartpole_heuristic(obs), "reward": np.ones(len(obs)),
                                   "propensity": np.ones(len(obs)), "next_obs": np.asarray(nexts, np.float32),
                                   "done": np.asarray(dones, bool)},
                   {"env_sha": hashes["env"], "reward_sha": hashes["reward"],
                    "action_space": space_to_json(bundle.policy.action_space)})


def distill_cartpole_heuristic(*, episodes: int, max_steps: int, hidden_sizes: list[int], bc_steps: int,
                               lr: float = 1e-3, seed: int = 0) -> PolicyBundle:
    """Behaviour-clone :func:`cartpole_heuristic` on the states it visits (30% random actions for coverage)."""
    from rlops_plugin.experience.dataset import Dataset
    from rlops_plugin.training.bc import BCConfig, BCTrainer

    spec = EnvSpec(id="CartPole-v1")
    env = spec.make()
    rng = np.random.default_rng(seed)
    states = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        for _ in range(max_steps):
            states.append(obs)
            action = int(cartpole_heuristic(obs)[0]) if rng.random() > 0.3 else int(rng.integers(2))
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    env.close()
    obs = np.asarray(states, dtype=np.float32)
    data = Dataset("transitions", {"obs": obs, "action": cartpole_heuristic(obs), "reward": np.ones(len(obs)),
                                   "propensity": np.ones(len(obs)), "next_obs": obs,
                                   "done": np.zeros(len(obs), bool)})
    base = PolicyBundle.create(spec, config={"hidden_sizes": hidden_sizes}, seed=seed)
    return base.with_policy(BCTrainer().train(base, data, BCConfig(steps=bc_steps, lr=lr)).policy)
