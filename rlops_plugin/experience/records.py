"""In-memory records of the data plane: decision batches and feedback events.

A request's decisions are stored together as one *batch* (numpy arrays as raw bytes): one
row per request keeps durable logging cheap, and ``<batch_id>-<index>`` identifies each
decision. Batch ids start with the time in nanoseconds, so they sort by arrival and keep
the store's index append-only.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlops_plugin.errors import InvalidObservationError

FEEDBACK_KINDS = ("reward", "rating", "correction", "outcome", "comment")
CHAMPION, CHALLENGER = 0, 1
ROLE_NAMES = ("champion", "challenger")


def new_batch_id() -> str:
    """Time-ordered unique id: 16 hex digits of nanoseconds + 12 random hex digits."""
    return f"{time.time_ns():016x}{secrets.token_hex(6)}"


def decision_id(batch_id: str, index: int) -> str:
    """Id of decision ``index`` within batch ``batch_id``."""
    return f"{batch_id}-{index}"


MAX_INDEX_DIGITS = 9
"""Most digits of a decision index: far more decisions than a batch (or an agent's choices) can hold, and an
index the store's 64-bit integer columns always fit."""


def split_decision_id(value: str) -> tuple[str, int]:
    """Inverse of :func:`decision_id`; raises ``InvalidObservationError`` for malformed ids."""
    batch, sep, index = str(value).rpartition("-")
    if not sep or not batch or len(batch) > 64 or not index.isascii() or not index.isdigit():
        raise InvalidObservationError(f"decision_id {value!r} is not of the form <batch_id>-<index>")
    if len(index) > MAX_INDEX_DIGITS:
        raise InvalidObservationError(f"decision_id {value[:80]!r}: index has {len(index)} digits, at most "
                                      f"{MAX_INDEX_DIGITS} (no batch holds more decisions)")
    return batch, int(index)


@dataclass
class DecisionBatch:
    """The decisions of one request, with everything needed for off-policy learning."""

    batch_id: str
    ts: float
    model: str
    obs: np.ndarray
    """float32 ``(n, obs_dim)``."""
    actions: np.ndarray
    """int64 ``(n,)`` for Discrete, float32 ``(n, action_dim)`` for Box."""
    propensities: np.ndarray
    """float64 ``(n,)``: probability (density for Box) of the executed action under the
    policy actually executed, after exploration, mask and shield. NaN when unknowable."""
    probs: np.ndarray | None
    """float64 ``(n, n_actions)``: the executed action distribution (Discrete only)."""
    decided_by: np.ndarray
    """uint8 ``(n,)``: index into ``policies`` of the policy that decided each row."""
    policies: list[str]
    """Policy versions (``name/version@bundle12``): champion first, challenger second."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Sparse per-request data: episode ids, steps, routing keys, vetoes, exploration, masks."""
    shadow_policy: str | None = None
    shadow_probs: np.ndarray | None = None
    """float64 ``(n, n_actions)``: the shadow challenger's distribution, logged never returned."""

    @property
    def n(self) -> int:
        """Number of decisions."""
        return int(self.obs.shape[0])

    def decision_ids(self) -> list[str]:
        """Ids of every decision in the batch."""
        batch_id = self.batch_id
        return [f"{batch_id}-{i}" for i in range(self.n)]

    def policy_of(self, i: int) -> str:
        """Version of the policy that decided row ``i``."""
        return self.policies[int(self.decided_by[i])]


@dataclass
class InteractionRecord:
    """One agent interaction (a chat or text completion request and its choices), logged before the answer.

    ``interaction_id`` has the batch-id shape, so ``<interaction_id>-<choice>`` is a decision id: feedback,
    the join and the store's pending/orphaned logic treat a choice exactly like a vector decision.
    """

    interaction_id: str
    ts: float
    """Arrival time of the request (unix seconds)."""
    model: str
    policy_version: str
    """``name/version@bundle12`` of the policy that answered."""
    endpoint: str
    """``chat.completions`` or ``completions``."""
    request: dict[str, Any]
    """What the policy saw: ``messages`` (or ``prompt``), ``tools`` offered, ``tool_choice`` and ``sampling``
    (temperature, top_p, n, max_tokens, seed), with the system prompt the server added."""
    choices: list[dict[str, Any]]
    """Per choice: ``index``, ``content``, ``tool_calls``, ``finish_reason``, ``logprob`` (under the sampling
    distribution actually used), ``model_logprob`` (temperature 1, untruncated), ``completion_tokens`` and
    ``vetoes`` of the tool-call guard."""
    usage: dict[str, int] = field(default_factory=dict)
    latency_ms: float = 0.0
    session_id: str | None = None
    role: str = "champion"
    """Routing role of the answering policy (``champion`` or ``challenger``), or ``shadow`` for a shadow
    challenger's answer to the interaction named by ``extra["shadow_of"]`` (logged, never returned)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of choices."""
        return len(self.choices)

    def choice_ids(self) -> list[str]:
        """Decision ids of the choices (what feedback names)."""
        return [decision_id(self.interaction_id, i) for i in range(self.n)]

    def to_json(self) -> dict[str, Any]:
        """The stored JSON form."""
        return {"interaction_id": self.interaction_id, "ts": self.ts, "model": self.model,
                "policy_version": self.policy_version, "endpoint": self.endpoint, "request": self.request,
                "choices": self.choices, "usage": self.usage, "latency_ms": self.latency_ms,
                "session_id": self.session_id, "role": self.role, "extra": self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InteractionRecord:
        """Inverse of :meth:`to_json`."""
        return cls(**data)


SHADOW_ROLE = "shadow"
"""``InteractionRecord.role`` of a shadow challenger's answer."""

SESSION_PREFIX = "session:"
"""Feedback about a whole conversation is stored under the decision id ``session:<session_id>``."""


@dataclass(frozen=True)
class FeedbackEvent:
    """A reward, rating, human correction or raw outcome for one decision."""

    decision_id: str
    kind: str
    idempotency_key: str
    value: float | None = None
    action: Any = None
    payload: dict[str, Any] | None = None
    event_ts: float = 0.0
    received_ts: float = 0.0

    @property
    def batch_id(self) -> str:
        """The decision's batch (for session feedback: ``session:<id>``)."""
        if self.decision_id.startswith(SESSION_PREFIX):
            return self.decision_id
        return split_decision_id(self.decision_id)[0]

    @property
    def index(self) -> int:
        """The decision's index within its batch (0 for session feedback)."""
        if self.decision_id.startswith(SESSION_PREFIX):
            return 0
        return split_decision_id(self.decision_id)[1]


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` if finite, else ``None``."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
