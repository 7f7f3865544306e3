"""rlops_plugin.testing: every registered env and monitor passes its check, and each check catches breakage."""

from __future__ import annotations

import dataclasses
import types

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlops_plugin import EnvSpec, hookimpl, plugins
from rlops_plugin.errors import RLOpsError
from rlops_plugin.testing import ConformanceError, check_env, check_monitor, check_trainer
from rlops_plugin.training.base import GradientTrainer, Trainer, TrainResult
from rlops_plugin.training.bc import BCConfig

ENVS = plugins.envs().names()
MONITORS = plugins.monitors().names()


def test_conformance_error_is_an_rlops_error_naming_the_check():
    err = ConformanceError("env 'x'", "determinism", "runs differ")
    assert isinstance(err, RLOpsError) and err.check == "determinism" and err.subject == "env 'x'"
    assert str(err) == "env 'x' fails the 'determinism' check: runs differ"


def test_importing_the_checks_needs_no_pytest():
    import subprocess
    import sys

    code = ("import sys, rlops_plugin.testing as t; t.check_env, t.check_trainer, t.check_monitor; "
            "import rlops_plugin.testing.envs, rlops_plugin.testing.trainers, rlops_plugin.testing.monitors; "
            "assert 'pytest' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- environments ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ENVS)
def test_every_registered_env_passes(name):
    report = check_env(name)
    assert report["sha256"] == EnvSpec(id=name).sha256() and report["steps"] > report["episodes"]


def test_check_env_takes_specs_and_dicts_with_randomization():
    spec = EnvSpec(id="CartPole-v1", randomization={"length": {"low": 0.4, "high": 0.8}}, max_episode_steps=50)
    assert check_env(spec)["sha256"] == spec.sha256()
    assert check_env(spec.to_dict())["sha256"] == spec.sha256()


class _Corridor(gym.Env):
    """A well-behaved 1-D corridor; the subclasses below each break one clause of the contract."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.x = 0.0

    def obs(self) -> np.ndarray:
        return np.array([self.x], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-0.1, 0.1))
        return self.obs(), {}

    def step(self, action):
        self.x = float(np.clip(self.x + (0.1 if action else -0.1), -1, 1))
        return self.obs(), 1.0, abs(self.x) >= 1.0, False, {}


class _Unseeded(_Corridor):
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(np.random.default_rng().uniform(-0.1, 0.1))  # ignores the seed
        return self.obs(), {}


class _OutOfSpace(_Corridor):
    def step(self, action):
        obs, *rest = super().step(action)
        return obs + 3.0, *rest


class _OldGymApi(_Corridor):
    def step(self, action):
        obs, reward, terminated, _, info = super().step(action)
        return obs, reward, terminated, info


class _NanReward(_Corridor):
    def step(self, action):
        obs, _, *rest = super().step(action)
        return obs, float("nan"), *rest


class _EmptyMask(_Corridor):
    def reset(self, *, seed=None, options=None):
        obs, _ = super().reset(seed=seed)
        return obs, {"action_mask": np.zeros(2, dtype=bool)}


class _Text(_Corridor):
    def __init__(self) -> None:
        super().__init__()
        self.action_space = gym.spaces.Text(5)


def _register_env(name, cls):
    plugin = types.SimpleNamespace(rlops_register_envs=hookimpl(lambda register: register(name, cls)))
    plugins.get_plugin_manager().register(plugin, name=f"test-env-{name}")


def test_a_correct_plugin_env_passes():
    _register_env("test/Corridor-v0", _Corridor)
    assert check_env("test/Corridor-v0")["env"] == "test/Corridor-v0"


@pytest.mark.parametrize(("cls", "check"), [
    (_Unseeded, "determinism"), (_OutOfSpace, "observation-space"), (_OldGymApi, "step"),
    (_NanReward, "step"), (_EmptyMask, "action-mask"), (_Text, "spaces")])
def test_check_env_catches_a_broken_env(cls, check):
    _register_env("test/Broken-v0", cls)
    with pytest.raises(ConformanceError, match=f"fails the '{check}' check") as info:
        check_env("test/Broken-v0")
    assert info.value.check == check and "test/Broken-v0" in info.value.subject


def test_check_env_refuses_a_spec_it_cannot_build():
    with pytest.raises(ConformanceError, match="'make' check"):
        check_env("NoSuchEnv-v9")
    with pytest.raises(ConformanceError, match="'spec' check"):
        check_env({"id": "CartPole-v1", "colour": "red"})


# --- monitors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MONITORS)
def test_every_registered_monitor_passes(name):
    seen = check_monitor(name)
    assert seen["reference"] == "ok" and seen["drifted"] == "drift"


class _MeanShift:
    """A plugin-style monitor: drift when obs_0's mean moves by half a reference standard deviation."""

    signal = "obs_0_mean"

    def __init__(self, config):
        self.min_samples = int(config.get("min_samples", 100))

    def evaluate(self, reference, current):
        from rlops_plugin.monitoring import DRIFT, INSUFFICIENT, OK, ColumnResult, MonitorResult

        values = current["obs_0"].dropna() if "obs_0" in current else []
        if len(values) < self.min_samples:
            column = ColumnResult("obs_0", "mean_shift", INSUFFICIENT, 0.5, message="too few values")
            return MonitorResult(self.signal, INSUFFICIENT, [column], "too few values")
        score = abs(float(values.mean()) - float(reference["obs_0"].mean())) / float(reference["obs_0"].std())
        status = DRIFT if score >= 0.5 else OK
        return MonitorResult(self.signal, status, [ColumnResult("obs_0", "mean_shift", status, 0.5, score=score)])


class _RaisesOnEmpty(_MeanShift):
    def evaluate(self, reference, current):
        if current.empty:
            raise ValueError("no rows")
        return super().evaluate(reference, current)


class _Blind(_MeanShift):
    def evaluate(self, reference, current):
        result = super().evaluate(reference, current)
        if result.status == "drift":
            result.status = "ok"
        return result


class _PlainDict(_MeanShift):
    def evaluate(self, reference, current):
        return super().evaluate(reference, current).to_dict()


class _NoSignal(_MeanShift):
    signal = ""


class _BadPrepare(_MeanShift):
    def prepare(self, reference, *, window, alpha):  # misses the runner's other keyword arguments
        return {}


def test_a_correct_plugin_monitor_passes():
    assert check_monitor(_MeanShift) == {
        "reference": "ok", "drifted": "drift", "an empty window": "insufficient",
        "a window without its columns": "insufficient", "an all-NaN window": "insufficient",
        "a 5-row window": "insufficient"}


@pytest.mark.parametrize(("factory", "check"), [
    (_RaisesOnEmpty, "insufficient-data"), (_Blind, "detects-drift"), (_PlainDict, "result"),
    (_NoSignal, "factory"), (_BadPrepare, "prepare")])
def test_check_monitor_catches_a_broken_monitor(factory, check):
    with pytest.raises(ConformanceError, match=f"fails the '{check}' check") as info:
        check_monitor(factory)
    assert info.value.check == check


# --- trainers -------------------------------------------------------------------------------------

class _Imitate(GradientTrainer):
    """What a plugin trainer on the base class writes: the columns and one update step."""

    Config = BCConfig  # a plugin may reuse a shipped config class
    data_kind = "transitions"

    def columns(self, data, config):
        return {"obs": data.columns["obs"], "action": data.columns["action"]}

    def update(self, batch):
        loss = -self.policy.log_prob(batch["obs"], batch["action"]).mean()
        self.optimize(loss)
        return {"train/loss": loss.item()}


def test_a_plugin_trainer_on_the_gradient_base_passes(tmp_path):
    result = check_trainer(_Imitate, tmp_path, config={"steps": 300, "batch_size": 64, "lr": 1e-2})
    assert result["after"] > result["before"] + 1.0


class _MoveRight(Trainer):
    """A simulator trainer that simply makes the policy move right (correct, and fast)."""

    Config = BCConfig  # a plugin may reuse a shipped config class
    data_kind = "simulator"

    def train(self, init, data, config, progress=None):
        policy = init.policy.clone()
        with torch.no_grad():
            policy.network.head.bias.copy_(torch.tensor([-1.0, 1.0]))
        if progress is not None:
            progress(1, 1, {})
        return TrainResult(policy, {"train/bias": 1.0}, [(1, {"train/bias": 1.0})])


class _Untrained(_MoveRight):
    def train(self, init, data, config, progress=None):
        result = super().train(init, data, config, progress)
        return TrainResult(init.policy.clone(), result.metrics, result.history)


class _InPlace(_MoveRight):
    def train(self, init, data, config, progress=None):
        result = super().train(init, data, config, progress)
        init.policy.load_state_dict(result.policy.state_dict())
        return TrainResult(init.policy, result.metrics, result.history)


class _Noisy(_MoveRight):
    def train(self, init, data, config, progress=None):
        result = super().train(init, data, config, progress)
        with torch.no_grad():
            result.policy.network.head.bias.add_(torch.from_numpy(np.random.default_rng().normal(size=2) * 1e-3))
        return result


class _Silent(_MoveRight):
    def train(self, init, data, config, progress=None):
        return super().train(init, data, config, None)


class _NanMetrics(_MoveRight):
    def train(self, init, data, config, progress=None):
        result = super().train(init, data, config, progress)
        return TrainResult(result.policy, {"train/loss": float("nan")}, result.history)


class _NeedsNoData(_MoveRight):
    data_kind = "transitions"


@dataclasses.dataclass
class _Undocumented:
    """Settings with an undocumented field."""

    steps: int = 1


class _BadConfig(_MoveRight):
    Config = _Undocumented


def test_a_correct_simulator_trainer_passes():
    assert check_trainer(_MoveRight)["after"] > 0


@pytest.mark.parametrize(("cls", "check"), [
    (_Untrained, "improvement"), (_InPlace, "init-unchanged"), (_Noisy, "determinism"), (_Silent, "progress"),
    (_NanMetrics, "metrics"), (_NeedsNoData, "refuses-missing-data"), (_BadConfig, "config")])
def test_check_trainer_catches_a_broken_trainer(cls, check):
    with pytest.raises(ConformanceError, match=f"fails the '{check}' check") as info:
        check_trainer(cls)
    assert info.value.check == check and cls.__name__ in info.value.subject
