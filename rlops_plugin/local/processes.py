"""Child processes for local servers: free ports, health polling, teardown by process group.

Servers are started in their own session (process group) so that stopping them by their PID
also stops their workers; nothing is left behind when a test or the demo ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from rlops_plugin.errors import RLOpsError

LOCALHOST = "127.0.0.1"


class ServerStartError(RLOpsError):
    """A local server process exited or did not become healthy in time."""


def free_port(host: str = LOCALHOST) -> int:
    """An ephemeral TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local URL
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ManagedProcess:
    """A child process in its own process group, with a log file and a health check."""

    def __init__(self, argv: Sequence[str], log_path: str | Path, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None) -> None:
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the child (also its process-group id)."""
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        """Spawn the process, logging stdout and stderr to ``log_path``."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        try:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=self.cwd, start_new_session=True)
        finally:
            log.close()

    def wait_healthy(self, url: str, timeout: float) -> None:
        """Poll ``url`` until it answers 2xx; raise with the log tail if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(f"{self.argv[0]} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if http_ok(url):
                return
            time.sleep(0.2)
        self.stop()
        raise ServerStartError(f"{url} not healthy after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the process log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it lingers."""
        if self.proc is None:
            return
        kill_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)
        kill_group(self.proc.pid, signal.SIGKILL)  # stray workers left in the group

    def kill(self) -> None:
        """SIGKILL the process group at once (crash simulation)."""
        if self.proc is not None:
            kill_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def kill_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid``; ignore it if already gone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
