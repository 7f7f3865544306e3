"""The rlops-kserve target against a recording Kubernetes API server (no cluster runs here)."""

from __future__ import annotations

import json

import mlflow.deployments
import pytest
import yaml

from rlops_plugin import flavor
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


def deployments(strategy="kserve"):
    return KServeDeployments("rlops", tracking_uri="http://mlflow.rlops:5000", canary_strategy=strategy)


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
    assert canary["metadata"]["annotations"]["rlops.io/canary-strategy"] == "kserve"
    validate_manifest({k_: v for k_, v in canary.items() if k_ != "status"})

    promoted = k.configure("cartpole", "models:/cartpole/2", None, "off", 0.0)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert not {"rlops.io/champion-uri", "rlops.io/canary-strategy"} & set(promoted["metadata"]["annotations"])
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
    # kind given: these URIs are not registered here (the kind is read from the registry otherwise)
    client.create_deployment("cartpole", "models:/cartpole@champion",
                             config={"tracking_uri": "http://mlflow.rlops:5000", "kind": "vector"})
    client.update_deployment("cartpole", "models:/cartpole@challenger",  # per-decision: `auto` is KServe's split
                             config={"mode": "canary", "fraction": "0.05", "tracking_uri": "http://mlflow",
                                     "kind": "vector", "metric": "decision"})
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


@pytest.fixture
def registered(tracking, triage_agent, cartpole_bundle, model_name):
    """Two versions of the triage agent and one CartPole policy, registered: ``(agent name, vector name)``."""
    with mlflow.start_run():
        for _ in range(2):
            flavor.log_model(triage_agent, name="agent", registered_model_name=model_name)
        flavor.log_model(cartpole_bundle, name="policy", registered_model_name=f"{model_name}-vector")
    return model_name, f"{model_name}-vector"


@pytest.mark.parametrize("cluster", ["http://triage.rlops.example.com"], indirect=True)
def test_the_target_picks_the_runtime_from_the_registered_bundle_kind(cluster, registered):
    agent, vector = registered
    client = mlflow.deployments.get_deploy_client("rlops-kserve:/rlops")
    cfg = {"tracking_uri": "http://mlflow.rlops:5000"}
    client.create_deployment("triage", f"models:/{agent}/1", config=cfg)
    body = cluster.requests[-1].body
    validate_manifest(body)
    model = body["spec"]["predictor"]["model"]
    assert (model["runtime"], model["modelFormat"]["name"]) == ("rlops-agent", "rlops-agent")
    assert "logger" not in body["spec"]["predictor"]  # the agent server logs each interaction itself
    assert env_of(body)["RLOPS_MODEL_URI"] == f"models:/{agent}/1" and env_of(body)["RLOPS_TRACES"] == "on"

    shadow = client.update_deployment("triage", f"models:/{agent}/2", config={**cfg, "mode": "shadow"})
    assert env_of(shadow)["RLOPS_ROUTING"] == "shadow"
    assert env_of(shadow)["RLOPS_CHALLENGER_URI"] == f"models:/{agent}/2"
    sticky = client.update_deployment("triage", f"models:/{agent}/2",  # sessions: in-pod, sticky per session id
                                      config={**cfg, "mode": "canary", "fraction": "0.1", "metric": "session"})
    assert "canaryTrafficPercent" not in sticky["spec"]["predictor"]
    assert env_of(sticky)["RLOPS_MODEL_URI"] == f"models:/{agent}/1" and env_of(sticky)["RLOPS_ROUTING"] == "canary"
    assert env_of(sticky)["RLOPS_CANARY_FRACTION"] == "0.1"
    validate_manifest({k: v for k, v in sticky.items() if k not in ("status", "name", "flavor")})
    canary = client.update_deployment("triage", f"models:/{agent}/2",
                                      config={**cfg, "mode": "canary", "fraction": "0.1", "metric": "decision"})
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert env_of(canary)["RLOPS_MODEL_URI"] == f"models:/{agent}/2"
    assert "RLOPS_CHALLENGER_URI" not in env_of(canary)
    assert canary["metadata"]["annotations"]["rlops.io/champion-uri"] == f"models:/{agent}/1"
    assert canary["spec"]["predictor"]["model"]["runtime"] == "rlops-agent"
    validate_manifest({k: v for k, v in canary.items() if k not in ("status", "name", "flavor")})  # target's keys
    promoted = client.update_deployment("triage", config=cfg)  # no model: the current kind is kept
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    with pytest.raises(mlflow.exceptions.MlflowException, match="base_url='http://triage.rlops.example.com/openai/v1'"):
        client.predict("triage", [[0.0]])
    with pytest.raises(mlflow.exceptions.MlflowException, match="serves policy kind 'agent', not 'vector'"):
        client.update_deployment("triage", f"models:/{vector}/1", config=cfg)
    created = client.create_deployment("triage-2", f"models:/{agent}/2",  # no old revision: in-pod
                                       config={**cfg, "mode": "canary", "champion": f"models:/{agent}/1"})
    assert env_of(created)["RLOPS_MODEL_URI"] == f"models:/{agent}/1"
    assert env_of(created)["RLOPS_CHALLENGER_URI"] == f"models:/{agent}/2"
    validate_manifest(cluster.requests[-1].body)

    client.create_deployment("cartpole", f"models:/{vector}/1", config=cfg)
    body = cluster.requests[-1].body
    assert body["spec"]["predictor"]["model"]["runtime"] == "rlops-policy" and "logger" in body["spec"]["predictor"]
    with pytest.raises(mlflow.exceptions.MlflowException, match="pass -C kind=vector or -C kind=agent"):
        client.create_deployment("ghost", f"models:/{agent}-missing@champion", config=cfg)
    with pytest.raises(mlflow.exceptions.MlflowException, match="kind must be one of"):
        client.create_deployment("ghost", f"models:/{agent}/1", config={**cfg, "kind": "llm"})
