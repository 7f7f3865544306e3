"""The ``tune_policy`` component: compiles with the real kfp compiler, is thin, and feeds ``train_policy``.

(No ``from __future__ import annotations``: kfp reads the pipeline's parameter annotations as types.)
"""

import ast
import json

import kfp.components
import mlflow
import pytest
from kfp import compiler, dsl

from components.train_policy.component import train_policy
from components.tune_policy.component import tune_policy
from rlops_plugin.pipelines import steps
from rlops_plugin.training.expert import heuristic_transitions
from tests.conftest import REPO_ROOT
from tests.lifecycle.test_tune import SPACE, children


def test_compiles_loads_and_chains_into_train_policy(tmp_path):
    path = tmp_path / "tune_policy.yaml"
    compiler.Compiler().compile(tune_policy, str(path))
    loaded = kfp.components.load_component_from_file(str(path))
    assert loaded.name == "tune-policy"
    assert {"space_json", "init_uri", "dataset", "trials", "seed", "sampler"} <= set(loaded.component_spec.inputs)
    assert {"best_config_json", "run_id", "best_value", "default_value", "metrics"} <= set(
        loaded.component_spec.outputs)

    @dsl.pipeline(name="tuned-update")
    def tuned_update(space_json: str, init_uri: str):
        data = dsl.importer(artifact_uri="gs://bucket/dataset", artifact_class=dsl.Dataset)
        tuned = tune_policy(space_json=space_json, init_uri=init_uri, dataset=data.output)
        train_policy(trainer="bc", init_uri=init_uri, dataset=data.output,
                     config_json=tuned.outputs["best_config_json"])

    compiler.Compiler().compile(tuned_update, str(tmp_path / "pipeline.yaml"))
    assert "best_config_json" in (tmp_path / "pipeline.yaml").read_text()


def test_the_component_is_thin():
    tree = ast.parse((REPO_ROOT / "components" / "tune_policy" / "component.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "tune_policy")
    calls = {c.func.attr for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
             and isinstance(c.func.value, ast.Name) and c.func.value.id == "steps"}
    assert calls == {"tune_policy"}
    assert "rlops_plugin.pipelines.steps.tune_policy" in (REPO_ROOT / "components" / "tune_policy" /
                                                          "README.md").read_text()


@pytest.mark.integration
def test_the_component_tunes_and_its_best_config_trains(tracking, weak_bundle, model_name, tmp_path):
    with mlflow.start_run():
        from rlops_plugin import flavor

        flavor.log_model(weak_bundle, name="policy", registered_model_name=model_name)
    data_dir = heuristic_transitions(weak_bundle).save(tmp_path / "ds")
    dataset = dsl.Dataset(name="dataset", uri=str(data_dir))
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    experiment = f"tune-step-{model_name}"
    best_config_json, run_id, best, default = tune_policy.python_func(
        space_json=json.dumps(SPACE), init_uri=f"models:/{model_name}/1", dataset=dataset, metrics=metrics,
        trials=3, seed=0, eval_episodes=3, experiment=experiment, tracking_uri=tracking)
    assert best >= default and metrics.metadata["trials"] == 3.0
    assert len(children(run_id, experiment)) == 3
    config = json.loads(best_config_json)
    assert config == mlflow.artifacts.load_dict(f"runs:/{run_id}/best_config.json")
    out = steps.train_policy("bc", f"models:/{model_name}/1", str(data_dir), best_config_json, eval_episodes=3,
                             experiment=experiment, tracking_uri=tracking)
    assert mlflow.get_run(out["run_id"]).data.params["trainer.lr"] == str(config["lr"])
