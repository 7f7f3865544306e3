"""KServe logger CloudEvents and rlops.feedback events, parsed by the CloudEvents SDK, without a server."""

from __future__ import annotations

import json

import pytest

from rlops_plugin.errors import InvalidObservationError
from rlops_plugin.experience.cloudevents import REQUEST_TYPE, RESPONSE_TYPE, ingest_cloudevent, parse_cloudevent
from rlops_plugin.experience.records import new_batch_id
from rlops_plugin.experience.store import open_store

OBS = [0.1, 0.0, -0.1, 0.2]
VERSION = "policy/1@0123456789ab"
BINARY = {"ce-specversion": "1.0", "ce-id": "evt-1", "ce-source": "http://policy-predictor",
          "ce-inferenceservicename": "policy", "content-type": "application/json"}


def logged_pair() -> tuple[dict, dict]:
    batch_id = new_batch_id()
    response = {"predictions": [
        {"decision_id": f"{batch_id}-{i}", "action": i % 2, "propensity": 0.75, "policy_version": VERSION,
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


def _post_pair(store, request, response, ce_id="evt-1", catalog=None):
    headers = {**BINARY, "ce-id": ce_id}
    ingest_cloudevent(store, {**headers, "ce-type": REQUEST_TYPE}, json.dumps(request).encode(), catalog)
    return ingest_cloudevent(store, {**headers, "ce-type": RESPONSE_TYPE}, json.dumps(response).encode(), catalog)


@pytest.mark.parametrize("edit, reason", [
    ({"propensity": 0}, "propensity 0.0 must lie in (0, 1]"),
    ({"propensity": 5}, "propensity 5.0 must lie in (0, 1]"),
    ({"propensity": -1}, "propensity -1.0 must lie in (0, 1]"),
    ({"propensity": None}, "propensity nan must lie in (0, 1]"),
    ({"action": 7}, "action 7 is not an action of Discrete(2)"),
    ({"action": -1}, "action -1 is not an action"),
    ({"action": 10 ** 30}, "must be numbers"),
    ({"action": "left"}, "must be numbers"),
    ({"action": 0.5}, "must be integers"),
    ({"policy_version": "someone/9@ffffffffffff"}, "is not a known policy version"),
    ({"policy_version": "x"}, "is not name/version@bundle12"),
    ({"decision_id": "nope"}, "decision_id 'nope' is not of the form"),
])
def test_forged_pairs_are_quarantined_with_the_reason_and_never_become_decisions(tmp_path, edit, reason):
    """Forged or broken pairs get the checks direct decisions get; they land in quarantine, the log stays clean."""
    import gymnasium as gym

    from rlops_plugin.experience.cloudevents import PolicyCatalog
    from rlops_plugin.experience.dataset import build_transitions  # noqa: F401  (the builds these would break)

    policy = type("P", (), {"obs_dim": 4, "action_space": gym.spaces.Discrete(2)})()
    catalog = PolicyCatalog(known={VERSION: policy})
    request, response = logged_pair()
    for row in response["predictions"] if "policy_version" in edit else response["predictions"][1:]:
        row.update(edit)
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        out = _post_pair(store, request, response, catalog=catalog)
        assert out["decisions"] == 0 and reason in out["quarantined"], out
        assert store.stats()["decisions"] == 0 and store.stats()["quarantined"] == 1
        [kept] = store.quarantined()
        assert kept["ref"] == "evt-1" and reason in kept["reason"]
        assert json.loads(kept["body"])["response"] == json.loads(json.dumps(response))
        good_request, good_response = logged_pair()  # the next honest pair still goes in
        assert _post_pair(store, good_request, good_response, ce_id="evt-2", catalog=catalog)["decisions"] == 2


def test_malformed_pairs_are_quarantined_not_500(tmp_path):
    request, response = logged_pair()
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        out = _post_pair(store, {"instances": [["a", "b"], OBS]}, response)
        assert "not an rlops predictor's" in out["quarantined"] or "must be numbers" in out["quarantined"]
        out = _post_pair(store, {"instances": [[float("nan")] * 4, OBS]}, response, ce_id="evt-3")
        assert "finite" in out["quarantined"]
        assert store.stats()["decisions"] == 0 and store.stats()["quarantined"] == 2


def test_the_pair_lookup_reads_only_its_own_events(tmp_path):
    """The pair is found by its id (the primary key), not by reading every stored logger event."""
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        for i in range(50):
            request, response = logged_pair()
            assert _post_pair(store, request, response, ce_id=f"evt-{i}")["decisions"] == 2
        assert set(store.logger_pair("evt-7")) == {REQUEST_TYPE, RESPONSE_TYPE} and store.logger_pair("nope") == {}
        plan = store._reader().execute("EXPLAIN QUERY PLAN SELECT ce_type, body FROM logger_events WHERE ce_id = ?",
                                       ("evt-7",)).fetchall()
        assert "USING INDEX" in str(plan) or "USING PRIMARY KEY" in str(plan), plan
