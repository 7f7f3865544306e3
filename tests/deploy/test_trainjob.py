"""Kubeflow Trainer TrainJobs: strict validation, the shipped template, and a job's life against a recording API."""

from __future__ import annotations

import copy
import uuid

import mlflow
import pytest
import yaml

from rlops_plugin import flavor
from rlops_plugin.deploy.manifests import render
from rlops_plugin.deploy.trainjob import (
    DEFAULT_RUNTIME,
    JOB_TAG,
    JOBSET_NAME_LABEL,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINJOB_PLURAL,
    TrainJobError,
    TrainJobs,
    TrainJobSpec,
    TrainJobTimeout,
    example_trainer_manifests,
    job_name,
    resources_per_node,
    training_args,
    trainjob,
)
from rlops_plugin.deploy.validation import ManifestError, validate_manifest
from rlops_plugin.errors import ConfigError, PluginError
from rlops_plugin.lifecycle import train_distributed
from tests.conftest import REPO_ROOT
from tests.fixtures.recorder import FakeCustomObjects, Recorder, write_kubeconfig

PATH = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/rlops/trainjobs"
TRAINER_DIR = REPO_ROOT / "manifests" / "trainer"


def job(**spec):
    args = training_args("cql", "models:/cartpole@champion", "runs:/abc/dataset", {"steps": 600, "alpha": 0.5},
                         register_as="cartpole", eval_episodes=10, experiment="rlops-training")
    return trainjob("rlops-cartpole-1a2b3c4d", args,
                    TrainJobSpec(**{"num_nodes": 2, "nproc_per_node": 4, "namespace": "rlops",
                                    "resources": {"cpu": "4", "memory": "8Gi", "gpu": 1}, **spec}),
                    tracking_uri="http://mlflow.rlops:5000")


def test_the_trainjob_runs_rlops_train_under_torchrun_and_validates():
    doc = job(env={"NCCL_DEBUG": "INFO"})
    validate_manifest(doc)
    assert (doc["apiVersion"], doc["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert doc["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                         "name": "torch-distributed"}
    trainer = doc["spec"]["trainer"]
    assert trainer["command"] == ["torchrun"]
    assert trainer["args"] == ["-m", "rlops_plugin.cli", "train", "--trainer", "cql", "--init",
                               "models:/cartpole@champion", "--dataset", "runs:/abc/dataset", "--set", "steps=600",
                               "--set", "alpha=0.5", "--register", "cartpole", "--eval-episodes", "10",
                               "--experiment", "rlops-training"]
    assert (trainer["numNodes"], trainer["numProcPerNode"], trainer["image"]) == (2, 4, "rlops-plugin:0.1.0")
    assert trainer["env"] == [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.rlops:5000"},
                              {"name": "RLOPS_TRAINJOB_NAME", "value": "rlops-cartpole-1a2b3c4d"},
                              {"name": "NCCL_DEBUG", "value": "INFO"}]
    per_node = {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}
    assert trainer["resourcesPerNode"] == {"requests": per_node, "limits": per_node}


def test_config_values_reach_the_cli_as_text_it_converts_back():
    from rlops_plugin.training.base import _convert

    args = training_args("ppo", "models:/m@champion", None, {"lr": 3e-4, "hidden": [64, 64], "norm": True,
                                                             "name": "x=y"})
    sets = dict(a.partition("=")[::2] for a in args[args.index("--set") + 1::2] if "=" in a)
    assert sets == {"lr": "0.0003", "hidden": "[64, 64]", "norm": "true", "name": "x=y"}
    assert _convert(sets["lr"], 1e-3, "lr") == 3e-4 and _convert(sets["hidden"], [32], "h") == [64, 64]
    assert _convert(sets["norm"], False, "n") is True and "--dataset" not in args


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["spec"]["trainer"].update(numNode=2), r"trainer.numNode: unknown field for TrainerV1alpha1Trainer"),
    (lambda d: d["spec"].update(podTemplateOverrides=[]), r"spec.podTemplateOverrides: unknown field"),
    (lambda d: d["spec"]["trainer"].update(numProcPerNode="auto"), r"numProcPerNode: Input should be a valid integer"),
    (lambda d: d["spec"]["trainer"].update(numNodes=True), r"numNodes: Input should be a valid integer"),
    (lambda d: d["spec"]["trainer"]["resourcesPerNode"]["limits"].update(cpu="four"),
     r"limits.cpu: 'four' is not a Kubernetes quantity"),
    (lambda d: d["spec"]["trainer"]["env"].append({"name": "X", "valu": "1"}), r"env\[2\].valu: unknown field"),
    (lambda d: d["spec"]["runtimeRef"].pop("name"), r"spec.runtimeRef: TrainerV1alpha1RuntimeRef requires \['name'\]"),
    (lambda d: d["spec"]["trainer"].update(args="-m rlops_plugin.cli"), r"trainer.args: expected a list"),
    (lambda d: d.update(apiVersion="kubeflow.org/v1"), r"expected apiVersion trainer.kubeflow.org/v1alpha1 and kind"),
])
def test_broken_trainjobs_are_caught(mutate, message):
    doc = copy.deepcopy(job())
    mutate(doc)
    with pytest.raises(ManifestError, match=message):
        validate_manifest(doc)


