"""A third-party plugin installed as a real package, a user reward module, and a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import FIXTURES_DIR, REPO_ROOT

pytestmark = pytest.mark.integration

LOG_SCRIPT = textwrap.dedent("""
    import json, sys
    import mlflow, numpy as np
    import user_rewards
    from rlops_plugin import EnvSpec, PolicyBundle, RewardSpec, flavor
    name = sys.argv[1]
    bundle = PolicyBundle.create(EnvSpec(id="example/Corridor-v0", kwargs={"width": 4.0}),
                                 RewardSpec.from_function(user_rewards.distance_penalty, weight=0.5))
    with mlflow.start_run():
        info = flavor.log_model(bundle, name="policy", registered_model_name=name)
    flavor.set_alias(name, "champion", info.registered_model_version)
    obs = np.random.default_rng(0).normal(size=(50, 2))
    print(json.dumps({"hashes": bundle.hashes(),
                      "actions": bundle.policy.act(obs, deterministic=True)[0].tolist()}))
""")

LOAD_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from rlops_plugin import flavor
    loaded = flavor.load_model(f"models:/{sys.argv[1]}@champion")
    env = loaded.env_spec.make()
    obs, _ = env.reset(seed=0)
    next_obs, env_reward, *_ = env.step(2)
    reward = loaded.reward_spec(obs=obs, action=2, next_obs=next_obs, env_reward=env_reward,
                                terminated=False, truncated=False, outcome=None)
    grid = np.random.default_rng(0).normal(size=(50, 2))
    print(json.dumps({"hashes": loaded.hashes(), "env": type(env.unwrapped).__name__,
                      "actions": loaded.policy.act(grid, deterministic=True)[0].tolist(),
                      "reward": reward, "plugin_reward": "example_bonus" in __import__(
                          "rlops_plugin.plugins", fromlist=["rewards"]).rewards()}))
""")


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """pip-install tests/fixtures/example_plugin into its own target dir (a real install)."""
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(FIXTURES_DIR / "example_plugin")],
        check=True, capture_output=True, timeout=300,
    )
    assert list(target.glob("rlops_example_plugin-*.dist-info/entry_points.txt"))
    return target


def _run(script: str, args: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_custom_env_and_reward_survive_a_fresh_process(tracking, model_name, plugin_site):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking,
           "PYTHONPATH": os.pathsep.join([str(plugin_site), str(FIXTURES_DIR / "user_code")])}
    logged = _run(LOG_SCRIPT, [model_name], env)
    loaded = _run(LOAD_SCRIPT, [model_name], env)
    assert loaded["hashes"] == logged["hashes"]
    assert loaded["actions"] == logged["actions"]
    assert loaded["env"] == "CorridorEnv"
    assert loaded["plugin_reward"] is True
    assert isinstance(loaded["reward"], float)


def test_rlops_load_plugins_limits_entry_points(plugin_site):
    base = {**os.environ, "PYTHONPATH": str(plugin_site)}
    script = "from rlops_plugin import plugins; print(__import__('json').dumps(plugins.envs().names()))"
    everything = _run(script, [], base)
    assert "example/Corridor-v0" in everything
    only_example = _run(script, [], {**base, "RLOPS_LOAD_PLUGINS": "example"})
    assert "example/Corridor-v0" in only_example
    none = _run(script, [], {**base, "RLOPS_LOAD_PLUGINS": ""})
    assert "example/Corridor-v0" not in none and "CartPole-v1" in none
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**base, "RLOPS_LOAD_PLUGINS": "missing"}, timeout=120)
    assert proc.returncode != 0 and "names 'missing', but no installed package" in proc.stderr
