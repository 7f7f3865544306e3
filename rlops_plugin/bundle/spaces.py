"""JSON (de)serialization of gymnasium spaces: the policy's interface, stored without pickle."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlops_plugin.errors import ConfigError, SpaceMismatchError

SUPPORTED = "Discrete and Box"


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """Describe a Discrete or Box space as a JSON-able dict."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": [int(d) for d in space.shape],
            "dtype": str(space.dtype),
            "low": _bound_to_json(space.low),
            "high": _bound_to_json(space.high),
        }
    raise ConfigError(f"space {space!r} is not supported; rlops supports {SUPPORTED} spaces")


def space_from_json(data: dict[str, Any]) -> gym.Space:
    """Rebuild a space from :func:`space_to_json` output; unknown types are refused."""
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(f"space description must be an object with a 'type': {data!r}")
    kind = data["type"]
    if kind == "Discrete":
        n = data.get("n")
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"Discrete space needs a positive integer 'n', got {n!r}")
        return gym.spaces.Discrete(n, start=int(data.get("start", 0)))
    if kind == "Box":
        shape = tuple(int(d) for d in data["shape"])
        dtype = np.dtype(data.get("dtype", "float32"))
        low = _bound_from_json(data["low"], shape, dtype)
        high = _bound_from_json(data["high"], shape, dtype)
        return gym.spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    raise ConfigError(f"space type {kind!r} is not supported; rlops supports {SUPPORTED} spaces")


def flat_dim(space: gym.Space) -> int:
    """Number of floats an observation of ``space`` flattens to."""
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    raise ConfigError(f"space {space!r} is not supported; rlops supports {SUPPORTED} spaces")


def check_same_space(a: gym.Space, b: gym.Space, what: str) -> None:
    """Raise ``SpaceMismatchError`` naming ``what`` if two spaces differ."""
    if space_to_json(a) != space_to_json(b):
        raise SpaceMismatchError(f"{what} differ: {space_to_json(a)} != {space_to_json(b)}")


def _bound_to_json(bound: np.ndarray) -> Any:
    flat = np.asarray(bound, dtype=np.float64).reshape(-1)
    values = [_float_to_json(v) for v in flat]
    if len(set(values)) == 1:
        return values[0]
    return values


def _float_to_json(v: float) -> float | str:
    if np.isposinf(v):
        return "inf"
    if np.isneginf(v):
        return "-inf"
    return float(v)


def _bound_from_json(value: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    values = value if isinstance(value, list) else [value]
    floats = np.array([float(v) for v in values], dtype=np.float64)
    if floats.size == 1:
        return np.full(shape, floats[0], dtype=dtype)
    if floats.size != int(np.prod(shape)):
        raise ConfigError(f"Box bound has {floats.size} values for shape {shape}")
    return floats.reshape(shape).astype(dtype)
