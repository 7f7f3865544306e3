"""``check_env``: the contract an environment must keep for rlops (SB3-style ``check_env`` for an EnvSpec).

rlops rebuilds an env from its :class:`~rlops_plugin.bundle.env_spec.EnvSpec` (the spec is
hashed into every bundle and dataset), seeds every reset so rollouts and gates are reproducible,
and stores the spaces as JSON. The check builds the env from the spec and verifies, in order:

* ``spec-roundtrip``: the spec survives ``to_dict`` -> JSON -> ``from_dict`` unchanged;
* ``hash-stable``: ``sha256()`` is the same for the rebuilt spec and before and after running the env;
* ``make``: ``spec.make()`` returns a ``gymnasium.Env``;
* ``spaces``: Discrete or Box spaces that rlops can store (``space_to_json``);
* ``reset`` / ``step``: gymnasium's 2- and 5-tuples, observations inside ``observation_space``,
  finite real rewards, bool ``terminated``/``truncated``, dict infos, a valid ``action_mask`` if any;
* ``determinism``: the same reset seeds and actions give bit-identical trajectories on a fresh env,
  and resetting again with a seed gives the first observation again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from rlops_plugin.bundle.env_spec import EnvSpec
from rlops_plugin.bundle.spaces import space_to_json
from rlops_plugin.errors import RLOpsError
from rlops_plugin.testing.errors import fail

Step = tuple[bytes, float, bool, bool, Any]


def check_env(env: EnvSpec | str | Mapping[str, Any], *, seed: int = 0, episodes: int = 3,
              max_steps: int = 200) -> dict[str, Any]:
    """Check an env given as an ``EnvSpec``, a registered name / gymnasium id, or a spec dict.

    Runs ``episodes`` episodes (at most ``max_steps`` steps each) with seeded random actions,
    twice. Returns ``{"env": name, "sha256": ..., "episodes": n, "steps": n}``; raises
    :class:`ConformanceError` naming the failed check.
    """
    spec = _resolve(env)
    subject = f"env {spec.name!r}"
    sha = _check_spec(subject, spec)
    first = _run(subject, spec, seed, episodes, max_steps, validate=True)
    second = _run(subject, spec, seed, episodes, max_steps, validate=False)
    for index, (a, b) in enumerate(zip(first, second, strict=False)):
        if not _same_step(a, b):
            raise fail(subject, "determinism", f"step {index} differs between two runs with reset seeds from "
                                               f"{seed} and the same actions (seed the env's RNG in reset: "
                                               "super().reset(seed=seed) and self.np_random)")
    if len(first) != len(second):
        raise fail(subject, "determinism", f"two seeded runs lasted {len(first)} and {len(second)} steps")
    if spec.sha256() != sha:
        raise fail(subject, "hash-stable", "building and running the env changed the spec's hash")
    return {"env": spec.name, "sha256": sha, "episodes": episodes, "steps": len(first)}


def _resolve(env: EnvSpec | str | Mapping[str, Any]) -> EnvSpec:
    try:
        if isinstance(env, EnvSpec):
            return env
        if isinstance(env, str):
            return EnvSpec(id=env)
        return EnvSpec.from_dict(env)
    except RLOpsError as exc:
        raise fail(f"env {env!r}", "spec", "not a valid EnvSpec", exc) from exc


def _check_spec(subject: str, spec: EnvSpec) -> str:
    """The spec's JSON round trip and its hash; returns the hash."""
    try:
        data = json.loads(json.dumps(spec.to_dict(), allow_nan=False))
        rebuilt = EnvSpec.from_dict(data)
    except (TypeError, ValueError, RLOpsError) as exc:
        raise fail(subject, "spec-roundtrip", "to_dict() -> JSON -> from_dict() failed", exc) from exc
    if rebuilt != spec or rebuilt.to_dict() != spec.to_dict():
        raise fail(subject, "spec-roundtrip", f"from_dict(to_dict()) gave {rebuilt!r}, not {spec!r}")
    sha = spec.sha256()
    if not (isinstance(sha, str) and len(sha) == 64) or rebuilt.sha256() != sha or spec.sha256() != sha:
        raise fail(subject, "hash-stable", f"sha256 {sha!r} is not a stable 64-hex digest of the spec")
    return sha


def _make(subject: str, spec: EnvSpec) -> gym.Env:
    try:
        env = spec.make()
    except Exception as exc:
        raise fail(subject, "make", "EnvSpec.make() raised", exc) from exc
    if not isinstance(env, gym.Env):
        raise fail(subject, "make", f"the factory must return a gymnasium.Env, got {type(env).__name__}")
    return env


