"""Local tuning on a real MLflow server: trials as child runs, the default as trial 0, pruning, determinism, CLI."""

from __future__ import annotations

import json

import mlflow
import pytest
import yaml
from click.testing import CliRunner

from rlops_plugin import flavor
from rlops_plugin.cli import main
from rlops_plugin.errors import ConfigError
from rlops_plugin.flavor import registry
from rlops_plugin.lifecycle import tune
from rlops_plugin.lifecycle.tune import BEST_CONFIG, TAG_PARENT, TAG_STATE, TAG_TRIAL
from rlops_plugin.training.expert import heuristic_transitions

pytestmark = pytest.mark.integration

# BC from an untrained CartPole policy (return ~10) on 8 episodes of heuristic-labelled states: 300 steps at the
# default lr 1e-3 reach ~465; the learning rate decides how far a 300-step budget gets. One trial ~0.6 s here.
SPACE = {"trainer": "bc", "objective": {"metric": "eval/return_mean", "direction": "maximize"},
         "intermediate": {"metric": "train/loss", "direction": "minimize"}, "trials": 8,
         "pruner": {"startup_trials": 2}, "fixed": {"steps": 300, "batch_size": 64},
         "parameters": {"lr": {"type": "float", "low": 1.0e-5, "high": 3.0e-2, "log": True}}}


@pytest.fixture
def dataset_dir(tmp_path, weak_bundle):
    return str(heuristic_transitions(weak_bundle).save(tmp_path / "ds"))


@pytest.fixture
def experiment_name(model_name):
    return f"tune-{model_name}"


def children(parent_id: str, experiment: str) -> list:
    exp = mlflow.get_experiment_by_name(experiment)
    return mlflow.MlflowClient().search_runs([exp.experiment_id], f"tags.`{TAG_PARENT}` = '{parent_id}'",
                                             max_results=100)


def test_trials_are_child_runs_and_the_best_beats_the_default(tracking, weak_bundle, dataset_dir, experiment_name,
                                                              model_name):
    result = tune(SPACE, weak_bundle, dataset_dir, seed=0, eval_episodes=5, experiment=experiment_name,
                  register_as=model_name, alias="challenger")
    assert result.trials[0].params == {"lr": 1e-3}  # the default configuration is trial 0
    assert result.default_value == result.trials[0].value
    assert result.best_value >= result.default_value
    complete = [t for t in result.trials if t.state == "complete"]
    assert result.best_value == max(t.value for t in complete)
    assert result.best_config == {"steps": 300, "batch_size": 64, "lr": result.best_params["lr"]}

    runs = {int(r.data.tags[TAG_TRIAL]): r for r in children(result.run_id, experiment_name)}
    assert sorted(runs) == list(range(8))
    for record in result.trials:
        run = runs[record.number]
        assert run.info.run_id == record.run_id and run.data.tags[TAG_STATE] == record.state
        assert float(run.data.params["trainer.lr"]) == pytest.approx(record.params["lr"])
        if record.state == "pruned":  # stopped by the median pruner: its run says so and keeps what it saw
            assert run.info.status == "KILLED" and "train/loss" in run.data.metrics
            assert "eval/return_mean" not in run.data.metrics
        else:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["eval/return_mean"] == pytest.approx(record.value)
    assert result.pruned >= 1  # with seed 0 the sampler proposes lr ~1e-5, whose loss trails the median

    client = mlflow.MlflowClient()
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["rlops.event"] == "tuning"
    assert float(parent.data.params["best.lr"]) == pytest.approx(result.best_params["lr"])
    assert parent.data.metrics["best/eval/return_mean"] == result.best_value
    assert parent.data.metrics["default/eval/return_mean"] == result.default_value
    assert parent.data.metrics["tuning/trials"] == 8 and parent.data.metrics["tuning/pruned"] == result.pruned
    assert mlflow.artifacts.load_dict(f"runs:/{result.run_id}/{BEST_CONFIG}") == result.best_config
    assert mlflow.artifacts.load_dict(f"runs:/{result.run_id}/search_space.json")["trainer"] == "bc"

    version = registry.client().get_model_version(model_name, result.version)
    assert version.run_id == result.best_run_id
    assert registry.client().get_model_version_by_alias(model_name, "challenger").version == result.version


def test_deterministic_given_the_seed(tracking, weak_bundle, dataset_dir, experiment_name):
    small = {**SPACE, "trials": 4}
    first = tune(small, weak_bundle, dataset_dir, seed=3, sampler="random", eval_episodes=3,
                 experiment=experiment_name)
    second = tune(small, weak_bundle, dataset_dir, seed=3, sampler="random", eval_episodes=3,
                  experiment=experiment_name)
    assert [(t.params, t.state, t.value) for t in first.trials] == [(t.params, t.state, t.value)
                                                                   for t in second.trials]
    assert first.run_id != second.run_id


def test_a_bad_space_is_refused_before_any_run(tracking, weak_bundle, dataset_dir, experiment_name):
    bad = {**SPACE, "parameters": {"lr": {"type": "float", "low": 1e-2, "high": 1e-4}}}
    with pytest.raises(ConfigError, match="inverted range"):
        tune(bad, weak_bundle, dataset_dir, experiment=experiment_name)
    with pytest.raises(ConfigError, match="sampler must be one of"):
        tune(SPACE, weak_bundle, dataset_dir, sampler="grid", experiment=experiment_name)
    assert mlflow.get_experiment_by_name(experiment_name) is None  # nothing was logged


def test_cli_tune_writes_the_best_config(tracking, weak_bundle, dataset_dir, experiment_name, model_name, tmp_path):
    with mlflow.start_run():
        flavor.log_model(weak_bundle, name="policy", registered_model_name=model_name)
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump({**SPACE, "intermediate": None, "pruner": None}))
    out = tmp_path / "best.json"
    result = CliRunner().invoke(main, ["tune", str(space_file), "--init", f"models:/{model_name}/1", "--dataset",
                                       dataset_dir, "--trials", "3", "--seed", "1", "--eval-episodes", "3",
                                       "--experiment", experiment_name, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    assert summary["trials"] == 3 and summary["pruned"] == 0
    assert summary["best_value"] >= summary["default_value"]
    assert "eval/return_mean: default" in result.output and f"tuning run {summary['run_id']}" in result.output
    assert len(children(summary["run_id"], experiment_name)) == 3
    bad = CliRunner().invoke(main, ["tune", str(space_file), "--init", f"models:/{model_name}/1", "--dataset",
                                    str(tmp_path / "missing")])
    assert bad.exit_code != 0 and "neither a directory nor an artifact URI" in bad.output
