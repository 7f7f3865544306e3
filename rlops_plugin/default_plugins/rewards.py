"""Built-in reward functions."""

from __future__ import annotations

from typing import Any

from rlops_plugin.hookspecs import hookimpl


def env_reward(*, env_reward: float, **_: Any) -> float:
    """The environment's own reward, unchanged."""
    return float(env_reward)


def scaled_env_reward(*, env_reward: float, scale: float = 1.0, offset: float = 0.0,
                      **_: Any) -> float:
    """``scale * env_reward + offset``: a reward definition with parameters."""
    return float(scale) * float(env_reward) + float(offset)


def outcome_reward(*, outcome: dict | None = None, key: str = "reward", default: float = 0.0,
                   env_reward: float | None = None, **_: Any) -> float:
    """Reward read from a logged outcome field (delayed feedback), else the env reward."""
    if outcome and key in outcome and outcome[key] is not None:
        return float(outcome[key])
    return float(env_reward) if env_reward is not None else float(default)


@hookimpl
def rlops_register_rewards(register) -> None:
    """Register the built-in reward functions."""
    register("env", env_reward, description="the environment's reward")
    register("scaled", scaled_env_reward, description="scale * env_reward + offset")
    register("outcome", outcome_reward, description="a field of the logged outcome")
