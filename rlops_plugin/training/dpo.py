"""Direct preference optimisation (Rafailov et al. 2023) on (obs, chosen, rejected) pairs.

The policy's action log-probabilities play the role of sequence log-likelihoods; the frozen
champion is the reference policy, so the update stays anchored to what is deployed:
``loss = -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r))))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.policy import Policy
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.training.base import GradientTrainer


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


class DPOTrainer(GradientTrainer):
    """Preference learning from human ratings and corrections, referenced to the champion."""

    logged_metrics: ClassVar[tuple[str, ...]] = ("train/dpo_loss", "train/preference_accuracy", "train/reward_margin")
    """What the trainer reports while training (the metrics a search space may prune on)."""

    Config = DPOConfig
    data_kind = "preferences"
    description = "direct preference optimisation with the champion as reference"
    config: DPOConfig
    reference: Policy
    """The frozen init policy the update is anchored to."""

    def check(self, init: PolicyBundle, config: DPOConfig) -> None:
        """Discrete actions only."""
        if not init.policy.discrete:
            raise ConfigError("dpo needs a Discrete action space")

    def setup(self, init: PolicyBundle, config: DPOConfig) -> Policy:
        """A frozen copy of the init policy as the reference, another copy to train."""
        self.reference = init.policy.clone()
        return super().setup(init, config)

    def columns(self, data: Dataset, config: DPOConfig) -> dict[str, np.ndarray]:
        """Observations with the chosen and the rejected action."""
        return {k: data.columns[k] for k in ("obs", "chosen", "rejected")}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One step of the DPO loss on a batch of preference pairs."""
        beta = self.config.beta
        logp = torch.log_softmax(self.policy.network(batch["obs"]), dim=-1)
        with torch.no_grad():
            ref = torch.log_softmax(self.reference.network(batch["obs"]), dim=-1)
        c, r = batch["chosen"].long().unsqueeze(1), batch["rejected"].long().unsqueeze(1)
        margin = (logp.gather(1, c) - ref.gather(1, c)) - (logp.gather(1, r) - ref.gather(1, r))
        loss = -F.logsigmoid(beta * margin).mean()
        self.optimize(loss)
        with torch.no_grad():
            accuracy = (logp.gather(1, c) > logp.gather(1, r)).float().mean()
        return {"train/dpo_loss": loss.item(), "train/preference_accuracy": accuracy.item(),
                "train/reward_margin": (beta * margin).mean().item()}
