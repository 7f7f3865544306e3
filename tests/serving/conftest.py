"""Serving fixtures: saved CartPole models and real policy-server processes."""

from __future__ import annotations

import pytest

from rlops_plugin import EnvSpec, PolicyBundle, flavor
from rlops_plugin.serving.process import PolicyServerProcess


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """Two saved CartPole policies: champion (seed 0) and challenger (seed 1)."""
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for name, seed in (("champion", 0), ("challenger", 1)):
        flavor.save_model(PolicyBundle.create(EnvSpec(id="CartPole-v1"), seed=seed), root / name)
        paths[name] = str(root / name)
    return paths


@pytest.fixture
def start_server(tmp_path):
    """Factory: start a policy server process; every one started is stopped by its PID at teardown."""
    started: list[PolicyServerProcess] = []

    def start(model_uri: str, store: str | None = None, extra_args: list[str] | None = None, env=None):
        server = PolicyServerProcess(model_uri, tmp_path / f"server-{len(started)}.log", store=store,
                                     extra_args=extra_args, env=env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
