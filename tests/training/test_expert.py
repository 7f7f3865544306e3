"""The reference CartPole controller and its distillation into an rlops policy."""

import numpy as np

from rlops_plugin.training.expert import cartpole_heuristic, distill_cartpole_heuristic


def test_heuristic_pushes_towards_the_fall():
    obs = np.array([[0, 0, 0.1, 0.0], [0, 0, -0.1, 0.0], [0, 0, 0.05, -0.2]], dtype=np.float32)
    assert cartpole_heuristic(obs).tolist() == [1, 0, 0]
    assert cartpole_heuristic(obs[0]).tolist() == [1]


def test_distilled_policy_imitates_the_heuristic():
    bundle = distill_cartpole_heuristic(episodes=10, max_steps=200, hidden_sizes=[16], bc_steps=300, lr=3e-3)
    states = np.random.default_rng(1).normal(0, [0.5, 0.5, 0.05, 0.5], size=(500, 4)).astype(np.float32)
    agreement = (bundle.policy.act(states, deterministic=True)[0] == cartpole_heuristic(states)).mean()
    assert bundle.env_spec.id == "CartPole-v1" and agreement > 0.85
