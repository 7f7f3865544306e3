"""Shared conformance check run over every registered trainer.

On ChainWalk (a 6-cell chain; moving right reaches the goal) the init policy always moves
left. A trainer passes if, from that init and the data its kind needs (logged through the
real decision engine and experience store), it returns a policy whose greedy return beats the
init's, that saves, reloads with the same hashes, and serves.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from rlops_plugin import EnvSpec, PolicyBundle, flavor, plugins
from rlops_plugin.simulation.rollouts import rollout
from rlops_plugin.experience.dataset import Dataset, build_preferences, build_transitions
from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor.model import LoadedModel
from rlops_plugin.serving.engine import DecisionEngine
from rlops_plugin.serving.exploration import ExplorationConfig
from rlops_plugin.serving.requests import DecisionRequest
from rlops_plugin.training.base import make_config

CHAIN = EnvSpec(id="rlops/ChainWalk-v0")
SEEDS = list(range(10))
FAST = {  # keep each trainer's conformance run to a few seconds
    "bc": {"steps": 300},
    "cql": {"steps": 800, "gamma": 0.9},
    "sim_finetune": {"total_steps": 6000, "n_envs": 4, "rollout_steps": 64},
    "dpo": {"steps": 200},
}


def left_leaning_init() -> PolicyBundle:
    """A policy that always moves left (greedy return -2.5 on ChainWalk)."""
    bundle = PolicyBundle.create(CHAIN, config={"hidden_sizes": [32]}, seed=0)
    with torch.no_grad():
        bundle.policy.network.head.weight.zero_()
        bundle.policy.network.head.bias.copy_(torch.tensor([0.2, -0.2]))
    return bundle


def logged_data(kind: str, init: PolicyBundle, root: Path) -> Dataset | None:
    """Log ChainWalk traffic through the decision engine and the store; build the trainer's data."""
    if kind == "simulator":
        return None
    behaviour = init.with_policy(init.policy.clone())
    with torch.no_grad():
        behaviour.policy.network.head.bias.copy_(torch.tensor([-0.4, 0.4]))  # moves right 69% of the time
    engine = DecisionEngine("chain", LoadedModel(behaviour, "behaviour"), exploration=ExplorationConfig(), seed=0)
    store = open_store(root / f"{kind}.db")
    env = CHAIN.make()
    events = []
    for episode in range(60):
        obs, _ = env.reset(seed=episode)
        for step in range(50):
            d = engine.decide(DecisionRequest(obs=np.asarray([obs], np.float32), episode_ids=[f"e{episode}"],
                                              steps=[step]))
            store.log_decisions(d.batch)
            action = int(d.batch.actions[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            did = d.decision_ids[0]
            events.append(parse_feedback({"decision_id": did, "value": float(reward),
                                          "payload": {"terminated": terminated, "truncated": truncated}}))
            if kind == "preferences" and action == 0:
                events.append(parse_feedback({"decision_id": did, "kind": "correction", "action": 1}))
            if terminated or truncated:
                break
    store.add_feedback(events)
    build = build_transitions if kind == "transitions" else build_preferences
    data = build(store, "chain", init, now=time.time())
    store.close()
    return data


def check_trainer(name: str, root: Path) -> dict[str, float]:
    """Run the conformance check for one registered trainer; return its before/after returns."""
    trainer_cls = plugins.trainers().get(name).value
    init = left_leaning_init()
    data = logged_data(trainer_cls.data_kind, init, root)
    config = make_config(trainer_cls.Config, FAST.get(name, {}))
    before = rollout(init.policy, CHAIN, SEEDS).returns.mean()
    result = trainer_cls().train(init, data, config)
    after = rollout(result.policy, CHAIN, SEEDS).returns.mean()
    assert after > before + 1.0, f"{name}: greedy return {before:.2f} -> {after:.2f}, no improvement"
    assert result.policy.describe() == init.policy.describe(), f"{name} changed the architecture or spaces"
    trained = init.with_policy(result.policy, trainer=name)
    flavor.save_model(trained, root / f"model-{name}")
    reloaded = flavor.load_local_model(root / f"model-{name}")
    assert reloaded.hashes() == trained.hashes()
    served = DecisionEngine("chain", LoadedModel(reloaded, "reloaded"), exploration=ExplorationConfig("greedy"))
    start = np.eye(6, dtype=np.float32)[1:2]
    decision = served.decide(DecisionRequest(obs=start)).batch
    assert int(decision.actions[0]) == 1 and decision.propensities[0] == 1.0
    assert all(np.isfinite(v) for v in result.metrics.values())
    return {"before": float(before), "after": float(after)}
