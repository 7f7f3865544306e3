import pytest

from rlops_plugin.errors import InvalidObservationError
from rlops_plugin.experience.feedback import parse_feedback, parse_feedback_body

DID = "18ea8cdd277925ab615111a5447e-0"


def test_defaults_and_derived_idempotency_key():
    a = parse_feedback({"decision_id": DID, "value": 1}, now=100.0)
    b = parse_feedback({"decision_id": DID, "value": 1}, now=200.0)
    assert a.kind == "reward" and a.value == 1.0 and a.event_ts == 100.0
    assert a.idempotency_key == b.idempotency_key and a.idempotency_key.startswith("sha256:")
    assert parse_feedback({"decision_id": DID, "value": 2}).idempotency_key != a.idempotency_key


def test_kinds():
    assert parse_feedback({"decision_id": DID, "kind": "rating", "value": 4}).value == 4.0
    assert parse_feedback({"decision_id": DID, "kind": "correction", "action": 1}).action == 1
    outcome = parse_feedback({"decision_id": DID, "kind": "outcome", "payload": {"clicked": True}})
    assert outcome.payload == {"clicked": True}
    ts = parse_feedback({"decision_id": DID, "value": 0, "timestamp": "2026-01-01T00:00:00Z"}).event_ts
    assert ts == 1767225600.0


@pytest.mark.parametrize("item, message", [
    ({"value": 1}, r"decision_id: required"),
    ({"decision_id": "nope", "value": 1}, r"decision_id: .*not of the form"),
    ({"decision_id": DID}, r"value: a number is required"),
    ({"decision_id": DID, "value": "1"}, r"value: a number is required"),
    ({"decision_id": DID, "value": True}, r"value: a number is required"),
    ({"decision_id": DID, "kind": "like", "value": 1}, r"kind: 'like' is not one of"),
    ({"decision_id": DID, "kind": "correction"}, r"action: the corrected action"),
    ({"decision_id": DID, "value": 1, "action": 0}, r"action: only used for kind 'correction'"),
    ({"decision_id": DID, "kind": "outcome"}, r"payload: an outcome needs"),
    ({"decision_id": DID, "value": 1, "extra": 2}, r"unknown fields \['extra'\]"),
    ({"decision_id": DID, "value": 1, "timestamp": "yesterday"}, r"timestamp: unix seconds or an ISO-8601"),
    ({"decision_id": DID, "value": 1, "idempotency_key": ""}, r"idempotency_key: non-empty"),
])
def test_errors_name_the_field(item, message):
    with pytest.raises(InvalidObservationError, match=message):
        parse_feedback(item)


def test_body_forms():
    assert len(parse_feedback_body([{"decision_id": DID, "value": 1}, {"decision_id": DID, "value": 2}])) == 2
    assert len(parse_feedback_body({"events": [{"decision_id": DID, "value": 1}]})) == 1
    assert parse_feedback_body({"decision_id": DID, "value": 1}, "hdr")[0].idempotency_key == "hdr"
    with pytest.raises(InvalidObservationError, match=r"events\[1\]\.value"):
        parse_feedback_body([{"decision_id": DID, "value": 1}, {"decision_id": DID}])
    with pytest.raises(InvalidObservationError, match="empty list"):
        parse_feedback_body([])


@pytest.mark.parametrize("item, message", [
    ({"decision_id": "18ea8cdd277925ab615111a5447e-123456789012345678901234567890", "value": 1},
     r"decision_id: .*index has 30 digits, at most 9"),
    ({"decision_id": "18ea8cdd277925ab615111a5447e-\u00b2", "value": 1}, r"decision_id: .*not of the form"),
    ({"decision_id": "18ea8cdd277925ab615111a5447e-\u0661\u0662", "value": 1}, r"decision_id: .*not of the form"),
    ({"interaction_id": "18ea8cdd277925ab615111a5447e", "kind": "rating", "value": 1, "scale": "\u00b2-5"},
     r"scale: 'thumbs' or an integer range"),
    ({"decision_id": DID, "value": 10**400}, r"value: must be finite"),
    ({"decision_id": DID, "value": 1, "timestamp": 10**400}, r"timestamp: unix seconds or an ISO-8601"),
])
def test_inputs_that_once_gave_a_500_are_errors_naming_the_field(item, message):
    """Fuzzer finds (issue 20): each was an OverflowError or ValueError in the server; ints beyond the float
    range arrive through CloudEvents, whose JSON parser keeps them."""
    with pytest.raises(InvalidObservationError, match=message):
        parse_feedback(item)


def test_the_largest_decision_index_is_accepted():
    assert parse_feedback({"decision_id": "18ea8cdd277925ab615111a5447e-999999999", "value": 1}).index == 999999999
