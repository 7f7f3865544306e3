"""Schema-driven fuzzing of a real policy server: every malformed input is a 4xx, never a 5xx (issue 20)."""

from __future__ import annotations

import dataclasses
import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import status_code_conformance

from rlops_plugin.serving import openapi
from rlops_plugin.serving.app import ConfigureRequest
from rlops_plugin.serving.exploration import ExplorationConfig
from rlops_plugin.serving.routing import RoutingConfig

MAX_EXAMPLES = int(os.environ.get("RLOPS_FUZZ_EXAMPLES", "40"))
"""Per operation and generation mode (positive: schema-valid bodies, negative: schema violations); raise
RLOPS_FUZZ_EXAMPLES for a deeper local run."""


@pytest.fixture(scope="module")
def fuzzed_server(model_dirs, tmp_path_factory):
    """One server with a store, with MLflow kept out: no registry lookups, nothing written outside tmp."""
    from rlops_plugin.serving.process import PolicyServerProcess

    root = tmp_path_factory.mktemp("fuzzed-server")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    server = PolicyServerProcess(model_dirs["champion"], root / "server.log", store=str(root / "store.db"),
                                 extra_args=["--max_body_bytes", "20000"])
    server.process.env = env
    server.start()
    yield server, root
    server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_server):
    """The OpenAPI document the running server serves, restricted to the rlops routes and v1 predict."""
    server, _ = fuzzed_server
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json").include(path=[path for _, path in OPERATIONS])


OPERATIONS = [("POST", "/v1/feedback"), ("POST", "/v1/cloudevents"), ("GET", "/rlops/v1/status"),
              ("POST", "/rlops/v1/models/{name}/configure"), ("POST", "/v1/models/{model_name}:predict")]


def check_no_server_error(response: schemathesis.Response, case: schemathesis.Case) -> None:
    """No 5xx, except a 503 the operation declares (a store or policy fault: nothing acknowledged, retry)."""
    declared = {str(code) for code in case.operation.definition.raw.get("responses", {})}
    if response.status_code >= 500 and not (response.status_code == 503 and "503" in declared):
        raise AssertionError(f"{response.status_code} for {case.method} {case.formatted_path}: "
                             f"{response.content[:300]!r}")


WITHOUT_BODY = {("GET", "/rlops/v1/status"), ("POST", "/v1/models/{model_name}:predict")}
"""Operations with no published request body (KServe's v1 predict publishes only its path): nothing to violate,
so they are fuzzed with valid cases only."""
CASES = [(method, path, mode) for method, path in OPERATIONS
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode is GenerationMode.POSITIVE or (method, path) not in WITHOUT_BODY]


@pytest.mark.integration
@pytest.mark.parametrize("method, path, mode", CASES, ids=lambda v: str(v))
def test_no_malformed_input_is_a_server_error(api_schema, fuzzed_server, method, path, mode):
    """Schemathesis cases from the served OpenAPI document (deterministic: derandomized, no example database)."""
    server, root = fuzzed_server
    [operation] = [result.ok() for result in api_schema.get_all_operations()
                   if result.ok().method.upper() == method and result.ok().path == path]
    kserve = path == "/v1/models/{model_name}:predict"

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        if isinstance(case.body, dict):  # keep model loading local: a generated URI becomes a path under tmp
            for name in ("model_uri", "challenger_uri"):
                if case.body.get(name):
                    case.body[name] = str(root / "no-such-model" / str(len(str(case.body[name]))))
        response = case.call(base_url=server.url, timeout=30)
        check_no_server_error(response, case)
        if not kserve:  # KServe does not declare its 400/404 answers
            case.validate_response(response, checks=[status_code_conformance])

    run()


@pytest.mark.integration
def test_an_error_response_leaves_the_keep_alive_connection_usable(fuzzed_server):
    server, _ = fuzzed_server
    batch = "18ea8cdd277925ab615111a5447e"
    bad = [("/v1/feedback", {"decision_id": f"{batch}-123456789012345678901234567890", "value": 1}),
           ("/v1/feedback", {"decision_id": f"{batch}-\u00b2", "value": 1}),
           ("/rlops/v1/models/policy/configure", {"model_uri": 5}),
           ("/rlops/v1/models/nope/configure", {})]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path, body in bad:
            r = client.post(path, json=body)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
            ok = client.post(server.predict_url, json={"instances": [[0.0, 0.0, 0.0, 0.0]]})
            assert ok.status_code == 200, ok.text
        assert "model_uri" in client.post("/rlops/v1/models/policy/configure", json={"model_uri": 5}).text
        assert "at most 9" in client.post("/v1/feedback", json=bad[0][1]).json()["error"]


def test_published_schemas_name_every_field_the_parsers_accept():
    def fields(cls):
        return {f.name for f in dataclasses.fields(cls)}

    assert set(openapi.CONFIGURE_BODY["properties"]) == fields(ConfigureRequest)
    assert set(openapi.ROUTING["properties"]) == fields(RoutingConfig)
    assert set(openapi.EXPLORATION["properties"]) == fields(ExplorationConfig)
    from rlops_plugin.experience import feedback

    assert set(openapi.FEEDBACK_EVENT["properties"]) == feedback._FIELDS


@pytest.mark.parametrize("headers, body, message", [
    ({"content-type": "application/cloudevents+json"},
     {"specversion": [], "id": "a", "source": "s", "type": "rlops.feedback"}, "'specversion' must be a string"),
])
def test_cloudevent_envelopes_that_once_gave_a_500_are_refused(headers, body, message):
    import json

    from rlops_plugin.errors import InvalidObservationError
    from rlops_plugin.experience.cloudevents import parse_cloudevent

    with pytest.raises(InvalidObservationError, match=message):
        parse_cloudevent(headers, json.dumps(body).encode())


@pytest.mark.parametrize("row, message", [
    ({"decision_id": "zz-0", "action": 0}, r"batch id 'zz' does not start with 16 hex digits"),
    ({"decision_id": "18ea8cdd277925ab615111a5447e-0", "action": 0, "policy_version": ["x"]},
     r"predictions\[0\]\.policy_version: a string"),
    ({"decision_id": "18ea8cdd277925ab615111a5447e-99999999999", "action": 0}, r"index has 11 digits"),
])
def test_logged_pairs_that_once_gave_a_500_are_refused(row, message):
    """Refused with InvalidObservationError, which ingestion turns into a quarantined pair (202), not a 500."""
    from rlops_plugin.errors import InvalidObservationError
    from rlops_plugin.experience.cloudevents import batch_from_logged_pair

    with pytest.raises(InvalidObservationError, match=message):
        batch_from_logged_pair("policy", {"instances": [[0.0, 0.0, 0.0, 0.0]]}, {"predictions": [row]})
