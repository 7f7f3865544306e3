import gymnasium as gym
import numpy as np
import pytest
import torch

from rlops_plugin import EnvSpec, Policy, PolicyBundle
from rlops_plugin.errors import ConfigError, InvalidObservationError, PluginError


def test_discrete_act_returns_probability_vectors(cartpole_bundle):
    policy = cartpole_bundle.policy
    obs = np.random.default_rng(0).normal(size=(7, 4))
    actions, probs = policy.act(obs, rng=np.random.default_rng(1))
    assert actions.shape == (7,) and probs.shape == (7, 2)
    assert np.allclose(probs.sum(axis=1), 1.0)
    greedy, _ = policy.act(obs, deterministic=True)
    assert (greedy == probs.argmax(axis=1)).all()
    single_action, single_probs = policy.act(obs[0], rng=np.random.default_rng(1))
    assert np.ndim(single_action) == 0 and single_probs.shape == (2,)


def test_sampling_follows_the_probabilities(cartpole_bundle):
    policy = cartpole_bundle.policy
    obs = np.tile(np.array([[0.1, 0.2, -0.1, 0.3]]), (20000, 1))
    actions, probs = policy.act(obs, rng=np.random.default_rng(0))
    assert abs(actions.mean() - probs[0, 1]) < 0.02


def test_box_policy_density_matches_log_prob():
    obs_space = gym.spaces.Box(-1, 1, shape=(3,), dtype=np.float32)
    act_space = gym.spaces.Box(-2, 2, shape=(2,), dtype=np.float32)
    torch.manual_seed(0)
    policy = Policy("mlp", {"hidden_sizes": [8]}, obs_space, act_space)
    obs = np.zeros((4, 3), dtype=np.float32)
    actions, density = policy.act(obs, rng=np.random.default_rng(0))
    assert actions.shape == (4, 2) and density.shape == (4,)
    log_p = policy.log_prob(policy.as_tensor(obs), torch.as_tensor(actions)).exp().detach().numpy()
    assert np.allclose(log_p, density, rtol=1e-5)


def test_weights_round_trip_exactly(cartpole_bundle):
    policy = cartpole_bundle.policy
    rebuilt = Policy.from_description(policy.describe())
    assert rebuilt.sha256() != policy.sha256()
    rebuilt.load_weights_bytes(policy.weights_bytes())
    assert rebuilt.sha256() == policy.sha256()


def test_bad_observations_are_named():
    policy = PolicyBundle.create(EnvSpec(id="CartPole-v1")).policy
    with pytest.raises(InvalidObservationError, match="expects \\(4,\\)"):
        policy.act([1.0, 2.0])
    with pytest.raises(InvalidObservationError, match=r"observation\[0\]\[2\] is not finite"):
        policy.act([[0.0, 0.0, np.nan, 0.0]])
    with pytest.raises(InvalidObservationError, match="not numeric"):
        policy.act([["a", "b", "c", "d"]])


def test_bad_config_and_unknown_architecture():
    space = gym.spaces.Box(-1, 1, shape=(2,))
    with pytest.raises(ConfigError, match="unknown keys"):
        Policy("mlp", {"hidden": [4]}, space, gym.spaces.Discrete(2))
    with pytest.raises(PluginError, match="unknown architecture 'transformer'"):
        Policy("transformer", {}, space, gym.spaces.Discrete(2))


def test_weights_that_do_not_fit_are_refused(cartpole_bundle):
    spaces = cartpole_bundle.policy.observation_space, cartpole_bundle.policy.action_space
    with pytest.raises(ConfigError, match="has shape"):
        Policy("mlp", {"hidden_sizes": [8, 8]}, *spaces).load_weights_bytes(cartpole_bundle.policy.weights_bytes())
    with pytest.raises(ConfigError, match=r"unexpected \['trunk.2.bias', 'trunk.2.weight'\]"):
        Policy("mlp", {"hidden_sizes": [8]}, *spaces).load_weights_bytes(cartpole_bundle.policy.weights_bytes())
