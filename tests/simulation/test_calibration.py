"""System identification: fitted physics from logged transitions, and every refusal."""

from __future__ import annotations

import numpy as np
import pytest

from rlops_plugin import EnvSpec
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.simulation.calibration import Calibration, CalibrationError, calibrate, calibrate_dataset

DECLARED = {"masscart": {"low": 0.25, "high": 10.0}, "length": {"low": 0.1, "high": 2.5}}


def logged(world: EnvSpec, n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Transitions as the decision log holds them: float32, terminal next_obs = obs, 30% random actions."""
    env, rng = world.make(), np.random.default_rng(seed)
    obs_l, act_l, next_l, done_l = [], [], [], []
    obs, _ = env.reset(seed=seed)
    for t in range(n):
        action = int(rng.integers(2)) if rng.random() < 0.3 else int(obs[2] + 0.5 * obs[3] > 0)
        nxt, _, term, trunc, _ = env.step(action)
        obs_l.append(obs), act_l.append(action), next_l.append(obs if term else nxt), done_l.append(term)
        obs = nxt
        if term or trunc:
            obs, _ = env.reset(seed=seed * 1000 + t)
    env.close()
    return (np.array(obs_l, np.float32), np.array(act_l), np.array(next_l, np.float32), np.array(done_l))


@pytest.mark.parametrize("change", [{"masscart": 2.5}, {"masscart": 3.5, "length": 0.8}, {"length": 0.3}])
def test_fit_recovers_the_changed_physics(change):
    spec = EnvSpec(id="CartPole-v1", calibration=DECLARED)
    obs, act, nxt, done = logged(spec.replace(params=change), 600)
    fit = calibrate(spec, obs, act, nxt, done)
    truth = {"masscart": 1.0, "length": 0.5, **change}
    for name, value in truth.items():
        assert fit.params[name] == pytest.approx(value, rel=1e-3)
        assert fit.std[name] < 1e-3 * value
    assert fit.prior == {"masscart": 1.0, "length": 0.5}
    assert fit.excluded["terminal"] == int(done.sum()) and fit.transitions == 600 - int(done.sum())
    assert fit.rmse_fit < 1e-3 < fit.rmse_prior
    ranges = fit.randomization()
    for name, value in truth.items():  # centred on the fit, at least +-10%, inside the declared range
        assert ranges[name]["low"] == pytest.approx(0.9 * value, rel=1e-3)
        assert ranges[name]["high"] == pytest.approx(1.1 * value, rel=1e-3)
    assert Calibration.from_dict(fit.to_dict()) == fit
    assert "masscart=" in fit.summary() and "n=" in fit.summary()


def test_a_window_from_the_nominal_world_fits_the_nominal_physics():
    spec = EnvSpec(id="CartPole-v1", calibration={"masscart": DECLARED["masscart"]})
    fit = calibrate(spec, *logged(spec, 300, seed=4))
    assert fit.params["masscart"] == pytest.approx(1.0, rel=1e-3)


def test_dataset_window_uses_the_newest_rows():
    """Nominal rows first, changed-world rows last: ``recent`` fits only the new world."""
    spec = EnvSpec(id="CartPole-v1", calibration={"masscart": DECLARED["masscart"]})
    old, new = logged(spec, 400, seed=1), logged(spec.replace(params={"masscart": 3.0}), 400, seed=2)
    cols = {k: np.concatenate([a, b]) for k, a, b in zip(("obs", "action", "next_obs", "done"), old, new, strict=True)}
    data = Dataset("transitions", cols)
    assert calibrate_dataset(spec, data, recent=400).params["masscart"] == pytest.approx(3.0, rel=1e-3)
    mixed = calibrate_dataset(spec, data).params["masscart"]
    assert 1.05 < mixed < 2.95  # the whole log is neither world: why the pipeline fits a recent window
    with pytest.raises(CalibrationError, match="transitions dataset"):
        calibrate_dataset(spec, Dataset("preferences", cols))


def test_refusals_name_what_is_wrong():
    spec = EnvSpec(id="CartPole-v1", calibration=DECLARED)
    obs, act, nxt, done = logged(spec.replace(params={"masscart": 2.0}), 300)
    with pytest.raises(CalibrationError, match="too few transitions to calibrate: 50 usable"):
        calibrate(spec, obs[:50], act[:50], nxt[:50])
    bad = nxt.copy()
    bad[7, 1] = np.nan
    with pytest.raises(CalibrationError, match="1 transitions hold non-finite"):
        calibrate(spec, obs, act, bad, done)
    with pytest.raises(CalibrationError, match="declares no 'calibration'"):
        calibrate(EnvSpec(id="CartPole-v1"), obs, act, nxt, done)
    with pytest.raises(CalibrationError, match=r"on a declared bound: masscart=1\.5"):
        calibrate(spec, obs, act, nxt, done, params={"masscart": {"low": 0.5, "high": 1.5}})
    with pytest.raises(CalibrationError, match="does not determine"):  # masses and force scale together
        calibrate(spec, obs, act, nxt, done, params={"masscart": {"low": 0.5, "high": 5.0},
                                                      "masspole": {"low": 0.01, "high": 1.0},
                                                      "force_mag": {"low": 2.0, "high": 50.0}})
    with pytest.raises(CalibrationError, match="unknown for CartPoleEnv"):
        calibrate(spec, obs, act, nxt, done, params={"wheels": {"low": 1.0, "high": 4.0}})
    with pytest.raises(CalibrationError, match="aligned rows"):
        calibrate(spec, obs, act[:10], nxt, done)


def test_env_spec_declares_calibration_ranges_and_keeps_old_hashes():
    from rlops_plugin.errors import ConfigError

    plain = EnvSpec(id="CartPole-v1")
    assert "calibration" not in plain.to_dict()  # specs declaring none hash as they always did
    spec = EnvSpec(id="CartPole-v1", calibration=DECLARED)
    assert EnvSpec.from_dict(spec.to_dict()) == spec and spec.sha256() != plain.sha256()
    with pytest.raises(ConfigError, match="calibration\\['masscart'\\] must have keys low and high"):
        EnvSpec(id="CartPole-v1", calibration={"masscart": {"scale": [0.5, 2.0]}})
    with pytest.raises(ConfigError, match="low must be below high"):
        EnvSpec(id="CartPole-v1", calibration={"masscart": {"low": 2.0, "high": 2.0}})
