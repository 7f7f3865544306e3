"""Monitoring fixtures: synthetic decision frames, an in-process policy client, a hook recorder."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from rlops_plugin import hookimpl, plugins
from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.monitoring.frames import add_episode_returns, build_frame
from rlops_plugin.serving.engine import DecisionEngine
from rlops_plugin.serving.requests import DecisionRequest


def synthetic_frame(n: int, seed: int = 0, *, obs_shift: float = 0.0, p_action: float = 0.5,
                    prob_shift: float = 0.0, reward_scale: float = 1.0, episode_len: int = 10) -> pd.DataFrame:
    """Independent decisions with 4 features, 2 actions, rewards in {0, 1}, short episodes (in log order)."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 4))
    obs[:, 1] += obs_shift
    p1 = np.clip(rng.beta(5, 5, size=n) + prob_shift, 0.01, 0.99)
    probs = np.column_stack([1 - p1, p1])
    actions = (rng.random(n) < p_action).astype(np.int64)
    frame = build_frame(obs, actions, probs[np.arange(n), actions], probs,
                        ids={"seq": np.arange(n), "ts": 1000.0 + np.arange(n),
                             "episode_id": np.array([f"e{seed}-{i // episode_len}" for i in range(n)], dtype=object),
                             "step": (np.arange(n) % episode_len).astype(float)})
    frame["reward"] = reward_scale * (rng.random(n) < 0.7)
    frame["episode_end"] = np.where(np.arange(n) % episode_len == episode_len - 1, "terminated", None)
    add_episode_returns(frame)
    return frame


@pytest.fixture(scope="session")
def reference_frame() -> pd.DataFrame:
    """20,000 synthetic reference decisions (20 calibration windows of 1,000)."""
    return synthetic_frame(20_000, seed=1)


class EngineClient:
    """The HTTP client's interface (decide, feedback) over an in-process DecisionEngine and a store."""

    def __init__(self, engine: DecisionEngine, store) -> None:
        self.engine = engine
        self.store = store

    def decide(self, instances: list[dict]) -> list[dict]:
        """Decide, log durably, answer (like ``POST /v1/models/NAME:predict``)."""
        request = DecisionRequest(obs=np.asarray([i["obs"] for i in instances], dtype=np.float32),
                                  episode_ids=[i.get("episode_id") for i in instances],
                                  steps=[i.get("step") for i in instances])
        decisions = self.engine.decide(request)
        self.store.log_decisions(decisions.batch)
        return decisions.response_rows()

    def feedback(self, events: list[dict]) -> list[str]:
        """Store feedback events (like ``POST /v1/feedback``)."""
        return self.store.add_feedback([parse_feedback(e) for e in events])

    def close(self) -> None:
        """Nothing to close."""


@pytest.fixture
def trigger_hook():
    """Register an ``rlops_on_trigger`` implementation for the test; yields the events it received."""
    received: list = []

    def rlops_on_trigger(event):
        received.append(event)
        return {"handled": event.rule}

    plugin = types.SimpleNamespace(rlops_on_trigger=hookimpl(rlops_on_trigger))
    plugins.get_plugin_manager().register(plugin, name="test-trigger-recorder")
    yield received