def test_specs_that_cannot_run_are_refused_before_a_manifest_exists():
    with pytest.raises(ConfigError, match="num_nodes: an integer >= 1"):
        job(num_nodes=0)
    with pytest.raises(ConfigError, match="nproc_per_node: an integer >= 1"):
        job(nproc_per_node=1.5)
    with pytest.raises(ConfigError, match="resources.memory: '8 GB' is not a Kubernetes quantity"):
        resources_per_node({"memory": "8 GB"})
    with pytest.raises(ConfigError, match=r"env: \['RLOPS_TRAINJOB_NAME'\] is set by rlops"):
        job(env={"RLOPS_TRAINJOB_NAME": "other"})
    with pytest.raises(ConfigError, match="TrainJob name 'Bad_Name'"):
        trainjob("Bad_Name", [], TrainJobSpec(), tracking_uri="http://mlflow")
    name = job_name("My Policy/with a rather long registered model name")
    assert len(name) <= 40 and name.startswith("rlops-my-policy-with-a-")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # kubeflow.trainer's own pydantic v1-style configs
def test_our_constants_are_the_trainer_sdks():
    from kubeflow.trainer.constants import constants

    assert (TRAINER_GROUP, TRAINER_VERSION, TRAINJOB_PLURAL) == (constants.GROUP, constants.VERSION,
                                                                 constants.TRAINJOB_PLURAL)
    assert JOBSET_NAME_LABEL == constants.JOBSET_NAME_LABEL and DEFAULT_RUNTIME == "torch-distributed"
    assert constants.POD_LABEL_SELECTOR.startswith(f"{JOBSET_NAME_LABEL}={{trainjob_name}}")


def test_the_job_tag_contract_is_the_training_codes():
    """The job's name travels in RLOPS_TRAINJOB_NAME; training records it as the tag produced_model searches."""
    from rlops_plugin.deploy.trainjob import JOB_ENV
    from rlops_plugin.training import train

    assert (train.TRAINJOB_ENV, train.TAG_TRAINJOB) == (JOB_ENV, JOB_TAG)


def test_the_shipped_trainjob_template_is_fresh_and_validates():
    for filename, docs in example_trainer_manifests().items():
        path = TRAINER_DIR / filename
        assert path.exists(), f"{path} missing: run `rlops manifests generate`"
        assert path.read_text() == render(docs), f"{path} is stale: run `rlops manifests generate`"
        for doc in yaml.safe_load_all(path.read_text()):
            validate_manifest(doc)
    assert (TRAINER_DIR / "README.md").read_text().count("torch-distributed") >= 2


# ----- a job's life against a recording Kubernetes API ---------------------------------------------------------
@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """A recording Kubernetes API; the test sets ``cluster.handler.advance`` to play the Trainer controller."""
    recorder = Recorder(FakeCustomObjects()).start()
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path / "kubeconfig", recorder.url))
    yield recorder
    recorder.stop()


def conditions(*items):
    return {"conditions": [{"type": t, "status": "True", "reason": r, "message": m,
                            "lastTransitionTime": "2026-12-01T00:00:00Z"} for t, r, m in items]}


