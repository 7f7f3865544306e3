"""The search space as a Katib Experiment: strict validation, the trial command for real, the Kubernetes API calls."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys

import mlflow
import pytest
import yaml
from click.testing import CliRunner

from rlops_plugin import flavor
from rlops_plugin.cli import main
from rlops_plugin.deploy.katib import METRICS_FORMAT, KatibError, KatibExperiments, experiment, validate_experiment
from rlops_plugin.deploy.validation import ManifestError
from rlops_plugin.errors import ConfigError
from rlops_plugin.training.expert import heuristic_transitions
from tests.fixtures.recorder import FakeCustomObjects, Recorder, write_kubeconfig

PATH = "/apis/kubeflow.org/v1beta1/namespaces/rlops/experiments"
SPACE = {"trainer": "bc", "objective": {"metric": "eval/return_mean"},
         "intermediate": {"metric": "train/loss", "direction": "minimize"}, "trials": 12, "parallel": 3,
         "fixed": {"steps": 300},
         "parameters": {"lr": {"type": "float", "low": 1.0e-5, "high": 3.0e-2, "log": True},
                        "batch_size": {"type": "categorical", "choices": [64, 256]},
                        "reward_weighted": {"type": "categorical", "choices": [False, True]}}}


def make(**overrides):
    options = {"name": "tune-bc", "init_uri": "models:/cartpole@champion", "tracking_uri": "http://mlflow.rlops:5000",
               "namespace": "rlops", "dataset_uri": "runs:/abc/dataset", "eval_episodes": 10} | overrides
    return experiment(SPACE, **options)


def container(obj):
    return obj["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]


def test_the_experiment_says_what_the_space_says():
    obj = make()
    validate_experiment(obj)
    spec = obj["spec"]
    assert spec["objective"] == {"type": "maximize", "objectiveMetricName": "eval/return_mean",
                                 "additionalMetricNames": ["eval/init_return_mean", "eval/return_delta", "train/loss"]}
    assert spec["algorithm"] == {"algorithmName": "tpe", "algorithmSettings": [{"name": "random_state", "value": "0"}]}
    assert spec["parameters"] == [
        {"name": "lr", "parameterType": "double",
         "feasibleSpace": {"min": "1e-05", "max": "0.03", "distribution": "logUniform"}},
        {"name": "batch_size", "parameterType": "categorical", "feasibleSpace": {"list": ["64", "256"]}},
        {"name": "reward_weighted", "parameterType": "categorical", "feasibleSpace": {"list": ["false", "true"]}}]
    assert (spec["maxTrialCount"], spec["parallelTrialCount"], spec["maxFailedTrialCount"]) == (12, 3, 3)
    assert spec["metricsCollectorSpec"]["collector"] == {"kind": "StdOut"}
    c = container(obj)
    assert c["command"] == ["python", "-m", "rlops_plugin.cli", "train", "--trainer", "bc", "--init",
                            "models:/cartpole@champion", "--dataset", "runs:/abc/dataset", "--set", "steps=300",
                            "--set", "lr=${trialParameters.lr}", "--set", "batch_size=${trialParameters.batch_size}",
                            "--set", "reward_weighted=${trialParameters.reward_weighted}", "--eval-episodes", "10",
                            "--experiment", "rlops-tuning"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.rlops:5000"} in c["env"]
    assert [p["name"] for p in spec["trialTemplate"]["trialParameters"]] == ["lr", "batch_size", "reward_weighted"]
    assert experiment(SPACE, name="r", init_uri="m", tracking_uri="t", sampler="random", seed=None)["spec"][
        "algorithm"] == {"algorithmName": "random"}


def test_the_metrics_format_reads_rlops_train_output():
    """Katib's default format stops at '/', ours reads the names `rlops train` prints (all of them)."""
    from rlops_plugin.cli import _metrics_line

    line = _metrics_line({"eval/return_mean": 187.5, "train/loss": 0.31, "eval/return_delta": -3e-05,
                          "data/excluded_truncated": 2.0})
    found = {m[0]: float(m[1]) for m in re.findall(METRICS_FORMAT, line)}
    assert found == {"eval/return_mean": 187.5, "train/loss": 0.31, "eval/return_delta": -3e-05,
                     "data/excluded_truncated": 2.0}
    katib_default = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
    assert "eval/return_mean" not in {m[0] for m in re.findall(katib_default, line)}


