import json
import os
import subprocess
import sys

import mlflow
import pytest

from rlops_plugin import flavor

RLOPS = [sys.executable, "-m", "rlops_plugin.cli"]


def run(args, env=None, check=True):
    proc = subprocess.run(RLOPS + args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_version_lists_the_stack():
    out = run(["version"]).stdout
    assert out.startswith("rlops-plugin ")
    for dist in ("mlflow", "kfp", "kserve", "torch", "evidently", "pluggy"):
        assert f"\n{dist} " in out


def test_plugins_lists_builtins():
    out = run(["plugins"]).stdout
    assert "rlops/ChainWalk-v0" in out and "mlp" in out


@pytest.mark.integration
def test_bundle_inspect_prints_parts_hashes_and_lineage(tracking, model_name, cartpole_bundle):
    child = cartpole_bundle.with_policy(cartpole_bundle.policy.clone(), parent_version="1", trainer="bc",
                                        dataset_digest="sha256:0123")
    with mlflow.start_run():
        flavor.log_model(child, name="policy", registered_model_name=model_name)
    flavor.set_alias(model_name, "champion", "1")
    env = {"MLFLOW_TRACKING_URI": tracking}
    out = run(["bundle", "inspect", f"models:/{model_name}@champion"], env=env).stdout
    for needle in (child.bundle_sha, "policy", "env", "reward", "CartPole-v1", "sha256:0123", "trainer", "bc"):
        assert needle in out
    data = json.loads(run(["bundle", "inspect", f"models:/{model_name}/1", "--json"], env=env).stdout)
    assert data["hashes"] == child.hashes()
    assert data["source"]["version"] == "1"


@pytest.mark.integration
def test_errors_are_one_line_and_exit_2(tracking, model_name):
    proc = run(["bundle", "inspect", f"models:/{model_name}@champion"], env={"MLFLOW_TRACKING_URI": tracking},
               check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: RegistryError:") and "Traceback" not in proc.stderr


@pytest.mark.integration
def test_quickstart_against_an_existing_server(tracking):
    out = run(["quickstart", "--tracking-uri", tracking]).stdout
    assert "hashes verified, same greedy actions on 100 observations: True" in out


def test_pipeline_arguments_keep_json_text_parameters_as_text():
    import click

    from rlops_plugin.cli import _pipeline_arguments

    args = _pipeline_arguments("m", "s.db", "dep", "cql", ('triggers_json=["drift:*:2"]', "window=500",
                                                           "simulate_traffic=true", "reference=production:1000"))
    assert args == {"model_name": "m", "store": "s.db", "trainer": "cql", "deployment": "dep",
                    "triggers_json": '["drift:*:2"]', "window": 500, "simulate_traffic": True,
                    "reference": "production:1000"}
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        _pipeline_arguments("m", "s.db", None, "cql", ("window",))


def test_calibrate_fits_a_dataset_and_refuses_bad_ranges(tmp_path):
    from rlops_plugin import EnvSpec, PolicyBundle
    from rlops_plugin.experience.dataset import Dataset
    from tests.simulation.test_calibration import logged

    spec = EnvSpec(id="CartPole-v1", calibration={"masscart": {"low": 0.25, "high": 10.0}})
    flavor.save_model(PolicyBundle.create(spec, seed=0), tmp_path / "model")
    obs, act, nxt, done = logged(spec.replace(params={"masscart": 3.0}), 300)
    Dataset("transitions", {"obs": obs, "action": act, "next_obs": nxt, "done": done}).save(tmp_path / "data")
    out = run(["calibrate", "--dataset", str(tmp_path / "data"), "--bundle", str(tmp_path / "model"),
               "--recent", "250", "--out", str(tmp_path / "fit.json")]).stdout
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["params"]["masscart"] == pytest.approx(3.0, rel=1e-3) and fit["transitions"] <= 250
    assert out.startswith("masscart=3")
    ranges = json.loads(out.split("fine-tuning randomization: ", 1)[1])
    assert ranges["masscart"] == {"low": pytest.approx(2.7, rel=1e-3), "high": pytest.approx(3.3, rel=1e-3)}
    bad = run(["calibrate", "--dataset", str(tmp_path / "data"), "--bundle", str(tmp_path / "model"),
               "--param", "masscart=0.5:2.0"], check=False)
    assert bad.returncode == 2 and "on a declared bound: masscart=2" in bad.stderr
    typo = run(["calibrate", "--dataset", str(tmp_path / "data"), "--bundle", str(tmp_path / "model"),
                "--param", "masscart=heavy"], check=False)
    assert typo.returncode == 2 and "NAME=LOW:HIGH" in typo.stderr


@pytest.mark.integration
def test_sigterm_to_rlops_mlflow_start_stops_the_mlflow_server(tmp_path):
    """SIGTERM (what kubectl, systemd and CI send) stops the MLflow child too: no orphaned server keeps the port."""
    import contextlib
    import re
    import signal
    import socket
    import time

    proc = subprocess.Popen([*RLOPS, "mlflow", "start", "--root", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    pid = None
    try:
        line = proc.stdout.readline()
        match = re.search(r"MLflow server at http://127\.0\.0\.1:(\d+) \(pid (\d+)\)", line)
        assert match, line
        port, pid = int(match.group(1)), int(match.group(2))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the MLflow server (pid {pid}) outlived SIGTERM to rlops mlflow start")
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if pid is not None:  # a server that outlived the test (the failure above) is stopped by its group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
