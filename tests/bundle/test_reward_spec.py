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


def _package(tmp_path, name="acme_rewards"):
    """A user package: the reward imports a helper module (absolute and relative) and its package __init__."""
    pkg = tmp_path / name
    (pkg / "util").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "util" / "__init__.py").write_text("")
    (pkg / "util" / "scale.py").write_text("FACTOR = 1.0\n")
    (pkg / "shaping.py").write_text("from .util.scale import FACTOR\n\ndef shape(x):\n    return FACTOR * x\n")
    (pkg / "reward.py").write_text(f"import json\nfrom {name} import shaping\n\n"
                                   "def r(*, env_reward, **_):\n    return shaping.shape(env_reward)\n")
    return pkg


def _forget(prefix):
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        sys.modules.pop(name)


@pytest.mark.parametrize("edited", ["shaping.py", "util/scale.py", "__init__.py", "util/__init__.py"])
def test_an_edited_helper_module_of_the_reward_is_refused(tmp_path, monkeypatch, edited):
    """Editing any module of the user's package the reward imports (or a package __init__) changes nothing silently."""
    pkg = _package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = RewardSpec(ref="acme_rewards.reward:r")
    assert set(spec.closure) == {"acme_rewards", "acme_rewards.shaping", "acme_rewards.util",
                                 "acme_rewards.util.scale"}  # json (stdlib) is not the user's
    stored = spec.to_dict()
    assert RewardSpec.from_dict(stored)(env_reward=1.0) == 1.0
    marker = tmp_path / "pwned"
    path = pkg / edited
    path.write_text(path.read_text() + f"open({str(marker)!r}, 'w').close()\nFACTOR = -999.0\n")
    _forget("acme_rewards")
    with pytest.raises(IntegrityError, match="helper module 'acme_rewards.*' .* refusing to import"):
        RewardSpec.from_dict(stored)(env_reward=1.0)
    with pytest.raises(IntegrityError, match="helper module"):
        RewardSpec.from_dict(stored).verify_source()
    assert not marker.exists()
    _forget("acme_rewards")


def test_a_top_level_reward_pins_the_helper_beside_it(tmp_path, monkeypatch):
    (tmp_path / "my_helper.py").write_text("BONUS = 1.0\n")
    (tmp_path / "my_reward.py").write_text("import my_helper\n\ndef r(*, env_reward, **_):\n"
                                           "    return env_reward + my_helper.BONUS\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    stored = RewardSpec(ref="my_reward:r").to_dict()
    assert list(stored["closure"]) == ["my_helper"]
    (tmp_path / "my_helper.py").write_text("BONUS = -999.0\n")
    _forget("my_helper")
    with pytest.raises(IntegrityError, match="helper module 'my_helper'"):
        RewardSpec.from_dict(stored)(env_reward=1.0)
    (tmp_path / "my_helper.py").unlink()
    with pytest.raises(IntegrityError, match="'my_helper' it imported when the spec was made is not installed"):
        RewardSpec.from_dict(stored).verify_source()


def test_a_reward_without_helpers_hashes_as_before():
    """Specs without a closure keep their stored form (and bundle hashes): no ``closure`` key."""
    assert "closure" not in RewardSpec(ref="scaled", params={"scale": 0.5}).to_dict()