@pytest.mark.parametrize("mutate, match", [
    (lambda o: o["spec"].update(maxTrialCounts=3), r"\$\.spec\.maxTrialCounts: unknown field"),
    (lambda o: o["spec"]["objective"].update(goal="high"), r"\$\.spec\.objective\.goal"),
    (lambda o: o["spec"]["parameters"][0]["feasibleSpace"].update(min=0.001), r"feasibleSpace\.min"),
    (lambda o: o["spec"]["trialTemplate"].update(primaryContainer="training"), "unknown field"),
    (lambda o: container(o).update(cmd=["x"]), "cmd"),
    (lambda o: container(o)["command"].append("--set=x=${trialParameters.gamma}"), r"not declared: \['gamma'\]"),
    (lambda o: o["spec"]["trialTemplate"].update(primaryContainerName="main"), "names no container"),
    (lambda o: o.update(kind="Experiments"), "expected apiVersion kubeflow.org/v1beta1 and kind Experiment"),
])
def test_a_bad_field_fails(mutate, match):
    obj = copy.deepcopy(make())
    mutate(obj)
    with pytest.raises(ManifestError, match=match):
        validate_experiment(obj)


def test_refusals_before_building():
    with pytest.raises(ConfigError, match="Experiment name"):
        make(name="Tune_BC")
    with pytest.raises(ConfigError, match="local path"):
        make(dataset_uri="datasets/v1")
    with pytest.raises(ConfigError, match="sampler must be one of"):
        make(sampler="grid")
    with pytest.raises(ConfigError, match="never logged"):
        experiment({**SPACE, "objective": {"metric": "eval/return"}}, name="x", init_uri="m", tracking_uri="t")


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    fake = FakeCustomObjects()
    recorder = Recorder(fake).start()
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path / "kubeconfig", recorder.url))
    yield recorder
    recorder.stop()


def succeed(obj):
    obj["status"] = {"conditions": [{"type": "Created", "status": "True"}, {"type": "Succeeded", "status": "True"}],
                     "currentOptimalTrial": {
                         "bestTrialName": "tune-bc-x7k2m9qp",
                         "parameterAssignments": [{"name": "lr", "value": "0.0042"},
                                                  {"name": "batch_size", "value": "64"}],
                         "observation": {"metrics": [{"name": "eval/return_mean", "latest": "500", "max": "500",
                                                      "min": "500"},
                                                     {"name": "train/loss", "latest": "unavailable",
                                                      "max": "0.2", "min": "0.2"}]}}}


def test_submit_and_wait_for_the_optimal_trial(cluster):
    obj = make()
    katib = KatibExperiments("rlops")
    created = katib.create(obj)
    post = cluster.requests[-1]
    assert (post.method, post.path) == ("POST", PATH)
    assert post.headers["authorization"] == "Bearer secret-token"
    assert post.body == obj  # exactly the validated object
    assert created["metadata"]["name"] == "tune-bc"

    polls = []
    cluster.handler.advance = lambda stored: polls.append(1) or (len(polls) >= 2 and succeed(stored))
    best = katib.wait("tune-bc", timeout_s=100, poll_s=5, clock=lambda: 0.0, sleep=lambda s: None)
    assert best == {"trial": "tune-bc-x7k2m9qp", "params": {"lr": "0.0042", "batch_size": "64"},
                    "metrics": {"eval/return_mean": 500.0, "train/loss": 0.2}}
    assert [r.method for r in cluster.requests[1:]] == ["GET", "GET"]
    with pytest.raises(KatibError, match="409"):
        katib.create(obj)


