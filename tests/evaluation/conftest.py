"""Evaluation fixtures: a strong CartPole policy (distilled heuristic) and a weak one (untrained)."""

from __future__ import annotations

import numpy as np
import pytest

from rlops_plugin import EnvSpec, PolicyBundle
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.training.bc import BCConfig, BCTrainer

CARTPOLE = EnvSpec(id="CartPole-v1")


def heuristic(obs: np.ndarray) -> np.ndarray:
    """Push towards where the pole is falling (near-optimal on CartPole)."""
    obs = np.atleast_2d(obs)
    return (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)


@pytest.fixture(scope="session")
def strong_bundle() -> PolicyBundle:
    """Behaviour clone of the heuristic on states it visits: returns ~500."""
    env = CARTPOLE.make()
    rng = np.random.default_rng(0)
    states = []
    for episode in range(30):
        obs, _ = env.reset(seed=episode)
        for _ in range(300):
            states.append(obs)
            action = int(heuristic(obs)[0]) if rng.random() > 0.3 else int(rng.integers(2))
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    obs = np.asarray(states, dtype=np.float32)
    data = Dataset("transitions", {"obs": obs, "action": heuristic(obs), "reward": np.ones(len(obs)),
                                   "propensity": np.ones(len(obs)), "next_obs": obs,
                                   "done": np.zeros(len(obs), bool)})
    base = PolicyBundle.create(CARTPOLE, config={"hidden_sizes": [32, 32]}, seed=0)
    return base.with_policy(BCTrainer().train(base, data, BCConfig(steps=600, lr=3e-3)).policy)


@pytest.fixture(scope="session")
def weak_bundle() -> PolicyBundle:
    """An untrained policy: returns ~10."""
    return PolicyBundle.create(CARTPOLE, config={"hidden_sizes": [32, 32]}, seed=1)
