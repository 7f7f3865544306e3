"""Policy updates end to end on a real MLflow server: warm start, lineage, metrics, refusals."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest

from rlops_plugin import RewardSpec, flavor
from rlops_plugin.audit.events import list_events
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import DatasetError, build_transitions
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor import registry
from rlops_plugin.lifecycle import train as train_and_register
from rlops_plugin.training.train import train
from tests.experience.test_dataset import log_episodes

pytestmark = pytest.mark.integration


@pytest.fixture
def dataset_dir(tmp_path, cartpole_bundle):
    with open_store(tmp_path / "s.db") as store:
        log_episodes(store, cartpole_bundle, episodes=6)
        data = build_transitions(store, "m", cartpole_bundle)
    return data.save(tmp_path / "ds"), data


def test_update_is_registered_with_lineage(champion, dataset_dir, model_name):
    path, data = dataset_dir
    outcome = train_and_register("bc", champion, path, {"steps": 60}, register_as=model_name, eval_episodes=5)
    assert outcome.version == "2" and outcome.dataset_digest == data.digest
    mv = registry.client().get_model_version(model_name, "2")
    assert mv.tags["rlops.parent_version"] == "1"
    assert mv.tags["rlops.dataset_digest"] == data.digest
    assert mv.tags["rlops.trainer"] == "bc"
    assert "Trained from version 1" in mv.description and data.digest in mv.description
    (event,) = list_events(model_name, kinds=["policy_update"])
    assert event.model_version == "2" and event.reason == "trained by bc from version 1"
    assert event.details["dataset_digest"] == data.digest and event.details["run_id"] == outcome.run_id
    loaded = flavor.load_model(f"models:/{model_name}/2")
    assert loaded.lineage["trainer_config"]["steps"] == 60
    assert loaded.lineage["parent_bundle_sha"] == flavor.load_model(champion).bundle_sha
    client = mlflow.MlflowClient()
    run = client.get_run(outcome.run_id)
    assert run.data.params["trainer.steps"] == "60" and run.data.tags["rlops.trainer"] == "bc"
    assert {"eval/return_mean", "eval/init_return_mean", "eval/return_delta", "train/loss"} <= set(run.data.metrics)
    assert len(client.get_metric_history(outcome.run_id, "train/loss")) >= 2
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest == data.digest[len("sha256:"):][:32]


def test_chained_update_keeps_the_registered_parent_and_dataset(champion, dataset_dir, model_name):
    path, data = dataset_dir
    offline = train("bc", champion, path, {"steps": 30}, eval_episodes=0)
    tuned = train_and_register("sim_finetune", offline.model_uri, None,
                               {"total_steps": 128, "n_envs": 2, "rollout_steps": 64}, register_as=model_name,
                               eval_episodes=0)
    lineage = tuned.bundle.lineage
    assert lineage["parent_version"] == "1" and lineage["dataset_digest"] == data.digest
    assert lineage["trainer_chain"] == ["bc", "sim_finetune"]
    assert lineage["parent_bundle_sha"] == offline.bundle.bundle_sha
    mv = registry.client().get_model_version(model_name, tuned.version)
    assert mv.tags["rlops.parent_version"] == "1" and mv.tags["rlops.dataset_digest"] == data.digest
    # starting from a registered version resets the chain: its own version is the parent
    again = train("sim_finetune", f"models:/{model_name}/{tuned.version}", None,
                  {"total_steps": 128, "n_envs": 2, "rollout_steps": 64}, eval_episodes=0, log_to_mlflow=False)
    assert again.bundle.lineage["parent_version"] == tuned.version
    assert again.bundle.lineage["dataset_digest"] is None and again.bundle.lineage["trainer_chain"] == ["sim_finetune"]


def test_data_built_under_another_reward_is_refused_unless_allowed(champion, tmp_path, cartpole_bundle):
    other = cartpole_bundle.with_policy(cartpole_bundle.policy)
    other.reward_spec = RewardSpec(ref="scaled", params={"scale": 2.0})
    with open_store(tmp_path / "s.db") as store:
        log_episodes(store, cartpole_bundle, episodes=2)
        data = build_transitions(store, "m", other)
    with pytest.raises(DatasetError, match="disagree on reward hash"):
        train("bc", champion, data, {"steps": 5}, log_to_mlflow=False, eval_episodes=0)
    with pytest.warns(UserWarning, match="training across a mismatch"):
        outcome = train("bc", champion, data, {"steps": 5}, allow_mismatch=True, eval_episodes=0)
    assert "reward hash" in mlflow.MlflowClient().get_run(outcome.run_id).data.tags["rlops.mismatch_allowed"]


def test_wrong_data_kinds(champion, dataset_dir):
    path, _ = dataset_dir
    with pytest.raises(ConfigError, match="learns in the simulator"):
        train("sim_finetune", champion, path, log_to_mlflow=False, eval_episodes=0)
    with pytest.raises(DatasetError, match="needs a preferences dataset, got transitions"):
        train("dpo", champion, path, log_to_mlflow=False, eval_episodes=0)
    with pytest.raises(ConfigError, match="needs a transitions dataset"):
        train("cql", champion, None, log_to_mlflow=False, eval_episodes=0)


def test_cli_dataset_build_and_train(champion, tmp_path, cartpole_bundle, model_name, tracking):
    with open_store(tmp_path / "s.db") as store:
        log_episodes(store, cartpole_bundle, episodes=3)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    rlops = [sys.executable, "-m", "rlops_plugin.cli"]
    built = subprocess.run(rlops + ["dataset", "build", "--store", str(tmp_path / "s.db"), "--model", "m",
                                    "--bundle", champion, "--out", str(tmp_path / "ds")],
                           capture_output=True, text=True, env=env, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    assert "transitions:" in built.stdout and "digest sha256:" in built.stdout
    trained = subprocess.run(rlops + ["train", "--trainer", "cql", "--init", champion, "--dataset",
                                      str(tmp_path / "ds"), "--set", "steps=50", "--register", model_name,
                                      "--eval-episodes", "3"], capture_output=True, text=True, env=env, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert f"registered {model_name} version 2" in trained.stdout and "eval return" in trained.stdout
    bad = subprocess.run(rlops + ["train", "--trainer", "cql", "--init", champion, "--dataset", str(tmp_path / "ds"),
                                  "--set", "stepz=5"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "unknown fields ['stepz']" in bad.stderr