@pytest.fixture
def champion(tracking, cartpole_bundle, model_name):
    """``model_name`` version 1, the champion a distributed run starts from."""
    with mlflow.start_run():
        flavor.log_model(cartpole_bundle, name="policy", registered_model_name=model_name)
    flavor.promote(model_name, 1)
    return model_name


def rank_zero(bundle, experiment, register_as=None):
    """What rank 0 of the job does in its pod: log the model in a run tagged with the job's name, register it."""
    def advance(obj):
        if obj.get("status"):
            return
        env = {e["name"]: e["value"] for e in obj["spec"]["trainer"]["env"]}
        client = mlflow.MlflowClient()
        experiment_id = client.get_experiment_by_name(experiment).experiment_id  # the dataset upload created it
        run = client.create_run(experiment_id, tags={JOB_TAG: env["RLOPS_TRAINJOB_NAME"]})
        mlflow.set_experiment(experiment_id=experiment_id)  # as the pod's own process would be: an earlier test's
        with mlflow.start_run(run_id=run.info.run_id):      # set_experiment must not refuse the resumed run
            mlflow.log_metric("eval/return_mean", 42.0)
            flavor.log_model(bundle, name="policy", registered_model_name=register_as)
        obj["status"] = conditions(("Complete", "JobsCompleted", "TrainJob is completed"))
    return advance


@pytest.mark.integration
def test_a_distributed_run_submits_the_job_waits_and_hands_on_the_registered_version(
        cluster, champion, cartpole_bundle, tmp_path):
    experiment = f"trainjob-{uuid.uuid4().hex[:8]}"
    cluster.handler.advance = rank_zero(cartpole_bundle, experiment, register_as=champion)
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "manifest.json").write_text('{"rows": 3}')
    result = train_distributed("cql", f"models:/{champion}@champion", data, {"steps": 600}, register_as=champion,
                               num_nodes=2, nproc_per_node=2, resources={"cpu": "2", "memory": "4Gi"},
                               namespace="rlops", image="registry.example/rlops:1", experiment=experiment,
                               eval_episodes=5, poll_s=0.01, timeout_s=60, name="rlops-e2e-job")

    post = next(r for r in cluster.requests if r.method == "POST")
    assert post.path == PATH and post.headers["authorization"] == "Bearer secret-token"
    assert result.dataset_uri.startswith("runs:/") and result.dataset_uri.endswith("/dataset")
    assert post.body == {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": "rlops-e2e-job", "namespace": "rlops",
                     "labels": {"app.kubernetes.io/part-of": "rlops", "rlops.io/trainer": "cql"}},
        "spec": {"runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                "name": "torch-distributed"},
                 "trainer": {"image": "registry.example/rlops:1", "command": ["torchrun"],
                             "args": ["-m", "rlops_plugin.cli", "train", "--trainer", "cql", "--init",
                                      f"models:/{champion}@champion", "--dataset", result.dataset_uri,
                                      "--set", "steps=600", "--register", champion, "--eval-episodes", "5",
                                      "--experiment", experiment],
                             "numNodes": 2, "numProcPerNode": 2,
                             "env": [{"name": "MLFLOW_TRACKING_URI", "value": mlflow.get_tracking_uri()},
                                     {"name": "RLOPS_TRAINJOB_NAME", "value": "rlops-e2e-job"}],
                             "resourcesPerNode": {"requests": {"cpu": "2", "memory": "4Gi"},
                                                  "limits": {"cpu": "2", "memory": "4Gi"}}}}}
    gets = [r for r in cluster.requests if r.method == "GET"]
    assert gets and all(r.path == f"{PATH}/rlops-e2e-job" for r in gets)

    assert (result.registered_name, result.version, result.job_name) == (champion, "2", "rlops-e2e-job")
    version = flavor.registry.client().get_model_version(champion, "2")
    assert version.run_id == result.run_id and result.model_uri.startswith("models:/m-")
    assert result.metrics["eval/return_mean"] == 42.0
    uploaded = mlflow.artifacts.download_artifacts(result.dataset_uri, dst_path=str(tmp_path / "down"))
    assert (tmp_path / "down" / "dataset" / "manifest.json").read_text() == '{"rows": 3}', uploaded
    inputs = mlflow.get_run(result.dataset_uri.split("/")[1]).data.tags
    assert inputs["rlops.trainjob_input"] == "rlops-e2e-job" and JOB_TAG not in inputs


