import sys

import pytest

from rlops_plugin import RewardSpec
from rlops_plugin.errors import ConfigError, IntegrityError, PluginError


def test_registered_reward_computes_and_round_trips():
    spec = RewardSpec(ref="scaled", params={"scale": 0.5, "offset": 1.0})
    assert spec.source_file == "rlops_plugin.default_plugins.rewards.py"
    assert spec(env_reward=2.0, obs=None, action=0, next_obs=None, terminated=False, truncated=False,
                outcome=None) == 2.0
    again = RewardSpec.from_dict(spec.to_dict())
    assert again == spec and again.sha256() == spec.sha256()
    assert RewardSpec(ref="scaled", params={"scale": 0.9}).sha256() != spec.sha256()


def test_user_function_reference(user_code_path):
    import user_rewards

    spec = RewardSpec.from_function(user_rewards.upright_bonus, weight=2.0)
    assert spec.ref == "user_rewards:upright_bonus"
    assert spec(env_reward=1.0, next_obs=[0, 0, 0.1, 0]) == pytest.approx(1.0 + 2.0 * 0.1)


def test_functions_that_cannot_be_referenced_are_refused():
    with pytest.raises(ConfigError, match="lambda"):
        RewardSpec.from_function(lambda **_: 0.0)

    def local(**_):
        return 0.0

    with pytest.raises(ConfigError, match="local"):
        RewardSpec.from_function(local)
    with pytest.raises(ConfigError, match="not of the form"):
        RewardSpec(ref="os.system; rm:x")
    with pytest.raises(PluginError, match="unknown reward function 'nope'"):
        RewardSpec(ref="nope")


def test_edited_reward_module_is_refused_before_import(tmp_path, monkeypatch):
    module = tmp_path / "shifty_reward.py"
    module.write_text("def r(*, env_reward, **_):\n    return env_reward\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = RewardSpec(ref="shifty_reward:r")
    stored = spec.to_dict()
    marker = tmp_path / "pwned"
    module.write_text(f"open({str(marker)!r}, 'w').close()\ndef r(*, env_reward, **_):\n    return 2 * env_reward\n")
    sys.modules.pop("shifty_reward", None)
    reloaded = RewardSpec.from_dict(stored)
    with pytest.raises(IntegrityError, match="refusing to import"):
        reloaded(env_reward=1.0)
    assert not marker.exists()


def test_non_finite_reward_and_params_are_errors(tmp_path, monkeypatch):
    (tmp_path / "nan_reward.py").write_text("def r(**_):\n    return float('nan')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="returned nan"):
        RewardSpec(ref="nan_reward:r")(env_reward=1.0)
    with pytest.raises(ConfigError, match="not a finite number"):
        RewardSpec(ref="env", params={"x": float("inf")})


def test_stored_spec_must_carry_its_hash():
    with pytest.raises(ConfigError, match="source_sha256"):
        RewardSpec.from_dict({"ref": "env", "params": {}})
    with pytest.raises(ConfigError, match="plain .py file name"):
        RewardSpec(ref="env", source_sha256="0" * 64, source_file="../../etc/passwd.py")
