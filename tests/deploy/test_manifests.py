"""Manifests are valid against the KServe SDK schemas and kubernetes-validate, and kept fresh."""

from __future__ import annotations

import copy

import pytest
import yaml

from rlops_plugin.deploy.manifests import (
    OPENAI_BASE_PATH,
    agent_inference_service,
    agent_serving_runtime,
    example_manifests,
    inference_service,
    kind_of,
    openai_base_url,
    render,
    serving_runtime,
)
from rlops_plugin.deploy.validation import ManifestError, validate_manifest
from rlops_plugin.errors import ConfigError
from tests.conftest import REPO_ROOT

MANIFEST_DIR = REPO_ROOT / "manifests" / "kserve"


def test_the_agent_manifests_are_shipped():
    assert {"servingruntime-agent.yaml", "inferenceservice-triage-agent.yaml"} <= set(example_manifests())


def test_shipped_manifests_are_fresh():
    for filename, docs in example_manifests().items():
        path = MANIFEST_DIR / filename
        assert path.exists(), f"{path} missing: run `rlops manifests generate`"
        assert path.read_text() == render(docs), f"{path} is stale: run `rlops manifests generate`"


@pytest.mark.parametrize("filename", sorted(example_manifests()))
def test_every_shipped_manifest_validates(filename):
    docs = list(yaml.safe_load_all((MANIFEST_DIR / filename).read_text()))
    assert docs
    for doc in docs:
        validate_manifest(doc)


def isvc(**kw):
    return inference_service("cartpole", "models:/cartpole@champion", namespace="ml", tracking_uri="http://mlflow",
                             store_uri="postgresql://db/rlops", **kw)


def test_inference_service_fields():
    doc = isvc(canary_traffic_percent=5, logger_url="http://rlops-feedback.ml.svc.cluster.local/v1/cloudevents",
               challenger_uri="models:/cartpole@challenger", routing="shadow")
    validate_manifest(doc)
    predictor = doc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 5
    assert predictor["logger"] == {"mode": "all", "url": "http://rlops-feedback.ml.svc.cluster.local/v1/cloudevents"}
    env = {e["name"]: e["value"] for e in predictor["model"]["env"]}
    assert env["RLOPS_MODEL_URI"] == "models:/cartpole@champion" and env["RLOPS_ROUTING"] == "shadow"
    assert env["RLOPS_CHALLENGER_URI"] == "models:/cartpole@challenger"
    assert predictor["model"]["modelFormat"]["name"] == "rlops" and predictor["model"]["runtime"] == "rlops-policy"
    assert predictor["model"]["resources"]["requests"]["cpu"] == "500m"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["spec"]["predictor"].update(canaryTrafficPrecent=5), r"canaryTrafficPrecent: unknown field"),
    (lambda d: d["spec"]["predictor"].update(canaryTrafficPercent="five"), r"canaryTrafficPercent: expected int"),
    (lambda d: d["spec"]["predictor"]["model"]["env"].append({"name": "X", "valu": "1"}), r"valu: unknown field"),
    (lambda d: d["spec"]["predictor"]["model"].update(imagePullPolicy=7), r"imagePullPolicy: expected str"),
    (lambda d: d["spec"]["predictor"]["logger"].update(mode=3), r"logger.mode: expected str"),
])
def test_broken_inference_services_are_caught(mutate, message):
    doc = copy.deepcopy(isvc(logger_url="http://x"))
    mutate(doc)
    with pytest.raises(ManifestError, match=message):
        validate_manifest(doc)


def test_broken_core_kinds_are_caught():
    rbac = example_manifests()["rbac.yaml"]
    role = copy.deepcopy(rbac[1])
    role["rules"][0]["verb"] = ["get"]
    with pytest.raises(ManifestError, match="'verb' was unexpected"):
        validate_manifest(role)
    deployment = copy.deepcopy(example_manifests()["feedback-collector.yaml"][0])
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(ManifestError, match="containerPort"):
        validate_manifest(deployment)


# ----- the agent runtime: OpenAI data plane -------------------------------------------------------
def agent_isvc(**kw):
    return agent_inference_service("triage-agent", "models:/triage-agent@champion", namespace="ml",
                                   tracking_uri="http://mlflow", store_uri="postgresql://db/rlops", **kw)


