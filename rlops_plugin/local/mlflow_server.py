"""A real ``mlflow server`` on 127.0.0.1: SQLite by default, PostgreSQL when given a URI.

Used by the test fixtures, the CLI (``rlops mlflow start``) and the demo. Artifacts are served
through the server (``--artifacts-destination``) so clients need no shared filesystem.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rlops_plugin.local.processes import LOCALHOST, ManagedProcess, free_port

STARTUP_TIMEOUT_S = 120.0


class LocalMlflowServer:
    """Start and stop one MLflow tracking + registry server process."""

    def __init__(self, root: str | Path, port: int | None = None, backend_store_uri: str | None = None,
                 host: str = LOCALHOST) -> None:
        self.root = Path(root).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.backend_store_uri = backend_store_uri or f"sqlite:///{self.root / 'mlflow.db'}"
        self.artifacts = self.root / "artifacts"
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Tracking URI of the server."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """Start the server and wait until ``/health`` answers; return its URL."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", str(self.artifacts),
            "--host", self.host, "--port", str(self.port), "--workers", "1",
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.process = ManagedProcess(argv, self.root / "mlflow-server.log", env=env)
        self.process.start()
        self.process.wait_healthy(f"{self.url}/health", timeout)
        return self.url

    def stop(self) -> None:
        """Stop the server and its workers by process group."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    def __enter__(self) -> LocalMlflowServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
