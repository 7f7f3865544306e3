import types

import pluggy
import pytest
import torch

from rlops_plugin import Policy, hookimpl, plugins
from rlops_plugin.errors import PluginError
from tests.conftest import FIXTURES_DIR


def test_builtins_come_through_the_hooks():
    assert {"CartPole-v1", "rlops/ChainWalk-v0", "rlops/ContextualBandit-v0"} <= set(plugins.envs().names())
    assert plugins.rewards().get("env").plugin == "rlops_plugin.default_plugins.rewards"
    assert plugins.architectures().get("mlp").plugin == "rlops_plugin.default_plugins.architectures"
    assert set(plugins.DEFAULT_PLUGINS) <= set(plugins.plugin_names())


def test_a_plugin_registered_at_runtime_adds_an_architecture():
    def linear(config, observation_space, action_space):
        return torch.nn.Linear(observation_space.shape[0], action_space.n)

    plugin = types.SimpleNamespace(rlops_register_architectures=hookimpl(lambda register: register("linear", linear)))
    plugins.get_plugin_manager().register(plugin, name="runtime-linear")
    ref = Policy("mlp", {}, *__import__("rlops_plugin").EnvSpec(id="CartPole-v1").spaces())
    policy = Policy("linear", {}, ref.observation_space, ref.action_space)
    assert policy.act([0.0, 0.0, 0.0, 0.0])[1].shape == (2,)
    assert plugins.architectures().get("linear").plugin == "runtime-linear"


def test_duplicate_names_name_both_plugins():
    plugin = types.SimpleNamespace(rlops_register_rewards=hookimpl(lambda register: register("env", len)))
    plugins.get_plugin_manager().register(plugin, name="dupe")
    with pytest.raises(PluginError, match="reward function 'env' registered twice: by .* and by 'dupe'"):
        plugins.rewards()


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(PluginError, match="unknown environment 'Nope'; registered environments: .*CartPole-v1"):
        plugins.envs().get("Nope")


def test_check_pending_rejects_misspelled_hooks(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES_DIR / "bad_plugins"))
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", (*plugins.DEFAULT_PLUGINS, "typo_hook_plugin"))
    plugins.reset()
    with pytest.raises(pluggy.PluginValidationError, match="rlops_register_env"):
        plugins.get_plugin_manager()


def test_empty_load_plugins_still_loads_builtins(monkeypatch):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "")
    plugins.reset()
    assert "mlp" in plugins.architectures()
