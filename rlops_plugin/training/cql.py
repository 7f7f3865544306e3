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

import torch
from torch import nn

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


class CQLTrainer(Trainer):
    """Offline RL for Discrete actions from the decision log."""

    Config = CQLConfig
    data_kind = "transitions"
    description = "discrete conservative Q-learning (offline RL)"

    def train(self, init: PolicyBundle, data: Dataset | None, config: CQLConfig,
              progress: Progress | None = None) -> TrainResult:
        data = require_data(data, self.data_kind)
        if not init.policy.discrete:
            raise ConfigError("cql needs a Discrete action space")
        if config.temperature <= 0:
            raise ConfigError("cql temperature must be positive")
        rng = seed_everything(config.seed)
        policy = init.policy.clone()
        q_net = policy.network
        head = _output_layer(q_net)
        if config.reset_head:
            head.reset_parameters()
        q_net.train()
        target = copy.deepcopy(q_net)
        for p in target.parameters():
            p.requires_grad_(False)
        cols = data.columns
        batches = Batches({"obs": cols["obs"], "action": cols["action"],
                           "reward": (cols["reward"] * config.reward_scale).astype("float32"),
                           "next_obs": cols["next_obs"], "done": cols["done"].astype("float32")}, rng)
        opt = torch.optim.Adam(q_net.parameters(), lr=config.lr)
        history: list[tuple[int, dict[str, float]]] = []
        metrics: dict[str, float] = {}
        with torch_threads(config.torch_threads):
            for step in range(1, config.steps + 1):
                b = batches.sample(config.batch_size)
                q_all = q_net(b["obs"])
                q = q_all.gather(1, b["action"].long().unsqueeze(1)).squeeze(1)
                with torch.no_grad():
                    next_a = q_net(b["next_obs"]).argmax(dim=1, keepdim=True)
                    next_q = target(b["next_obs"]).gather(1, next_a).squeeze(1)
                    y = b["reward"] + config.gamma * (1.0 - b["done"]) * next_q
                td = nn.functional.smooth_l1_loss(q, y)
                cql = (torch.logsumexp(q_all, dim=1) - q).mean()
                loss = td + config.alpha * cql
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(q_net.parameters(), config.max_grad_norm)
                opt.step()
                with torch.no_grad():
                    for p, tp in zip(q_net.parameters(), target.parameters(), strict=True):
                        tp.mul_(1 - config.tau).add_(p, alpha=config.tau)
                metrics = {"train/loss": loss.item(), "train/td_loss": td.item(), "train/cql_penalty": cql.item(),
                           "train/q_mean": q.mean().item()}
                report(progress, step, config.steps, metrics, history)
        with torch.no_grad():  # logits = Q / temperature
            head.weight.div_(config.temperature)
            head.bias.div_(config.temperature)
        policy.eval()
        return TrainResult(policy, metrics, history)


def _output_layer(network: nn.Module) -> nn.Linear:
    """The last Linear layer of a network (the Q / logit head)."""
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("cql needs a network whose last layer is nn.Linear")
    return linears[-1]
