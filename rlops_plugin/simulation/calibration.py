"""System identification: fit the simulator's physics to what production logged.

When the monitor says the world moved, the operator does not know *how* it moved. The decision
log does: every transition ``(obs, action, next_obs)`` is one observation of the real dynamics.
For each parameter vector ``theta`` of the EnvSpec's declared ``calibration`` parameters we put
the simulator in the logged state, apply the logged action and compare its next observation with
the logged one; ``scipy.optimize.least_squares`` finds the ``theta`` (inside the declared bounds)
that explains the window best. Residuals are divided per dimension by the spread of the logged
state changes so no observation dimension dominates by its units.

Uncertainty is the usual Gauss-Newton one: ``cov = s^2 (J^T J)^-1`` with ``s^2`` the residual
variance at the optimum; a parameter whose standard error is not small against its range is not
determined by the window (e.g. several masses scaled together leave the dynamics unchanged), and
we refuse rather than report a number the data does not support. A fit that ends on a declared
bound means the world left the range the EnvSpec admits: refused too, never clipped to the bound.
Either way the prior is never returned in place of a fit.

The fitted values become the centre of the fine-tuning's domain randomization
(:meth:`Calibration.randomization`), and are recorded in the candidate's lineage and audit event.
The simulator must expose its full state as ``unwrapped.state`` equal to the observation (the
classic-control envs do); others are refused with an error naming the env.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlops_plugin.bundle.env_spec import EnvSpec, apply_env_params, numeric_params
from rlops_plugin.errors import ConfigError, RLOpsError
from rlops_plugin.flavor.registry import calibration_label

MIN_TRANSITIONS = 100
"""Fewer transitions than this do not calibrate (a few episodes' worth; CartPole needs far fewer
for one parameter, but a window this small is more likely a fluke than the new world)."""
BOUND_TOLERANCE = 1e-3
"""A fitted value within this fraction of its range from a bound counts as on the bound."""
MIN_RELATIVE_SINGULAR = 1e-3
"""A direction of the range-scaled parameters whose singular value is below this fraction of the
largest barely changes the predictions: the parameters along it are not identifiable together.
Measured on 300 CartPole transitions: an exactly degenerate set (cart mass, pole mass, force)
gives 1e-4 at the fit; identifiable sets 3e-3 (with the pole mass) and above."""
MAX_RELATIVE_STD = 0.25
"""A standard error above this fraction of the declared range means the window does not
determine the parameter."""


class CalibrationError(RLOpsError):
    """The logged window cannot calibrate the simulator (too little, non-finite, out of range, unidentified)."""


@dataclass
class Calibration:
    """The fitted physics of one window of logged transitions."""

    env: str
    params: dict[str, float]
    """Fitted value per parameter."""
    std: dict[str, float]
    """Standard error per parameter (Gauss-Newton)."""
    prior: dict[str, float]
    """The EnvSpec's own values before the fit (what the simulator assumed)."""
    ranges: dict[str, dict[str, float]]
    """Declared plausible ranges the fit was bounded by."""
    transitions: int
    """Transitions used (terminal ones carry no next state and are left out)."""
    excluded: dict[str, int] = field(default_factory=dict)
    rmse_prior: float = math.nan
    """Root-mean-square normalised residual under the prior: how badly the simulator explained the window."""
    rmse_fit: float = math.nan
    """The same at the fitted values."""

    def randomization(self, sigmas: float = 3.0, min_relative_width: float = 0.1) -> dict[str, dict[str, float]]:
        """Domain-randomization ranges centred on the fit: ``value +- max(sigmas * std,
        min_relative_width * |value|)``, clipped to the declared range. The floor keeps a little
        robustness when the fit is very precise (a deterministic simulator's usually is)."""
        out = {}
        for name, value in self.params.items():
            half = max(sigmas * self.std[name], min_relative_width * abs(value))
            low, high = self.ranges[name]["low"], self.ranges[name]["high"]
            out[name] = {"low": max(low, value - half), "high": min(high, value + half)}
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON form (lineage, audit event, pipeline output)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Rebuild from :meth:`to_dict`'s JSON; unknown fields are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        if set(data) - known:
            raise ConfigError(f"calibration: unknown fields {sorted(set(data) - known)}")
        return cls(**dict(data))

    def summary(self) -> str:
        """One line for logs, tags and the report: ``masscart=2.501±0.0002 (n=1000, rmse ...)``."""
        return calibration_label(self.to_dict())


