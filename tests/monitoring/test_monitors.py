"""Each signal on stationary and shifted synthetic data; insufficient data; monitors through the hook."""

import types

import numpy as np
import pandas as pd
import pytest

from rlops_plugin import hookimpl, plugins
from rlops_plugin.monitoring.config import MonitorConfig, SignalConfig
from rlops_plugin.monitoring.drift import DriftMonitor
from rlops_plugin.monitoring.results import DRIFT, INSUFFICIENT, OK, MonitorResult
from rlops_plugin.monitoring.triggers import TriggerEngine, parse_rules
from tests.monitoring.conftest import synthetic_frame


@pytest.fixture(scope="module")
def monitor(reference_frame):
    return DriftMonitor(reference_frame, MonitorConfig())


def test_builtin_monitors_come_through_the_hook():
    registry = plugins.monitors()
    assert {"observations", "actions", "propensities", "rewards", "returns"} <= set(registry.names())
    assert registry.get("observations").plugin == "rlops_plugin.default_plugins.monitors"


def test_calibration_ran_on_the_reference(monitor):
    cal = monitor.calibration["observations"]["obs_0"]
    assert cal["calibrated"] and cal["windows"] == 20 and cal["threshold"] >= 0.1
    assert set(monitor.calibration["propensities"]) == {"prob_1", "entropy"}  # prob_0 = 1 - prob_1 is skipped
    assert len(monitor.reference_sample()) == 3000


def test_stationary_windows_do_not_drift(monitor):
    summaries = monitor.run(synthetic_frame(5000, seed=7), policy_version="m/1@x")
    assert [s.status for s in summaries] == [OK] * 5
    assert all(s.drift_share == 0.0 for s in summaries)
    assert summaries[0].n_episodes == 100 and summaries[0].return_n == 100 and summaries[0].reward_n == 1000


@pytest.mark.parametrize(("shift", "signal", "columns"), [
    ({"obs_shift": 0.5}, "observations", ["obs_1"]),
    ({"p_action": 0.7}, "actions", ["action"]),
    ({"prob_shift": 0.15}, "propensities", ["prob_1", "entropy"]),
    ({"reward_scale": 0.9}, "rewards", ["reward"]),
    ({"reward_scale": 0.5}, "returns", ["episode_return"]),
])
def test_each_signal_detects_its_shift(monitor, shift, signal, columns):
    summary = monitor.evaluate(synthetic_frame(1000, seed=11, **shift), 3)
    result = summary.signals[signal]
    assert result.status == DRIFT, result.to_dict()
    assert set(columns) <= set(result.drifted_columns())
    assert summary.status == DRIFT and signal in summary.drifted_signals()
    if signal == "observations":
        assert result.drifted_columns() == ["obs_1"] and summary.signals["actions"].status == OK


def _insufficient_windows():
    base = synthetic_frame(1000, seed=5)
    no_rewards = base.assign(reward=np.nan, episode_return=np.nan)
    all_nan = base.copy()
    for column in base.columns:
        if column not in ("seq", "ts", "episode_id", "step", "batch_id"):
            all_nan[column] = np.nan
    return {
        "tiny": (base.iloc[:50], None),
        "empty": (base.iloc[:0], None),
        "all-nan": (all_nan, None),
        "no-rewards-yet": (no_rewards, ("rewards", "returns")),
        "reward-column-missing": (base.drop(columns=["reward", "episode_return"]), ("rewards", "returns")),
    }


@pytest.mark.parametrize("case", list(_insufficient_windows()))
def test_insufficient_data_is_a_status_and_never_a_trigger(monitor, case):
    window, insufficient = _insufficient_windows()[case]
    engine = TriggerEngine(parse_rules(["drift:*:1", "drift:any:1", "reward-below:0.9:0.95",
                                        "reward-below:100:0.95:return"], list(monitor.monitors)))
    summary = monitor.evaluate(window, 0)
    assert engine.observe(summary) == []
    if insufficient is None:
        assert summary.status == INSUFFICIENT
        assert all(r.status == INSUFFICIENT for r in summary.signals.values())
        assert summary.to_dict()["status"] == INSUFFICIENT and "monitor/drift_share" not in summary.metrics()
    else:
        assert summary.status == OK
        assert set(summary.insufficient_signals()) == set(insufficient)
        message = summary.signals["rewards"].message
        assert ("all 1000 values missing" in message) or ("not in the window" in message)
        assert "monitor/rewards/drift" not in summary.metrics()


def test_too_small_a_reference_is_insufficient_not_an_error():
    tiny = DriftMonitor(synthetic_frame(60, seed=2), MonitorConfig())
    summary = tiny.evaluate(synthetic_frame(1000, seed=3, obs_shift=2.0))
    assert summary.status == INSUFFICIENT
    assert "60 reference values, need 100" in summary.signals["observations"].message


def test_a_third_party_monitor_registered_through_rlops_register_monitors(reference_frame):
    class MeanGap:
        signal = "obs0-mean"

        def __init__(self, config):
            self.limit = config.get("threshold") or 0.25

        def evaluate(self, reference, current):
            gap = abs(current["obs_0"].mean() - reference["obs_0"].mean())
            return MonitorResult(self.signal, DRIFT if gap > self.limit else OK, message=f"gap {gap:.3f}")

    def rlops_register_monitors(register):
        register("obs0-mean", MeanGap, description="mean of obs_0")

    plugins.get_plugin_manager().register(types.SimpleNamespace(
        rlops_register_monitors=hookimpl(rlops_register_monitors)), name="test-mean-gap")
    config = MonitorConfig(monitors=("obs0-mean", "actions"), signals={"obs0-mean": SignalConfig(threshold=0.2)})
    monitor = DriftMonitor(reference_frame, config)
    moved = synthetic_frame(1000, seed=4)
    moved["obs_0"] += 0.5
    summary = monitor.evaluate(moved)
    assert summary.signals["obs0-mean"].status == DRIFT and summary.signals["actions"].status == OK
    assert monitor.evaluate(synthetic_frame(1000, seed=4)).status == OK


def test_reference_without_returns_gets_them_computed():
    reference = synthetic_frame(3000, seed=9).drop(columns=["episode_return"])
    monitor = DriftMonitor(reference, MonitorConfig(monitors=("returns",)))
    assert monitor.reference["episode_return"].notna().sum() == 300
    assert isinstance(monitor.reference, pd.DataFrame)
