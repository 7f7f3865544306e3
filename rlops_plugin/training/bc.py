"""Behaviour cloning: imitate the logged actions (the baseline every offline method must beat)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.local.threads import torch_threads
from rlops_plugin.training.base import (
    Batches,
    Progress,
    Trainer,
    TrainResult,
    report,
    require_data,
    seed_everything,
)


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


class BCTrainer(Trainer):
    """Maximise the log-likelihood of logged actions, starting from the deployed policy."""

    Config = BCConfig
    data_kind = "transitions"
    description = "behaviour cloning of logged actions (baseline)"

    def train(self, init: PolicyBundle, data: Dataset | None, config: BCConfig,
              progress: Progress | None = None) -> TrainResult:
        data = require_data(data, self.data_kind)
        rng = seed_everything(config.seed)
        policy = init.policy.clone()
        policy.train()
        batches = Batches({"obs": data.columns["obs"], "action": data.columns["action"],
                           "reward": data.columns["reward"].astype("float32")}, rng)
        opt = torch.optim.Adam(policy.network.parameters(), lr=config.lr)
        history: list[tuple[int, dict[str, float]]] = []
        metrics: dict[str, float] = {}
        with torch_threads(config.torch_threads):
            for step in range(1, config.steps + 1):
                b = batches.sample(config.batch_size)
                log_prob = policy.log_prob(b["obs"], b["action"])
                if config.reward_weighted:
                    adv = b["reward"] - b["reward"].mean()
                    weights = torch.clamp(torch.exp(adv / config.temperature), max=20.0)
                    loss = -(weights * log_prob).mean()
                else:
                    loss = -log_prob.mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                metrics = {"train/loss": loss.item()}
                if policy.discrete:
                    with torch.no_grad():
                        acc = (policy.network(b["obs"]).argmax(-1) == b["action"]).float().mean()
                    metrics["train/accuracy"] = float(acc)
                report(progress, step, config.steps, metrics, history)
        policy.eval()
        return TrainResult(policy, metrics, history)
