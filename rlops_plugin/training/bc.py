"""Behaviour cloning: imitate the logged actions (the baseline every offline method must beat)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.training.base import GradientTrainer


@dataclass
class BCConfig:
    """Behaviour cloning settings."""

    steps: int = 2000
    """Gradient steps."""
    batch_size: int = 256
    """Transitions per gradient step."""
    lr: float = 1e-3
    """Adam learning rate."""
    reward_weighted: bool = False
    """Weight each transition by exp(reward advantage / temperature) (AWR-style filtering) instead of uniformly."""
    temperature: float = 1.0
    """Temperature of the reward weighting (ignored unless reward_weighted)."""
    seed: int = 0
    """Seed of mini-batch sampling (the policy starts from the init weights)."""
    torch_threads: int = 1
    """torch threads; one is fastest for small networks."""


class BCTrainer(GradientTrainer):
    """Maximise the log-likelihood of logged actions, starting from the deployed policy."""

    logged_metrics: ClassVar[tuple[str, ...]] = ("train/loss", "train/accuracy")
    """What the trainer reports while training (the metrics a search space may prune on)."""

    Config = BCConfig
    data_kind = "transitions"
    description = "behaviour cloning of logged actions (baseline)"
    config: BCConfig

    def columns(self, data: Dataset, config: BCConfig) -> dict[str, np.ndarray]:
        """Observations, logged actions and rewards (for the optional reward weighting)."""
        return {"obs": data.columns["obs"], "action": data.columns["action"],
                "reward": data.columns["reward"].astype("float32")}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One step of (optionally advantage-weighted) negative log-likelihood."""
        policy, config = self.policy, self.config
        log_prob = policy.log_prob(batch["obs"], batch["action"])
        if config.reward_weighted:
            adv = batch["reward"] - batch["reward"].mean()
            weights = torch.clamp(torch.exp(adv / config.temperature), max=20.0)
            loss = -(weights * log_prob).mean()
        else:
            loss = -log_prob.mean()
        self.optimize(loss)
        metrics = {"train/loss": loss.item()}
        if policy.discrete:
            with torch.no_grad():
                acc = (policy.network(batch["obs"]).argmax(-1) == batch["action"]).float().mean()
            metrics["train/accuracy"] = float(acc)
        return metrics
