"""The bundle: policy + EnvSpec + RewardSpec, content-hashed and safely (de)serialized."""

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.env_spec import EnvSpec
from rlops_plugin.bundle.policy import Policy
from rlops_plugin.bundle.reward_spec import RewardSpec

__all__ = ["EnvSpec", "Policy", "PolicyBundle", "RewardSpec"]
