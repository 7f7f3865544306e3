"""The experience store on SQLite and PostgreSQL: round trips, append-only, concurrency."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from rlops_plugin.errors import ConfigError, InvalidObservationError
from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.experience.records import DecisionBatch, new_batch_id, split_decision_id
from rlops_plugin.experience.store import SCHEMA_VERSION, StoreError, open_store


def make_batch(n=3, model="m", rng=None, policies=("m/1@abc",)):
    rng = rng or np.random.default_rng(0)
    probs = rng.dirichlet([1, 1], size=n)
    actions = rng.integers(0, 2, size=n)
    return DecisionBatch(new_batch_id(), time.time(), model, rng.normal(size=(n, 4)).astype(np.float32), actions,
                         probs[np.arange(n), actions], probs, np.zeros(n, np.uint8), list(policies),
                         extra={"episode_ids": ["e"] * n, "steps": list(range(n))})


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


def test_round_trip(store_url):
    with open_store(store_url) as store:
        batch = make_batch(5)
        store.log_decisions(batch)
        [(seq, back)] = list(store.iter_batches())
        assert seq >= 1 and back.batch_id == batch.batch_id
        np.testing.assert_array_equal(back.obs, batch.obs)
        np.testing.assert_array_equal(back.actions, batch.actions)
        np.testing.assert_allclose(back.propensities, batch.propensities)
        np.testing.assert_allclose(back.probs, batch.probs)
        assert back.policies == ["m/1@abc"] and back.extra["steps"] == [0, 1, 2, 3, 4]
        assert store.stats() == {"batches": 1, "decisions": 5, "interactions": 0, "feedback_events": 0,
                                 "quarantined": 0, "feedback_duplicates": 0}


def test_box_actions_and_shadow_round_trip(tmp_path):
    with open_store(tmp_path / "s.db") as store:
        batch = make_batch(2)
        batch.actions = np.array([[0.5, -1.0], [0.1, 0.2]], dtype=np.float32)
        batch.probs = None
        batch.shadow_policy = None
        store.log_decisions(batch)
        shadow = make_batch(2, policies=("m/1@a", "m/2@b"))
        shadow.shadow_policy, shadow.shadow_probs = "m/2@b", np.full((2, 2), 0.5)
        store.log_decisions(shadow)
        first, second = [b for _, b in store.iter_batches()]
        assert first.actions.shape == (2, 2) and first.probs is None
        np.testing.assert_allclose(second.shadow_probs, 0.5)


def test_feedback_idempotency(store_url):
    with open_store(store_url) as store:
        batch = make_batch(2)
        store.log_decisions(batch)
        ids = batch.decision_ids()
        events = [parse_feedback({"decision_id": ids[0], "value": 1.0, "idempotency_key": "k"}),
                  parse_feedback({"decision_id": ids[0], "value": 1.0, "idempotency_key": "k"}),
                  parse_feedback({"decision_id": ids[1], "value": 0.5})]
        assert store.add_feedback(events) == ["accepted", "duplicate", "accepted"]
        assert store.add_feedback([parse_feedback({"decision_id": ids[1], "value": 0.5})]) == ["duplicate"]
        assert store.stats()["feedback_duplicates"] == 2
        rows = store.feedback_rows()
        assert [r["idempotency_key"] for r in rows][0] == "k" and len(rows) == 2


def test_append_only(store_url):
    with open_store(store_url) as store:
        store.log_decisions(make_batch())
        store.add_feedback([parse_feedback({"decision_id": make_batch().decision_ids()[0], "value": 1.0})])
        conn = store._connect()
        for sql in ("UPDATE decision_batches SET model = 'x'", "DELETE FROM decision_batches",
                    "DELETE FROM feedback"):
            with pytest.raises(Exception, match="append-only"):
                conn.execute(sql)
        conn.close()
        assert store.stats()["batches"] == 1


def test_schema_version_is_checked(tmp_path):
    path = tmp_path / "s.db"
    open_store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE rlops_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=f"schema version 99, this rlops reads version {SCHEMA_VERSION}"):
        open_store(path)


def test_bad_urls_and_options(tmp_path):
    with pytest.raises(ConfigError, match="durability"):
        open_store(tmp_path / "a.db", durability="fast")
    with pytest.raises(ConfigError, match="use a file path"):
        open_store("mysql://x")


def test_full_durability_and_many_threads(tmp_path):
    with open_store(tmp_path / "s.db", durability="full") as store:
        assert not store.inline_commits
        batches = [make_batch(2, rng=np.random.default_rng(i)) for i in range(200)]
        threads = [threading.Thread(target=lambda part: [store.log_decisions(b) for b in part],
                                    args=(batches[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.stats()["batches"] == 200
        assert store._writer.commits < 200  # group commit: several requests shared a transaction
        assert {b.batch_id for _, b in store.iter_batches(chunk=7)} == {b.batch_id for b in batches}


WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    sys.path.insert(0, sys.argv[3])
    from tests.experience.test_store import make_batch
    from rlops_plugin.experience.store import open_store
    with open_store(sys.argv[1]) as store:
        for i in range(int(sys.argv[2])):
            b = make_batch(2, rng=np.random.default_rng(i))
            store.log_decisions(b)
            print(b.batch_id, flush=True)
""")