def test_failed_and_timed_out_experiments_raise(cluster):
    katib = KatibExperiments("rlops")
    katib.create(make())
    now = [0.0]

    def tick(seconds):
        now[0] += seconds

    with pytest.raises(KatibError, match="did not finish within 20 s; best so far None"):
        katib.wait("tune-bc", timeout_s=20, poll_s=10, clock=lambda: now[0], sleep=tick)
    cluster.handler.advance = lambda stored: stored.update(status={"conditions": [
        {"type": "Failed", "status": "True", "reason": "ExperimentMaxFailedTrialsReached", "message": "3 failed"}]})
    with pytest.raises(KatibError, match="failed: ExperimentMaxFailedTrialsReached: 3 failed"):
        katib.wait("tune-bc", timeout_s=20, poll_s=10, clock=lambda: 0.0, sleep=tick)
    with pytest.raises(KatibError, match="404"):
        katib.get("missing")
    with pytest.raises(ManifestError):
        katib.create({**make(), "spec": {**make()["spec"], "parallelTrials": 2}})
    assert [r.method for r in cluster.requests].count("POST") == 1  # the invalid one never left


def test_cli_writes_the_experiment(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    out = tmp_path / "experiment.yaml"
    result = CliRunner().invoke(main, ["tune", str(space_file), "--init", "models:/cartpole@champion", "--dataset",
                                       "runs:/abc/dataset", "--katib", str(out), "--namespace", "rlops", "--image",
                                       "registry.example/rlops:1", "--tracking-uri", "http://mlflow:5000",
                                       "--trials", "6"])
    assert result.exit_code == 0, result.output
    (obj,) = list(yaml.safe_load_all(out.read_text()))
    validate_experiment(obj)
    assert (obj["metadata"]["name"], obj["metadata"]["namespace"]) == ("rlops-tune-bc", "rlops")
    recorded = json.loads(obj["metadata"]["annotations"]["rlops.io/search-space"])
    assert recorded == {**SPACE, "trials": 6, "objective": {"metric": "eval/return_mean", "direction": "maximize"}}
    assert obj["spec"]["maxTrialCount"] == 6 and container(obj)["image"] == "registry.example/rlops:1"
    missing = CliRunner(env={"MLFLOW_TRACKING_URI": ""}).invoke(
        main, ["tune", str(space_file), "--init", "m", "--katib", str(out)])
    assert missing.exit_code != 0 and "--tracking-uri" in missing.output


@pytest.mark.integration
def test_a_trial_command_runs_and_prints_the_objective(tracking, weak_bundle, model_name, tmp_path):
    """What a trial pod runs, here: Katib's substitution of the template, then its collector's parse of stdout."""
    with mlflow.start_run() as run:
        flavor.log_model(weak_bundle, name="policy", registered_model_name=model_name)
        mlflow.log_artifacts(str(heuristic_transitions(weak_bundle, episodes=2).save(tmp_path / "ds")), "dataset")
    obj = make(init_uri=f"models:/{model_name}/1", dataset_uri=f"runs:/{run.info.run_id}/dataset",
               tracking_uri=tracking, eval_episodes=2)
    values = {"lr": "0.003", "batch_size": "64", "reward_weighted": "false"}
    command = [re.sub(r"\$\{trialParameters\.(\w+)\}", lambda m: values[m.group(1)], arg)
               for arg in container(obj)["command"]]
    command[command.index("--set") + 1] = "steps=50"  # a short trial
    env = {**os.environ, **{e["name"]: e["value"] for e in container(obj)["env"]}}
    done = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = {m[0]: float(m[1]) for m in re.findall(METRICS_FORMAT, done.stdout.strip().splitlines()[-1])}
    assert obj["spec"]["objective"]["objectiveMetricName"] in metrics
    assert set(obj["spec"]["objective"]["additionalMetricNames"]) <= set(metrics)
