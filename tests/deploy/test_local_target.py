"""The rlops-local target from the shell: `mlflow deployments ...` with real server processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from rlops_plugin import flavor
from rlops_plugin.audit.events import list_events

pytestmark = pytest.mark.integration
MLFLOW = [sys.executable, "-m", "mlflow", "deployments"]


@pytest.fixture
def registered(tracking, model_name, cartpole_bundle):
    other = cartpole_bundle.with_policy(cartpole_bundle.policy.clone(), parent_version="1")
    for bundle in (cartpole_bundle, other):
        with mlflow.start_run():
            flavor.log_model(bundle, name="policy", registered_model_name=model_name)
    flavor.set_alias(model_name, "champion", 1)
    flavor.set_alias(model_name, "challenger", 2)
    return model_name


def mlflow_cli(args, tracking, check=True):
    proc = subprocess.run(MLFLOW + args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": tracking})
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc


def alive(pid):
    try:
        return b"rlops_plugin.serving" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.fixture
def stop_leftovers(tmp_path):
    """Stop by PID any server a failed assertion left running (the test deletes it on success)."""
    yield
    from rlops_plugin.deploy.local import LocalDeployments

    deployments = LocalDeployments(tmp_path / "state")
    for state in deployments.list():
        deployments.delete(state["name"])


def test_deployments_from_the_shell(registered, tracking, tmp_path, stop_leftovers):
    name = registered
    target = f"rlops-local:{tmp_path / 'state'}"
    store = str(tmp_path / "store.db")
    help_text = mlflow_cli(["help", "-t", "rlops-local"], tracking).stdout
    assert "rlops-local" in help_text and "-C mode=shadow" in help_text
    created = mlflow_cli(["create", "-t", target, "-m", f"models:/{name}@challenger", "--name", name,
                          "-C", "mode=shadow", "-C", f"store={store}"], tracking)
    assert "created" in created.stdout.lower()
    state = json.loads((tmp_path / "state" / f"{name}.json").read_text())
    assert state["mode"] == "shadow" and state["model_uri"] == f"models:/{name}@champion"
    assert alive(state["pid"])
    again = mlflow_cli(["create", "-t", target, "-m", f"models:/{name}@champion", "--name", name], tracking,
                       check=False)
    assert again.returncode != 0 and "already runs" in again.stderr
    got = mlflow_cli(["get", "-t", target, "--name", name], tracking).stdout
    assert "shadow" in got and f"{name}/2@" in got
    (tmp_path / "obs.json").write_text(json.dumps({"instances": [[0.0, 0.1, 0.0, -0.1]]}))
    predicted = mlflow_cli(["predict", "-t", target, "--name", name, "--input-path", str(tmp_path / "obs.json")],
                           tracking).stdout
    assert '"decided_by": "champion"' in predicted and f"{name}/1@" in predicted
    mlflow_cli(["update", "-t", target, "--name", name, "-m", f"models:/{name}@challenger", "-C", "mode=canary",
                "-C", "fraction=1.0"], tracking)
    after = json.loads(mlflow_cli(["predict", "-t", target, "--name", name, "--input-path",
                                   str(tmp_path / "obs.json")], tracking).stdout)
    assert after["predictions"][0]["decided_by"] == "challenger"
    listed = mlflow_cli(["list", "-t", target], tracking).stdout
    assert name in listed
    mlflow_cli(["delete", "-t", target, "--name", name], tracking)
    assert not alive(state["pid"])
    missing = mlflow_cli(["get", "-t", target, "--name", name], tracking, check=False)
    assert missing.returncode != 0 and "no local deployment" in missing.stderr
    # every change made with `mlflow deployments` is a deployment audit event of the model it serves
    trail = [(e.decision, e.model_version, e.details["config"].get("mode"), e.details["target"])
             for e in list_events(name, kinds=["deployment"])]
    assert trail == [("created", "2", "shadow", target), ("updated", "2", "canary", target),
                     ("deleted", "1", None, target)]