@pytest.mark.integration
def test_two_processes_write_one_store(store_url):
    from tests.conftest import REPO_ROOT

    open_store(store_url).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, store_url, "300", str(REPO_ROOT)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    acked = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        acked += out.split()
    with open_store(store_url) as store:
        stored = [b.batch_id for _, b in store.iter_batches()]
    assert len(acked) == 600 and sorted(stored) == sorted(acked)


def test_decision_ids_parse():
    assert split_decision_id("18ea8cdd277925ab615111a5447e-12") == ("18ea8cdd277925ab615111a5447e", 12)
    for bad in ("", "nodash", "abc-", "abc-x1"):
        with pytest.raises(InvalidObservationError, match="not of the form"):
            split_decision_id(bad)


def make_interaction(session="s-1", n=2):
    from rlops_plugin.experience.records import InteractionRecord

    return InteractionRecord(
        interaction_id=new_batch_id(), ts=time.time(), model="agent", policy_version="agent/1@abc",
        endpoint="chat.completions", session_id=session,
        request={"messages": [{"role": "user", "content": "héllo"}], "tools": [], "sampling": {"n": n}},
        choices=[{"index": i, "content": f"answer {i}", "tool_calls": [], "logprob": -0.5 * i} for i in range(n)],
        usage={"prompt_tokens": 3, "completion_tokens": 4}, latency_ms=1.5)


def test_interactions_round_trip_sessions_and_append_only(store_url):
    with open_store(store_url) as store:
        first, second, other = make_interaction(), make_interaction(), make_interaction(session="s-2", n=1)
        store.log_interactions([first, second])
        import asyncio

        asyncio.run(store.log_interactions_async([other]))
        assert [r.interaction_id for _, r in store.iter_interactions(session_id="s-1")] == [
            first.interaction_id, second.interaction_id]
        back = store.get_interactions([second.interaction_id])[second.interaction_id]
        assert back.to_json() == second.to_json() and back.choice_ids()[1] == f"{second.interaction_id}-1"
        assert store.stats()["interactions"] == 3
        index = store.batch_index()
        assert index[first.interaction_id][1] == 2 and index["session:s-2"][1] == 1
        assert set(store.session_index()) == {"s-1", "s-2"}
        statuses = store.add_feedback([parse_feedback({"interaction_id": first.interaction_id, "choice": 1,
                                                       "kind": "rating", "value": 1, "scale": "thumbs"})])
        assert statuses == ["accepted"]
        with pytest.raises(Exception, match="append-only"):
            store._write_conn.execute("DELETE FROM interactions")
