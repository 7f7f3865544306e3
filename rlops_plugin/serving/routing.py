"""Champion/challenger routing inside one server: off, shadow, or canary.

* ``shadow``: the champion decides every request; the challenger scores the same observations
  and its distribution is logged, never returned.
* ``canary``: a share ``fraction`` of decisions is decided by the challenger. With a routing key
  (a user or session id), the choice is sticky: a stable hash of the key decides, so the same
  key always meets the same policy while the fraction is unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from rlops_plugin.errors import ConfigError

ROUTING_MODES = ("off", "shadow", "canary")


@dataclass(frozen=True)
class RoutingConfig:
    """Which policy decides what."""

    mode: str = "off"
    """``off`` (champion only), ``shadow`` or ``canary``."""
    fraction: float = 0.0
    """Canary share of decisions taken by the challenger, in [0, 1]."""
    salt: str = "rlops"
    """Salt of the sticky hash; change it to reshuffle which keys see the challenger."""

    def __post_init__(self) -> None:
        if self.mode not in ROUTING_MODES:
            raise ConfigError(f"routing mode {self.mode!r} is not one of {list(ROUTING_MODES)}")
        if not (0.0 <= self.fraction <= 1.0):
            raise ConfigError(f"canary fraction must lie in [0, 1], got {self.fraction}")

    def to_dict(self) -> dict[str, float | str]:
        """JSON form."""
        return asdict(self)


def key_position(key: str, salt: str) -> float:
    """A stable pseudo-uniform number in [0, 1) for a routing key."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def challenger_rows(config: RoutingConfig, n: int, routing_keys: list[str | None] | None,
                    rng: np.random.Generator) -> np.ndarray:
    """Boolean ``(n,)``: which rows the challenger decides (never in ``off`` or ``shadow``)."""
    if config.mode != "canary" or config.fraction == 0.0:
        return np.zeros(n, dtype=bool)
    draws = rng.random(n)
    if routing_keys is not None:
        for i, key in enumerate(routing_keys):
            if key is not None:
                draws[i] = key_position(key, config.salt)
    return draws < config.fraction