def test_agent_inference_service_fields():
    doc = agent_isvc(trace_experiment="triage-traces", canary_traffic_percent=10)
    validate_manifest(doc)
    predictor = doc["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == "rlops-agent" and model["modelFormat"] == {"name": "rlops-agent", "version": "1"}
    assert "logger" not in predictor  # the agent server commits each interaction itself before answering
    assert predictor["canaryTrafficPercent"] == 10
    assert {e["name"]: e["value"] for e in model["env"]} == {
        "RLOPS_MODEL_URI": "models:/triage-agent@champion", "MLFLOW_TRACKING_URI": "http://mlflow",
        "RLOPS_STORE": "postgresql://db/rlops", "RLOPS_TRACES": "on", "RLOPS_TRACE_EXPERIMENT": "triage-traces"}
    assert model["resources"]["requests"] == {"cpu": "2", "memory": "6Gi", "ephemeral-storage": "8Gi"}
    assert doc["metadata"]["annotations"]["rlops.io/model-uri"] == "models:/triage-agent@champion"
    assert kind_of(doc) == "agent" and kind_of(isvc()) == "vector"
    with pytest.raises(ConfigError, match="traces must be"):
        agent_isvc(traces="yes")


def _parse_container(runtime, isvc_doc, monkeypatch):
    """The runtime's container args as the server's own argparse reads them, with the InferenceService's env."""
    from rlops_plugin.serving.server import build_parser

    for var in ("RLOPS_MODEL_URI", "RLOPS_STORE", "RLOPS_TRACES", "RLOPS_TRACE_EXPERIMENT", "RLOPS_ROUTING",
                "RLOPS_EXPLORATION", "RLOPS_EPSILON", "RLOPS_CHALLENGER_URI", "RLOPS_CANARY_FRACTION"):
        monkeypatch.delenv(var, raising=False)
    for env in isvc_doc["spec"]["predictor"]["model"]["env"]:
        monkeypatch.setenv(env["name"], env["value"])
    (container,) = runtime["spec"]["containers"]
    assert container["command"] == ["python", "-m", "rlops_plugin.serving"]
    name = isvc_doc["metadata"]["name"]
    args = [a.replace("{{.Name}}", name) for a in container["args"]]  # what KServe substitutes
    parser = build_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    assert [a for a in args if a.startswith("--") and a not in flags] == []  # argparse would accept abbreviations
    return container, parser.parse_args(args)  # an unknown flag or a bad value exits: the test fails


def test_agent_runtime_args_are_what_the_server_accepts(monkeypatch):
    runtime = agent_serving_runtime(max_tokens=300, default_max_tokens=40, max_n=3, time_budget_s=12.5,
                                    torch_threads=2)
    validate_manifest(runtime)
    container, args = _parse_container(runtime, agent_isvc(trace_experiment="tx"), monkeypatch)
    assert (args.max_tokens, args.default_max_tokens, args.max_n, args.time_budget_s, args.torch_threads) == \
        (300, 40, 3, 12.5, 2)
    assert args.model_name == "triage-agent"  # what an OpenAI client sends as ``model``
    assert args.model_uri == "models:/triage-agent@champion" and args.store == "postgresql://db/rlops"
    assert (args.traces, args.trace_experiment) == ("on", "tx")
    assert args.host == "0.0.0.0" and container["ports"] == [{"containerPort": args.http_port, "protocol": "TCP"}]
    assert args.http_port == 8080
    spec = runtime["spec"]
    assert spec["supportedModelFormats"] == [{"autoSelect": True, "name": "rlops-agent", "version": "1"}]
    assert "v1" in spec["protocolVersions"]  # KServe matches the InferenceService's default protocol (v1)
    assert container["resources"]["limits"]["memory"] == "8Gi"


def test_vector_runtime_args_are_what_the_server_accepts(monkeypatch):
    container, args = _parse_container(serving_runtime(), isvc(), monkeypatch)
    assert (args.model_name, args.model_uri, args.http_port, args.routing) == \
        ("cartpole", "models:/cartpole@champion", 8080, "off")


def test_the_openai_route_is_where_kserve_mounts_it(monkeypatch):
    """The runtime pins KServe's own prefix, and KServe mounts chat and text completions under it on that port."""
    from fastapi import FastAPI
    from kserve.model_repository import ModelRepository
    from kserve.protocol.rest.openai import endpoints
    from kserve.protocol.rest.openai.dataplane import OpenAIDataPlane

    (container,) = agent_serving_runtime()["spec"]["containers"]
    prefix = {e["name"]: e["value"] for e in container["env"]}["KSERVE_OPENAI_ROUTE_PREFIX"]
    assert prefix == endpoints.OPENAI_ROUTE_PREFIX  # KServe's default (the variable is unset here)
    assert OPENAI_BASE_PATH == f"{prefix}/v1"
    app = FastAPI()
    endpoints.register_openai_endpoints(app, OpenAIDataPlane(ModelRepository()))
    routes = set(app.openapi()["paths"])
    assert {f"{OPENAI_BASE_PATH}/chat/completions", f"{OPENAI_BASE_PATH}/completions"} <= routes
    base = openai_base_url("http://triage-agent.ml.example.com/")
    assert base == "http://triage-agent.ml.example.com/openai/v1"  # what an OpenAI client takes as base_url
    assert base.removeprefix("http://triage-agent.ml.example.com") + "/chat/completions" in routes


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["spec"].update(supportedModelFormat=[]), r"spec.supportedModelFormat: unknown field"),
    (lambda d: d["spec"]["supportedModelFormats"][0].update(autoSelect="yes"), r"autoSelect: expected bool"),
    (lambda d: d["spec"]["containers"][0]["env"].append({"name": "X", "valu": "1"}), r"valu: unknown field"),
    (lambda d: d["spec"]["containers"][0]["ports"][0].update(containerPort="8080"), r"containerPort"),
    (lambda d: d["spec"]["containers"][0]["resources"].update(limit={}), r"resources.limit: unknown field"),
])
def test_broken_agent_runtimes_are_caught(mutate, message):
    doc = copy.deepcopy(agent_serving_runtime())
    validate_manifest(doc)
    mutate(doc)
    with pytest.raises(ManifestError, match=message):
        validate_manifest(doc)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["spec"]["predictor"]["model"].update(runtimme="rlops-agent"), r"runtimme: unknown field"),
    (lambda d: d["spec"]["predictor"]["model"]["modelFormat"].update(version=1), r"version: expected str"),
    (lambda d: d["spec"]["predictor"]["model"]["env"][0].update(valu="x"), r"valu: unknown field"),
    (lambda d: d["spec"]["predictor"].update(minReplicas="1"), r"minReplicas: expected int"),
])
def test_broken_agent_inference_services_are_caught(mutate, message):
    doc = copy.deepcopy(agent_isvc())
    mutate(doc)
    with pytest.raises(ManifestError, match=message):
        validate_manifest(doc)
