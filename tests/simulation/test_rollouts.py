import numpy as np
import pytest

from rlops_plugin import EnvSpec, RewardSpec
from rlops_plugin.errors import ConfigError
from rlops_plugin.simulation.rollouts import rollout
from rlops_plugin.simulation.stats import bootstrap_mean, paired_difference


def test_same_seeds_same_episodes(strong_bundle, weak_bundle):
    spec = strong_bundle.env_spec
    a = rollout(strong_bundle.policy, spec, range(5))
    b = rollout(strong_bundle.policy, spec, range(5), n_envs=2)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert a.returns.mean() > 400 and rollout(weak_bundle.policy, spec, range(5)).returns.mean() < 100
    summary = a.summary()
    assert summary["episodes"] == 5 and summary["return_ci_low"] <= summary["return_mean"] <= summary["return_ci_high"]
    assert abs(sum(summary["action_frequencies"]) - 1) < 1e-9


def test_randomized_physics_is_paired_across_policies(strong_bundle, weak_bundle):
    spec = EnvSpec(id="CartPole-v1", randomization={"length": {"low": 0.3, "high": 0.9}})
    first = rollout(weak_bundle.policy, spec, [3, 4], deterministic=True)
    again = rollout(weak_bundle.policy, spec, [3, 4], deterministic=True)
    np.testing.assert_array_equal(first.returns, again.returns)


def test_constraints_forbidden_actions_and_reward_spec(weak_bundle):
    report = rollout(weak_bundle.policy, weak_bundle.env_spec, range(3),
                     constraints={"steps": lambda o, a, n, i: 1.0}, forbidden=lambda o, a: a == 0,
                     reward_spec=RewardSpec(ref="scaled", params={"scale": 2.0}))
    np.testing.assert_array_equal(report.constraint_costs["steps"], report.lengths)
    np.testing.assert_allclose(report.returns, 2 * report.env_returns)
    assert report.forbidden_actions.sum() == report.action_counts[0]


def test_bad_inputs(weak_bundle, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="at least one episode seed"):
        rollout(weak_bundle.policy, weak_bundle.env_spec, [])
    with pytest.raises(ConfigError, match="zero-length episodes"):
        rollout(weak_bundle.policy, weak_bundle.env_spec, [0], max_steps=0)
    (tmp_path / "nan_reward_mod.py").write_text("def r(**_):\n    return float('nan')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="returned nan"):
        rollout(weak_bundle.policy, weak_bundle.env_spec, [0], reward_spec=RewardSpec(ref="nan_reward_mod:r"))


def test_bootstrap_intervals():
    assert bootstrap_mean(np.array([])).estimate != bootstrap_mean(np.array([])).estimate  # NaN
    one = bootstrap_mean(np.array([3.0]))
    assert (one.low, one.estimate, one.high) == (3.0, 3.0, 3.0)
    x = np.random.default_rng(0).normal(10, 1, 400)
    ci = bootstrap_mean(x)
    assert ci.low < 10 < ci.high and ci.high - ci.low < 0.4
    same = paired_difference(x, x)
    assert (same.low, same.high) == (0.0, 0.0)
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference(x, x[:3])
