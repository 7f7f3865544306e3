"""Drive an agent server with simulated conversations and a simulated reviewer, like production would.

Each ticket is one conversation (its own session id, so a canary assigns it whole to one policy): the
customer's message goes through the real OpenAI data plane (``/openai/v1/chat/completions``), the
reviewer looks at the answer and rates it (thumbs up or down) by a rule the policy never sees, and
corrects a share of the wrong answers with the call it should have made; feedback is posted to the
server's ``/v1/feedback`` endpoint in batches. Used by the agent demo, its benchmark and the tests.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Ticket:
    """One customer message and the answer the hidden rule expects (``expected``: a tool call)."""

    text: str
    expected: dict[str, Any]
    """``{"name": ..., "arguments": {...}}``: what a correct agent calls."""
    topic: str = ""
    """A label for reports (e.g. the keyword or product line)."""


@dataclass
class AgentTrafficStats:
    """What one run of :func:`simulate_agent` did."""

    interactions: int = 0
    correct: int = 0
    errors: int = 0
    """Requests the server refused or failed (counted, not retried)."""
    feedback: int = 0
    corrections: int = 0
    by_version: dict[str, list[int]] = field(default_factory=dict)
    """``policy_version -> [answers, correct]``."""
    interaction_ids: list[str] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        """Share of answered tickets the hidden rule calls correct."""
        return self.correct / self.interactions if self.interactions else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (without the ids)."""
        return {"interactions": self.interactions, "correct": self.correct, "errors": self.errors,
                "feedback": self.feedback, "corrections": self.corrections, "success_rate": self.success_rate,
                "by_version": {k: {"answers": v[0], "correct": v[1]} for k, v in self.by_version.items()}}


class AgentClient:
    """HTTP client of one served agent: chat completions and feedback."""

    def __init__(self, base_url: str, model: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.http = httpx.Client(timeout=timeout)

    def chat(self, messages: Sequence[dict[str, Any]], session_id: str, tools: Sequence[dict[str, Any]] | None = None,
             temperature: float = 1.0, max_tokens: int = 40) -> dict[str, Any]:
        """One chat completion (the OpenAI wire format plus the ``rlops`` object); raises on a non-200."""
        body: dict[str, Any] = {"model": self.model, "messages": list(messages), "temperature": temperature,
                                "max_tokens": max_tokens, "metadata": {"session_id": session_id}}
        if tools:
            body["tools"] = list(tools)
        r = self.http.post(f"{self.base_url}/openai/v1/chat/completions", json=body)
        r.raise_for_status()
        return r.json()

    def feedback(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST feedback events; return their per-event results."""
        if not events:
            return []
        r = self.http.post(f"{self.base_url}/v1/feedback", json=events)
        r.raise_for_status()
        return r.json()["results"]

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()


def answered_call(response: dict[str, Any]) -> dict[str, Any] | None:
    """The first tool call of the first choice as ``{"name", "arguments"}``, or None (plain text, bad JSON)."""
    calls = (response["choices"][0]["message"].get("tool_calls") or [])
    if not calls:
        return None
    function = calls[0]["function"]
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except json.JSONDecodeError:
        return None
    return {"name": function["name"], "arguments": arguments}


def simulate_agent(client: AgentClient, tickets: Iterable[Ticket], *, tools: Sequence[dict[str, Any]] | None = None,
                   rate: float = 1.0, correct_share: float = 0.5, rating: Callable[[bool], float] | None = None,
                   concurrency: int = 4, seed: int = 0, session_prefix: str | None = None,
                   temperature: float = 1.0, max_tokens: int = 40, feedback_batch: int = 32) -> AgentTrafficStats:
    """Send every ticket as its own conversation; rate a share ``rate`` of the answers, correct some wrong ones.

    The rating is thumbs up (1) for the expected call and down (-1) otherwise, or ``rating(correct)`` when
    given (e.g. a constant, to check that a canary cannot promote on rewards that say nothing). A wrong
    answer is corrected with the expected call with probability ``correct_share``.
    """
    rng = random.Random(seed)
    prefix = session_prefix or uuid.uuid4().hex[:8]
    items = [(i, t, rng.random() < rate, rng.random() < correct_share) for i, t in enumerate(tickets)]
    stats = AgentTrafficStats()
    pending: list[dict[str, Any]] = []

    def ask(item: tuple[int, Ticket, bool, bool]) -> tuple[tuple[int, Ticket, bool, bool], dict[str, Any] | None]:
        i, ticket, _, _ = item
        try:
            return item, client.chat([{"role": "user", "content": ticket.text}], f"{prefix}-{i}", tools,
                                     temperature, max_tokens)
        except httpx.HTTPError:
            return item, None

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for (_, ticket, rated, corrects), response in pool.map(ask, items):
            if response is None:
                stats.errors += 1
                continue
            ext = response["rlops"]
            ok = answered_call(response) == ticket.expected
            stats.interactions += 1
            stats.correct += ok
            counts = stats.by_version.setdefault(ext["policy_version"], [0, 0])
            counts[0] += 1
            counts[1] += ok
            stats.interaction_ids.append(ext["interaction_id"])
            if rated:
                value = rating(ok) if rating is not None else (1 if ok else -1)
                pending.append({"interaction_id": ext["interaction_id"], "kind": "rating", "value": value,
                                "scale": "thumbs", "rater": "reviewer"})
                if not ok and corrects:
                    pending.append({"interaction_id": ext["interaction_id"], "kind": "correction",
                                    "rater": "reviewer", "response": {"tool_calls": [ticket.expected]}})
                    stats.corrections += 1
            if len(pending) >= feedback_batch:
                stats.feedback += len(client.feedback(pending))
                pending = []
    stats.feedback += len(client.feedback(pending))
    return stats