def _check_spaces(subject: str, env: gym.Env) -> None:
    for what in ("observation_space", "action_space"):
        space = getattr(env, what, None)
        try:
            space_to_json(space)
        except RLOpsError as exc:
            raise fail(subject, "spaces", f"{what} {space!r} cannot be stored", exc) from exc


def _run(subject: str, spec: EnvSpec, seed: int, episodes: int, max_steps: int, *, validate: bool) -> list[Step]:
    """Seeded episodes with seeded random actions; every step as ``(obs bytes, reward, term, trunc, extras)``."""
    env = _make(subject, spec)
    steps: list[Step] = []
    try:
        if validate:
            _check_spaces(subject, env)
        env.action_space.seed(seed)
        for episode in range(episodes):
            obs, info = _reset(subject, env, seed + episode, validate)
            steps.append((np.asarray(obs).tobytes(), 0.0, False, False, _extras(info)))
            for _ in range(max_steps):
                action = _sample(env.action_space, info)
                out = env.step(action)
                if validate:
                    _check_step(subject, env, out)
                obs, reward, terminated, truncated, info = out
                steps.append((np.asarray(obs).tobytes(), float(reward), bool(terminated), bool(truncated),
                              _extras(info)))
                if terminated or truncated:
                    break
        if validate:
            again, _ = _reset(subject, env, seed, validate=False)
            if np.asarray(again).tobytes() != steps[0][0]:
                raise fail(subject, "determinism", f"reset(seed={seed}) twice gave different first observations")
    finally:
        try:
            env.close()
        except Exception as exc:
            raise fail(subject, "close", "env.close() raised", exc) from exc
    return steps


def _reset(subject: str, env: gym.Env, seed: int, validate: bool) -> tuple[Any, dict[str, Any]]:
    try:
        out = env.reset(seed=seed)
    except Exception as exc:
        raise fail(subject, "reset", f"reset(seed={seed}) raised", exc) from exc
    if validate:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise fail(subject, "reset", f"reset() must return (obs, info), got {type(out).__name__}")
        _check_obs(subject, env, out[0], "reset")
        _check_info(subject, env, out[1], "reset")
    return out


def _check_step(subject: str, env: gym.Env, out: Any) -> None:
    if not (isinstance(out, tuple) and len(out) == 5):
        raise fail(subject, "step", "step() must return (obs, reward, terminated, truncated, info)")
    obs, reward, terminated, truncated, info = out
    _check_obs(subject, env, obs, "step")
    if isinstance(reward, (bool, np.bool_)) or not isinstance(reward, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(reward)):
        raise fail(subject, "step", f"reward must be a finite real number, got {reward!r}")
    for what, flag in (("terminated", terminated), ("truncated", truncated)):
        if not isinstance(flag, (bool, np.bool_)):
            raise fail(subject, "step", f"{what} must be a bool, got {type(flag).__name__}")
    _check_info(subject, env, info, "step")


def _check_obs(subject: str, env: gym.Env, obs: Any, where: str) -> None:
    space = env.observation_space
    if not space.contains(obs):
        shape, dtype = getattr(obs, "shape", None), getattr(obs, "dtype", type(obs).__name__)
        raise fail(subject, "observation-space", f"{where}() returned an observation (shape {shape}, dtype "
                                                 f"{dtype}) outside the declared {space!r}")


def _check_info(subject: str, env: gym.Env, info: Any, where: str) -> None:
    if not isinstance(info, dict):
        raise fail(subject, where, f"info must be a dict, got {type(info).__name__}")
    mask = info.get("action_mask")
    if mask is None:
        return
    space = env.action_space
    mask = np.asarray(mask)
    if not isinstance(space, gym.spaces.Discrete) or mask.shape != (int(space.n),) or not mask.any() \
            or not np.isin(mask, (0, 1)).all():
        raise fail(subject, "action-mask", f"info['action_mask'] must be {space.n if hasattr(space, 'n') else '?'} "
                                           f"booleans with at least one allowed action, got {mask!r}")


def _sample(space: gym.Space, info: dict[str, Any]) -> Any:
    mask = info.get("action_mask") if isinstance(info, dict) else None
    if mask is not None and isinstance(space, gym.spaces.Discrete):
        return space.sample(mask=np.asarray(mask, dtype=np.int8))
    return space.sample()


def _extras(info: Any) -> Any:
    """The parts of ``info`` that rlops reads and that must be reproducible."""
    if not isinstance(info, dict):
        return None
    return {key: info[key] for key in ("rlops_params", "action_mask") if key in info}


def _same_step(a: Step, b: Step) -> bool:
    return a[:4] == b[:4] and _same(a[4], b[4])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (np.ndarray, list, tuple)) or isinstance(b, (np.ndarray, list, tuple)):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return a == b
