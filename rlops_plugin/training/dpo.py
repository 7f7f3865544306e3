"""Direct preference optimisation (Rafailov et al. 2023) on (obs, chosen, rejected) pairs.

The policy's action log-probabilities play the role of sequence log-likelihoods; the frozen
champion is the reference policy, so the update stays anchored to what is deployed:
``loss = -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r))))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.errors import ConfigError
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
class DPOConfig:
    """DPO settings."""

    steps: int = 500
    """Gradient steps."""
    batch_size: int = 256
    """Preference pairs per step."""
    lr: float = 1e-3
    """Adam learning rate."""
    beta: float = 0.5
    """Inverse temperature of the implicit reward; larger keeps the policy closer to the reference."""
    seed: int = 0
    """Seed of mini-batch sampling."""
    torch_threads: int = 1
    """torch threads; one is fastest for small networks."""


class DPOTrainer(Trainer):
    """Preference learning from human ratings and corrections, referenced to the champion."""

    Config = DPOConfig
    data_kind = "preferences"
    description = "direct preference optimisation with the champion as reference"

    def train(self, init: PolicyBundle, data: Dataset | None, config: DPOConfig,
              progress: Progress | None = None) -> TrainResult:
        data = require_data(data, self.data_kind)
        if not init.policy.discrete:
            raise ConfigError("dpo needs a Discrete action space")
        rng = seed_everything(config.seed)
        reference = init.policy.clone()
        policy = init.policy.clone()
        policy.train()
        batches = Batches({k: data.columns[k] for k in ("obs", "chosen", "rejected")}, rng)
        opt = torch.optim.Adam(policy.network.parameters(), lr=config.lr)
        history: list[tuple[int, dict[str, float]]] = []
        metrics: dict[str, float] = {}
        with torch_threads(config.torch_threads):
            for step in range(1, config.steps + 1):
                b = batches.sample(config.batch_size)
                logp = torch.log_softmax(policy.network(b["obs"]), dim=-1)
                with torch.no_grad():
                    ref = torch.log_softmax(reference.network(b["obs"]), dim=-1)
                c, r = b["chosen"].long().unsqueeze(1), b["rejected"].long().unsqueeze(1)
                margin = (logp.gather(1, c) - ref.gather(1, c)) - (logp.gather(1, r) - ref.gather(1, r))
                loss = -F.logsigmoid(config.beta * margin).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    accuracy = (logp.gather(1, c) > logp.gather(1, r)).float().mean()
                metrics = {"train/dpo_loss": loss.item(), "train/preference_accuracy": accuracy.item(),
                           "train/reward_margin": (config.beta * margin).mean().item()}
                report(progress, step, config.steps, metrics, history)
        policy.eval()
        return TrainResult(policy, metrics, history)