def calibrate(env_spec: EnvSpec, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray,
              done: np.ndarray | None = None, params: Mapping[str, Mapping[str, float]] | None = None,
              min_transitions: int = MIN_TRANSITIONS) -> Calibration:
    """Fit ``params`` (default: ``env_spec.calibration``) to logged transitions; see the module docstring."""
    ranges = {k: {"low": float(v["low"]), "high": float(v["high"])} for k, v in dict(params or
                                                                                      env_spec.calibration).items()}
    if not ranges:
        raise CalibrationError(f"nothing to calibrate: the EnvSpec of {env_spec.name} declares no 'calibration' "
                               "parameters and none were given (e.g. {'masscart': {'low': 0.5, 'high': 5.0}})")
    for name, rng in ranges.items():
        if not (math.isfinite(rng["low"]) and math.isfinite(rng["high"]) and rng["low"] < rng["high"]):
            raise CalibrationError(f"calibration range of {name!r} must be finite with low < high, got {rng}")
    obs, next_obs = np.asarray(obs, dtype=np.float64), np.asarray(next_obs, dtype=np.float64)
    actions = np.asarray(actions)
    if obs.ndim != 2 or next_obs.shape != obs.shape or len(actions) != len(obs):
        raise CalibrationError(f"obs, actions and next_obs must be aligned rows: shapes {obs.shape}, "
                               f"{actions.shape}, {next_obs.shape}")
    keep = np.ones(len(obs), dtype=bool) if done is None else ~np.asarray(done, dtype=bool)
    excluded = {"terminal": int((~keep).sum())} if (~keep).any() else {}
    finite = np.isfinite(obs).all(axis=1) & np.isfinite(next_obs).all(axis=1)
    if not finite[keep].all():
        raise CalibrationError(f"{int((~finite[keep]).sum())} transitions hold non-finite observations; the window "
                               "is corrupt (clean the log or pick another window)")
    obs, actions, next_obs = obs[keep], actions[keep], next_obs[keep]
    if len(obs) < min_transitions:
        raise CalibrationError(f"too few transitions to calibrate: {len(obs)} usable (need {min_transitions}; "
                               f"excluded: {excluded or 'none'}); wait for more traffic or widen the window")
    model = _Simulator(env_spec, ranges)
    try:
        return model.fit(obs, actions, next_obs, excluded)
    finally:
        model.close()


def calibrate_dataset(env_spec: EnvSpec, dataset: Any, recent: int | None = None,
                      params: Mapping[str, Mapping[str, float]] | None = None,
                      min_transitions: int = MIN_TRANSITIONS) -> Calibration:
    """:func:`calibrate` on a transitions :class:`~rlops_plugin.experience.dataset.Dataset`, using its
    ``recent`` last rows (datasets keep the log's order, so these are the newest decisions)."""
    if dataset.kind != "transitions":
        raise CalibrationError(f"calibration needs a transitions dataset, got {dataset.kind}")
    cols = dataset.columns
    window = slice(-recent, None) if recent else slice(None)
    return calibrate(env_spec, cols["obs"][window], cols["action"][window], cols["next_obs"][window],
                     cols["done"][window], params=params, min_transitions=min_transitions)


