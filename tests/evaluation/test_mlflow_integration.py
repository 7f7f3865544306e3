"""The gate and the evaluator through a real MLflow server: mlflow.models.evaluate, tags, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from rlops_plugin import flavor
from rlops_plugin.audit.events import list_events
from rlops_plugin.evaluation.gate import gate
from rlops_plugin.flavor import registry
from rlops_plugin.lifecycle.gate import record_gate

pytestmark = pytest.mark.integration


@pytest.fixture
def versions(tracking, model_name, strong_bundle, weak_bundle):
    """Version 1 = strong (champion), version 2 = weak candidate, version 3 = strong again."""
    for bundle in (strong_bundle, weak_bundle, strong_bundle):
        with mlflow.start_run():
            flavor.log_model(bundle, name="policy", registered_model_name=model_name)
    flavor.promote(model_name, 1)
    return model_name


def test_record_gate_on_run_and_version(versions):
    name = versions
    result = gate(f"models:/{name}/2", f"models:/{name}@champion", {"episodes": 5})
    run_id = record_gate(result, name, "2")
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.data.metrics["gate/passed"] == 0.0 and run.data.tags["rlops.gate"] == "failed"
    artifact = json.loads(open(client.download_artifacts(run_id, "gate/result.json")).read())
    assert artifact["passed"] is False and artifact["reasons"][0].startswith("regression:")
    mv = registry.client().get_model_version(name, "2")
    assert mv.tags["rlops.gate"] == "failed" and mv.tags["rlops.gate.reasons"].startswith("regression:")


def test_mlflow_evaluate_with_the_rlops_evaluator(versions, strong_bundle):
    name = versions
    rng = np.random.default_rng(0)
    obs = rng.normal(0, 0.05, size=(200, 4))
    logged = pd.DataFrame({**{f"obs_{i}": obs[:, i] for i in range(4)}, "action": rng.integers(0, 2, 200),
                           "propensity": np.full(200, 0.5), "reward": np.ones(200)})
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(
            f"models:/{name}/3", logged, model_type="rlops", evaluators=["rlops"],
            evaluator_config={"rlops": {"episodes": 5, "scenarios": ["cartpole-safety"],
                                        "champion": f"models:/{name}/2",
                                        "gate_policy": {"scenario_episodes_scale": 0.2}}})
    metrics = result.metrics
    assert metrics["eval/return_mean"] > 400
    assert metrics["gate/passed"] in (0.0, 1.0) and metrics["gate/regression/passed"] == 1.0
    assert "scenario/cartpole-safety/nominal/passed" in metrics
    assert abs(metrics["ope/ips/value"] - 1.0) < 0.3
    stored = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
    assert stored["eval/return_mean"] == metrics["eval/return_mean"]
    with pytest.raises(mlflow.exceptions.MlflowException, match="unknown keys"):
        with mlflow.start_run():
            mlflow.models.evaluate(f"models:/{name}/3", logged, model_type="rlops", evaluators=["rlops"],
                                   evaluator_config={"rlops": {"episodez": 5}})


def test_rlops_gate_cli_exit_codes(versions, tracking, tmp_path):
    name = versions
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    cmd = [sys.executable, "-m", "rlops_plugin.cli", "gate"]
    failed = subprocess.run(cmd + [f"models:/{name}/2", "--champion", f"models:/{name}@champion", "--episodes", "5"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "FAIL regression: regression: return difference" in failed.stdout and "gate FAILED" in failed.stdout
    policy = tmp_path / "gate.json"
    policy.write_text(json.dumps({"episodes": 5, "min_return": 400}))
    passed = subprocess.run(cmd + [f"models:/{name}/3", "--champion", f"models:/{name}@champion", "--policy",
                                   str(policy)], capture_output=True, text=True, env=env, timeout=300)
    assert passed.returncode == 0, passed.stdout + passed.stderr[-2000:]
    assert registry.client().get_model_version(name, "3").tags["rlops.gate"] == "passed"
    audited = [(e.model_version, e.decision) for e in list_events(name, kinds=["gate"])]
    assert audited == [("2", "failed"), ("3", "passed")]
    evaluated = subprocess.run([sys.executable, "-m", "rlops_plugin.cli", "evaluate", f"models:/{name}/3",
                                "--episodes", "3", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert json.loads(evaluated.stdout)["rollouts"]["episodes"] == 3
