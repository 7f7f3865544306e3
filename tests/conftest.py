"""Shared fixtures: a real MLflow server on 127.0.0.1, isolated tracking URIs, small bundles."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

TESTS_DIR = Path(__file__).resolve().parent
FIXTURES_DIR = TESTS_DIR / "fixtures"
REPO_ROOT = TESTS_DIR.parent


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (sqlite backend) on 127.0.0.1 and a free port, for the session."""
    from rlops_plugin.local.mlflow_server import LocalMlflowServer

    server = LocalMlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tracking(mlflow_server, monkeypatch) -> str:
    """Point MLflow (in-process and in subprocesses) at the session's server."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_registry_uri(mlflow_server.url)
    return mlflow_server.url


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Keep stray MLflow calls out of the repo, end leaked runs, reset plugin registries."""
    stray = f"sqlite:///{tmp_path / 'stray-mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stray)
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(stray)
        sys.modules["mlflow"].set_registry_uri(stray)
    yield
    if "mlflow" in sys.modules:
        mlflow = sys.modules["mlflow"]
        while mlflow.active_run() is not None:
            mlflow.end_run()
    from rlops_plugin import plugins

    plugins.reset()


@pytest.fixture
def model_name() -> str:
    """A registered-model name no other test uses."""
    return f"test-policy-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cartpole_bundle():
    """A freshly initialized CartPole policy bundle (seeded)."""
    from rlops_plugin import EnvSpec, PolicyBundle

    return PolicyBundle.create(EnvSpec(id="CartPole-v1"), "env", config={"hidden_sizes": [32, 32]}, seed=0)


@pytest.fixture
def user_code_path(monkeypatch) -> Path:
    """tests/fixtures/user_code on sys.path (a user's own reward module)."""
    path = FIXTURES_DIR / "user_code"
    monkeypatch.syspath_prepend(str(path))
    return path
