import numpy as np
import pytest

from rlops_plugin import EnvSpec
from rlops_plugin.errors import ConfigError, IntegrityError, PluginError


def test_json_round_trip_and_hash_stability():
    spec = EnvSpec(id="CartPole-v1", params={"length": 0.6}, randomization={"masspole": {"scale": [0.9, 1.1]}},
                   wrappers=({"name": "TimeLimit", "kwargs": {"max_episode_steps": 100}},), max_episode_steps=200)
    again = EnvSpec.from_dict(spec.to_dict())
    assert again == spec
    assert again.sha256() == spec.sha256()
    assert spec.replace(params={"length": 0.7}).sha256() != spec.sha256()


def test_unknown_field_and_both_or_no_ids_are_refused():
    with pytest.raises(ConfigError, match="unknown fields"):
        EnvSpec.from_dict({"id": "CartPole-v1", "kwarg": {}})
    with pytest.raises(ConfigError, match="exactly one"):
        EnvSpec()
    with pytest.raises(ConfigError, match="exactly one"):
        EnvSpec(id="CartPole-v1", entry_point="rlops_plugin.envs.chain:ChainWalkEnv")


def test_fixed_params_update_derived_cartpole_physics():
    env = EnvSpec(id="CartPole-v1", params={"length": 0.75}).make()
    base = env.unwrapped
    assert base.length == 0.75
    assert base.polemass_length == pytest.approx(base.masspole * 0.75)


def test_randomization_is_reproducible_per_seed():
    spec = EnvSpec(id="CartPole-v1", randomization={"length": {"low": 0.4, "high": 0.9}})
    env_a, env_b = spec.make(), spec.make()
    draws_a = [env_a.reset(seed=s)[1]["rlops_params"]["length"] for s in (1, 2, 3)]
    draws_b = [env_b.reset(seed=s)[1]["rlops_params"]["length"] for s in (1, 2, 3)]
    assert draws_a == draws_b
    assert len(set(draws_a)) == 3
    assert all(0.4 <= v <= 0.9 for v in draws_a)
    assert env_a.unwrapped.polemass_length == pytest.approx(env_a.unwrapped.masspole * draws_a[-1])


def test_unknown_env_parameter_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"'pole_length' is unknown for CartPoleEnv.*length"):
        EnvSpec(id="CartPole-v1", params={"pole_length": 1.0}).make()
    with pytest.raises(ConfigError, match="unknown for CartPoleEnv"):
        EnvSpec(id="CartPole-v1", randomization={"gravityy": {"low": 9, "high": 10}}).make()


def test_bad_ranges_and_wrappers_are_refused():
    with pytest.raises(ConfigError, match="low <= high"):
        EnvSpec(id="CartPole-v1", randomization={"length": {"low": 2, "high": 1}})
    with pytest.raises(ConfigError, match="keys low"):
        EnvSpec(id="CartPole-v1", randomization={"length": {"min": 1}})
    with pytest.raises(ConfigError, match="not a gymnasium.wrappers class"):
        EnvSpec(id="CartPole-v1", wrappers=({"name": "os.system"},))
    with pytest.raises(ConfigError, match="not a finite number"):
        EnvSpec(id="CartPole-v1", params={"length": float("nan")})


def test_plugin_env_and_gymnasium_fallback_and_unknown():
    env = EnvSpec(id="rlops/ChainWalk-v0", kwargs={"length": 4}).make()
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4,)
    with pytest.raises(PluginError, match="neither registered"):
        EnvSpec(id="NoSuchEnv-v9").make()


def test_entry_point_is_hash_checked_before_import(tmp_path, monkeypatch):
    module = tmp_path / "my_env_mod.py"
    module.write_text("from rlops_plugin.envs.chain import ChainWalkEnv as Env\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = EnvSpec(entry_point="my_env_mod:Env", kwargs={"length": 5}, max_episode_steps=10)
    assert spec.make().reset(seed=0)[0].shape == (5,)
    marker = tmp_path / "pwned"
    module.write_text(f"open({str(marker)!r}, 'w').close()\nfrom rlops_plugin.envs.chain import ChainWalkEnv as Env\n")
    monkeypatch.delitem(__import__("sys").modules, "my_env_mod")
    with pytest.raises(IntegrityError, match="refusing to import"):
        EnvSpec.from_dict(spec.to_dict()).make()
    assert not marker.exists()


def test_bandit_env_expected_reward_matches_sampling():
    env = EnvSpec(id="rlops/ContextualBandit-v0", kwargs={"reward_type": "gaussian", "noise": 0.0}).make()
    obs, _ = env.reset(seed=3)
    _, reward, terminated, _, info = env.step(1)
    assert terminated
    assert reward == pytest.approx(env.unwrapped.expected_reward(obs[None])[0, 1])
    assert np.isclose(info["expected_reward"], reward)
