"""Evidently's stat tests as the monitor calls them, threshold calibration, and each signal on stationary and
shifted synthetic data; insufficient data; monitors through the hook."""

import types

import numpy as np
import pandas as pd
import pytest

from rlops_plugin import hookimpl, plugins
from rlops_plugin.monitoring.config import MonitorConfig, MonitorConfigError, SignalConfig
from rlops_plugin.monitoring.drift import (
    CATEGORICAL,
    NUMERICAL,
    DriftMonitor,
    as_series,
    calibrate,
    check_stattest,
    default_threshold,
    is_distance,
    run_stattest,
    stattest_names,
    tail_threshold,
)
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


def test_a_plugin_monitor_gets_its_settings_and_builtins_refuse_unknown_ones(reference_frame):
    seen = []

    class ColumnMean:
        signal = "column-mean"

        def __init__(self, config):
            seen.append(config)
            self.column = config["settings"]["column"]

        def evaluate(self, reference, current):
            gap = abs(current[self.column].mean() - reference[self.column].mean())
            return MonitorResult(self.signal, DRIFT if gap > 0.25 else OK)

    def rlops_register_monitors(register):
        register("column-mean", ColumnMean, description="mean of one column", settings=("column",))

    plugins.get_plugin_manager().register(types.SimpleNamespace(
        rlops_register_monitors=hookimpl(rlops_register_monitors)), name="test-column-mean")
    config = MonitorConfig(monitors=("column-mean",), signals={"column-mean": {"settings": {"column": "obs_2"}}})
    monitor = DriftMonitor(reference_frame, config)
    assert seen[0]["settings"] == {"column": "obs_2"} and seen[0]["stattest"] == "jensenshannon"
    moved = synthetic_frame(1000, seed=4)
    moved["obs_2"] += 0.5
    assert monitor.evaluate(moved).signals["column-mean"].status == DRIFT
    with pytest.raises(MonitorConfigError, match="monitor 'column-mean': unknown setting 'colum'; accepted: column"):
        DriftMonitor(reference_frame, MonitorConfig(monitors=("column-mean",),
                                                    signals={"column-mean": SignalConfig(settings={"colum": 1})}))
    with pytest.raises(MonitorConfigError, match="monitor 'observations': unknown setting 'bins'; accepted: none"):
        DriftMonitor(reference_frame, MonitorConfig(monitors=("observations",),
                                                    signals={"observations": {"settings": {"bins": 10}}}))


def test_reference_without_returns_gets_them_computed():
    reference = synthetic_frame(3000, seed=9).drop(columns=["episode_return"])
    monitor = DriftMonitor(reference, MonitorConfig(monitors=("returns",)))
    assert monitor.reference["episode_return"].notna().sum() == 300
    assert isinstance(monitor.reference, pd.DataFrame)


# --- Evidently stat tests and calibration ------------------------------------------------------------

RNG = np.random.default_rng(0)
SAME = pd.Series(RNG.normal(size=2000)), pd.Series(RNG.normal(size=500))
SHIFTED = pd.Series(RNG.normal(1.0, size=500))


@pytest.mark.parametrize("name", ["jensenshannon", "psi", "wasserstein", "ks", "t_test", "mannw", "anderson",
                                  "cramer_von_mises", "hellinger", "kl_div", "ed"])
def test_orientation_table_matches_evidently(name):
    ref, cur = SAME
    same = run_stattest(name, NUMERICAL, ref, cur, default_threshold(name, NUMERICAL))
    moved = run_stattest(name, NUMERICAL, ref, SHIFTED, default_threshold(name, NUMERICAL))
    assert moved.drifted and not same.drifted
    if is_distance(name):
        assert moved.score > same.score
    else:
        assert moved.score < same.score


def test_categorical_tests_and_names():
    ref = pd.Series(RNG.integers(0, 2, 2000))
    cur = pd.Series((RNG.random(1000) < 0.8).astype(int))
    for name in ("jensenshannon", "chisquare", "z", "psi"):
        assert run_stattest(name, CATEGORICAL, ref, cur, default_threshold(name, CATEGORICAL)).drifted
    assert {"jensenshannon", "ks", "psi", "wasserstein"} <= set(stattest_names())


def test_unknown_or_misapplied_stattest_is_a_config_error():
    with pytest.raises(MonitorConfigError, match="Evidently has no stat test named 'kss'"):
        check_stattest("kss", NUMERICAL)
    with pytest.raises(MonitorConfigError, match="'ks' does not accept categorical columns"):
        check_stattest("ks", CATEGORICAL)


def test_as_series_drops_missing_and_non_finite():
    values = pd.Series([1.0, np.nan, np.inf, 2.0])
    assert as_series(values, NUMERICAL).tolist() == [1.0, 2.0]
    assert as_series(pd.Series([None, "x", 3], dtype=object), NUMERICAL).tolist() == [3.0]
    assert as_series(pd.Series([1, None, 0], dtype=object), CATEGORICAL).tolist() == [1, 0]


def test_tail_threshold_extrapolates_a_gamma_tail():
    from scipy import stats

    samples = stats.gamma.rvs(3.0, scale=0.01, size=4000, random_state=1)
    exact = stats.gamma.ppf(1 - 1e-5, 3.0, scale=0.01)
    assert tail_threshold(samples, 1e-5, confidence=0.5) == pytest.approx(exact, rel=0.05)
    assert tail_threshold(np.sqrt(samples), 1e-5, power=2.0, confidence=0.5) == pytest.approx(np.sqrt(exact),
                                                                                            rel=0.05)
    assert tail_threshold(samples[:30], 1e-5, confidence=0.9) > tail_threshold(samples[:30], 1e-5, confidence=0.5)
    assert tail_threshold(samples, 0.5) == pytest.approx(samples.max())  # never below the largest seen
    assert tail_threshold(np.zeros(10), 0.01) == 0.0


def test_calibration_only_makes_columns_stricter_and_needs_enough_windows():
    series = pd.Series(np.repeat(RNG.normal(size=200), 10))  # strongly autocorrelated: 10 copies of each value
    positions = np.arange(len(series))
    js = calibrate("jensenshannon", NUMERICAL, 0.1, series, positions, 100, 0.001, 10, 100)
    assert js.calibrated and js.windows == 20 and js.threshold > 0.1 and js.null_max is not None
    ks = calibrate("ks", NUMERICAL, 0.05, series, positions, 100, 0.001, 10, 100)
    assert ks.calibrated and ks.threshold < 0.05  # p-values: stricter means smaller
    few = calibrate("jensenshannon", NUMERICAL, 0.1, series, positions, 500, 0.001, 10, 100)
    assert not few.calibrated and few.threshold == 0.1 and few.windows == 4
