"""The promotion gate: degraded candidates fail with the right reason, improved ones pass."""

from __future__ import annotations

import types

import numpy as np
import pytest

from rlops_plugin import EnvSpec, PolicyBundle, RewardSpec, hookimpl, plugins
from rlops_plugin.errors import ConfigError
from rlops_plugin.evaluation.gate import CheckResult, GateError, GatePolicy, gate
from rlops_plugin.evaluation.regression import compare
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor.model import LoadedModel
from rlops_plugin.serving.engine import DecisionEngine
from rlops_plugin.serving.requests import DecisionRequest
from rlops_plugin.simulation.rollouts import rollout
from rlops_plugin.training.bc import BCConfig, BCTrainer

FAST = {"episodes": 8}


def test_regression_verdicts(strong_bundle, weak_bundle):
    spec = strong_bundle.env_spec
    strong, weak = rollout(strong_bundle.policy, spec, range(8)), rollout(weak_bundle.policy, spec, range(8))
    assert compare(strong, strong).passed and compare(strong, strong).difference.estimate == 0
    worse = compare(weak, strong)
    assert not worse.passed and worse.reason.startswith("regression:")
    assert compare(strong, weak).passed
    inconclusive = compare(weak, weak, non_inferiority=True, margin=0.0)
    assert not inconclusive.passed and "not shown non-inferior" in inconclusive.reason
    with pytest.raises(ValueError, match="same episode seeds"):
        compare(strong, rollout(strong_bundle.policy, spec, range(1, 9)))


def test_degraded_candidate_fails_and_improved_passes(strong_bundle, weak_bundle):
    degraded = gate(weak_bundle, strong_bundle, FAST)
    assert not degraded.passed
    assert [r.split(":")[0] for r in degraded.reasons] == ["regression"]
    assert "regression: return difference" in degraded.reasons[0]
    improved = gate(strong_bundle, weak_bundle, {**FAST, "min_return": 400})
    assert improved.passed and improved.reasons == []
    assert improved.metrics()["gate/passed"] == 1.0 and improved.metrics()["gate/regression/return_diff"] > 300


def test_min_return_and_scenarios_checks(strong_bundle, weak_bundle):
    result = gate(weak_bundle, None, {**FAST, "min_return": 100, "scenarios": ["cartpole-safety"],
                                      "scenario_episodes_scale": 0.2})
    by_name = {c.name: c for c in result.checks}
    assert not by_name["min_return"].passed and "< floor 100" in by_name["min_return"].reason
    assert not by_name["scenarios"].passed and "long_pole" in by_name["scenarios"].reason
    assert result.summary["scenario_suites"]["cartpole-safety"]


def test_different_reward_hashes_are_refused_unless_told_how(strong_bundle, weak_bundle):
    other = PolicyBundle(weak_bundle.policy, weak_bundle.env_spec, RewardSpec(ref="scaled", params={"scale": 2.0}))
    with pytest.raises(GateError, match="differ in their reward hash"):
        gate(other, strong_bundle, FAST)
    result = gate(other, strong_bundle, {**FAST, "compare_under": "champion"})
    assert "reward differ; both evaluated under the champion's" in result.checks[0].reason
    with pytest.raises(ConfigError, match="compare_under"):
        GatePolicy.from_dict({"compare_under": "both"})
    with pytest.raises(ConfigError, match=r"unknown fields \['margin'\]"):
        GatePolicy.from_dict({"margin": 0.1})


def test_custom_check_through_the_gate_checks_hook(strong_bundle):
    def always_left(ctx):
        left = ctx.candidate_report.action_counts[0] / ctx.candidate_report.action_counts.sum()
        return CheckResult("balanced_actions", 0.2 < left < 0.8, f"left share {left:.2f}", {"left_share": left})

    plugin = types.SimpleNamespace(rlops_register_gate_checks=hookimpl(
        lambda register: register("balanced_actions", always_left)))
    plugins.get_plugin_manager().register(plugin, name="balance-check")
    try:
        result = gate(strong_bundle, None, {**FAST, "checks": ["balanced_actions"]})
        assert result.passed and result.checks[0].metrics["left_share"] > 0.2
    finally:
        plugins.reset()


