"""Shared fixtures: a real MLflow server on 127.0.0.1, isolated tracking URIs, small bundles."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# The suite runs two xdist workers on two cores: one intra-op thread each (in this process and the servers and
# CLIs it starts). Measured: the tiny agent's fixture took 176 s with torch's default threads on busy cores, 27 s
# with one.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# MLflow's telemetry thread sets and unsets _MLFLOW_TELEMETRY_SESSION_ID in os.environ while other threads iterate
# it (seen once: KeyError in urllib's proxy lookup during log_model); nothing leaves this machine anyway.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

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


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (initdb + pg_ctl) on 127.0.0.1 and a free port, for the session."""
    import glob
    import shutil
    import subprocess
    import tempfile

    from rlops_plugin.local.processes import free_port

    search = os.pathsep.join([os.environ.get("PATH", ""), *sorted(glob.glob("/usr/lib/postgresql/*/bin"))])
    initdb, pg_ctl = shutil.which("initdb", path=search), shutil.which("pg_ctl", path=search)
    if not (initdb and pg_ctl):
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are required: .ci/run installs them")
    root = Path(tempfile.mkdtemp(prefix="rlops-pg-"))  # not under pytest's root-only tmp: postgres must read it
    data = root / "data"
    port = free_port()
    env = {**os.environ}
    user = []
    if os.geteuid() == 0:  # postgres refuses to run as root: use the 'postgres' system user
        shutil.chown(root, "postgres")
        user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(user + [initdb, "-D", str(data), "-A", "trust", "-U", "rlops"], check=True,
                   capture_output=True, env=env)
    subprocess.run(user + [pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                           f"-h 127.0.0.1 -p {port} -k {root}", "start"], check=True, capture_output=True, env=env)
    yield f"postgresql://rlops@127.0.0.1:{port}/postgres"
    subprocess.run(user + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, env=env)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh database on the session's PostgreSQL server."""
    import uuid

    import psycopg

    name = f"rlops_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.rsplit("/", 1)[0] + f"/{name}"


# ----- saved CartPole models and policy-server processes (serving, deploy, pipelines) -------------
@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """Two saved CartPole policies: champion (seed 0) and challenger (seed 1)."""
    from rlops_plugin import EnvSpec, PolicyBundle, flavor

    root = tmp_path_factory.mktemp("models")
    paths = {}
    for name, seed in (("champion", 0), ("challenger", 1)):
        flavor.save_model(PolicyBundle.create(EnvSpec(id="CartPole-v1"), seed=seed), root / name)
        paths[name] = str(root / name)
    return paths


@pytest.fixture
def start_server(tmp_path):
    """Factory: start a policy server process; every one started is stopped by its PID at teardown."""
    from rlops_plugin.serving.process import PolicyServerProcess

    started: list[PolicyServerProcess] = []

    def start(model_uri: str, store: str | None = None, extra_args: list[str] | None = None, env=None,
              name: str = "policy"):
        """Start and wait for readiness."""
        server = PolicyServerProcess(model_uri, tmp_path / f"server-{len(started)}.log", name=name, store=store,
                                     extra_args=extra_args, env=env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def strong_bundle():
    """A strong CartPole policy: a behaviour clone of the heuristic on states it visits (returns ~500)."""
    from rlops_plugin.training.expert import distill_cartpole_heuristic

    return distill_cartpole_heuristic(episodes=30, max_steps=300, hidden_sizes=[32, 32], bc_steps=600, lr=3e-3)


@pytest.fixture(scope="session")
def weak_bundle():
    """An untrained CartPole policy (returns ~10)."""
    from rlops_plugin import EnvSpec, PolicyBundle

    return PolicyBundle.create(EnvSpec(id="CartPole-v1"), config={"hidden_sizes": [32, 32]}, seed=1)


# ----- agent policies (a tiny triage model trained locally: no hub, no download) -------------------
@pytest.fixture(scope="session")
def triage_agent(tmp_path_factory):
    """The built-in triage agent bundle (tiny Llama trained on the task's tickets, seed 0; ~8 s)."""
    from rlops_plugin.kinds.agent.triage import build_triage_agent

    return build_triage_agent(tmp_path_factory.mktemp("triage-checkpoint") / "model")


@pytest.fixture(scope="session")
def triage_model_dir(triage_agent, tmp_path_factory):
    """The triage agent saved as an MLflow model directory (what ``rlops serve PATH`` takes)."""
    from rlops_plugin import flavor

    path = tmp_path_factory.mktemp("triage-model") / "agent"
    flavor.save_model(triage_agent, path)
    return str(path)
