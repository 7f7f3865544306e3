"""KServe logger CloudEvents and rlops.feedback events, parsed by the CloudEvents SDK, without a server."""

from __future__ import annotations

import json

import pytest

from rlops_plugin.errors import InvalidObservationError
from rlops_plugin.experience.cloudevents import REQUEST_TYPE, RESPONSE_TYPE, ingest_cloudevent, parse_cloudevent
from rlops_plugin.experience.records import new_batch_id
from rlops_plugin.experience.store import open_store

OBS = [0.1, 0.0, -0.1, 0.2]
BINARY = {"ce-specversion": "1.0", "ce-id": "evt-1", "ce-source": "http://policy-predictor",
          "ce-inferenceservicename": "policy", "content-type": "application/json"}


def logged_pair() -> tuple[dict, dict]:
    batch_id = new_batch_id()
    response = {"predictions": [
        {"decision_id": f"{batch_id}-{i}", "action": i % 2, "propensity": 0.75, "policy_version": "policy/1@abc",
         "decided_by": "champion"} for i in range(2)]}
    return {"instances": [OBS, {"obs": OBS}]}, response


def test_binary_pair_becomes_decisions_once(tmp_path):
    request, response = logged_pair()
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        first = ingest_cloudevent(store, {**BINARY, "ce-type": REQUEST_TYPE}, json.dumps(request).encode())
        assert first == {"type": REQUEST_TYPE, "status": "accepted", "decisions": 0}
        second = ingest_cloudevent(store, {**BINARY, "Ce-Type": RESPONSE_TYPE}, json.dumps(response).encode())
        assert second["decisions"] == 2
        again = ingest_cloudevent(store, {**BINARY, "ce-type": RESPONSE_TYPE}, json.dumps(response).encode())
        assert again["status"] == "duplicate"
        [(_, batch)] = list(store.iter_batches())
        assert batch.n == 2 and batch.model == "policy" and batch.extra["source"] == "kserve-logger"


def test_structured_feedback_event(tmp_path):
    _, response = logged_pair()
    body = json.dumps({"specversion": "1.0", "id": "fb-1", "source": "rewards", "type": "rlops.feedback",
                       "data": {"decision_id": response["predictions"][0]["decision_id"], "value": 1.0}}).encode()
    headers = {"content-type": "application/cloudevents+json; charset=utf-8"}
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        assert ingest_cloudevent(store, headers, body)["feedback"] == ["accepted"]
        assert ingest_cloudevent(store, headers, body)["feedback"] == ["duplicate"]  # idempotent on source + id


@pytest.mark.parametrize("headers, body, message", [
    ({"ce-id": "x", "content-type": "application/json"}, b"{}", r"'type' is required \(header ce-type\)"),
    ({**BINARY, "ce-type": "t", "ce-id": ""}, b"{}", r"'id' is required \(header ce-id\)"),
    ({**BINARY, "ce-type": "t"}, b"{bad", "data is not valid JSON"),
    ({**BINARY, "ce-type": "t", "ce-specversion": "9.9"}, b"{}", "specversion 9.9"),
    ({"content-type": "application/cloudevents+json"}, b'{"specversion": "1.0", "id": "a", "type": "t"}',
     "source"),
    ({"content-type": "application/cloudevents+json"}, b'{"specversion": "1.0", "id": "", "source": "s", "type": "t"}',
     r"'id' is required \(field id\)"),
    ({"content-type": "application/cloudevents+json"}, b"[1]", "specversion"),
    ({"content-type": "application/cloudevents+json"}, b"{" + b"x" * 10_000, "specversion"),
])
def test_bad_events_name_the_attribute(headers, body, message):
    with pytest.raises(InvalidObservationError, match=message) as info:
        parse_cloudevent(headers, body)
    assert str(info.value).startswith("cloudevent: ") and len(str(info.value)) < 400


def test_unknown_type_is_refused(tmp_path):
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store, \
            pytest.raises(InvalidObservationError, match="type 'com.example' is not a KServe logger event"):
        ingest_cloudevent(store, {**BINARY, "ce-type": "com.example"}, b"{}")
