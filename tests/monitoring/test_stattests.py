"""Evidently's stat tests as the monitor calls them, and threshold calibration."""

import numpy as np
import pandas as pd
import pytest

from rlops_plugin.monitoring.calibration import calibrate, tail_threshold
from rlops_plugin.monitoring.errors import MonitorConfigError
from rlops_plugin.monitoring.stattests import (
    CATEGORICAL,
    NUMERICAL,
    as_series,
    check_stattest,
    default_threshold,
    is_distance,
    run_stattest,
    stattest_names,
)

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
