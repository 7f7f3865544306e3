"""``check_trainer``: the conformance check every registered trainer passes (and plugin trainers should).

On ChainWalk (a 6-cell chain; moving right reaches the goal) the init policy always moves left.
A trainer passes if its class follows the contract (a documented ``Config`` dataclass, a known
``data_kind``), it refuses to run without the dataset its kind needs, and, from that init and
the data (logged through the real decision engine and experience store), it returns a policy
that beats the init's greedy return, keeps the spaces and architecture, leaves the init policy
untouched, reports well-formed progress and finite metrics, is reproducible for its seed, and
saves, reloads with the same hashes and serves.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlops_plugin import plugins
from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.env_spec import EnvSpec
from rlops_plugin.bundle.policy import Policy
from rlops_plugin.errors import RLOpsError
from rlops_plugin.experience.dataset import Dataset, build_preferences, build_transitions
from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.experience.store import open_store
from rlops_plugin.simulation.rollouts import rollout
from rlops_plugin.testing.errors import fail
from rlops_plugin.training.base import DATA_KINDS, TrainResult, field_docs, make_config

CHAIN = EnvSpec(id="rlops/ChainWalk-v0")
SEEDS = list(range(10))
MIN_IMPROVEMENT = 1.0
"""Greedy-return gain over the left-moving init that a trainer must reach (the optimum gains 3.3)."""
FAST = {  # keep each built-in trainer's conformance run to a few seconds
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
    from rlops_plugin.flavor.model import LoadedModel
    from rlops_plugin.serving.engine import DecisionEngine
    from rlops_plugin.serving.exploration import ExplorationConfig
    from rlops_plugin.serving.requests import DecisionRequest

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


def check_trainer(trainer: str | type, root: str | Path | None = None, *, config: dict[str, Any] | None = None,
                  check_determinism: bool = True) -> dict[str, float]:
    """Run the conformance check for a trainer (a registered name or its class).

    ``config`` overrides the trainer's Config defaults for the run (the built-ins get fast settings
    by default); ``root`` is a scratch directory (a temporary one when ``None``). Returns the
    greedy returns ``before`` and ``after`` training. Raises :class:`ConformanceError`.
    """
    name, trainer_cls = _resolve(trainer)
    subject = f"trainer {name!r}"
    _check_interface(subject, trainer_cls)
    try:
        cfg = make_config(trainer_cls.Config, FAST.get(name, {}) if config is None else config)
    except RLOpsError as exc:
        raise fail(subject, "config", "make_config refused the settings", exc) from exc
    if root is None:
        with tempfile.TemporaryDirectory(prefix="rlops-check-trainer-") as tmp:
            return _check_training(subject, name, trainer_cls, cfg, Path(tmp), check_determinism)
    return _check_training(subject, name, trainer_cls, cfg, Path(root), check_determinism)


def _resolve(trainer: str | type) -> tuple[str, type]:
    """``(name, class)``: a registered name, or a class (named as registered, else by its class name)."""
    if isinstance(trainer, str):
        return trainer, plugins.trainers().get(trainer).value
    for entry in plugins.trainers().entries():
        if entry.value is trainer:
            return entry.name, trainer
    return trainer.__name__, trainer


def _check_interface(subject: str, trainer_cls: type) -> None:
    """The class-level contract: ``Config`` dataclass with defaults and docs, ``data_kind``, ``train``."""
    config_cls = getattr(trainer_cls, "Config", None)
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise fail(subject, "interface", f"Config must be a dataclass, got {config_cls!r}")
    if getattr(trainer_cls, "data_kind", None) not in DATA_KINDS:
        raise fail(subject, "interface", f"data_kind must be one of {DATA_KINDS}, "
                                         f"got {getattr(trainer_cls, 'data_kind', None)!r}")
    if not callable(getattr(trainer_cls, "train", None)):
        raise fail(subject, "interface", "the class has no train(init, data, config, progress) method")
    try:
        config_cls()
    except Exception as exc:
        raise fail(subject, "config", "Config() must build from its defaults", exc) from exc
    try:
        docs = field_docs(config_cls)
    except (OSError, TypeError) as exc:
        raise fail(subject, "config", "cannot read the Config source for its field docstrings", exc) from exc
    missing = [f.name for f in dataclasses.fields(config_cls) if not docs.get(f.name)]
    if missing:
        raise fail(subject, "config", f"Config fields without a docstring: {missing} "
                                      "(rlops train --help-trainer shows them)")


def _check_training(subject: str, name: str, trainer_cls: type, cfg: Any, root: Path,
                    check_determinism: bool) -> dict[str, float]:
    init = left_leaning_init()
    init_sha = init.policy.sha256()
    kind = trainer_cls.data_kind
    if kind != "simulator":
        try:
            trainer_cls().train(init, None, cfg)
        except RLOpsError:
            pass
        except Exception as exc:
            raise fail(subject, "refuses-missing-data", "with no dataset it must raise an RLOpsError "
                                                        "(rlops_plugin.training.base.require_data)", exc) from exc
        else:
            raise fail(subject, "refuses-missing-data", f"trained without the {kind} dataset it needs")
    data = logged_data(kind, init, root)
    calls: list[tuple[Any, Any, Any]] = []
    result = _train(subject, trainer_cls, init, data, cfg, lambda s, t, m: calls.append((s, t, m)))
    if init.policy.sha256() != init_sha:
        raise fail(subject, "init-unchanged", "training modified init.policy; train a clone")
    _check_result(subject, result, init)
    _check_progress(subject, calls)
    before = float(rollout(init.policy, CHAIN, SEEDS).returns.mean())
    after = float(rollout(result.policy, CHAIN, SEEDS).returns.mean())
    if not after > before + MIN_IMPROVEMENT:
        raise fail(subject, "improvement", f"greedy ChainWalk return {before:.2f} -> {after:.2f}, "
                                           f"needs a gain above {MIN_IMPROVEMENT}")
    if check_determinism:
        again = _train(subject, trainer_cls, init, data, cfg, None)
        if again.policy.weights_bytes() != result.policy.weights_bytes():
            raise fail(subject, "determinism", "two runs with the same config and seed gave different weights")
    _check_artifact(subject, name, init, result, root)
    return {"before": before, "after": after}


def _train(subject: str, trainer_cls: type, init: PolicyBundle, data: Dataset | None, cfg: Any,
           progress: Any) -> TrainResult:
    try:
        return trainer_cls().train(init, data, cfg, progress)
    except Exception as exc:
        raise fail(subject, "train", "train() raised", exc) from exc


def _check_result(subject: str, result: Any, init: PolicyBundle) -> None:
    """A ``TrainResult`` with a policy of the init's description, finite metrics and a step history."""
    if not isinstance(result, TrainResult):
        raise fail(subject, "result", f"train() must return a TrainResult, got {type(result).__name__}")
    if not isinstance(result.policy, Policy):
        raise fail(subject, "result", f"TrainResult.policy must be a Policy, got {type(result.policy).__name__}")
    if result.policy.describe() != init.policy.describe():
        raise fail(subject, "spaces", "the policy's architecture, config or spaces differ from the init's")
    if result.policy is init.policy:
        raise fail(subject, "init-unchanged", "returned init.policy itself; return a trained clone")
    bad = {k: v for k, v in result.metrics.items() if not (isinstance(k, str) and _finite(v))}
    if bad:
        raise fail(subject, "metrics", f"metrics must map names to finite floats: {bad}")
    for item in result.history:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int) and isinstance(item[1], dict)
                and all(_finite(v) for v in item[1].values())):
            raise fail(subject, "metrics", f"history entries must be (step: int, {{name: float}}), got {item!r}")
    steps = [step for step, _ in result.history]
    if steps != sorted(steps):
        raise fail(subject, "metrics", f"history steps must not decrease: {steps}")


