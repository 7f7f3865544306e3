"""EnvSpec: a JSON description of the environment a policy acts in, hashable and rebuildable.

It names the env (a plugin-registered name, a gymnasium id, or a verified ``module:Class``
entry point), its constructor kwargs, fixed physical parameters, domain-randomization ranges
sampled at every reset, and gymnasium wrappers by name. Nothing is unpickled to rebuild it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from rlops_plugin import plugins
from rlops_plugin.bundle.hashing import check_finite_json, sha256_json
from rlops_plugin.bundle.references import (
    load_verified,
    module_source_sha256,
    split_reference,
)
from rlops_plugin.bundle.strict import load_dataclass
from rlops_plugin.errors import ConfigError, PluginError

FORMAT_VERSION = 1
_RANGE_KEYS = ({"low", "high"}, {"choices"}, {"scale"})


@dataclass(frozen=True)
class EnvSpec:
    """What environment a policy was made for, and how to build it again."""

    id: str | None = None
    """Plugin-registered env name or gymnasium id, e.g. ``"CartPole-v1"``."""
    entry_point: str | None = None
    """Alternative to ``id``: ``"package.module:EnvClass"``, imported only after its hash checks."""
    entry_point_sha256: str | None = None
    """SHA-256 of the entry point's module source; filled in by :meth:`__post_init__`."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for the env constructor."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Fixed overrides of attributes of the unwrapped env (``{"length": 0.75}``)."""
    randomization: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per-reset domain randomization: ``{"length": {"low": 0.4, "high": 0.8}}``,
    ``{"choices": [...]}`` or ``{"scale": [0.8, 1.2]}`` (relative to the nominal value)."""
    wrappers: tuple[Mapping[str, Any], ...] = ()
    """gymnasium wrappers by class name: ``({"name": "TimeLimit", "kwargs": {...}},)``."""
    max_episode_steps: int | None = None
    """Episode step limit (``None``: the env's registered default)."""
    calibration: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Physical parameters that system identification may fit from production logs, each with the
    range it can plausibly take: ``{"masscart": {"low": 0.5, "high": 5.0}}`` (see
    :mod:`rlops_plugin.simulation.calibration`). Declared, not sampled: nothing changes at reset."""

    def __post_init__(self) -> None:
        if bool(self.id) == bool(self.entry_point):
            raise ConfigError("EnvSpec needs exactly one of 'id' or 'entry_point'")
        if self.entry_point:
            module, _ = split_reference(self.entry_point)
            if self.entry_point_sha256 is None:
                object.__setattr__(self, "entry_point_sha256", module_source_sha256(module))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "randomization",
                           {k: dict(v) for k, v in dict(self.randomization).items()})
        object.__setattr__(self, "wrappers", tuple(_check_wrapper(w) for w in self.wrappers))
        for name, rng in self.randomization.items():
            _check_range(name, rng)
        object.__setattr__(self, "calibration", {k: dict(v) for k, v in dict(self.calibration).items()})
        for name, rng in self.calibration.items():
            if set(rng) != {"low", "high"}:
                raise ConfigError(f"calibration[{name!r}] must have keys low and high; got {sorted(rng)}")
            _check_range(name, rng)
            if not rng["low"] < rng["high"]:
                raise ConfigError(f"calibration[{name!r}]: low must be below high, got {rng['low']!r}, {rng['high']!r}")
        if self.max_episode_steps is not None and (
            not isinstance(self.max_episode_steps, int) or self.max_episode_steps < 1
        ):
            raise ConfigError(f"max_episode_steps must be a positive int, got {self.max_episode_steps!r}")
        check_finite_json(self.to_dict(), "env_spec")

    @property
    def name(self) -> str:
        """A short human name: the id or the entry point."""
        return self.id or str(self.entry_point)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; :meth:`from_dict` inverts it."""
        data = dataclasses.asdict(self)
        data["wrappers"] = [dict(w) for w in self.wrappers]
        if not self.calibration:  # added later: specs that declare none keep the hash they always had
            del data["calibration"]
        data["format_version"] = FORMAT_VERSION
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnvSpec:
        """Rebuild from JSON; unknown keys are refused so typos don't pass silently."""
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(f"env_spec format_version {version} is not supported (expected {FORMAT_VERSION})")
        if data.get("wrappers") is None:
            data.pop("wrappers", None)
        return load_dataclass(cls, data, "env_spec")

    def sha256(self) -> str:
        """Content hash of the spec."""
        return sha256_json(self.to_dict())

    def replace(self, **changes: Any) -> EnvSpec:
        """A copy with fields replaced (``params`` and ``randomization`` are merged, not replaced)."""
        if "params" in changes:
            changes["params"] = {**self.params, **changes["params"]}
        if "randomization" in changes:
            changes["randomization"] = {**self.randomization, **changes["randomization"]}
        return dataclasses.replace(self, **changes)

    def derived_params(self) -> Callable[[Any], None] | None:
        """The env plugin's hook that recomputes derived physics after params change (or None)."""
        if self.id and self.id in plugins.envs():
            return plugins.envs().get(str(self.id)).extra.get("derived_params")
        return None

    def make(self, *, render_mode: str | None = None) -> gym.Env:
        """Build the environment: constructor, fixed params, randomization, wrappers."""
        env, derived = self._construct(render_mode)
        if self.params:
            apply_env_params(env, self.params, derived)
        if self.randomization:
            env = DomainRandomization(env, self.randomization, derived)
        for wrapper in self.wrappers:
            env = _wrapper_class(wrapper["name"])(env, **wrapper.get("kwargs", {}))
        return env

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """Observation and action spaces (builds the env once and closes it)."""
        env = self.make()
        try:
            return env.observation_space, env.action_space
        finally:
            env.close()

    def validate(self) -> None:
        """Build and reset the env once so unknown params and bad kwargs fail early."""
        env = self.make()
        try:
            env.reset(seed=0)
        finally:
            env.close()

    def _construct(self, render_mode: str | None) -> tuple[gym.Env, Callable[[Any], None] | None]:
        extra_kwargs = {"render_mode": render_mode} if render_mode else {}
        if self.entry_point:
            factory = load_verified(self.entry_point, str(self.entry_point_sha256))
            env = _call_factory(factory, {**self.kwargs, **extra_kwargs}, self.name)
            return _time_limited(env, self.max_episode_steps), None
        entry = plugins.envs().get(str(self.id)) if self.id in plugins.envs() else None
        derived = self.derived_params()
        if entry is not None and entry.value is not None:
            env = _call_factory(entry.value, {**self.kwargs, **extra_kwargs}, self.name)
            steps = self.max_episode_steps or entry.extra.get("max_episode_steps")
            return _time_limited(env, steps), derived
        try:
            env = gym.make(str(self.id), max_episode_steps=self.max_episode_steps,
                           **self.kwargs, **extra_kwargs)
        except gym.error.Error as exc:
            known = ", ".join(plugins.envs().names())
            raise PluginError(
                f"env {self.id!r} is neither registered with rlops ({known}) nor a gymnasium id: {exc}"
            ) from exc
        return env, derived


def apply_env_params(env: gym.Env, params: Mapping[str, Any],
                     derived: Callable[[Any], None] | None = None) -> None:
    """Set attributes of the unwrapped env; unknown names raise ``ConfigError``."""
    base = env.unwrapped
    for name, value in params.items():
        if name.startswith("_") or not hasattr(base, name) or callable(getattr(base, name)):
            raise ConfigError(
                f"env parameter {name!r} is unknown for {type(base).__name__}; "
                f"known numeric parameters: {sorted(numeric_params(base))}"
            )
        setattr(base, name, value)
    if derived is not None:
        derived(base)


def numeric_params(env: Any) -> dict[str, float]:
    """Public numeric attributes of an unwrapped env: what params may override."""
    out = {}
    for name, value in vars(env).items():
        if not name.startswith("_") and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


class DomainRandomization(gym.Wrapper):
    """Resample physical parameters at every reset; the same reset seed gives the same draw."""

    def __init__(self, env: gym.Env, ranges: Mapping[str, Mapping[str, Any]],
                 derived: Callable[[Any], None] | None = None) -> None:
        super().__init__(env)
        self.ranges = dict(ranges)
        self.derived = derived
        base = env.unwrapped
        known = numeric_params(base)
        unknown = [name for name in self.ranges if name not in known]
        if unknown:
            raise ConfigError(
                f"randomized env parameters {unknown} are unknown for {type(base).__name__}; "
                f"known numeric parameters: {sorted(known)}"
            )
        self.nominal = {name: known[name] for name in self.ranges}
        self._rng = np.random.default_rng()
        self.current: dict[str, float] = dict(self.nominal)

    def sample(self, rng: np.random.Generator) -> dict[str, float]:
        """Draw one value per randomized parameter."""
        values = {}
        for name, spec in self.ranges.items():
            if "choices" in spec:
                values[name] = spec["choices"][int(rng.integers(len(spec["choices"])))]
            elif "scale" in spec:
                lo, hi = spec["scale"]
                values[name] = self.nominal[name] * float(rng.uniform(lo, hi))
            else:
                values[name] = float(rng.uniform(spec["low"], spec["high"]))
        return values

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng([int(seed), 0x5EED])
        self.current = self.sample(self._rng)
        apply_env_params(self.env, self.current, self.derived)
        obs, info = self.env.reset(seed=seed, options=options)
        info = dict(info)
        info["rlops_params"] = dict(self.current)
        return obs, info


def _check_range(name: str, spec: Mapping[str, Any]) -> None:
    keys = set(spec)
    if keys not in _RANGE_KEYS:
        raise ConfigError(
            f"randomization[{name!r}] must have keys low+high, choices, or scale; got {sorted(keys)}"
        )
    if "choices" in spec:
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ConfigError(f"randomization[{name!r}].choices must be a non-empty list")
        return
    lo, hi = (spec["low"], spec["high"]) if "low" in spec else tuple(spec["scale"])
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi)) or lo > hi:
        raise ConfigError(f"randomization[{name!r}]: need finite numbers with low <= high, got {lo!r}, {hi!r}")


def _check_wrapper(wrapper: Mapping[str, Any]) -> dict[str, Any]:
    wrapper = dict(wrapper)
    if set(wrapper) - {"name", "kwargs"} or "name" not in wrapper:
        raise ConfigError(f"wrapper spec must be {{'name': ..., 'kwargs': {{...}}}}, got {wrapper!r}")
    _wrapper_class(wrapper["name"])
    wrapper.setdefault("kwargs", {})
    return wrapper


def _wrapper_class(name: str) -> type[gym.Wrapper]:
    cls = getattr(gym.wrappers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, gym.Wrapper)):
        raise ConfigError(f"wrapper {name!r} is not a gymnasium.wrappers class")
    return cls


def _call_factory(factory: Callable[..., gym.Env], kwargs: dict[str, Any], name: str) -> gym.Env:
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"env {name!r} rejected kwargs {sorted(kwargs)}: {exc}") from exc


def _time_limited(env: gym.Env, steps: int | None) -> gym.Env:
    return gym.wrappers.TimeLimit(env, max_episode_steps=steps) if steps else env
