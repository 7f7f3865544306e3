"""Exploration modes and action masks: the distribution the server actually samples from.

Logging the probability of the executed action under *this* distribution (not the policy's
raw softmax) is what makes off-policy evaluation and offline learning unbiased.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from rlops_plugin.errors import ConfigError, InvalidObservationError

MODES = ("greedy", "epsilon", "softmax")


@dataclass(frozen=True)
class ExplorationConfig:
    """How a deployment turns policy probabilities into the executed action distribution."""

    mode: str = "softmax"
    """``greedy`` (argmax), ``epsilon`` (greedy with prob 1-epsilon, uniform otherwise) or
    ``softmax`` (the policy's distribution sharpened or flattened by ``temperature``)."""
    epsilon: float = 0.0
    """Exploration rate for ``epsilon`` mode, at most ``max_epsilon``."""
    temperature: float = 1.0
    """Softmax temperature (1 = the policy's own probabilities)."""
    max_epsilon: float = 0.5
    """Guard: the largest epsilon this deployment accepts."""
    safe_action: int | list[float] | None = None
    """The action executed when the policy's outputs for an observation are not finite and no finite policy
    (the champion, for a broken challenger) can decide instead; without one such a request gets a 503."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"exploration mode {self.mode!r} is not one of {list(MODES)}")
        if not (0.0 <= self.max_epsilon <= 1.0):
            raise ConfigError(f"max_epsilon must lie in [0, 1], got {self.max_epsilon}")
        if not (0.0 <= self.epsilon <= self.max_epsilon):
            raise ConfigError(f"epsilon must lie in [0, max_epsilon={self.max_epsilon}], got {self.epsilon}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        safe = self.safe_action
        if isinstance(safe, bool) or (isinstance(safe, list) and not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in safe)):
            raise ConfigError(f"safe_action must be an action index or a list of finite numbers, got {safe!r}")

    def to_dict(self) -> dict[str, float | str]:
        """JSON form, logged with every decision batch."""
        return asdict(self)


def executed_distribution(logits: np.ndarray, config: ExplorationConfig,
                          mask: np.ndarray | None = None) -> np.ndarray:
    """Probabilities ``(n, n_actions)`` the server samples from, after mask and exploration.

    ``mask`` is boolean ``(n, n_actions)`` with True for allowed actions; masked actions get
    probability 0 in every mode. A row that allows nothing raises ``InvalidObservationError``.
    """
    logits = np.asarray(logits, dtype=np.float64)
    n, k = logits.shape
    if mask is not None:
        allowed = np.asarray(mask, dtype=bool)
        empty = ~allowed.any(axis=1)
        if empty.any():
            row = int(np.argmax(empty))
            raise InvalidObservationError(f"instances[{row}].mask forbids every action")
        logits = np.where(allowed, logits, -np.inf)
    if config.mode == "softmax":
        z = logits if config.temperature == 1.0 else logits / config.temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)
    greedy = np.zeros((n, k))
    greedy[np.arange(n), logits.argmax(axis=1)] = 1.0
    if config.mode == "greedy" or config.epsilon == 0.0:
        return greedy
    if mask is None:
        return (1.0 - config.epsilon) * greedy + config.epsilon / k
    uniform = allowed / allowed.sum(axis=1, keepdims=True)
    return (1.0 - config.epsilon) * greedy + config.epsilon * uniform


def executed_distribution_row(logits: list[float], config: ExplorationConfig,
                              mask: list[bool] | None = None) -> list[float]:
    """Pure-Python :func:`executed_distribution` for one row (single-observation requests).

    numpy's per-call overhead (~1.5 us per ufunc) dominates for one row of a few actions;
    this path gives the same probabilities about 8x faster. Tests check both agree.
    """
    k = len(logits)
    if mask is not None:
        if not any(mask):
            raise InvalidObservationError("instances[0].mask forbids every action")
        logits = [x if ok else -math.inf for x, ok in zip(logits, mask, strict=True)]
    if config.mode == "softmax":
        t = config.temperature
        top = max(logits)
        exps = [math.exp((x - top) / t) for x in logits]
        total = sum(exps)
        return [e / total for e in exps]
    best = max(range(k), key=logits.__getitem__)
    eps = 0.0 if config.mode == "greedy" else config.epsilon
    n_allowed = k if mask is None else sum(1 for ok in mask if ok)
    share = eps / n_allowed
    probs = [share if (mask is None or mask[i]) else 0.0 for i in range(k)]
    probs[best] += 1.0 - eps
    return probs


def sample_row(probs: list[float], u: float) -> int:
    """Inverse-CDF sample of one index given a uniform ``u`` in [0, 1)."""
    target = u * sum(probs)
    cumulative = 0.0
    for i, p in enumerate(probs):
        cumulative += p
        if target < cumulative:
            return i
    return max(i for i, p in enumerate(probs) if p > 0)