def _check_progress(subject: str, calls: list[tuple[Any, Any, Any]]) -> None:
    """At least one ``progress(step, total, metrics)`` call, with ``0 < step <= total`` and rising steps."""
    if not calls:
        raise fail(subject, "progress", "train() never called progress(step, total, metrics)")
    last = 0
    for step, total, metrics in calls:
        if not (isinstance(step, int) and isinstance(total, int) and 0 < step <= total and step >= last
                and isinstance(metrics, dict)):
            raise fail(subject, "progress", f"progress({step!r}, {total!r}, ...) after step {last}: need "
                                            "int steps rising within 1..total and a metrics dict")
        last = step


def _check_artifact(subject: str, name: str, init: PolicyBundle, result: TrainResult, root: Path) -> None:
    """The trained bundle saves, reloads with the same hashes, and serves the right greedy action."""
    from rlops_plugin import flavor
    from rlops_plugin.flavor.model import LoadedModel
    from rlops_plugin.serving.engine import DecisionEngine
    from rlops_plugin.serving.exploration import ExplorationConfig
    from rlops_plugin.serving.requests import DecisionRequest

    trained = init.with_policy(result.policy, trainer=name)
    path = root / f"model-{name}".replace("/", "_")
    try:
        flavor.save_model(trained, path)
        reloaded = flavor.load_local_model(path)
    except Exception as exc:
        raise fail(subject, "save-reload", "the trained bundle does not save and reload", exc) from exc
    if reloaded.hashes() != trained.hashes():
        raise fail(subject, "save-reload", f"hashes changed on reload: {trained.hashes()} -> {reloaded.hashes()}")
    served = DecisionEngine("chain", LoadedModel(reloaded, "reloaded"), exploration=ExplorationConfig("greedy"))
    decision = served.decide(DecisionRequest(obs=np.eye(6, dtype=np.float32)[1:2])).batch
    if int(decision.actions[0]) != 1 or decision.propensities[0] != 1.0:
        raise fail(subject, "serving", f"the served greedy policy chose {int(decision.actions[0])} with "
                                       f"propensity {decision.propensities[0]} at the start cell (want 1, 1.0)")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))
