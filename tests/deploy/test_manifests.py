"""Manifests are valid against the KServe SDK schemas and kubernetes-validate, and kept fresh."""

from __future__ import annotations

import copy

import pytest
import yaml

from rlops_plugin.deploy.manifests import example_manifests, inference_service, render
from rlops_plugin.deploy.validation import ManifestError, validate_manifest
from tests.conftest import REPO_ROOT

MANIFEST_DIR = REPO_ROOT / "manifests" / "kserve"


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
