"""Built-in environments: metadata for gymnasium's CartPole and rlops' small test envs."""

from __future__ import annotations

from typing import Any

from rlops_plugin.hookspecs import hookimpl


def cartpole_derived_params(env: Any) -> None:
    """Recompute CartPole's derived physics after ``length``/``masspole``/``masscart`` change."""
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length


def _chain_walk(**kwargs: Any):
    from rlops_plugin.envs.chain import ChainWalkEnv

    return ChainWalkEnv(**kwargs)


def _contextual_bandit(**kwargs: Any):
    from rlops_plugin.envs.bandit import ContextualBanditEnv

    return ContextualBanditEnv(**kwargs)


@hookimpl
def rlops_register_envs(register) -> None:
    """Register CartPole metadata and the two tiny envs used by tests and benchmarks."""
    for env_id in ("CartPole-v0", "CartPole-v1"):
        register(env_id, None, derived_params=cartpole_derived_params,
                 description="gymnasium CartPole; length/masspole/masscart can be randomized")
    register("rlops/ChainWalk-v0", _chain_walk, max_episode_steps=50,
             description="deterministic chain, optimal policy always moves right")
    register("rlops/ContextualBandit-v0", _contextual_bandit, max_episode_steps=1,
             description="one-step contextual bandit with a known reward model")
