"""The rlops-kserve target against a recording Kubernetes API server (no cluster runs here)."""

from __future__ import annotations

import json

import mlflow.deployments
import pytest
import yaml

from rlops_plugin.audit.events import list_events
from rlops_plugin.deploy.kserve import KServeDeployments
from rlops_plugin.deploy.local import DeploymentError
from rlops_plugin.deploy.validation import validate_manifest
from tests.fixtures.recorder import FakeCustomObjects, Recorder

PATH = "/apis/serving.kserve.io/v1beta1/namespaces/rlops/inferenceservices"


@pytest.fixture
def cluster(tmp_path, monkeypatch, request):
    status_url = getattr(request, "param", None)
    recorder = Recorder(FakeCustomObjects(status_url)).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": recorder.url}}],
        "users": [{"name": "test", "user": {"token": "secret-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "rlops"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("RLOPS_STORE", "postgresql://rlops@db/rlops")
    yield recorder
    recorder.stop()


def deployments():
    return KServeDeployments("rlops", tracking_uri="http://mlflow.rlops:5000")


def env_of(obj):
    return {e["name"]: e["value"] for e in obj["spec"]["predictor"]["model"]["env"]}


def test_create_shadow_canary_promote_delete(cluster):
    k = deployments()
    created = k.create("cartpole", "models:/cartpole/1")
    post = cluster.requests[-1]
    assert (post.method, post.path) == ("POST", PATH)
    assert post.headers["authorization"] == "Bearer secret-token"
    validate_manifest(post.body)
    assert env_of(created)["RLOPS_MODEL_URI"] == "models:/cartpole/1"
    assert created["spec"]["predictor"]["logger"]["url"] == "http://rlops-feedback.rlops.svc.cluster.local/v1/cloudevents"

    k.configure("cartpole", "models:/cartpole/1", "models:/cartpole/2", "shadow", 0.0)
    patch = cluster.requests[-1]
    assert patch.method == "PATCH" and patch.path == f"{PATH}/cartpole"
    assert "merge-patch" in patch.headers["content-type"]
    shadow = k.get("cartpole")
    assert env_of(shadow)["RLOPS_ROUTING"] == "shadow"
    assert env_of(shadow)["RLOPS_CHALLENGER_URI"] == "models:/cartpole/2"

    canary = k.configure("cartpole", "models:/cartpole/1", "models:/cartpole/2", "canary", 0.25)
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert env_of(canary)["RLOPS_MODEL_URI"] == "models:/cartpole/2"  # the latest revision serves the challenger
    assert canary["metadata"]["annotations"]["rlops.io/champion-uri"] == "models:/cartpole/1"
    validate_manifest({k_: v for k_, v in canary.items() if k_ != "status"})

    promoted = k.configure("cartpole", "models:/cartpole/2", None, "off", 0.0)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert cluster.requests[-1].body["spec"]["predictor"]["canaryTrafficPercent"] is None  # removed by merge patch
    assert env_of(promoted)["RLOPS_MODEL_URI"] == "models:/cartpole/2"
    assert "RLOPS_CHALLENGER_URI" not in env_of(promoted)
    assert [o["metadata"]["name"] for o in k.list()] == ["cartpole"]
    assert cluster.requests[-1].query == {"labelSelector": ["app.kubernetes.io/part-of=rlops"]}
    k.delete("cartpole")
    assert cluster.requests[-1].method == "DELETE"
    with pytest.raises(DeploymentError, match="404"):
        k.get("cartpole")


def test_in_pod_canary_strategy(cluster):
    k = KServeDeployments("rlops", tracking_uri="http://mlflow", canary_strategy="in-pod")
    k.create("cartpole", "models:/cartpole/1")
    obj = k.configure("cartpole", "models:/cartpole/1", "models:/cartpole/2", "canary", 0.1)
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert env_of(obj)["RLOPS_ROUTING"] == "canary" and env_of(obj)["RLOPS_CANARY_FRACTION"] == "0.1"


def test_mlflow_deployments_client_and_predict(cluster, start_server, model_dirs, tracking):
    server = start_server(model_dirs["champion"], name="cartpole", env={"RLOPS_STORE": ""})
    cluster.handler.status_url = server.url
    client = mlflow.deployments.get_deploy_client("rlops-kserve:/rlops")
    client.create_deployment("cartpole", "models:/cartpole@champion",
                             config={"tracking_uri": "http://mlflow.rlops:5000"})
    client.update_deployment("cartpole", "models:/cartpole@challenger",
                             config={"mode": "canary", "fraction": "0.05", "tracking_uri": "http://mlflow"})
    assert client.get_deployment("cartpole")["spec"]["predictor"]["canaryTrafficPercent"] == 5
    assert [d["metadata"]["name"] for d in client.list_deployments()] == ["cartpole"]
    out = client.predict("cartpole", [[0.0, 0.1, 0.0, -0.1]])
    assert out["predictions"][0]["action"] in (0, 1)
    with pytest.raises(mlflow.exceptions.MlflowException, match="unknown config keys"):
        client.create_deployment("x", "models:/x/1", config={"replicas": 3})
    client.delete_deployment("cartpole")
    with pytest.raises(mlflow.exceptions.MlflowException, match="404"):
        client.get_deployment("cartpole")
    assert json.dumps(cluster.requests[0].body)
    trail = [(e.decision, e.details["model_uri"]) for e in list_events("cartpole", kinds=["deployment"])]
    assert trail == [("created", "models:/cartpole@champion"), ("updated", "models:/cartpole@challenger"),
                     ("deleted", "models:/cartpole@champion")]
