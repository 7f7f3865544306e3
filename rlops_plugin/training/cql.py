"""Discrete conservative Q-learning (Kumar et al. 2020) from logged transitions.

A Q-network with the policy's architecture is trained with a double-DQN TD loss plus the CQL
penalty ``alpha * (logsumexp_a Q(s, a) - Q(s, a_logged))``, which keeps Q low on actions the log
never took. It starts from the deployed policy's weights (the head is re-initialised by default:
policy logits are not Q-values, the trunk's features transfer). The exported policy is
``softmax(Q / temperature)``: its greedy action is ``argmax Q`` and serving can still explore.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.policy import Policy
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.training.base import GradientTrainer


@dataclass
class CQLConfig:
    """Discrete CQL settings (defaults tuned on CartPole-v1 logs of ~100k transitions)."""

    steps: int = 5000
    """Gradient steps."""
    batch_size: int = 256
    """Transitions per gradient step."""
    lr: float = 1e-3
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount factor."""
    alpha: float = 1.0
    """Weight of the conservative penalty (0 gives plain double DQN)."""
    tau: float = 0.01
    """Polyak rate of the target network."""
    temperature: float = 1.0
    """Exported policy = softmax(Q / temperature); smaller is closer to greedy."""
    reset_head: bool = True
    """Re-initialise the output layer instead of using the policy's logits as initial Q-values."""
    reward_scale: float = 1.0
    """Multiply rewards by this before learning (keeps Q-values in a comfortable range)."""
    max_grad_norm: float = 10.0
    """Gradient clipping norm."""
    seed: int = 0
    """Seed of mini-batch sampling and the head initialisation."""
    torch_threads: int = 1
    """torch threads; one is fastest for small networks."""


class CQLTrainer(GradientTrainer):
    """Offline RL for Discrete actions from the decision log."""

    logged_metrics: ClassVar[tuple[str, ...]] = ("train/loss", "train/td_loss", "train/cql_penalty", "train/q_mean")
    """What the trainer reports while training (the metrics a search space may prune on)."""

    Config = CQLConfig
    data_kind = "transitions"
    description = "discrete conservative Q-learning (offline RL)"
    config: CQLConfig
    head: nn.Linear
    """The Q-network's output layer (divided by the temperature at the end)."""
    target: nn.Module
    """The Polyak-averaged target Q-network."""

    def check(self, init: PolicyBundle, config: CQLConfig) -> None:
        """Discrete actions and a positive temperature only."""
        if not init.policy.discrete:
            raise ConfigError("cql needs a Discrete action space")
        if config.temperature <= 0:
            raise ConfigError("cql temperature must be positive")

    def setup(self, init: PolicyBundle, config: CQLConfig) -> Policy:
        """The policy network becomes the Q-network (head re-initialised by default), plus a frozen target copy."""
        policy = init.policy.clone()
        q_net = policy.network
        self.head = _output_layer(q_net)
        if config.reset_head:
            self.head.reset_parameters()
        q_net.train()
        self.target = copy.deepcopy(q_net)
        for p in self.target.parameters():
            p.requires_grad_(False)
        return policy

    def columns(self, data: Dataset, config: CQLConfig) -> dict[str, np.ndarray]:
        """Transitions with scaled float32 rewards and done flags."""
        cols = data.columns
        return {"obs": cols["obs"], "action": cols["action"],
                "reward": (cols["reward"] * config.reward_scale).astype("float32"),
                "next_obs": cols["next_obs"], "done": cols["done"].astype("float32")}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Double-DQN TD loss plus the CQL penalty, then a Polyak update of the target."""
        q_net, target, config = self.policy.network, self.target, self.config
        q_all = q_net(batch["obs"])
        q = q_all.gather(1, batch["action"].long().unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            next_a = q_net(batch["next_obs"]).argmax(dim=1, keepdim=True)
            next_q = target(batch["next_obs"]).gather(1, next_a).squeeze(1)
            y = batch["reward"] + config.gamma * (1.0 - batch["done"]) * next_q
        td = nn.functional.smooth_l1_loss(q, y)
        cql = (torch.logsumexp(q_all, dim=1) - q).mean()
        loss = td + config.alpha * cql
        self.optimize(loss, max_grad_norm=config.max_grad_norm)
        with torch.no_grad():
            for p, tp in zip(q_net.parameters(), target.parameters(), strict=True):
                tp.mul_(1 - config.tau).add_(p, alpha=config.tau)
        return {"train/loss": loss.item(), "train/td_loss": td.item(), "train/cql_penalty": cql.item(),
                "train/q_mean": q.mean().item()}

    def finish(self, policy: Policy) -> Policy:
        """Export ``softmax(Q / temperature)``: the head's logits become ``Q / temperature``."""
        with torch.no_grad():
            self.head.weight.div_(self.config.temperature)
            self.head.bias.div_(self.config.temperature)
        return policy


def _output_layer(network: nn.Module) -> nn.Linear:
    """The last Linear layer of a network (the Q / logit head)."""
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("cql needs a network whose last layer is nn.Linear")
    return linears[-1]
