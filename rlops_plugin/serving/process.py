"""Start and stop ``rlops serve`` as a child process (tests, benchmarks, the local deploy target)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rlops_plugin.local.processes import LOCALHOST, ManagedProcess, free_port

STARTUP_TIMEOUT_S = 120.0


class PolicyServerProcess:
    """A policy server in its own process group on 127.0.0.1 and a free port."""

    def __init__(self, model_uri: str, log_path: str | Path, name: str = "policy", store: str | None = None,
                 port: int | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.model_uri = model_uri
        self.name = name
        self.store = store
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.process = ManagedProcess(self.argv(), log_path, env={**os.environ, **(env or {})})

    def argv(self) -> list[str]:
        """The command line of the server."""
        argv = [sys.executable, "-m", "rlops_plugin.serving", "--model_uri", self.model_uri,
                "--model_name", self.name, "--http_port", str(self.port), "--host", LOCALHOST]
        if self.store:
            argv += ["--store", self.store]
        return argv + self.extra_args

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def predict_url(self) -> str:
        """KServe v1 predict URL of the served model."""
        return f"{self.url}/v1/models/{self.name}:predict"

    @property
    def pid(self) -> int | None:
        """PID (and process-group id) of the server."""
        return self.process.pid

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> PolicyServerProcess:
        """Spawn the server and wait until the model reports ready."""
        self.process.start()
        self.process.wait_healthy(f"{self.url}/v1/models/{self.name}", timeout)
        return self

    def stop(self) -> None:
        """SIGTERM the process group (the store is flushed), SIGKILL if it lingers."""
        self.process.stop()

    def kill(self) -> None:
        """SIGKILL at once: crash simulation."""
        self.process.kill()

    def __enter__(self) -> PolicyServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
