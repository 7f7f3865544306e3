"""The ``train_distributed`` component over a recording Kubernetes API and a real MLflow server."""

from __future__ import annotations

import uuid

import mlflow
import pytest
from kfp import dsl

from components.train_distributed.component import train_distributed
from rlops_plugin.errors import ConfigError
from tests.deploy.test_trainjob import champion, cluster, rank_zero  # noqa: F401 - fixtures and the fake rank 0

pytestmark = pytest.mark.integration


def test_the_component_uploads_the_dataset_and_returns_the_jobs_model(cluster, champion, cartpole_bundle,  # noqa: F811
                                                                      tmp_path, tracking):
    experiment = f"trainjob-step-{uuid.uuid4().hex[:8]}"
    cluster.handler.advance = rank_zero(cartpole_bundle, experiment)
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "data.parquet").write_bytes(b"PAR1")
    dataset = dsl.Dataset(name="dataset", uri=str(tmp_path / "dataset"))
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    model_uri, run_id, ret, job = train_distributed.python_func(
        trainer="cql", init_uri=f"models:/{champion}@champion", dataset=dataset, metrics=metrics,
        config_json='{"steps": 600}', num_nodes=2, nproc_per_node=1, experiment=experiment, tracking_uri=tracking,
        trainjob_json='{"resources": {"cpu": "1", "memory": "2Gi"}, "poll_s": 0.01, "timeout_s": 60}')
    post = next(r for r in cluster.requests if r.method == "POST")
    assert post.path == "/apis/trainer.kubeflow.org/v1alpha1/namespaces/default/trainjobs"  # not in a pod here
    assert post.body["metadata"]["name"] == job and job.startswith("rlops-test-policy-")
    args = post.body["spec"]["trainer"]["args"]
    dataset_uri = args[args.index("--dataset") + 1]
    assert dataset_uri.startswith("runs:/") and "--register" not in args  # the gate registers, later
    assert mlflow.artifacts.download_artifacts(f"{dataset_uri}/data.parquet", dst_path=str(tmp_path / "down"))
    assert post.body["spec"]["trainer"]["resourcesPerNode"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert mlflow.get_run(run_id).data.tags["rlops.trainjob"] == job
    assert model_uri.startswith("models:/m-") and ret == 42.0 and metrics.metadata["eval_return_mean"] == 42.0


def test_the_component_refuses_what_only_the_in_process_step_does(tmp_path):
    dataset = dsl.Dataset(name="dataset", uri=str(tmp_path / "dataset"))
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    with pytest.raises(ConfigError, match="finetune_steps, calibration_json and env_json are in-process only"):
        train_distributed.python_func(trainer="cql", init_uri="models:/x@champion", dataset=dataset, metrics=metrics,
                                      finetune_steps=256)
    with pytest.raises(ConfigError, match=r"trainjob_json: unknown keys \['nodes'\]"):
        train_distributed.python_func(trainer="cql", init_uri="models:/x@champion", dataset=dataset, metrics=metrics,
                                      trainjob_json='{"nodes": 2}')