def test_a_plugin_check_receives_its_own_settings(strong_bundle):
    def share_between(ctx):
        bounds = ctx.settings("share_between")
        left = ctx.candidate_report.action_counts[0] / ctx.candidate_report.action_counts.sum()
        return CheckResult("share_between", bounds["low"] < left < bounds["high"], f"left share {left:.2f}")

    plugin = types.SimpleNamespace(rlops_register_gate_checks=hookimpl(
        lambda register: register("share_between", share_between)))
    plugins.add_plugin(plugin, "share-check")
    try:
        policy = {**FAST, "checks": ["share_between"]}
        assert gate(strong_bundle, None, {**policy, "check_settings": {"share_between": {"low": 0.2, "high": 0.8}}}
                    ).passed
        assert not gate(strong_bundle, None, {**policy, "check_settings": {"share_between": {"low": 0.9, "high": 1}}}
                        ).passed
        with pytest.raises(ConfigError, match=r"check_settings\['regression'\]: a built-in check reads"):
            GatePolicy.from_dict({"check_settings": {"regression": {"margin": 0.1}}})
        with pytest.raises(ConfigError, match=r"check_settings\['share_between'\]: it is not one of the checks"):
            GatePolicy.from_dict({"check_settings": {"share_between": {}}})
    finally:
        plugins.remove_plugin("share-check")


def bandit_policy(kind: str) -> PolicyBundle:
    """A ContextualBandit policy cloned from the best (or worst) arm of the true reward model."""
    spec = EnvSpec(id="rlops/ContextualBandit-v0")
    env = spec.make().unwrapped
    contexts = np.random.default_rng(5).normal(size=(3000, 5)).astype(np.float32)
    means = env.expected_reward(contexts)
    actions = (means.argmax(1) if kind == "best" else means.argmin(1)).astype(np.int64)
    base = PolicyBundle.create(spec, config={"hidden_sizes": [32]}, seed=0)
    data = Dataset("transitions", {"obs": contexts, "action": actions, "reward": np.ones(len(actions)),
                                   "propensity": np.ones(len(actions)), "next_obs": contexts,
                                   "done": np.ones(len(actions), bool)})
    return base.with_policy(BCTrainer().train(base, data, BCConfig(steps=400, lr=3e-3)).policy)


def test_ope_check_on_logged_bandit_traffic(tmp_path):
    champion = LoadedModel(PolicyBundle.create(EnvSpec(id="rlops/ContextualBandit-v0"), seed=2), "champ", "b", "1")
    engine = DecisionEngine("bandit", champion, seed=0)
    env = champion.bundle.env_spec.make()
    with open_store(tmp_path / "s.db") as store:
        events = []
        for i in range(3000):
            obs, _ = env.reset(seed=i)
            d = engine.decide(DecisionRequest(obs=obs[None].astype(np.float32)))
            store.log_decisions(d.batch)
            _, reward, *_ = env.step(int(d.batch.actions[0]))
            events.append(parse_feedback({"decision_id": d.decision_ids[0], "value": float(reward)}))
        store.add_feedback(events)
    policy = {"checks": ["ope"], "episodes": 1, "ope_store": str(tmp_path / "s.db"), "ope_model": "bandit"}
    good = gate(bandit_policy("best"), champion, policy)
    bad = gate(bandit_policy("worst"), champion, policy)
    assert good.passed, good.reasons
    assert not bad.passed and bad.reasons[0].startswith("ope: ")
    assert good.metrics()["gate/ope/value"] > good.metrics()["gate/ope/behaviour_value"]
    missing = gate(bandit_policy("best"), champion, {"checks": ["ope"], "episodes": 1})
    assert "needs ope_store" in missing.reasons[0]
