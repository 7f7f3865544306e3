"""The traffic simulator's loop: step limits, stop callbacks, progress, delayed feedback flushed."""

from __future__ import annotations

import pytest

from rlops_plugin import EnvSpec, PolicyBundle
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor.model import LoadedModel
from rlops_plugin.serving.engine import DecisionEngine
from rlops_plugin.simulation.traffic import simulate
from tests.monitoring.conftest import EngineClient

CARTPOLE = EnvSpec(id="CartPole-v1")


@pytest.fixture
def client(tmp_path):
    bundle = PolicyBundle.create(CARTPOLE, "env", seed=0)
    with open_store(tmp_path / "store.db") as store:
        yield EngineClient(DecisionEngine("policy", LoadedModel(bundle, "here"), seed=0), store)


def test_runs_until_stopped_and_reports_every_batch(client):
    seen = []
    stats = simulate(client, CARTPOLE, None, n_envs=4, seed=1, feedback_delay=3,
                     stop=lambda: len(seen) >= 50, on_step=lambda s: seen.append(s.decisions))
    assert stats.steps == 50 and stats.decisions == 200 and seen == list(range(4, 201, 4))
    assert stats.feedback_events == 200  # the delayed tail is flushed before returning
    assert stats.episodes == len(stats.returns) > 0 and client.store.stats()["decisions"] == 200


def test_step_limit_and_stop_combine(client):
    stats = simulate(client, CARTPOLE, 40, n_envs=4, stop=lambda: False)
    assert stats.decisions == 40
    with pytest.raises(ValueError, match="give steps, stop, or both"):
        simulate(client, CARTPOLE, None)
