"""Guarded PPO fine-tuning: constraint costs and scenario starts from a scenario suite, lr annealing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rlops_plugin import EnvSpec, PolicyBundle
from rlops_plugin.errors import ConfigError
from rlops_plugin.training.base import seed_everything
from rlops_plugin.training.ppo import PPOConfig, PPOTrainer, _mlp, _Runner


@pytest.fixture
def bundle():
    return PolicyBundle.create(EnvSpec(id="CartPole-v1"), "env", config={"hidden_sizes": [16]}, seed=0)


def runner(bundle, **overrides):
    config = PPOConfig(n_envs=5, rollout_steps=16, seed=3, **overrides)
    return _Runner(bundle.env_spec, bundle, config, seed_everything(config.seed)), config


def test_scenario_envs_start_where_the_suite_says(bundle):
    run, _ = runner(bundle, constraint_suite="cartpole-safety", scenario_share=1.0)
    # round-robin over nominal, long_pole, heavy_cart, sensor_noise, shoved_start
    assert [spec.params.get("masscart") for spec, _, _ in run.layout] == [None, None, 2.0, None, None]
    assert run.envs[1].unwrapped.length == 0.75 and run.envs[2].unwrapped.masscart == 2.0
    assert 0.08 <= run.obs[4][2] <= 0.12  # shoved start: the pole already leans
    assert all(abs(obs[2]) <= 0.05 for obs in run.obs[:4])
    run.close()
    half, _ = runner(bundle, constraint_suite="cartpole-safety", scenario_share=0.4)
    assert [place is not None for _, place, _ in half.layout] == [False] * 5  # nominal and long_pole: no placement
    assert half.envs[1].unwrapped.length == 0.75 and half.envs[2].unwrapped.length == 0.5
    half.close()


def test_scenario_envs_move_through_every_scenario_with_its_sensor_noise(bundle):
    """Two scenario envs, five scenarios: after each episode an env takes the scenario two further on."""
    run, _ = runner(bundle, constraint_suite="cartpole-safety", scenario_share=0.4)
    names = [s.name for s in run.scenarios]
    visited = [names[run.current[0]]]
    for _ in range(4):
        run._next_scenario(0)
        visited.append(names[run.current[0]])
    assert visited == ["nominal", "heavy_cart", "shoved_start", "long_pole", "sensor_noise"]
    assert run.envs[0].unwrapped.masscart == 1.0 and run.layout[0][2] == 0.02  # rebuilt; noisy sensor
    run._next_scenario(1)  # long_pole -> sensor_noise: another env
    assert run.envs[1].unwrapped.length == 0.5
    seen = run.seen(run.obs)
    assert not np.allclose(seen[0], run.obs[0]) and not np.allclose(seen[1], run.obs[1])
    assert np.array_equal(seen[2:], run.obs[2:])  # nominal envs see the true state
    run.close()


def test_constraint_costs_lower_the_training_returns(bundle, tmp_path):
    suite = {"name": "always", "scenarios": [{"name": "nominal"}],
             "constraints": [{"name": "never_ok", "type": "observation_bound", "index": 0, "low": 10.0}]}
    path = tmp_path / "always.json"
    path.write_text(json.dumps(suite))
    critic = _mlp(4, [8])
    batches = {}
    for penalty in (0.0, 1.0):
        run, _ = runner(bundle, constraint_suite=str(path), constraint_penalty=penalty, scenario_share=0.0)
        torch.manual_seed(0)
        batches[penalty] = run.collect(bundle.policy, critic)
        assert run.violations == 5 * 16  # every step violates the impossible bound
        run.close()
    assert torch.equal(batches[0.0]["action"], batches[1.0]["action"])
    assert bool((batches[1.0]["ret"] < batches[0.0]["ret"]).all())


def test_training_reports_violations_and_refuses_bad_settings(bundle, tmp_path):
    result = PPOTrainer().train(bundle, None, PPOConfig(total_steps=256, n_envs=4, rollout_steps=64,
                                                         constraint_suite="cartpole-safety", anneal_lr=True))
    assert np.isfinite(result.metrics["train/constraint_violations"])
    with pytest.raises(ConfigError, match="neither a registered suite"):
        runner(bundle, constraint_suite="no-such-suite")
    with pytest.raises(ConfigError, match="scenario_share"):
        PPOTrainer().train(bundle, None, PPOConfig(scenario_share=1.5))
    with pytest.raises(ConfigError, match="constraint_penalty"):
        PPOTrainer().train(bundle, None, PPOConfig(constraint_penalty=-1))
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"name": "bare", "scenarios": [{"name": "nominal"}]}))
    with pytest.raises(ConfigError, match="no suite-wide constraints"):
        runner(bundle, constraint_suite=str(bare))
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"name": "odd", "scenarios": [{"name": "x", "env": {"params": {"wheels": 3}}}],
                               "constraints": [{"name": "c", "type": "forbidden_action", "action": 0}]}))
    with pytest.raises(ConfigError, match="scenario 'x'"):
        runner(bundle, constraint_suite=str(odd))


def test_selection_keeps_the_iterate_that_does_best_on_the_suite(bundle, tmp_path):
    from rlops_plugin.training.ppo import _Selector

    suite = {"name": "s", "scenarios": [{"name": "nominal", "episodes": 5}],
             "constraints": [{"name": "no_left", "type": "forbidden_action", "action": 0, "max_per_episode": 0}]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(suite))
    policy = bundle.policy.clone()
    selector = _Selector(bundle, PPOConfig(constraint_suite=str(path)))
    assert all(sc.seed == _Selector.SEED_OFFSET for sc in selector.suite.scenarios)  # not the gate's seeds
    bias = list(policy.network.parameters())[-1]
    with torch.no_grad():  # an iterate that always pushes right: passes the suite
        bias.copy_(torch.tensor([-50.0, 50.0]))
    selector.consider(policy, 1)
    good = {k: v.clone() for k, v in policy.network.state_dict().items()}
    with torch.no_grad():  # a later one that always pushes left: violates no_left
        bias.copy_(torch.tensor([50.0, -50.0]))
    selector.consider(policy, 2)
    metrics = selector.restore_best(policy)
    assert metrics["train/selected_update"] == 1.0 and metrics["train/selection_failed_scenarios"] == 0.0
    assert all(torch.equal(good[k], v) for k, v in policy.network.state_dict().items())
    with pytest.raises(ConfigError, match="select_every"):
        PPOTrainer().train(bundle, None, PPOConfig(select_every=2))
    result = PPOTrainer().train(bundle, None, PPOConfig(total_steps=512, n_envs=4, rollout_steps=64,
                                                         constraint_suite="cartpole-safety", select_every=1))
    assert 1 <= result.metrics["train/selected_update"] <= 2


def test_constraint_margin_costs_before_the_real_limit(bundle, tmp_path):
    """With a margin the cart is charged from |x| > 1.65 (2.2 shrunk by 25%), the gate still counts from 2.2."""
    from rlops_plugin.simulation.scenarios import ScenarioSuite

    bound, forbidden = ScenarioSuite.load("cartpole-safety").constraints
    tight = bound.tightened(0.25)
    assert (tight.low, tight.high) == pytest.approx((-1.65, 1.65)) and (bound.low, bound.high) == (-2.2, 2.2)
    near_edge = np.array([1.8, 0.0, 0.0, 0.0])
    assert bound.cost_fn()(near_edge, 1, near_edge, {}) == 0.0 and tight.cost_fn()(near_edge, 1, near_edge, {}) == 1.0
    assert forbidden.tightened(0.2).when == {"index": 2, "above": pytest.approx(0.12)}
    leaning = np.array([0.0, 0.0, 0.13, 0.0])
    assert forbidden.cost_fn()(leaning, 0, leaning, {}) == 0.0
    assert forbidden.tightened(0.2).cost_fn()(leaning, 0, leaning, {}) == 1.0
    assert bound.tightened(0.0) is bound
    with pytest.raises(ConfigError, match="margin must lie in"):
        bound.tightened(1.0)
    run, _ = runner(bundle, constraint_suite="cartpole-safety", constraint_margin=0.25)
    assert len(run.costs) == 4  # the two constraints at their limits, and again tightened
    past_limit, in_margin = np.array([2.3, 0.0, 0.0, 0.0]), np.array([1.8, 0.0, 0.0, 0.0])
    assert sum(cost(past_limit, 1, past_limit, {}) for cost in run.costs) == 2.0
    assert sum(cost(in_margin, 1, in_margin, {}) for cost in run.costs) == 1.0
    run.close()
    plain, _ = runner(bundle, constraint_suite="cartpole-safety")
    assert len(plain.costs) == 2
    plain.close()


def test_a_second_round_runs_only_while_validation_scenarios_fail(bundle, tmp_path):
    impossible = {"name": "never", "scenarios": [{"name": "nominal", "episodes": 1}],
                  "constraints": [{"name": "c", "type": "observation_bound", "index": 0, "low": 10.0}]}
    path = tmp_path / "never.json"
    path.write_text(json.dumps(impossible))
    small = {"total_steps": 256, "n_envs": 4, "rollout_steps": 64, "select_every": 1}
    failing = PPOTrainer().train(bundle, None, PPOConfig(constraint_suite=str(path), max_rounds=3, **small))
    assert failing.metrics["train/rounds"] == 3.0 and failing.metrics["train/selection_failed_scenarios"] == 1.0
    assert len(failing.history) == 3  # one update per round, each recorded
    trivial = {**impossible, "constraints": [{"name": "c", "type": "observation_bound", "index": 0, "low": -10.0}]}
    path.write_text(json.dumps(trivial))
    passing = PPOTrainer().train(bundle, None, PPOConfig(constraint_suite=str(path), max_rounds=3, **small))
    assert passing.metrics["train/rounds"] == 1.0
    with pytest.raises(ConfigError, match="max_rounds"):
        PPOTrainer().train(bundle, None, PPOConfig(max_rounds=2))
    with pytest.raises(ConfigError, match="max_rounds"):
        PPOTrainer().train(bundle, None, PPOConfig(max_rounds=0))


def test_edge_starts_put_the_cart_between_the_margin_and_the_limit(bundle):
    run, _ = runner(bundle, constraint_suite="cartpole-safety", scenario_share=0.0, edge_share=1.0,
                    constraint_margin=0.25)
    assert sorted(run.edges) == [(0, -2.2, pytest.approx(-1.65)), (0, pytest.approx(1.65), 2.2)]
    assert all(1.65 <= abs(float(obs[0])) <= 2.2 for obs in run.obs)
    assert {bool(obs[0] > 0) for obs in run.obs} == {True, False}  # both sides (5 envs, fixed seed)
    assert all(abs(float(env.unwrapped.state[0]) - float(obs[0])) < 1e-6 for env, obs in zip(run.envs, run.obs,
                                                                                            strict=True))
    run.close()
    none, _ = runner(bundle, constraint_suite="cartpole-safety", scenario_share=0.0)
    assert none.edges == [] and all(abs(float(obs[0])) <= 0.05 for obs in none.obs)
    none.close()
    with pytest.raises(ConfigError, match="edge_share"):
        PPOTrainer().train(bundle, None, PPOConfig(edge_share=1.5))
