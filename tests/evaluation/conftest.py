"""Evaluation fixtures: a strong CartPole policy (distilled heuristic) and a weak one (untrained)."""

from __future__ import annotations

import pytest

from rlops_plugin import EnvSpec, PolicyBundle
from rlops_plugin.training.expert import distill_cartpole_heuristic

CARTPOLE = EnvSpec(id="CartPole-v1")


@pytest.fixture(scope="session")
def strong_bundle() -> PolicyBundle:
    """Behaviour clone of the heuristic on states it visits: returns ~500."""
    return distill_cartpole_heuristic(episodes=30, max_steps=300, hidden_sizes=[32, 32], bc_steps=600, lr=3e-3)


@pytest.fixture(scope="session")
def weak_bundle() -> PolicyBundle:
    """An untrained policy: returns ~10."""
    return PolicyBundle.create(CARTPOLE, config={"hidden_sizes": [32, 32]}, seed=1)
