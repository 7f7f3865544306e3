"""The policy server as a real process: protocols, bad input, limits, feedback, binding."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from rlops_plugin.experience.join import JoinConfig, classify_events
from rlops_plugin.experience.store import open_store
from rlops_plugin.local.sockets import listening_addresses, process_tree

pytestmark = pytest.mark.integration
OBS = [0.01, -0.02, 0.03, 0.04]
LOGGER = "org.kubeflow.serving.inference."


def predict(server, body, **kw):
    return httpx.post(server.predict_url, content=json.dumps(body) if not isinstance(body, (bytes, str)) else body,
                      headers={"content-type": "application/json", **kw.pop("headers", {})}, timeout=30, **kw)


@pytest.fixture
def served(start_server, model_dirs, tmp_path):
    store = str(tmp_path / "store.db")
    return start_server(model_dirs["champion"], store=store, extra_args=["--max_body_bytes", "20000"]), store


@pytest.fixture(scope="module")
def shared(model_dirs, tmp_path_factory):
    """One server for the stateless bad-input cases."""
    from rlops_plugin.serving.process import PolicyServerProcess

    root = tmp_path_factory.mktemp("shared-server")
    server = PolicyServerProcess(model_dirs["champion"], root / "server.log", store=str(root / "store.db"),
                                 extra_args=["--max_body_bytes", "20000"]).start()
    yield server, str(root / "store.db")
    server.stop()


def test_v1_v2_and_batch_decisions_are_logged(served):
    server, store_path = served
    r = predict(server, {"instances": [OBS, {"obs": OBS, "mask": [False, True], "episode_id": "ep1", "step": 0}]})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    assert [set(row) for row in rows] == [{"action", "propensity", "decision_id", "policy_version", "decided_by"}] * 2
    assert rows[1]["action"] == 1 and rows[1]["propensity"] == 1.0
    v2 = httpx.post(f"{server.url}/v2/models/policy/infer", timeout=30, json={"inputs": [
        {"name": "obs", "shape": [3, 4], "datatype": "FP32", "data": OBS * 3},
        {"name": "routing_key", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]}]})
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["action"]["shape"] == [3] and len(outputs["decision_id"]["data"]) == 3
    assert all(0 < p <= 1 for p in outputs["propensity"]["data"])
    big = predict(server, {"instances": [OBS] * 256})
    assert big.status_code == 200 and len(big.json()["predictions"]) == 256
    with open_store(store_path) as store:
        assert store.stats()["decisions"] == 2 + 3 + 256
        first = next(b for _, b in store.iter_batches())
        assert first.extra["episode_ids"] == [None, "ep1"] and first.extra["masked"]
        assert first.decision_ids() == [row["decision_id"] for row in rows]


BAD_V1 = [
    ('{"instances": [[0.1, null, 0.3, 0.4]]}', r"instances\[0\]\[1\]: null is not a number"),
    ('{"instances": [[0.1, NaN, 0.3, 0.4]]}', r"Unrecognized request format"),
    ('{"instances": [[0.1, Infinity, 0.3, 0.4]]}', r"Unrecognized request format"),
    ('{"instances": [[1e39, 0, 0, 0]]}', r"instances\[0\]\[0\]: 1e\+39 is outside the float32 range"),
    ('{"instances": [[0.1, 0.2, 0.3]]}', r"instances\[0\]: expected 4 numbers, got 3"),
    ('{"instances": [[1, 2, 3, "a"]]}', r"instances\[0\]\[3\]: str is not a number"),
    ('{"instances": [["0.1", "0.2", "0.3", "0.4"]]}', r"instances\[0\]\[0\]: str is not a number"),
    ('{"instances": [[true, false, true, false]]}', r"instances\[0\]\[0\]: bool is not a number"),
    ('{"instances": [{"obs": ["0", "0", "0", "0"]}]}', r"instances\[0\]\.obs\[0\]: str is not a number"),
    ('{"instances": [{"obs": [0, 0, 0, 0], "mask": [false, false]}]}', r"mask forbids every action"),
    ('{"instances": [{"obs": [0, 0, 0, 0], "mask": [true]}]}', r"instances\[0\]\.mask: list of 2 booleans"),
    ('{"instances": [{"obs": [0, 0, 0, 0], "color": 1}]}', r"unknown fields \['color'\]"),
    ('{"instances": [{"mask": [true, true]}]}', r"instances\[0\]\.obs: required"),
    ('{"instances": []}', r"instances: empty batch"),
    ('{"data": []}', r"unknown top-level fields \['data'\]"),
    ('{"instances": [[0, 0, 0, 0]], "x": 1}', r"unknown top-level fields \['x'\]"),
    ("{bad json", r"Unrecognized request format"),
    ("[1, 2]", r"request body must be a JSON object"),
]


@pytest.mark.parametrize("body, message", BAD_V1)
def test_bad_v1_input_is_4xx_with_the_field(shared, body, message):
    import re

    server, _ = shared
    r = predict(server, body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert re.search(message, r.json()["error"]), r.text
    assert predict(server, {"instances": [OBS]}).status_code == 200


def test_bad_v2_input_and_unknown_model(shared):
    server, _ = shared
    url = f"{server.url}/v2/models/policy/infer"
    cases = [
        ({"inputs": [{"name": "obs", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0]}]}, "inputs.obs.shape"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": OBS}]}, "unknown names"),
        ({"inputs": [{"name": "obs", "shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}]}, "numeric type"),
        ({"inputs": [{"name": "obs", "shape": [1, 4], "datatype": "FP32", "data": OBS},
                     {"name": "mask", "shape": [1, 2], "datatype": "BOOL", "data": [False, False]}]}, "forbids every"),
    ]
    for body, message in cases:
        r = httpx.post(url, json=body, timeout=30)
        assert 400 <= r.status_code < 500 and message in r.text, r.text
    assert httpx.post(f"{server.url}/v1/models/nope:predict", json={"instances": [OBS]}, timeout=30).status_code == 404
    assert predict(server, {"instances": [OBS]}).status_code == 200


def test_oversized_body_is_413_and_the_server_keeps_serving(shared):
    server, _ = shared
    r = predict(server, {"instances": [OBS] * 1000})
    assert r.status_code == 413 and "exceed the limit of 20000 bytes" in r.json()["error"]

    def chunks():
        yield b'{"instances": ['
        for _ in range(2000):
            yield b"[0.0, 0.0, 0.0, 0.0],"
        yield b"[0, 0, 0, 0]]}"

    streamed = httpx.post(server.predict_url, content=chunks(), headers={"content-type": "application/json"},
                          timeout=30)
    assert streamed.status_code == 413
    assert predict(server, {"instances": [OBS]}).status_code == 200


def test_binds_only_localhost(shared):
    server, _ = shared
    addresses = listening_addresses(process_tree(server.pid))
    assert addresses == [f"127.0.0.1:{server.port}"]


def test_feedback_endpoint(served):
    server, store_path = served
    ids = [row["decision_id"] for row in predict(server, {"instances": [OBS, OBS]}).json()["predictions"]]
    url = f"{server.url}/v1/feedback"
    first = httpx.post(url, json={"decision_id": ids[0], "value": 1.0, "idempotency_key": "r-1"}, timeout=30)
    again = httpx.post(url, json={"decision_id": ids[0], "value": 1.0, "idempotency_key": "r-1"}, timeout=30)
    assert first.json()["results"][0]["status"] == "accepted"
    assert again.json()["results"][0]["status"] == "duplicate"
    reused = httpx.post(url, json={"decision_id": ids[0], "value": -999.0, "idempotency_key": "r-1"}, timeout=30)
    assert reused.status_code == 409 and reused.json()["results"][0]["status"] == "conflict", reused.text
    header = httpx.post(url, json={"decision_id": ids[1], "kind": "rating", "value": 4},
                        headers={"Idempotency-Key": "rate-1"}, timeout=30)
    assert header.json()["results"][0]["idempotency_key"] == "rate-1"
    late = httpx.post(url, json={"decision_id": ids[1], "value": 2.0, "timestamp": 4102444800}, timeout=30)
    orphan = httpx.post(url, json={"decision_id": "18ea00000000000000000000beef-0", "value": 1.0}, timeout=30)
    assert late.status_code == 200 and orphan.status_code == 200
    for body, message in ([{"decision_id": ids[0]}, "value: a number is required"],
                          [{"value": 1}, "decision_id: required"], ["nope", "must be a JSON object"]):
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == 400 and message in r.json()["error"], r.text
    bad_json = httpx.post(url, content=b"{", headers={"content-type": "application/json"}, timeout=30)
    assert bad_json.status_code == 400 and "invalid JSON" in bad_json.json()["error"]
    with open_store(store_path) as store:
        events = classify_events(store, JoinConfig(window_s=3600, grace_s=0))
        assert sorted(events["status"]) == ["joined", "joined", "late", "orphaned"]
        assert store.stats()["feedback_duplicates"] == 1


def test_kserve_logger_cloudevents(served, start_server, model_dirs):
    server, store_path = served
    no_log = start_server(model_dirs["champion"])  # a predictor that logs nowhere itself
    request = {"instances": [OBS, OBS]}
    response = predict(no_log, request).json()
    url = f"{server.url}/v1/cloudevents"
    base = {"ce-specversion": "1.0", "ce-id": "evt-1", "ce-source": "http://policy-predictor",
            "ce-inferenceservicename": "policy", "content-type": "application/json"}
    r1 = httpx.post(url, content=json.dumps(request), timeout=30,
                    headers={**base, "ce-type": "org.kubeflow.serving.inference.request"})
    r2 = httpx.post(url, content=json.dumps(response), timeout=30,
                    headers={**base, "ce-type": "org.kubeflow.serving.inference.response"})
    assert r1.status_code == 202 and r2.status_code == 202 and r2.json()["decisions"] == 2
    again = httpx.post(url, content=json.dumps(response), timeout=30,
                       headers={**base, "ce-type": "org.kubeflow.serving.inference.response"})
    assert again.json()["status"] == "duplicate"
    feedback_ce = httpx.post(url, timeout=30, headers={"content-type": "application/cloudevents+json"}, json={
        "specversion": "1.0", "id": "fb-1", "source": "rewards-service", "type": "rlops.feedback",
        "data": {"decision_id": response["predictions"][0]["decision_id"], "value": 1.0}})
    assert feedback_ce.json()["feedback"] == ["accepted"]
    missing = httpx.post(url, content=b"{}", headers={"ce-id": "x", "content-type": "application/json"}, timeout=30)
    assert missing.status_code == 400 and "'type' is required" in missing.json()["error"]
    with open_store(store_path) as store:
        logged = {b.batch_id: b for _, b in store.iter_batches()}
        batch_id = response["predictions"][0]["decision_id"].rsplit("-", 1)[0]
        assert logged[batch_id].n == 2 and logged[batch_id].extra["source"] == "kserve-logger"
        np.testing.assert_allclose(logged[batch_id].propensities,
                                   [row["propensity"] for row in response["predictions"]])
    forged = json.loads(json.dumps(predict(no_log, request).json()))
    forged["predictions"][0]["propensity"] = 5  # what a forger posts to steer off-policy estimates
    for ce_type, body in (("request", request), ("response", forged)):
        out = httpx.post(url, content=json.dumps(body), timeout=30,
                         headers={**base, "ce-id": "evt-forged", "ce-type": LOGGER + ce_type})
    assert out.status_code == 202 and "propensity 5.0 must lie in (0, 1]" in out.json()["quarantined"]
    stranger = json.loads(json.dumps(predict(no_log, request).json()))
    for row in stranger["predictions"]:
        row["policy_version"] = "policy/9@ffffffffffff"  # a version this server does not serve
    for ce_type, body in (("request", request), ("response", stranger)):
        out = httpx.post(url, content=json.dumps(body), timeout=30,
                         headers={**base, "ce-id": "evt-stranger", "ce-type": LOGGER + ce_type})
    assert "not a known policy version" in out.json()["quarantined"]
    status = httpx.get(f"{server.url}/rlops/v1/status", timeout=30).json()["store"]
    assert status["quarantined"] == 2 and status["decisions"] == 2  # the log holds only the honest pair


def test_a_retried_predict_with_its_idempotency_key_returns_the_same_decisions_and_logs_one_row(served):
    server, store_path = served
    body = {"instances": [OBS, [0.1, 0.2, 0.3, 0.4]]}
    first = predict(server, body, headers={"Idempotency-Key": "req-1"})
    again = predict(server, body, headers={"idempotency-key": "req-1"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()  # the same decision ids, actions and propensities
    v2 = {"inputs": [{"name": "obs", "shape": [1, 4], "datatype": "FP32", "data": OBS}]}
    r2 = [httpx.post(f"{server.url}/v2/models/policy/infer", json=v2, headers={"Idempotency-Key": "req-2"},
                     timeout=30) for _ in range(2)]
    assert r2[0].status_code == 200 and r2[0].json()["outputs"] == r2[1].json()["outputs"]
    other = predict(server, {"instances": [OBS]}, headers={"Idempotency-Key": "req-1"})
    assert other.status_code == 409 and "used for a different request" in other.json()["error"], other.text
    empty = predict(server, body, headers={"Idempotency-Key": ""})
    assert empty.status_code == 400 and "Idempotency-Key" in empty.text
    with open_store(store_path) as store:
        assert store.stats()["batches"] == 2 and store.stats()["decisions"] == 3  # one row per key


def test_configure_switches_to_canary_without_restart(served, model_dirs):
    server, store_path = served
    url = f"{server.url}/rlops/v1/models/policy/configure"
    r = httpx.post(url, timeout=60, json={"challenger_uri": model_dirs["challenger"],
                                          "routing": {"mode": "canary", "fraction": 0.5}})
    assert r.status_code == 200, r.text
    assert len(r.json()["policies"]) == 2
    rows = predict(server, {"instances": [OBS] * 400}).json()["predictions"]
    share = np.mean([row["decided_by"] == "challenger" for row in rows])
    assert 0.4 < share < 0.6
    assert httpx.post(url, json={"routing": {"mode": "sideways"}}, timeout=30).status_code == 400
    assert httpx.post(url, json={"challenger_uri": "/nope"}, timeout=30).status_code == 422
    status = httpx.get(f"{server.url}/rlops/v1/status", timeout=30).json()
    assert status["models"][0]["routing"]["mode"] == "canary" and status["store"]["decisions"] == 400


def test_shadow_from_the_command_line(start_server, model_dirs, tmp_path):
    store_path = str(tmp_path / "shadow.db")
    server = start_server(model_dirs["champion"], store=store_path,
                          extra_args=["--challenger_uri", model_dirs["challenger"], "--routing", "shadow"])
    rows = predict(server, {"instances": [OBS] * 20}).json()["predictions"]
    assert {row["decided_by"] for row in rows} == {"champion"}
    with open_store(store_path) as store:
        [(_, batch)] = list(store.iter_batches())
        assert batch.shadow_probs.shape == (20, 2) and batch.shadow_policy != batch.policies[0]


def test_rlops_serve_cli_from_the_registry(tracking, model_name, cartpole_bundle, tmp_path):
    """`rlops serve models:/NAME@champion` reports the registry version in every decision."""
    import os
    import subprocess
    import sys

    import mlflow

    from rlops_plugin import flavor
    from rlops_plugin.local.processes import ManagedProcess, free_port

    with mlflow.start_run():
        flavor.log_model(cartpole_bundle, name="policy", registered_model_name=model_name)
    flavor.promote(model_name, 1)
    port = free_port()
    rlops = os.path.join(os.path.dirname(sys.executable), "rlops")
    proc = ManagedProcess([rlops, "serve", f"models:/{model_name}@champion", "--port", str(port),
                           "--store", str(tmp_path / "s.db"), "--exploration", "epsilon", "--epsilon", "0.1",
                           "--seed", "7"], tmp_path / "serve.log", env={**os.environ, "MLFLOW_TRACKING_URI": tracking})
    proc.start()
    try:
        proc.wait_healthy(f"http://127.0.0.1:{port}/v1/models/policy", 120)
        rows = httpx.post(f"http://127.0.0.1:{port}/v1/models/policy:predict", json={"instances": [OBS] * 50},
                          timeout=30).json()["predictions"]
        assert {row["policy_version"] for row in rows} == {f"{model_name}/1@{cartpole_bundle.bundle_sha[:12]}"}
        assert {round(row["propensity"], 6) for row in rows} <= {0.95, 0.05}
    finally:
        proc.stop()
    assert subprocess.run([rlops, "serve", "--help"], capture_output=True, text=True).returncode == 0
