import time

import numpy as np

from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.experience.join import JoinConfig, classify_events, decisions_frame, join_feedback
from rlops_plugin.experience.store import open_store
from tests.experience.test_store import make_batch


def test_join_classifies_and_aggregates(tmp_path):
    with open_store(tmp_path / "s.db") as store:
        batch = make_batch(4)
        batch.ts = 1000.0
        store.log_decisions(batch)
        d = batch.decision_ids()
        unknown = "18ea00000000000000000000aaaa-0"
        store.add_feedback([
            parse_feedback({"decision_id": d[0], "value": 1.0, "timestamp": 1010}, now=1010),
            parse_feedback({"decision_id": d[0], "value": 0.5, "timestamp": 1020}, now=1020),  # partial reward: sums
            parse_feedback({"decision_id": d[1], "value": 3.0, "timestamp": 1000 + 7200}, now=8200),  # late
            parse_feedback({"decision_id": d[2], "kind": "rating", "value": 2, "timestamp": 1001}, now=1001),
            parse_feedback({"decision_id": d[2], "kind": "rating", "value": 5, "timestamp": 1002}, now=1002),
            parse_feedback({"decision_id": d[3], "kind": "correction", "action": 1, "timestamp": 1003}, now=1003),
            parse_feedback({"decision_id": d[3], "value": 1.0, "payload": {"terminated": True}, "timestamp": 1004},
                           now=1004),
            parse_feedback({"decision_id": unknown, "value": 1.0}, now=9000),
        ])
        config = JoinConfig(window_s=3600, grace_s=300)
        soon = join_feedback(store, config, now=9100)
        assert soon.counts == {"joined": 6, "late": 1, "pending": 1, "orphaned": 0, "duplicates": 0}
        later = join_feedback(store, config, now=9400)
        assert later.counts["orphaned"] == 1 and later.counts["pending"] == 0
        frame = later.decisions.set_index("decision_id")
        assert frame.loc[d[0], "reward"] == 1.5 and frame.loc[d[0], "n_rewards"] == 2
        assert np.isnan(frame.loc[d[1], "reward"]) and bool(frame.loc[d[1], "late_feedback"])
        assert frame.loc[d[2], "rating"] == 5.0
        assert frame.loc[d[3], "correction"] == 1 and frame.loc[d[3], "episode_end"] == "terminated"


def test_feedback_that_arrives_before_its_decision_joins_later(tmp_path):
    with open_store(tmp_path / "s.db") as store:
        batch = make_batch(1)
        now = time.time()
        store.add_feedback([parse_feedback({"decision_id": batch.decision_ids()[0], "value": 2.0}, now=now)])
        assert classify_events(store, JoinConfig())["status"].tolist() == ["pending"]
        batch.ts = now
        store.log_decisions(batch)
        assert classify_events(store, JoinConfig())["status"].tolist() == ["joined"]


def test_decisions_frame_columns(tmp_path):
    with open_store(tmp_path / "s.db") as store:
        store.log_decisions(make_batch(3, model="a"))
        store.log_decisions(make_batch(2, model="b"))
        frame = decisions_frame(store, model="a")
        assert len(frame) == 3 and set(frame["model"]) == {"a"}
        assert frame["episode_id"].tolist() == ["e", "e", "e"] and frame["step"].tolist() == [0, 1, 2]
        assert len(decisions_frame(store)) == 5
        assert decisions_frame(store, model="zzz").empty