@pytest.mark.integration
def test_a_failed_job_raises_with_its_conditions_and_where_its_logs_are(cluster, champion):
    def fail(obj):
        obj["status"] = conditions(("Created", "JobsCreated", "created"),
                                   ("Failed", "JobsFailed", "trainer node-0 exited with code 1"))
    cluster.handler.advance = fail
    with pytest.raises(TrainJobError, match="TrainJob rlops/rlops-fails failed .*Failed=True JobsFailed: trainer "
                                            "node-0 exited with code 1") as err:
        train_distributed("cql", f"models:/{champion}@champion", "runs:/r/dataset", namespace="rlops",
                          num_nodes=2, name="rlops-fails", poll_s=0.01, timeout_s=60)
    assert not isinstance(err.value, TrainJobTimeout)
    assert [c["type"] for c in err.value.conditions] == ["Created", "Failed"]
    assert err.value.logs_hint.startswith("kubectl logs -n rlops -l jobset.sigs.k8s.io/jobset-name=rlops-fails,")
    assert err.value.logs_hint in str(err.value)
    assert not any(r.method == "DELETE" for r in cluster.requests)  # a failed job stays for its logs


@pytest.mark.integration
def test_a_job_past_its_timeout_is_deleted_and_raises(cluster, champion):
    def running(obj):
        obj["status"] = conditions(("Created", "JobsCreated", "created"))
    cluster.handler.advance = running
    with pytest.raises(TrainJobTimeout, match=r"did not finish within 0 s; deleted it \(conditions: Created=True"):
        train_distributed("cql", f"models:/{champion}@champion", "runs:/r/dataset", namespace="rlops",
                          nproc_per_node=2, name="rlops-slow", timeout_s=0)
    assert [r.method for r in cluster.requests] == ["POST", "GET", "DELETE"]
    assert cluster.handler.objects == {}


@pytest.mark.integration
def test_a_complete_job_without_its_tagged_run_names_the_missing_tag(cluster, champion):
    cluster.handler.advance = lambda obj: obj.update(status=conditions(("Complete", "JobsCompleted", "done")))
    with pytest.raises(TrainJobError, match=f"no run in experiment 'nowhere-{champion}' carries the tag "
                                            "rlops.trainjob=rlops-untagged"):
        train_distributed("cql", f"models:/{champion}@champion", "runs:/r/dataset", namespace="rlops",
                          num_nodes=2, name="rlops-untagged", experiment=f"nowhere-{champion}", poll_s=0.01)


@pytest.mark.integration
def test_what_cannot_work_fails_before_anything_is_submitted(cluster, champion, tmp_path, monkeypatch):
    init = f"models:/{champion}@champion"
    with pytest.raises(PluginError, match="cqll"):
        train_distributed("cqll", init, "runs:/r/dataset", num_nodes=2)
    with pytest.raises(ConfigError, match="learns in the simulator and reads no dataset"):
        train_distributed("sim_finetune", init, "runs:/r/dataset", num_nodes=2)
    with pytest.raises(ConfigError, match="learns from a transitions dataset: pass dataset_uri"):
        train_distributed("cql", init, None, num_nodes=2)
    with pytest.raises(ConfigError, match="not a directory"):
        train_distributed("cql", init, tmp_path / "missing", num_nodes=2)
    with pytest.raises(ConfigError, match="a TrainJob starts from a model URI"):
        train_distributed("cql", "/local/bundle", None, num_nodes=2)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///local.db")
    with pytest.raises(ConfigError, match="an MLflow server the pods can reach"):
        train_distributed("cql", init, None, num_nodes=2)
    assert cluster.requests == []


@pytest.mark.integration
def test_the_api_server_refusing_the_job_is_a_trainjob_error(cluster):
    with pytest.raises(TrainJobError, match="TrainJob rlops/absent: Kubernetes API 404 Not Found"):
        TrainJobs("rlops").get("absent")
