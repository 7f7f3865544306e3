"""Local deployments: real ``rlops serve`` processes on 127.0.0.1, tracked in a state folder.

A deployment outlives the command that created it (its own session and process group); its
state (PID, port, URIs, routing) is a JSON file in ``RLOPS_LOCAL_DEPLOYMENTS`` (default
``.rlops/deployments``). Deleting a deployment stops its process group by PID after checking
that the PID still runs our server on the recorded port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from rlops_plugin.defaults import CHAMPION
from rlops_plugin.errors import ConfigError, RLOpsError
from rlops_plugin.flavor.refs import ModelRef
from rlops_plugin.local.processes import LOCALHOST, free_port, http_ok, kill_group

STATE_ENV = "RLOPS_LOCAL_DEPLOYMENTS"
DEFAULT_STORE = ".rlops/experience.db"


class DeploymentError(RLOpsError):
    """A deployment does not exist, already exists, or its server does not respond."""


def state_root(root: str | Path | None = None) -> Path:
    """Folder holding the deployment state files."""
    return Path(root or os.environ.get(STATE_ENV) or ".rlops/deployments").resolve()


def challenger_defaults(model_uri: str) -> str:
    """``models:/NAME@champion`` for a ``models:/NAME...`` challenger URI (the champion it challenges)."""
    ref = ModelRef.parse(model_uri)
    if not ref.registered:
        raise ConfigError(f"{model_uri}: shadow/canary need a champion; pass config champion=URI")
    return ref.at_alias(CHAMPION).uri


class LocalDeployments:
    """Create, reconfigure, inspect and stop local policy servers."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = state_root(root)

    def _state_path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"deployment name {name!r} is not a plain name")
        return self.root / f"{name}.json"

    def create(self, name: str, champion_uri: str, challenger_uri: str | None = None, mode: str = "off",
               fraction: float = 0.0, store: str | None = None, port: int | None = None,
               extra_args: list[str] | None = None, timeout: float = 180.0) -> dict[str, Any]:
        """Start a server for ``name``; refuses an existing live deployment."""
        path = self._state_path(name)
        if path.exists():
            state = json.loads(path.read_text())
            if self._alive(state):
                raise DeploymentError(f"deployment {name!r} already runs (pid {state['pid']}, {state['url']}); "
                                      "update or delete it")
            path.unlink()
        if mode != "off" and not challenger_uri:
            raise ConfigError(f"mode {mode!r} needs a challenger model")
        self.root.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        store = store or str(Path(DEFAULT_STORE).resolve())
        argv = [sys.executable, "-m", "rlops_plugin.serving", "--model_uri", champion_uri, "--model_name", "policy",
                "--http_port", str(port), "--host", LOCALHOST, "--store", store]
        if challenger_uri:
            argv += ["--challenger_uri", challenger_uri, "--routing", mode, "--canary_fraction", str(fraction)]
        argv += list(extra_args or [])
        log = self.root / f"{name}.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
        url = f"http://{LOCALHOST}:{port}"
        state = {"name": name, "pid": proc.pid, "port": port, "url": url, "model_uri": champion_uri,
                 "challenger_uri": challenger_uri, "mode": mode if challenger_uri else "off",
                 "fraction": fraction, "store": store, "log": str(log), "created_at": time.time(), "argv": argv}
        deadline = time.monotonic() + timeout
        while not http_ok(f"{url}/v1/models/policy"):
            if proc.poll() is not None or time.monotonic() > deadline:
                kill_group(proc.pid, signal.SIGKILL)
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise DeploymentError(f"deployment {name!r} failed to start:\n{tail}")
            time.sleep(0.2)
        path.write_text(json.dumps(state, indent=2))
        return self.get(name)

    def get(self, name: str) -> dict[str, Any]:
        """State plus live status (``alive``, served policies, store counts)."""
        path = self._state_path(name)
        if not path.exists():
            raise DeploymentError(f"no local deployment named {name!r} in {self.root}")
        state = json.loads(path.read_text())
        state["flavor"] = "rlops"
        state["alive"] = self._alive(state)
        if state["alive"]:
            try:
                state["status"] = httpx.get(f"{state['url']}/rlops/v1/status", timeout=10).json()
            except httpx.HTTPError:
                state["alive"] = False
        return state

    def list(self) -> list[dict[str, Any]]:
        """Every deployment in the state folder."""
        if not self.root.exists():
            return []
        return [self.get(p.stem) for p in sorted(self.root.glob("*.json"))]

    def configure(self, name: str, champion_uri: str | None = None, challenger_uri: str | None = None,
                  mode: str | None = None, fraction: float | None = None) -> dict[str, Any]:
        """Change models or routing of a running deployment without a restart."""
        state = self.get(name)
        if not state["alive"]:
            raise DeploymentError(f"deployment {name!r} is not running (see {state['log']})")
        body: dict[str, Any] = {}
        if champion_uri:
            body["model_uri"] = champion_uri
        if challenger_uri is not None:
            body["challenger_uri"] = challenger_uri
        new_mode = mode if mode is not None else state.get("mode", "off")
        new_fraction = fraction if fraction is not None else state.get("fraction", 0.0)
        if challenger_uri == "":
            new_mode, new_fraction = "off", 0.0
        body["routing"] = {"mode": new_mode, "fraction": new_fraction}
        r = httpx.post(f"{state['url']}/rlops/v1/models/policy/configure", json=body, timeout=300)
        if r.status_code != 200:
            raise DeploymentError(f"deployment {name!r} refused the change ({r.status_code}): {r.text}")
        status = r.json()
        stored = json.loads(self._state_path(name).read_text())
        stored.update({"model_uri": status["champion_uri"], "challenger_uri": status["challenger_uri"],
                       "mode": status["routing"]["mode"], "fraction": status["routing"]["fraction"]})
        self._state_path(name).write_text(json.dumps(stored, indent=2))
        return self.get(name)

    def delete(self, name: str) -> None:
        """Stop the server (process group, by PID) and forget the deployment."""
        state = self.get(name)
        if state["alive"]:
            kill_group(state["pid"], signal.SIGTERM)
            deadline = time.monotonic() + 15
            while self._alive(state) and time.monotonic() < deadline:
                time.sleep(0.1)
            kill_group(state["pid"], signal.SIGKILL)
        self._state_path(name).unlink(missing_ok=True)

    def predict(self, name: str, instances: list[Any]) -> list[dict[str, Any]]:
        """Decisions from the deployment (v1 protocol)."""
        state = self.get(name)
        r = httpx.post(f"{state['url']}/v1/models/policy:predict", json={"instances": instances}, timeout=60)
        if r.status_code != 200:
            raise DeploymentError(f"{name}: {r.status_code} {r.text}")
        return r.json()["predictions"]

    @staticmethod
    def _alive(state: dict[str, Any]) -> bool:
        """True when the recorded PID still runs our server on the recorded port."""
        try:
            cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"rlops_plugin.serving" in cmdline and str(state["port"]).encode() in cmdline


