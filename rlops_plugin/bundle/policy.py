"""Policy: a registered architecture + JSON config + spaces, with weights in safetensors.

``act(obs)`` returns actions with their probabilities (Discrete: the full probability vector;
Box: the density of the sampled action), which is what serving logs as propensities.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from rlops_plugin import plugins
from rlops_plugin.bundle.hashing import check_finite_json, sha256_bytes, sha256_json
from rlops_plugin.bundle.spaces import flat_dim, space_from_json, space_to_json
from rlops_plugin.bundle.strict import check_keys
from rlops_plugin.errors import ConfigError, InvalidObservationError, UnsafeArtifactError


class Policy(nn.Module):
    """A stochastic policy over Discrete or Box actions, built from a registered architecture."""

    kind = "vector"
    """The policy kind (``rlops_plugin.kinds.vector``): a torch network over flat float observations."""

    def __init__(self, architecture: str, config: dict[str, Any], observation_space: gym.Space,
                 action_space: gym.Space) -> None:
        super().__init__()
        check_finite_json(config, "policy.config")
        self.architecture = architecture
        self.config = dict(config)
        self.observation_space = observation_space
        self.action_space = action_space
        factory = plugins.architectures().get(architecture).value
        self.network = factory(self.config, observation_space, action_space)
        self.obs_dim = flat_dim(observation_space)
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if not self.discrete and not isinstance(action_space, gym.spaces.Box):
            raise ConfigError(f"action space {action_space!r} is not Discrete or Box")
        self.n_actions = int(action_space.n) if self.discrete else flat_dim(action_space)
        self.eval()

    # ----- description and weights -------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Architecture, config and spaces as JSON (everything but the weights)."""
        return {
            "architecture": self.architecture,
            "config": self.config,
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
        }

    @classmethod
    def from_description(cls, data: dict[str, Any]) -> Policy:
        """Build an untrained policy from :meth:`describe` output."""
        check_keys(data, ("architecture", "config", "observation_space", "action_space"), "policy config",
                   required=("architecture", "observation_space", "action_space"))
        return cls(data["architecture"], data.get("config", {}),
                   space_from_json(data["observation_space"]), space_from_json(data["action_space"]))

    def weights_bytes(self) -> bytes:
        """The network's weights serialized as safetensors."""
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.network.state_dict().items()}
        return save_safetensors_bytes(dict(sorted(tensors.items())))

    def load_weights_bytes(self, data: bytes, name: str = "policy weights") -> None:
        """Load safetensors bytes; unreadable files, missing, extra or reshaped tensors are refused."""
        try:
            tensors = load_safetensors_bytes(data)
        except SafetensorError as exc:
            raise UnsafeArtifactError(f"{name}: not a readable safetensors file ({exc})") from None
        expected = self.network.state_dict()
        if set(tensors) != set(expected):
            raise ConfigError(
                f"weights do not fit architecture {self.architecture!r}: missing "
                f"{sorted(set(expected) - set(tensors))}, unexpected {sorted(set(tensors) - set(expected))}"
            )
        for name, tensor in tensors.items():
            if tensor.shape != expected[name].shape:
                raise ConfigError(f"weight {name!r} has shape {tuple(tensor.shape)}, "
                                  f"architecture expects {tuple(expected[name].shape)}")
        self.network.load_state_dict(tensors)

    def sha256(self) -> str:
        """Content hash: description plus weights."""
        return sha256_json({**self.describe(), "weights_sha256": sha256_bytes(self.weights_bytes())})

    def clone(self) -> Policy:
        """An independent copy with the same weights."""
        return copy.deepcopy(self)

    # ----- acting -------------------------------------------------------------------
    def as_tensor(self, obs: Any) -> torch.Tensor:
        """Validate observations and return a float32 tensor of shape ``(n, obs_dim)``."""
        try:
            arr = np.asarray(obs, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidObservationError(f"observation is not numeric: {exc}") from exc
        if arr.ndim == 1:
            arr = arr[None, :]
        elif arr.ndim > 2:
            arr = arr.reshape(arr.shape[0], -1)
        if arr.ndim != 2 or arr.shape[1] != self.obs_dim:
            raise InvalidObservationError(
                f"observation has shape {tuple(np.shape(obs))}, policy expects ({self.obs_dim},) "
                f"or (batch, {self.obs_dim})"
            )
        if not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise InvalidObservationError(f"observation[{bad[0]}][{bad[1]}] is not finite")
        return torch.from_numpy(arr)

    def forward(self, obs: torch.Tensor) -> Any:
        """Raw network output: logits (Discrete) or ``(mean, log_std)`` (Box)."""
        return self.network(obs)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        """Action distribution for a batch of observation tensors."""
        out = self.network(obs)
        if self.discrete:
            return Categorical(logits=out)
        mean, log_std = out
        return Independent(Normal(mean, log_std.exp()), 1)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-probability (or log-density) of ``actions`` under the policy."""
        return self.distribution(obs).log_prob(actions)

    @torch.no_grad()
    def action_probabilities(self, obs: Any) -> np.ndarray:
        """Probability of every action, shape ``(n, n_actions)`` (Discrete only)."""
        if not self.discrete:
            raise ConfigError("action_probabilities needs a Discrete action space")
        return torch.softmax(self.network(self.as_tensor(obs)), dim=-1).numpy().astype(np.float64)

    @torch.no_grad()
    def act(self, obs: Any, *, deterministic: bool = False,
            rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Choose actions for one observation or a batch.

        Returns ``(actions, probs)``: for Discrete, ``probs`` is the action-probability vector
        per row; for Box, the density of the returned action. A single observation gives a
        Python int (Discrete) or 1-D action (Box), and 1-D probs.
        """
        single = np.ndim(obs) == 1
        obs_t = self.as_tensor(obs)
        rng = rng if rng is not None else np.random.default_rng()
        if self.discrete:
            probs = torch.softmax(self.network(obs_t), dim=-1).numpy().astype(np.float64)
            if deterministic:
                actions = probs.argmax(axis=1)
            else:
                actions = sample_categorical(probs, rng)
            out_probs: np.ndarray = probs
        else:
            mean, log_std = self.network(obs_t)
            std = log_std.exp()
            if deterministic:
                actions_t = mean
            else:
                noise = torch.from_numpy(rng.standard_normal(mean.shape).astype(np.float32))
                actions_t = mean + std * noise
            out_probs = Independent(Normal(mean, std), 1).log_prob(actions_t).exp().numpy()
            low = np.asarray(self.action_space.low, dtype=np.float32).reshape(-1)
            high = np.asarray(self.action_space.high, dtype=np.float32).reshape(-1)
            actions = np.clip(actions_t.numpy(), low, high)
        if single:
            return (int(actions[0]) if self.discrete else actions[0]), out_probs[0]
        return actions, out_probs


def sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample one index per row of a probability matrix (inverse-CDF, vectorized)."""
    cdf = probs.cumsum(axis=1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1)
