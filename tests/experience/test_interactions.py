"""The interaction join and the feedback rules that keep agent fields off vector decisions."""

from __future__ import annotations

import pytest

from rlops_plugin.bundle.hashing import sha256_json
from rlops_plugin.errors import InvalidObservationError
from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.experience.interactions import join_interactions
from rlops_plugin.experience.store import open_store
from tests.experience.test_store import make_interaction

DID = "18ed4ae381a47aaa8fa0e94551ea-0"


def test_the_latest_rating_wins_as_a_whole_event(tmp_path):
    with open_store(tmp_path / "store.db") as store:
        record = make_interaction(n=1)
        store.log_interactions([record])
        iid = record.interaction_id
        store.add_feedback([
            parse_feedback({"interaction_id": iid, "kind": "rating", "value": 1, "scale": "thumbs", "rater": "ana",
                            "timestamp": record.ts + 1}),
            parse_feedback({"interaction_id": iid, "kind": "rating", "value": 4, "timestamp": record.ts + 2})])
        row = join_interactions(store).decisions.iloc[0]
    assert row["rating"] == 4 and row["rating_scale"] is None and row["rater"] is None


def test_big_integers_in_an_interaction_are_stored_as_text(tmp_path):
    with open_store(tmp_path / "store.db") as store:
        record = make_interaction(n=1)
        record.request["metadata"] = {"order": 2 ** 70}
        store.log_interactions([record])
        back = store.get_interactions([record.interaction_id])[record.interaction_id]
    assert back.request["metadata"] == {"order": str(2 ** 70)}


@pytest.mark.parametrize("item, message", [
    ({"decision_id": DID, "kind": "comment", "text": "hm"}, r"'text' is for agent interactions"),
    ({"decision_id": DID, "kind": "correction", "response": "x"}, r"response.*is for agent interactions"),
    ({"decision_id": DID, "kind": "rating", "value": 1, "scale": "thumbs"}, r"'scale' is for agent"),
    ({"decision_id": DID, "kind": "outcome", "value": 1}, r"value: not used for kind 'outcome' of a decision"),
])
def test_agent_fields_are_refused_for_vector_decisions(item, message):
    with pytest.raises(InvalidObservationError, match=message):
        parse_feedback(item)


def test_a_decision_s_default_idempotency_key_is_unchanged():
    event = parse_feedback({"decision_id": DID, "kind": "reward", "value": 1.0, "payload": {}})
    assert event.idempotency_key == "sha256:" + sha256_json({"decision_id": DID, "kind": "reward", "value": 1.0,
                                                            "action": None, "payload": {}})
