"""ChainWalk: a tiny deterministic episodic env where the optimal policy is known.

The agent sits on a chain of ``length`` cells and moves left (0) or right (1); reaching the
right end pays ``goal_reward`` and ends the episode, every other step costs ``step_cost``.
Optimal return is ``goal_reward - step_cost * (length - 2)`` from the start cell; trainers'
conformance tests use it because a few hundred updates are enough to solve it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class ChainWalkEnv(gym.Env):
    """One-hot position observations, two actions, reward at the right end."""

    metadata = {"render_modes": []}

    def __init__(self, length: int = 6, step_cost: float = 0.05, goal_reward: float = 1.0,
                 slip: float = 0.0) -> None:
        if length < 3:
            raise ValueError("ChainWalk length must be at least 3")
        self.length = int(length)
        self.step_cost = float(step_cost)
        self.goal_reward = float(goal_reward)
        self.slip = float(slip)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(self.length,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._pos = 1

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.length, dtype=np.float32)
        obs[self._pos] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._pos = 1
        return self._obs(), {}

    def step(self, action: int):
        move = 1 if int(action) == 1 else -1
        if self.slip > 0 and self.np_random.random() < self.slip:
            move = -move
        self._pos = int(np.clip(self._pos + move, 0, self.length - 1))
        terminated = self._pos == self.length - 1
        reward = self.goal_reward if terminated else -self.step_cost
        return self._obs(), reward, terminated, False, {}
