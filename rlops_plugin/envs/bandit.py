"""A one-step contextual bandit with a known reward model, for bandit traffic and OPE checks.

Contexts are standard normal vectors; the expected reward of action ``a`` in context ``x`` is
``sigmoid(theta_a . x + bias_a)`` and the observed reward is Bernoulli with that mean (or the
mean plus Gaussian noise when ``noise > 0``). ``theta`` is drawn once from ``problem_seed``, so
the true value of any policy can be computed exactly with :meth:`expected_reward`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class ContextualBanditEnv(gym.Env):
    """Each episode is one decision: observe a context, pick an arm, get a reward."""

    metadata = {"render_modes": []}

    def __init__(self, n_actions: int = 4, context_dim: int = 5, problem_seed: int = 0,
                 reward_type: str = "bernoulli", noise: float = 0.1,
                 context_shift: float = 0.0) -> None:
        if reward_type not in ("bernoulli", "gaussian"):
            raise ValueError("reward_type must be 'bernoulli' or 'gaussian'")
        self.n_actions = int(n_actions)
        self.context_dim = int(context_dim)
        self.reward_type = reward_type
        self.noise = float(noise)
        self.context_shift = float(context_shift)
        rng = np.random.default_rng(problem_seed)
        self.theta = rng.normal(0.0, 1.0, size=(self.n_actions, self.context_dim))
        self.bias = rng.normal(0.0, 0.5, size=self.n_actions)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(self.context_dim,),
                                                dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.n_actions)
        self._context = np.zeros(self.context_dim, dtype=np.float32)

    def expected_reward(self, contexts: np.ndarray) -> np.ndarray:
        """Mean reward of every action for each context: shape ``(n, n_actions)``."""
        logits = np.asarray(contexts, dtype=np.float64) @ self.theta.T + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._context = (self.np_random.normal(size=self.context_dim)
                         + self.context_shift).astype(np.float32)
        return self._context.copy(), {}

    def step(self, action: int):
        mean = float(self.expected_reward(self._context[None, :])[0, int(action)])
        if self.reward_type == "bernoulli":
            reward = float(self.np_random.random() < mean)
        else:
            reward = mean + float(self.np_random.normal(0.0, self.noise))
        return self._context.copy(), reward, True, False, {"expected_reward": mean}