class _Simulator:
    """One env instance stepped from logged states under candidate parameters."""

    def __init__(self, env_spec: EnvSpec, ranges: dict[str, dict[str, float]]) -> None:
        self.spec = dataclasses.replace(env_spec, randomization={})  # the fit sets the physics itself
        self.env = self.spec.make()
        self.env.reset(seed=0)
        self.base = self.env.unwrapped
        self.derived = self.spec.derived_params()
        if not hasattr(self.base, "state"):
            raise CalibrationError(f"{type(self.base).__name__} exposes no 'state'; calibration steps the simulator "
                                   "from logged observations and needs the state to equal the observation")
        known = numeric_params(self.base)
        unknown = sorted(set(ranges) - set(known))
        if unknown:
            raise CalibrationError(f"calibration parameters {unknown} are unknown for {type(self.base).__name__}; "
                                   f"known numeric parameters: {sorted(known)}")
        self.names = list(ranges)
        self.ranges = ranges
        self.prior = {k: float(getattr(self.base, k)) for k in self.names}
        self.state_dtype = np.asarray(self.base.state).dtype

    def predict(self, theta: np.ndarray, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        apply_env_params(self.env, dict(zip(self.names, (float(v) for v in theta), strict=True)), self.derived)
        out = np.empty_like(obs)
        for i in range(len(obs)):
            self.base.state = obs[i].astype(self.state_dtype)
            if hasattr(self.base, "steps_beyond_terminated"):
                self.base.steps_beyond_terminated = None
            action = actions[i].item() if np.ndim(actions[i]) == 0 else actions[i]
            out[i] = self.base.step(action)[0]
        return out

    def fit(self, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray,
            excluded: dict[str, int]) -> Calibration:
        from scipy.optimize import least_squares

        if obs.shape[1] != np.asarray(self.base.state).shape[0]:
            raise CalibrationError(f"observations have {obs.shape[1]} values, the simulator's state "
                                   f"{np.asarray(self.base.state).shape[0]}: the state is not the observation")
        scale = np.std(next_obs - obs, axis=0)
        scale = np.where(scale > 0, scale, 1.0)

        def residuals(theta: np.ndarray) -> np.ndarray:
            return ((self.predict(theta, obs, actions) - next_obs) / scale).ravel()

        low = np.array([self.ranges[k]["low"] for k in self.names])
        high = np.array([self.ranges[k]["high"] for k in self.names])
        prior = np.array([self.prior[k] for k in self.names])
        start = np.clip(prior, low + 0.01 * (high - low), high - 0.01 * (high - low))
        rmse_prior = _rms(residuals(np.clip(prior, low, high)))
        result = least_squares(residuals, start, bounds=(low, high), x_scale=high - low, diff_step=1e-6,
                               xtol=1e-10, ftol=1e-12, gtol=1e-12)
        theta = result.x
        width = high - low
        on_bound = [k for k, v, lo, hi, w in zip(self.names, theta, low, high, width, strict=True)
                    if v - lo <= BOUND_TOLERANCE * w or hi - v <= BOUND_TOLERANCE * w]
        if on_bound:
            found = ", ".join(f"{k}={v:.4g} (range {self.ranges[k]['low']}..{self.ranges[k]['high']})"
                              for k, v in zip(self.names, theta, strict=True) if k in on_bound)
            raise CalibrationError(f"the fit ended on a declared bound: {found}; the logged world lies outside "
                                   "the range the EnvSpec declares (widen its calibration range if plausible)")
        dof = max(1, result.fun.size - len(theta))
        s2 = float(result.fun @ result.fun) / dof
        jac = _central_jacobian(residuals, theta, 1e-4 * width)  # least_squares' own is a forward difference
        # a direction of the (range-scaled) parameters the residuals do not change along cannot be
        # fitted: e.g. cart mass, pole mass and force scaled together give the same dynamics
        _, singular, directions = np.linalg.svd(jac * width, full_matrices=False)
        flat = singular <= MIN_RELATIVE_SINGULAR * max(float(singular[0]), np.finfo(float).tiny)
        unidentified = sorted({self.names[j] for i in np.flatnonzero(flat)
                               for j in np.flatnonzero(np.abs(directions[i]) > 0.1)})
        with np.errstate(all="ignore"):
            cov = s2 * np.linalg.pinv(jac.T @ jac)
        std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        unidentified += [k for k, sd, w in zip(self.names, std, width, strict=True)
                         if k not in unidentified and (not np.isfinite(sd) or sd > MAX_RELATIVE_STD * w)]
        if unidentified:
            raise CalibrationError(f"the window does not determine {', '.join(unidentified)} (standard error too "
                                   "large for the declared range, or no effect on the dynamics); calibrate fewer "
                                   "parameters or use a longer window")
        return Calibration(env=self.spec.name, params={k: float(v) for k, v in zip(self.names, theta, strict=True)},
                           std={k: float(v) for k, v in zip(self.names, std, strict=True)}, prior=self.prior,
                           ranges=self.ranges, transitions=len(obs), excluded=excluded,
                           rmse_prior=rmse_prior, rmse_fit=_rms(result.fun))

    def close(self) -> None:
        self.env.close()


def _central_jacobian(fn: Any, theta: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """d fn / d theta by central differences (one column per parameter)."""
    cols = []
    for j, h in enumerate(steps):
        e = np.zeros_like(theta)
        e[j] = h
        cols.append((fn(theta + e) - fn(theta - e)) / (2 * h))
    return np.stack(cols, axis=1)


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if values.size else math.nan
